"""Tests for signing keys, canonical JSON and signed resolution records."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from cpnet.ident import (
    IdentifierError,
    SigningKey,
    VerifyResult,
    canonical_json,
    jwks,
    sign_record,
    tombstone,
    verify,
    verify_envelope,
)

# One key for the whole module: key generation is not what these tests are about.
KEY = SigningKey.generate()
OTHER = SigningKey.generate()
ISSUED = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
RECORD = {
    "id": "cn.gd.acme.sz1.gpu1.i0",
    "kind": "pool",
    "provider": "cn.gd.acme.xf",
    "endpoint": "https://hub.example.cn/v1/pools/cn.gd.acme.sz1.gpu1.i0",
    "capacity": {"gpus": 64, "model": "A100"},
}

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.text(st.characters(exclude_categories=("Cs",)), max_size=6), inner, max_size=4
        )
    ),
    max_leaves=12,
)
record_keys = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=10)
records = st.dictionaries(record_keys, json_values, max_size=6)


def b64url(raw: bytes) -> str:
    """Encode like the JOSE specs: base64url, no padding."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# --- keys ----------------------------------------------------------------------------------------


def test_pem_round_trip_keeps_identity() -> None:
    pem = KEY.to_pem()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    again = SigningKey.from_pem(pem)
    assert again.key_id == KEY.key_id
    assert again.public_key_b64 == KEY.public_key_b64


def test_from_pem_rejects_other_key_types() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match="Ed25519"):
        SigningKey.from_pem(pem)


def test_public_key_and_key_id() -> None:
    raw = base64.urlsafe_b64decode(KEY.public_key_b64 + "=")
    assert len(raw) == 32
    assert "=" not in KEY.public_key_b64
    assert KEY.key_id == hashlib.sha256(raw).hexdigest()[:16]
    assert KEY.key_id != OTHER.key_id
    assert repr(KEY) == f"SigningKey(key_id={KEY.key_id!r})"  # no private material


def test_jwk_and_jwks() -> None:
    assert KEY.jwk() == {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": KEY.public_key_b64,
        "kid": KEY.key_id,
        "alg": "EdDSA",
        "use": "sig",
    }
    assert jwks([KEY, OTHER]) == {"keys": [KEY.jwk(), OTHER.jwk()]}
    assert jwks([]) == {"keys": []}


def test_sign_and_verify() -> None:
    sig = KEY.sign(b"hello")
    assert "=" not in sig
    assert len(base64.urlsafe_b64decode(sig + "==")) == 64
    assert verify(KEY.public_key_b64, b"hello", sig)
    assert not verify(KEY.public_key_b64, b"hellO", sig)
    assert not verify(OTHER.public_key_b64, b"hello", sig)
    # The signature is standard Ed25519: plain cryptography accepts it too.
    Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(KEY.public_key_b64 + "=")).verify(
        base64.urlsafe_b64decode(sig + "=="), b"hello"
    )


@pytest.mark.parametrize(
    ("public", "signature"),
    [
        ("", ""),
        ("not base64!", "AAAA"),
        ("AAAA", "AAAA"),
        (None, None),
        (KEY.public_key_b64, "A" * 86),
        (KEY.public_key_b64, KEY.sign(b"data") + "="),
        (KEY.public_key_b64, KEY.sign(b"data")[:-1]),
    ],
    # Stable ids: KEY is random, and pytest-xdist workers must collect the same names.
    ids=["empty", "not-base64", "short", "none", "zero-signature", "padded", "truncated"],
)
def test_verify_never_raises(public: str, signature: str) -> None:
    assert verify(public, b"data", signature) is False


def test_verify_rejects_non_canonical_base64_aliases() -> None:
    sig = KEY.sign(b"data")
    # 64 bytes use 86 characters; the last one carries 2 unused bits, so 4 spellings decode
    # alike. Only the canonical one (unused bits zero) may verify.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(sig[-1])
    aliases = [sig[:-1] + alphabet[(last & ~3) | low] for low in range(4)]
    assert sig in aliases
    assert [verify(KEY.public_key_b64, b"data", a) for a in aliases].count(True) == 1


# --- canonical JSON ------------------------------------------------------------------------------


def test_canonical_json_rfc8785_primitive_example() -> None:
    # RFC 8785 §3.2.2 sample input and its canonical output.
    data = json.loads(
        '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
        ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
        ' "literals": [null, true, false]}'
    )
    expected = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    assert canonical_json(data) == expected.encode("utf-8")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (0.1, "0.1"),
        (1e-7, "1e-7"),
        (-0.0, "0"),
        (4.5, "4.5"),
        (9007199254740991, "9007199254740991"),
        ("\u20ac", '"€"'),
        ("\u0000\u001f", '"\\u0000\\u001f"'),
    ],
)
def test_canonical_json_values(value: object, text: str) -> None:
    assert canonical_json(value) == text.encode("utf-8")


