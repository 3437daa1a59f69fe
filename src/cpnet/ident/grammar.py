"""Compute identifiers: grammar, ISO 7064 MOD 37-2 check character, parsing and building.

An identifier is ``path "." type-code check``, e.g. ``cn.gd.acme.sz1.gpu1.i8``. See
docs/identifiers.md for the full ABNF and the reasoning behind it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

MAX_LENGTH = 128
LABEL_MAX = 24
MIN_LABELS = 2
MAX_LABELS = 8
MODULUS = 37
RADIX = 2

# Value order is the ISO 7064 MOD 37-2 alphabet, except that value 36 is "." inside the body
# and "~" as a check character ("*" is not URL-unreserved, "~" is: RFC 3986 §2.3).
_CHECK_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz~"
_BODY_VALUES: dict[str, int] = {c: v for v, c in enumerate(_CHECK_ALPHABET[:36])}
_BODY_VALUES.update({c.upper(): v for c, v in list(_BODY_VALUES.items()) if c.isalpha()})
_BODY_VALUES["."] = 36

_LABEL = rf"[a-z0-9]{{1,{LABEL_MAX}}}"
# One compiled pattern does the whole structural check on the fast path; the slower
# _diagnose() only runs for rejected input, to say precisely what is wrong.
_ID_RE = re.compile(
    rf"({_LABEL}(?:\.{_LABEL}){{{MIN_LABELS - 1},{MAX_LABELS - 1}}})\.([gisex])([a-z0-9~])"
)
_LABEL_RE = re.compile(_LABEL)
_ALLOWED = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.~")


class IdentifierError(ValueError):
    """A malformed compute identifier, with a stable machine ``code`` and a human ``message``."""

    CODES = frozenset(
        {
            "too_long",
            "bad_character",
            "bad_label",
            "too_few_labels",
            "too_many_labels",
            "bad_type",
            "bad_check",
            "empty",
        }
    )

    def __init__(self, code: str, message: str) -> None:
        if code not in self.CODES:
            raise ValueError(f"unknown identifier error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self):  # keep the two-argument constructor picklable
        return (type(self), (self.code, self.message))


class IdType(StrEnum):
    """What an identifier names: a kind of compute pool, or ``NONE`` for non-compute entities."""

    GENERAL = "g"
    INTELLIGENT = "i"
    SUPERCOMPUTING = "s"
    EDGE = "e"
    NONE = "x"

    @classmethod
    def from_pool_type(cls, name: str) -> IdType:
        """Map a pool type name ("general", "intelligent", …) or its letter to an IdType."""
        key = name.strip().lower() if isinstance(name, str) else name
        for member in cls:
            if key == member.value or key == member.name.lower():
                return member
        names = ", ".join(f"{m.name.lower()!r}/{m.value!r}" for m in cls)
        raise IdentifierError("bad_type", f"unknown type {name!r}; expected one of {names}")


def _weighted(body: str) -> int:
    """Run the ISO 7064 pure-system recursion P = (P + value) * radix mod M over the body."""
    p = 0
    values = _BODY_VALUES
    for i, c in enumerate(body):
        v = values.get(c)
        if v is None:
            raise IdentifierError("bad_character", f"character {c!r} at position {i + 1}")
        p = (p + v) * RADIX % MODULUS
    return p


def check_character(body: str) -> str:
    """Return the MOD 37-2 check character for ``body`` (path + "." + type letter)."""
    # The check value c makes the weighted sum of body and check congruent to 1 (mod 37).
    return _CHECK_ALPHABET[(MODULUS + 1 - _weighted(body)) % MODULUS]


@dataclass(frozen=True, slots=True)
class ComputeId:
    """A validated compute identifier; build it with parse() or make()."""

    labels: tuple[str, ...]
    type: IdType
    check: str

    def __post_init__(self) -> None:
        # Direct construction must not be a way around the grammar, so normalise and re-check.
        labels = tuple(normal_label(label, i) for i, label in enumerate(self.labels))
        _check_label_count(labels)
        try:
            id_type = self.type if isinstance(self.type, IdType) else IdType(str(self.type).lower())
        except ValueError:
            raise IdentifierError(
                "bad_type", f"type code {self.type!r} is not g, i, s, e or x"
            ) from None
        check = self.check.lower() if isinstance(self.check, str) else self.check
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "type", id_type)
        object.__setattr__(self, "check", check)
        body = f"{self.path}.{id_type.value}"
        if len(body) + 1 > MAX_LENGTH:
            raise IdentifierError(
                "too_long", f"identifier is {len(body) + 1} characters; at most {MAX_LENGTH}"
            )
        expected = check_character(body)
        if check != expected:
            raise IdentifierError(
                "bad_check", f"check character is {check!r}, expected {expected!r}"
            )

    @property
    def path(self) -> str:
        """The dotted labels without type code and check, e.g. ``cn.gd.acme``."""
        return ".".join(self.labels)

    @property
    def parent_path(self) -> str:
        """The path of the delegating level above, e.g. ``cn.gd`` for ``cn.gd.acme.x…``."""
        return ".".join(self.labels[:-1])

    @property
    def text(self) -> str:
        """The canonical lowercase identifier string."""
        return f"{self.path}.{self.type.value}{self.check}"

    def __str__(self) -> str:
        return self.text

    def is_under(self, prefix_path: str) -> bool:
        """Tell whether this id lies inside the delegated prefix (an id is under its own path)."""
        prefix = tuple(
            normal_label(label, i) for i, label in enumerate(prefix_path.strip().split("."))
        )
        return self.labels[: len(prefix)] == prefix


def normal_label(label: str, index: int = 0) -> str:
    """Lowercase one label and raise bad_label unless it is 1-24 ASCII letters or digits."""
    if not isinstance(label, str):
        raise IdentifierError("bad_label", f"label {index + 1} is {type(label).__name__}, not str")
    low = label.lower() if label.isascii() else label
    if _LABEL_RE.fullmatch(low) is None:
        if not label:
            why = "is empty"
        elif len(label) > LABEL_MAX:
            why = f"is {len(label)} characters; at most {LABEL_MAX}"
        else:
            bad = next(c for c in low if c not in _ALLOWED or c in ".~")
            why = f"contains {bad!r}; only letters a-z and digits 0-9 are allowed"
        raise IdentifierError("bad_label", f"label {index + 1} {label!r} {why}")
    return low


def _check_label_count(labels: Sequence[str]) -> None:
    """Raise unless the path has between MIN_LABELS and MAX_LABELS labels."""
    if len(labels) < MIN_LABELS:
        raise IdentifierError(
            "too_few_labels", f"path has {len(labels)} label; at least {MIN_LABELS} are needed"
        )
    if len(labels) > MAX_LABELS:
        raise IdentifierError(
            "too_many_labels", f"path has {len(labels)} labels; at most {MAX_LABELS} are allowed"
        )


def parse(text: str) -> ComputeId:
    """Parse an identifier typed or received in any case; raise IdentifierError if malformed."""
    if not isinstance(text, str):
        raise IdentifierError("bad_character", f"identifier must be a string, not {type(text)}")
    s = text.strip()
    # isascii() first: str.lower() maps some non-ASCII letters (e.g. KELVIN SIGN) to ASCII.
    m = _ID_RE.fullmatch(s.lower()) if s.isascii() and len(s) <= MAX_LENGTH else None
    if m is None:
        raise _diagnose(s)
    return ComputeId(tuple(m.group(1).split(".")), IdType(m.group(2)), m.group(3))


def is_valid(text: str) -> bool:
    """Tell whether ``text`` is a well-formed identifier with a correct check character."""
    try:
        parse(text)
    except IdentifierError:
        return False
    return True


def make(path_labels: Sequence[str] | str, type: IdType | str) -> ComputeId:
    """Build an identifier from its labels (or a dotted path) and type, adding the check."""
    # A bare str is also a Sequence[str]; iterating it would yield one label per character.
    raw = path_labels.strip().split(".") if isinstance(path_labels, str) else list(path_labels)
    labels = tuple(normal_label(label, i) for i, label in enumerate(raw))
    _check_label_count(labels)
    id_type = type if isinstance(type, IdType) else IdType.from_pool_type(type)
    body = f"{'.'.join(labels)}.{id_type.value}"
    if len(body) + 1 > MAX_LENGTH:
        raise IdentifierError(
            "too_long", f"identifier would be {len(body) + 1} characters; at most {MAX_LENGTH}"
        )
    return ComputeId(labels, id_type, check_character(body))


def _diagnose(s: str) -> IdentifierError:
    """Explain why a stripped string failed the fast pattern (first problem found wins)."""
    if not s:
        return IdentifierError("empty", "identifier is empty")
    if len(s) > MAX_LENGTH:
        return IdentifierError(
            "too_long", f"identifier is {len(s)} characters; at most {MAX_LENGTH}"
        )
    for i, c in enumerate(s):
        # "~" is only ever a check character, so anywhere but last it is simply wrong.
        if c not in _ALLOWED or (c == "~" and i != len(s) - 1):
            return IdentifierError("bad_character", f"character {c!r} at position {i + 1}")
    parts = s.lower().split(".")
    tail = parts[-1]
    if len(parts) < 2 or len(tail) != 2:
        return IdentifierError(
            "bad_type",
            f"identifier must end with '.', a type code (g, i, s, e or x) and a check "
            f"character; it ends with {tail!r}",
        )
    try:
        labels = [normal_label(label, i) for i, label in enumerate(parts[:-1])]
        _check_label_count(labels)
    except IdentifierError as err:
        return err
    if tail[0] not in "gisex":
        return IdentifierError("bad_type", f"type code {tail[0]!r} is not g, i, s, e or x")
    # Every structural rule passed, so only the check character can be at fault; the pattern
    # and this diagnosis agree, so reaching here means a bug rather than bad input.
    return IdentifierError("bad_character", f"unexpected identifier shape {s!r}")
