"""Certificates for the hub's TLS and the agents' mutual TLS, with `cryptography` (pure).

- ``make_ca``: the hub's own CA (ECDSA P-256, ten years), made by ``cpnet hub init``;
- ``issue_server``: a server certificate for the hub's host names and addresses, signed by it
  (the development certificate: an operator with a public CA's certificate passes that instead);
- ``issue_client``: a short-lived client certificate for a site's agent from the agent's CSR.
  The hub sets the subject and the one SAN, a URI ``spiffe://<authority>/site/<site id>``
  (SPIFFE's ID form); whatever the CSR asks for besides its public key is ignored;
- ``site_of``: the site a presented client certificate names.

Nothing here reads the clock or the disk: ``now`` (epoch seconds) and PEM bytes come in.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CLIENT_TTL_S = 24 * 3600  # an agent's certificate lives a day; agents renew at 2/3 of it
MIN_CLIENT_TTL_S = 5  # tests use seconds; anything shorter is a typo
MAX_CLIENT_TTL_S = 30 * 24 * 3600
SKEW_S = 300  # not-before backdated this far, for clocks a little behind the hub's
MAX_CSR_BYTES = 8 * 1024


class CertError(ValueError):
    """A CSR or certificate the hub will not accept, with the reason."""


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A private key and its certificate, both PEM."""

    key_pem: bytes
    cert_pem: bytes


@dataclass(frozen=True, slots=True)
class Issued:
    """A client certificate the CA issued."""

    cert_pem: bytes
    serial: int
    uri: str
    not_before: float
    not_after: float


def make_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _at(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _load_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError("the CA key must be an EC key")
    return key


def load_cert(pem_or_der: bytes) -> x509.Certificate:
    """A certificate from PEM or DER bytes (CertError if it is neither)."""
    try:
        if pem_or_der.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(pem_or_der)
        return x509.load_der_x509_certificate(pem_or_der)
    except ValueError as exc:
        raise CertError(f"not a certificate: {exc}") from None


def make_ca(common_name: str, now: float, days: int = 3650) -> KeyPair:
    """A self-signed CA that may sign end-entity certificates only (path length 0)."""
    key = make_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_at(now - SKEW_S))
        .not_valid_after(_at(now) + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(key_pem(key), cert.public_bytes(serialization.Encoding.PEM))


def _leaf(
    ca: KeyPair,
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    san: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    not_before: float,
    not_after: float,
) -> x509.Certificate:
    ca_key = _load_key(ca.key_pem)
    ca_cert = load_cert(ca.cert_pem)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_at(not_before))
        .not_valid_after(_at(not_after))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )


def issue_server(ca: KeyPair, hosts: list[str], now: float, days: int = 397) -> KeyPair:
    """A TLS server certificate for `hosts` (names and IP addresses), signed by `ca`."""
    if not hosts:
        raise CertError("a server certificate needs at least one host name or address")
    san: list[x509.GeneralName] = []
    for h in dict.fromkeys(hosts):
        try:
            san.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            san.append(x509.DNSName(h))
    key = make_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    cert = _leaf(
        ca,
        subject,
        key.public_key(),
        san,
        ExtendedKeyUsageOID.SERVER_AUTH,
        now - SKEW_S,
        (_at(now) + timedelta(days=days)).timestamp(),
    )
    return KeyPair(key_pem(key), cert.public_bytes(serialization.Encoding.PEM))


def spiffe_uri(authority: str, site_id: str) -> str:
    """The URI a site's client certificate carries: ``spiffe://<authority>/site/<site id>``."""
    return f"spiffe://{authority}/site/{site_id}"


def make_csr(key: ec.EllipticCurvePrivateKey, site_id: str) -> bytes:
    """An agent's certificate signing request (the hub decides the names; this carries the key
    and proves the agent holds it)."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, site_id[:64])]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def issue_client(
    ca: KeyPair, csr_pem: bytes, uri: str, now: float, ttl_s: float = CLIENT_TTL_S
) -> Issued:
    """A client certificate for the key in `csr_pem`, naming `uri`, valid `ttl_s` from now.

    Refused (CertError) unless the CSR is well formed, signed by its own key (proof that the
    caller holds it), and carries an EC P-256 key.
    """
    if len(csr_pem) > MAX_CSR_BYTES:
        raise CertError(f"the CSR is over {MAX_CSR_BYTES} bytes")
    if not MIN_CLIENT_TTL_S <= ttl_s <= MAX_CLIENT_TTL_S:
        raise CertError(f"a client certificate lives {MIN_CLIENT_TTL_S}..{MAX_CLIENT_TTL_S} s")
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise CertError(f"not a PEM certificate signing request: {exc}") from None
    try:
        if not csr.is_signature_valid:
            raise CertError("the CSR's signature does not match its key")
    except InvalidSignature:
        raise CertError("the CSR's signature does not match its key") from None
    pub = csr.public_key()
    if not isinstance(pub, ec.EllipticCurvePublicKey) or pub.curve.name != "secp256r1":
        raise CertError("the CSR must carry an EC P-256 key (what `cpnet agent` makes)")
    not_after = now + ttl_s
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, uri.rsplit("/", 1)[-1][:64])])
    cert = _leaf(
        ca,
        subject,
        pub,
        [x509.UniformResourceIdentifier(uri)],
        ExtendedKeyUsageOID.CLIENT_AUTH,
        now - SKEW_S,
        not_after,
    )
    return Issued(
        cert.public_bytes(serialization.Encoding.PEM),
        cert.serial_number,
        uri,
        now - SKEW_S,
        not_after,
    )


def site_of(cert: x509.Certificate, authority: str) -> str:
    """The site id a client certificate names in its ``spiffe://<authority>/site/<id>`` SAN, or
    CertError (no such SAN, another authority)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise CertError("the client certificate has no subject alternative name") from None
    prefix = f"spiffe://{authority}/site/"
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith(prefix) and len(uri) > len(prefix):
            return uri[len(prefix) :]
    raise CertError(f"the client certificate names no site of this hub ({prefix}…)")
