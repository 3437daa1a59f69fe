"""Limits: request rates, organisation quotas and the SSRF rule for URLs — pure functions."""
