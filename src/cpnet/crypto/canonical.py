"""RFC 8785 (JCS) canonical JSON, byte for byte what ``rfc8785.dumps`` writes, faster.

The bytes that get signed or hashed: resolution records (ident/records.py, signed, and
published by the thousand through DNS), the audit chain's links (audit/chain.py) and signed usage
records (market/metering.py). With the pure-Python ``rfc8785`` that was a few percent of the
hub's CPU per task and most of a bulk DNS publication. ``tests/unit/crypto/test_canonical.py``
holds the two to the same bytes, or the same refusal, over generated values.

The standard library's C encoder writes the same bytes for the values these records hold,
once three differences are taken care of: JCS writes an integral float as an integer (``5.0``
→ ``5``; ``-0.0`` → ``0``) and large or small ones in its own exponent form, sorts keys by
UTF-16 code units, and refuses integers beyond ±(2⁵³ − 1), non-finite floats and lone
surrogates. So a value is first copied with its integral floats made integers; anything else
that could differ (a float Python would write with an exponent, a key that is not an ASCII
string, an integer out of range, a type JCS does not know) sends the whole value to
``rfc8785`` instead, which also raises what it raises.
"""

from __future__ import annotations

import json
import math
from typing import Any

import rfc8785

_ENCODE = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False
).encode
_INT_MAX = 2**53 - 1


class _Other(Exception):
    """The value needs ``rfc8785`` itself."""


def canonical_json(obj: object) -> bytes:
    """``rfc8785.dumps(obj)``, through the C encoder wherever it writes the same bytes."""
    try:
        return _ENCODE(_plain(obj)).encode("utf-8")
    except (_Other, UnicodeEncodeError):  # a lone surrogate: rfc8785 refuses it, as it should
        return rfc8785.dumps(obj)  # type: ignore[arg-type]


def _plain(x: Any) -> Any:
    """`x` with integral floats as integers; _Other where the C encoder could differ."""
    t = type(x)
    if t is str or x is None or t is bool:
        return x
    if t is float:
        if x.is_integer():
            if -_INT_MAX <= x <= _INT_MAX:
                return int(x)  # JCS writes 5.0 as 5 (and -0.0 as 0)
            raise _Other
        if not math.isfinite(x) or "e" in repr(x):
            raise _Other  # refused, or written in JCS's own exponent form
        return x
    if t is int:
        if -_INT_MAX <= x <= _INT_MAX:
            return x
        raise _Other
    if t is dict:
        out = {}
        for k, v in x.items():
            if type(k) is not str or not k.isascii():
                raise _Other  # JCS sorts by UTF-16 code units; a non-string key is refused
            out[k] = _plain(v)
        return out
    if t is list or t is tuple:
        return [_plain(v) for v in x]
    raise _Other  # subclasses (enums, …) and other types: rfc8785 decides
