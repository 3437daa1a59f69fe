"""Signed resolution records: JCS canonical JSON, Ed25519 envelopes, tombstones, verification."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cpnet.crypto.canonical import canonical_json
from cpnet.ident.grammar import parse
from cpnet.ident.keys import SigningKey, verify

ALG = "EdDSA"


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
