"""Signed resolution records: JCS canonical JSON, Ed25519 envelopes, tombstones, verification."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import rfc8785

from cpnet.ident.grammar import parse
from cpnet.ident.keys import SigningKey, verify

ALG = "EdDSA"


_SAFE_INT = 2**53 - 1  # JCS numbers are IEEE doubles: integers beyond this are refused


class _Slow(Exception):
    """A value the fast path of canonical_json does not take: rfc8785 decides."""


def canonical_json(obj: object) -> bytes:
    """Serialise ``obj`` as RFC 8785 (JCS) canonical JSON, the exact bytes that get signed.

    The usual record (plain dicts and lists with ASCII keys, strings, bools, None, safe
    integers, floats written without an exponent) goes through the C ``json`` encoder, whose
    string escapes are JCS's; integral floats become integers (JCS writes ``64.0`` as ``64``),
    and sorting ASCII keys by code point is sorting them by UTF-16 unit. Anything else (other
    types, exponents, non-ASCII keys, out-of-range numbers, lone surrogates) is left to the
    ``rfc8785`` package, which also raises its errors. ``tests/unit/ident/test_canonical.py``
    holds the two to the same bytes over generated values.
    """
    try:
        text = json.dumps(
            _plain(obj), ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
        )
        return text.encode("utf-8")
    except (_Slow, UnicodeEncodeError, RecursionError):
        return rfc8785.dumps(obj)


def _plain(obj: object) -> object:
    """``obj`` with integral floats as ints, or _Slow if the fast path might differ."""
    t = type(obj)
    if t is str or t is bool or obj is None:
        return obj
    if t is int:
        if -_SAFE_INT <= obj <= _SAFE_INT:  # type: ignore[operator]
            return obj
        raise _Slow
    if t is float:
        if obj.is_integer():  # type: ignore[union-attr]
            if abs(obj) <= _SAFE_INT:  # type: ignore[arg-type]
                return int(obj)  # type: ignore[call-overload]
            raise _Slow
        # Without an exponent, repr is JCS's shortest round-trip form (ECMA-262 Number::toString).
        if math.isfinite(obj) and "e" not in repr(obj):  # type: ignore[arg-type]
            return obj
        raise _Slow
    if t is dict:
        out = {}
        for k, v in obj.items():  # type: ignore[union-attr]
            if type(k) is not str or not k.isascii():
                raise _Slow
            out[k] = _plain(v)
        return out
    if t is list or t is tuple:
        return [_plain(v) for v in obj]  # type: ignore[union-attr]
    raise _Slow


def rfc3339(moment: datetime) -> str:
    """Format an aware datetime as RFC 3339 UTC with whole seconds and a "Z" suffix."""
    return _utc(moment, "time").strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> datetime:
    """Read a timestamp written by rfc3339() (or any ISO 8601 one with an offset) as UTC."""
    return _utc(datetime.fromisoformat(text), "timestamp")


def _utc(moment: datetime, what: str) -> datetime:
    """Convert to UTC, refusing naive datetimes whose zone would be a guess."""
    if not isinstance(moment, datetime) or moment.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got {moment!r}")
    return moment.astimezone(UTC)


def sign_record(record: dict, key: SigningKey, *, issued_at: datetime, ttl_s: int) -> dict:
    """Wrap ``record`` in a signed envelope valid for ``ttl_s`` seconds from ``issued_at``."""
    # Deep copy: a caller mutating its dict later must not silently invalidate the envelope.
    return sign_owned(copy.deepcopy(record), key, issued_at=issued_at, ttl_s=ttl_s)[0]


def sign_owned(
    record: dict, key: SigningKey, *, issued_at: datetime, ttl_s: int
) -> tuple[dict, bytes]:
    """sign_record for a ``record`` the caller hands over (it is not copied: never change it
    afterwards), returning the envelope and its canonical JSON too, without serialising the
    record twice: JCS puts ``record`` before ``signature``, so the envelope's bytes are the
    signed bytes inside a fixed frame."""
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or ttl_s <= 0:
        raise ValueError(f"ttl_s must be a positive int, got {ttl_s!r}")
    # Whole seconds keep the timestamps simple to compare and to reproduce in other languages.
    issued = _utc(issued_at, "issued_at").replace(microsecond=0)
    body = {
        **record,
        "issued_at": rfc3339(issued),
        "expires_at": rfc3339(issued + timedelta(seconds=ttl_s)),
        "ttl": ttl_s,
        "key_id": key.key_id,
    }
    data = canonical_json(body)
    signature = {"alg": ALG, "key_id": key.key_id, "value": key.sign(data)}
    raw = b'{"record":' + data + b',"signature":' + canonical_json(signature) + b"}"
    return {"record": body, "signature": signature}, raw


def tombstone(id_text: str, *, retired_at: datetime, authority: str) -> dict:
    """Build the record that says ``id_text`` is retired for good (sign it with sign_record)."""
    return {
        "id": parse(id_text).text,
        "retired": True,
        "retired_at": rfc3339(retired_at),
        "authority": authority,
        "kind": "tombstone",
    }


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of verify_envelope: ``ok``, a human ``reason``, and whether it only ``expired``."""

    ok: bool
    reason: str
    expired: bool = False

    def __bool__(self) -> bool:
        # Without this every result, failures included, would be truthy in an `if`.
        return self.ok


def verify_envelope(envelope: dict, jwks: dict, *, now: datetime | None = None) -> VerifyResult:
    """Check an envelope's key id against ``jwks``, its signature, and (given ``now``) expiry."""
    record = envelope.get("record") if isinstance(envelope, dict) else None
    signature = envelope.get("signature") if isinstance(envelope, dict) else None
    if not isinstance(record, dict) or not isinstance(signature, dict):
        return VerifyResult(False, "malformed envelope: needs 'record' and 'signature' objects")
    if signature.get("alg") != ALG:
        return VerifyResult(False, f"unsupported signature alg {signature.get('alg')!r}")
    key_id = signature.get("key_id")
    # The record's key_id is covered by the signature; the outer one is only a lookup hint.
    if key_id != record.get("key_id"):
        return VerifyResult(False, "signature key_id does not match record key_id")
    jwk = _find_key(jwks, key_id)
    if jwk is None:
        return VerifyResult(False, f"unknown key id {key_id!r}")
    try:
        data = canonical_json(record)
    except (ValueError, TypeError) as err:
        return VerifyResult(False, f"record is not canonicalisable JSON: {err}")
    if not verify(jwk.get("x"), data, signature.get("value")):
        return VerifyResult(False, "bad signature")
    if now is not None:
        moment = _utc(now, "now")
        try:
            expires_at = parse_rfc3339(record["expires_at"])
        except (KeyError, TypeError, ValueError):
            return VerifyResult(False, "record has no valid expires_at")
        if moment >= expires_at:
            return VerifyResult(False, f"expired at {record['expires_at']}", expired=True)
    return VerifyResult(True, "ok")


def _find_key(jwks: dict, key_id: object) -> dict | None:
    """Return the Ed25519 JWK whose ``kid`` is ``key_id``, if the set has one."""
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    for jwk in keys if isinstance(keys, list) else ():
        if (
            isinstance(jwk, dict)
            and jwk.get("kid") == key_id
            and jwk.get("kty") == "OKP"
            and jwk.get("crv") == "Ed25519"
        ):
            return jwk
    return None
