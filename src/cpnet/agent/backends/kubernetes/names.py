"""Kubernetes names for cpnet's objects: DNS-1123 labels and label values derived from task fields
(never the fields themselves), with a hash of the original whenever anything had to change."""

from __future__ import annotations

import hashlib
import re


def _digest(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:n]


def dns_label(text: str, max_len: int = 63) -> str:
    """`text` as a DNS-1123 label (``[a-z0-9]([-a-z0-9]*[a-z0-9])?``, at most `max_len`), with a
    hash of the original appended whenever anything had to change, so different inputs stay
    different. Never empty."""
    clean = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if clean == text and 0 < len(clean) <= max_len:
        return clean
    suffix = _digest(text)
    head = clean[: max_len - len(suffix) - 1].rstrip("-")
    return f"{head}-{suffix}" if head else f"x-{suffix}"


def job_name(attempt_id: str) -> str:
    """The Job name of an attempt: ``cpnet-`` + a DNS-1123 form of its id, at most 63 chars (so
    that it is also a valid label value and pod name prefix)."""
    return "cpnet-" + dns_label(attempt_id, 63 - len("cpnet-"))


def label_value(text: str) -> str:
    """`text` as a label value (at most 63 of ``[A-Za-z0-9_.-]``, alphanumeric at both ends),
    hashed when it had to change."""
    if re.fullmatch(r"([A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?", text):
        return text
    return dns_label(text)


__all__ = ["dns_label", "job_name", "label_value"]
