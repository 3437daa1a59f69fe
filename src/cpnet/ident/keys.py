"""Ed25519 signing keys for resolution records, their JWK form, and signature checking."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


def b64url_encode(raw: bytes) -> str:
    """Encode bytes as base64url without padding (RFC 4648 §5, as JOSE uses)."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode unpadded base64url strictly; raise ValueError on anything non-canonical."""
    if not isinstance(text, str) or not text.isascii():
        raise ValueError("base64url text must be an ASCII string")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except binascii.Error as err:
        raise ValueError(f"bad base64url: {err}") from None
    # The decoder ignores the unused low bits of the last character; re-encoding rejects
    # such aliases so one signature has exactly one accepted spelling.
    if b64url_encode(raw) != text:
        raise ValueError("non-canonical base64url")
    return raw


def _raw_public(public_key: Ed25519PublicKey) -> bytes:
    """Return the 32 raw bytes of an Ed25519 public key."""
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class SigningKey:
    """An Ed25519 private key that signs records, with its public JWK and key id."""

    private_key: Ed25519PrivateKey
    # Derived once: every signed record names its key id (two hashes of the public key each).
    _key_id: str = field(init=False, default="")

    def __post_init__(self) -> None:
        raw = _raw_public(self.private_key.public_key())
        object.__setattr__(self, "_key_id", hashlib.sha256(raw).hexdigest()[:16])

    @classmethod
    def generate(cls) -> SigningKey:
        """Create a fresh random key."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, data: bytes) -> SigningKey:
        """Load an unencrypted PKCS8 PEM private key; raise ValueError unless it is Ed25519."""
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"expected an Ed25519 private key, got {type(key).__name__}")
        return cls(key)

    def to_pem(self) -> bytes:
        """Serialise the private key as unencrypted PKCS8 PEM (protect the file, not the bytes)."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def public_key_b64(self) -> str:
        """The raw 32-byte public key as base64url without padding (the JWK ``x``)."""
        return b64url_encode(_raw_public(self.private_key.public_key()))

    @property
    def key_id(self) -> str:
        """A short stable id: the first 16 hex characters of sha256(raw public key)."""
        return self._key_id

    def sign(self, data: bytes) -> str:
        """Sign ``data`` and return the 64-byte signature as base64url without padding."""
        return b64url_encode(self.private_key.sign(data))

    def jwk(self) -> dict:
        """Return the public key as an RFC 8037 OKP JSON Web Key."""
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": self.public_key_b64,
            "kid": self.key_id,
            "alg": "EdDSA",
            "use": "sig",
        }

    def __repr__(self) -> str:
        # Never print private material, e.g. in a traceback or log line.
        return f"SigningKey(key_id={self.key_id!r})"


def jwks(keys: Iterable[SigningKey]) -> dict:
    """Return a JWK Set of the public halves of ``keys``."""
    return {"keys": [key.jwk() for key in keys]}


def verify(public_key_b64: str, data: bytes, signature_b64: str) -> bool:
    """Tell whether ``signature_b64`` is a valid Ed25519 signature of ``data``; never raises."""
    try:
        public_key = Ed25519PublicKey.from_public_bytes(b64url_decode(public_key_b64))
        public_key.verify(b64url_decode(signature_b64), data)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True