def test_canonical_json_sorts_keys_by_utf16() -> None:
    # RFC 8785 §3.2.3: U+1F600 (UTF-16 D83D DE00) sorts before U+FB33, unlike code point order.
    data = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    values = [v for _, v in json.loads(canonical_json(data)).items()]
    assert values == [
        "Carriage Return",
        "One",
        "Control",
        "Latin Small Letter O With Diaeresis",
        "Euro Sign",
        "Emoji: Grinning Face",
        "Hebrew Letter Dalet With Dagesh",
    ]


@given(records, st.randoms())
def test_canonical_json_ignores_key_order(record: dict, rnd) -> None:
    items = list(record.items())
    rnd.shuffle(items)
    assert canonical_json(dict(items)) == canonical_json(record)
    # Canonical output is a fixed point: parsing it (numbers as IEEE doubles, as JCS models
    # them) and canonicalising again changes nothing.
    text = canonical_json(record)
    assert canonical_json(json.loads(text, parse_int=float)) == text


def test_canonical_json_refuses_non_json() -> None:
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})
    with pytest.raises(ValueError):
        canonical_json({1: "int key"})


# --- envelopes -----------------------------------------------------------------------------------


def test_envelope_shape() -> None:
    env = sign_record(RECORD, KEY, issued_at=ISSUED, ttl_s=3600)
    assert set(env) == {"record", "signature"}
    rec = env["record"]
    assert rec == {
        **RECORD,
        "issued_at": "2025-03-01T12:00:00Z",
        "expires_at": "2025-03-01T13:00:00Z",
        "ttl": 3600,
        "key_id": KEY.key_id,
    }
    assert env["signature"]["alg"] == "EdDSA"
    assert env["signature"]["key_id"] == KEY.key_id
    assert verify(KEY.public_key_b64, canonical_json(rec), env["signature"]["value"])
    # The envelope is plain JSON and survives a trip through a wire format.
    assert verify_envelope(json.loads(json.dumps(env)), jwks([KEY])).ok


def test_sign_record_normalises_time_and_copies_input() -> None:
    record = {"nested": {"a": 1}}
    east8 = timezone(timedelta(hours=8))
    env = sign_record(
        record, KEY, issued_at=datetime(2025, 3, 1, 20, 0, 0, 999999, tzinfo=east8), ttl_s=60
    )
    assert env["record"]["issued_at"] == "2025-03-01T12:00:00Z"
    assert env["record"]["expires_at"] == "2025-03-01T12:01:00Z"
    record["nested"]["a"] = 2
    assert verify_envelope(env, jwks([KEY])).ok


@pytest.mark.parametrize("ttl", [0, -1, True, 1.5, "60"])
def test_sign_record_rejects_bad_ttl(ttl: object) -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        sign_record(RECORD, KEY, issued_at=ISSUED, ttl_s=ttl)  # type: ignore[arg-type]


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        sign_record(RECORD, KEY, issued_at=datetime(2025, 3, 1), ttl_s=60)
    env = sign_record(RECORD, KEY, issued_at=ISSUED, ttl_s=60)
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_envelope(env, jwks([KEY]), now=datetime(2025, 3, 1))


def test_sign_then_verify() -> None:
    env = sign_record(RECORD, KEY, issued_at=ISSUED, ttl_s=3600)
    result = verify_envelope(env, jwks([OTHER, KEY]), now=ISSUED + timedelta(minutes=59))
    assert result == VerifyResult(ok=True, reason="ok", expired=False)
    assert result
    assert verify_envelope(env, jwks([KEY])).ok  # no `now`: expiry not checked


def test_expiry() -> None:
    env = sign_record(RECORD, KEY, issued_at=ISSUED, ttl_s=3600)
    keys = jwks([KEY])
    assert verify_envelope(env, keys, now=ISSUED + timedelta(seconds=3599)).ok
    at_expiry = verify_envelope(env, keys, now=ISSUED + timedelta(seconds=3600))
    assert not at_expiry.ok and at_expiry.expired
    assert "2025-03-01T13:00:00Z" in at_expiry.reason
    assert not at_expiry
    later = verify_envelope(env, keys, now=ISSUED + timedelta(days=2))
    assert later.expired and not later.ok


