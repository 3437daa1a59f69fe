"""The DNS zone's Ed25519 key (DNSSEC algorithm 15) and the trust anchor derived from it.

cpnet makes the key itself (``cpnet hub init``), not Knot: the trust anchor (the DS record the
parent zone publishes, or the DNSKEY a validator is configured with) is then known, printed and
stable before any DNS server has run, and the key is one PEM file that the hub imports into
Knot's KASP database (``keymgr import-pem``) when it starts the server. It is the KSK (flags
257): it signs the DNSKEY RRset and is what the parent's DS points at; replacing it changes the DS
(``cpnet dns delegate`` there, docs/identifiers.md "Keys and DNSSEC"). The records are signed by a
ZSK that keymgr makes in Knot's key store and ``cpnet dns roll-zsk`` rolls (dns/knot.py), which
leaves this anchor as it is.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ALGORITHM = 15  # ED25519 (RFC 8080)
FLAGS = 257  # zone key + secure entry point: the key a DS points at
PROTOCOL = 3
DIGEST_SHA256 = 2
KEY_FILE = "zone-ed25519.pem"  # under DATA_DIR/dns/


@dataclass(frozen=True, slots=True)
class Anchor:
    """The zone's trust anchor in the forms operators need."""

    apex: str  # absolute, lower case, trailing dot
    key_tag: int
    public_key_b64: str  # the DNSKEY's key field

    @property
    def dnskey(self) -> str:
        """The DNSKEY record, zone-file form."""
        return f"{self.apex} IN DNSKEY {FLAGS} {PROTOCOL} {ALGORITHM} {self.public_key_b64}"

    @property
    def ds(self) -> str:
        """The DS record (SHA-256) for the parent zone, zone-file form."""
        digest = ds_digest(self.apex, dnskey_rdata(base64.b64decode(self.public_key_b64)))
        return f"{self.apex} IN DS {self.key_tag} {ALGORITHM} {DIGEST_SHA256} {digest.upper()}"

    @property
    def bind_anchor(self) -> str:
        """A ``trust-anchors`` clause as ``delv -a FILE`` and BIND read it."""
        return (
            "trust-anchors {\n"
            f'  "{self.apex}" static-key {FLAGS} {PROTOCOL} {ALGORITHM} "{self.public_key_b64}";\n'
            "};\n"
        )


def generate_pem() -> bytes:
    """A new Ed25519 private key as unencrypted PKCS#8 PEM (what ``keymgr import-pem`` reads)."""
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_key(pem: bytes) -> bytes:
    """The 32 raw public-key bytes of an Ed25519 PEM private key (ValueError otherwise)."""
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"the zone key must be Ed25519, got {type(key).__name__}")
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def dnskey_rdata(public: bytes) -> bytes:
    """The DNSKEY RDATA in wire form (RFC 4034 §2.1)."""
    return struct.pack("!HBB", FLAGS, PROTOCOL, ALGORITHM) + public


def key_tag(rdata: bytes) -> int:
    """The key tag of a DNSKEY RDATA (RFC 4034 appendix B)."""
    acc = 0
    for i, byte in enumerate(rdata):
        acc += byte if i & 1 else byte << 8
    acc += (acc >> 16) & 0xFFFF
    return acc & 0xFFFF


def name_wire(name: str) -> bytes:
    """An absolute name in canonical wire form (lower case, RFC 4034 §6.2)."""
    labels = [label for label in name.lower().rstrip(".").split(".") if label]
    return b"".join(bytes([len(x)]) + x.encode("ascii") for x in labels) + b"\x00"


def ds_digest(apex: str, rdata: bytes) -> str:
    """The SHA-256 DS digest (hex) of a DNSKEY RDATA at ``apex`` (RFC 4509)."""
    return hashlib.sha256(name_wire(apex) + rdata).hexdigest()


def anchor(apex: str, pem: bytes) -> Anchor:
    """The trust anchor of the zone at ``apex`` signed with the key ``pem``."""
    public = public_key(pem)
    return Anchor(
        apex=apex.lower().rstrip(".") + ".",
        key_tag=key_tag(dnskey_rdata(public)),
        public_key_b64=base64.b64encode(public).decode("ascii"),
    )


def key_path(dns_dir: Path) -> Path:
    return dns_dir / KEY_FILE


def ensure_key(dns_dir: Path) -> tuple[bytes, bool]:
    """The zone key's PEM, made (mode 0600) if there is none yet; and whether it was made now.

    Written to a temporary file and linked to its name, so a half-written key is never read and
    a key another process linked first wins (as the hub's secrets key does)."""
    path = key_path(dns_dir)
    try:
        return path.read_bytes(), False
    except FileNotFoundError:
        pass
    dns_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(generate_pem())
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
            made = True
        except FileExistsError:
            made = False
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes(), made


def anchors_from_document(doc: object) -> list[Anchor]:
    """The anchors of a ``GET /.well-known/cpnet/dns-anchor.json`` answer, checked to agree
    with themselves: each DNSKEY is an Ed25519 key of the zone, and the DS listed for it is its
    digest (ValueError naming the field otherwise). Whether to trust the hub that served it is
    the caller's decision (fetch it over TLS)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("zone"), str):
        raise ValueError("zone: the answer names no zone")
    zone = doc["zone"].lower().rstrip(".") + "."
    keys, dss = doc.get("dnskey"), doc.get("ds")
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
        raise ValueError("dnskey: expected a non-empty list of DNSKEY records")
    if not isinstance(dss, list) or not all(isinstance(d, str) for d in dss):
        raise ValueError("ds: expected a list of DS records")
    listed = {" ".join(d.split()).upper() for d in dss}
    out = []
    for n, line in enumerate(keys):
        parts = line.split()
        if len(parts) != 7 or parts[1:3] != ["IN", "DNSKEY"]:
            raise ValueError(f"dnskey.{n}: not 'NAME IN DNSKEY FLAGS 3 15 KEY': {line!r}")
        if parts[0].lower().rstrip(".") + "." != zone:
            raise ValueError(f"dnskey.{n}: owner {parts[0]} is not the zone {zone}")
        if parts[3] != str(FLAGS):
            raise ValueError(f"dnskey.{n}: flags {parts[3]} are not {FLAGS} (a secure entry point)")
        if parts[4:6] != [str(PROTOCOL), str(ALGORITHM)]:
            raise ValueError(f"dnskey.{n}: protocol/algorithm {parts[4:6]} is not 3 15 (Ed25519)")
        try:
            public = base64.b64decode(parts[6], validate=True)
        except ValueError:
            raise ValueError(f"dnskey.{n}: the key is not base64") from None
        if len(public) != 32:
            raise ValueError(f"dnskey.{n}: an Ed25519 key is 32 bytes, not {len(public)}")
        a = Anchor(zone, key_tag(dnskey_rdata(public)), parts[6])
        if " ".join(a.ds.split()).upper() not in listed:
            raise ValueError(f"ds: no DS listed matches dnskey.{n} (expected {a.ds})")
        out.append(a)
    return out
