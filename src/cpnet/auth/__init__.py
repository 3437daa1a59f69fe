"""Tenants, roles and API tokens."""