def test_wrong_key_fails() -> None:
    env = sign_record(RECORD, KEY, issued_at=ISSUED, ttl_s=3600)
    unknown = verify_envelope(env, jwks([OTHER]))
    assert not unknown.ok and not unknown.expired
    assert "unknown key id" in unknown.reason
    # A JWKS entry that claims our kid but holds another public key must not validate.
    forged = {"keys": [{**OTHER.jwk(), "kid": KEY.key_id}]}
    assert verify_envelope(env, forged).reason == "bad signature"
    # Signed by OTHER while claiming KEY's id.
    env2 = sign_record(RECORD, OTHER, issued_at=ISSUED, ttl_s=3600)
    env2["record"]["key_id"] = env2["signature"]["key_id"] = KEY.key_id
    assert not verify_envelope(env2, jwks([KEY, OTHER])).ok


@pytest.mark.parametrize(
    "envelope",
    [None, {}, {"record": {}}, {"record": [], "signature": {}}, {"record": {}, "signature": "x"}],
)
def test_malformed_envelopes_fail_without_raising(envelope: object) -> None:
    result = verify_envelope(envelope, jwks([KEY]))  # type: ignore[arg-type]
    assert not result.ok and not result.expired


@pytest.mark.parametrize("keys", [None, {}, {"keys": None}, {"keys": [None, "x"]}])
def test_malformed_jwks_fail_without_raising(keys: object) -> None:
    env = sign_record(RECORD, KEY, issued_at=ISSUED, ttl_s=60)
    assert not verify_envelope(env, keys).ok  # type: ignore[arg-type]


def test_signature_metadata_is_checked() -> None:
    env = sign_record(RECORD, KEY, issued_at=ISSUED, ttl_s=60)
    bad_alg = copy.deepcopy(env)
    bad_alg["signature"]["alg"] = "ES256"
    assert "alg" in verify_envelope(bad_alg, jwks([KEY])).reason
    bad_kid = copy.deepcopy(env)
    bad_kid["signature"]["key_id"] = OTHER.key_id
    assert not verify_envelope(bad_kid, jwks([KEY, OTHER])).ok


@st.composite
def tampered(draw, env: dict) -> dict:
    """Return a copy of ``env`` with one field of the record or signature changed."""
    env = copy.deepcopy(env)
    rec = env["record"]
    how = draw(st.sampled_from(["replace", "delete", "add", "signature"]))
    if how == "replace":
        key = draw(st.sampled_from(sorted(rec)))
        new = draw(json_values)
        # 1 and 1.0 (or 0.0 and -0.0) are the same JSON number; that is not a change.
        if canonical_json(new) == canonical_json(rec[key]):
            new = [rec[key]]
        rec[key] = new
    elif how == "delete":
        del rec[draw(st.sampled_from(sorted(rec)))]
    elif how == "add":
        key = draw(record_keys.filter(lambda k: k not in rec))
        rec[key] = draw(json_values)
    else:
        sig = env["signature"]["value"]
        raw = bytearray(base64.urlsafe_b64decode(sig + "=="))
        i = draw(st.integers(0, len(raw) - 1))
        raw[i] ^= draw(st.integers(1, 255))
        env["signature"]["value"] = b64url(bytes(raw))
    return env


@settings(max_examples=150)
@given(records, st.data())
def test_any_change_breaks_the_signature(record: dict, data: st.DataObject) -> None:
    env = sign_record(record, KEY, issued_at=ISSUED, ttl_s=600)
    keys = jwks([KEY])
    assert verify_envelope(env, keys).ok
    bad = data.draw(tampered(env))
    result = verify_envelope(bad, keys)
    assert not result.ok
    assert not result.expired


# --- tombstones ----------------------------------------------------------------------------------


def test_tombstone() -> None:
    retired = datetime(2025, 4, 1, 8, 30, tzinfo=UTC)
    ts = tombstone(" CN.GD.ACME.SZ1.GPU1.I0 ", retired_at=retired, authority="cn.gd")
    assert ts == {
        "id": "cn.gd.acme.sz1.gpu1.i0",
        "retired": True,
        "retired_at": "2025-04-01T08:30:00Z",
        "authority": "cn.gd",
        "kind": "tombstone",
    }
    env = sign_record(ts, KEY, issued_at=retired, ttl_s=86400)
    assert verify_envelope(env, jwks([KEY]), now=retired).ok
    assert env["record"]["kind"] == "tombstone"


def test_tombstone_rejects_malformed_ids() -> None:
    with pytest.raises(IdentifierError) as info:
        tombstone("cn.gd.acme.sz1.gpu1.i1", retired_at=ISSUED, authority="cn.gd")
    assert info.value.code == "bad_check"
