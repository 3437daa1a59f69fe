"""Turning display names into identifier labels, and keeping sibling labels distinct."""

from __future__ import annotations

import hashlib
from collections.abc import Collection

from cpnet.ident.grammar import LABEL_MAX, normal_label

_KEEP = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")


def slug_label(name: str) -> str:
    """Derive a valid label from any display name: keep ASCII letters and digits, lowercased."""
    # Per-character ASCII test before lowering: str.lower() would turn KELVIN SIGN into "k",
    # which is a transliteration we promise not to do.
    kept = "".join(c.lower() for c in name if c.isascii() and c.lower() in _KEEP)
    if kept:
        return kept[:LABEL_MAX]
    # Nothing usable (e.g. an all-Chinese name): a short digest is stable for the same name.
    return "n" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]


def unique_label(base: str, taken: Collection[str]) -> str:
    """Return ``base``, or ``base`` + 2, 3, … (trimmed to 24 characters) if already taken."""
    label = normal_label(base)
    used = {t.lower() for t in taken}
    if label not in used:
        return label
    n = 2
    while True:
        suffix = str(n)
        candidate = label[: LABEL_MAX - len(suffix)] + suffix
        if candidate not in used:
            return candidate
        n += 1
