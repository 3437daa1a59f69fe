"""The hub's CA (pure): what it issues and what it refuses."""

from __future__ import annotations

import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cpnet import pki

NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def ca() -> pki.KeyPair:
    return pki.make_ca("test CA", NOW)


def test_a_server_certificate_covers_names_and_addresses(ca, tmp_path) -> None:
    server = pki.issue_server(ca, ["localhost", "127.0.0.1", "::1", "hub.example.org"], NOW)
    cert = pki.load_cert(server.cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "hub.example.org"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    # OpenSSL accepts the pair and the chain: a TLS context loads them and trusts the CA.
    (tmp_path / "s.crt").write_bytes(server.cert_pem)
    (tmp_path / "s.key").write_bytes(server.key_pem)
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "s.crt", tmp_path / "s.key")
    ctx.load_verify_locations(tmp_path / "ca.crt")
    with pytest.raises(pki.CertError):
        pki.issue_server(ca, [], NOW)


def test_a_client_certificate_names_the_site_whatever_the_csr_asks(ca) -> None:
    key = pki.make_key()
    # The CSR asks for another name and a SAN; the hub sets both itself.
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "admin")]))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier("spiffe://cn.dev/site/site_other")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    uri = pki.spiffe_uri("cn.dev", "site_a")
    issued = pki.issue_client(ca, csr, uri, NOW, ttl_s=60)
    cert = pki.load_cert(issued.cert_pem)
    assert pki.site_of(cert, "cn.dev") == "site_a"
    assert issued.not_after == NOW + 60 and cert.serial_number == issued.serial
    assert cert.not_valid_after_utc.timestamp() == pytest.approx(NOW + 60)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(pki.CertError, match="no site of this hub"):
        pki.site_of(cert, "cn.gd")  # another hub's authority
    # Signed by the CA: verify the signature with the CA's public key.
    ca_cert = pki.load_cert(ca.cert_pem)
    cert.verify_directly_issued_by(ca_cert)


def _csr_with(key) -> bytes:  # type: ignore[no-untyped-def]
    algo = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .sign(key, algo)
        .public_bytes(serialization.Encoding.PEM)
    )


def test_bad_csrs_and_lifetimes_are_refused_with_a_reason(ca) -> None:
    uri = pki.spiffe_uri("cn.dev", "s")
    with pytest.raises(pki.CertError, match="not a PEM certificate signing request"):
        pki.issue_client(ca, b"hello", uri, NOW)
    with pytest.raises(pki.CertError, match="EC P-256"):
        pki.issue_client(ca, _csr_with(rsa.generate_private_key(65537, 2048)), uri, NOW)
    with pytest.raises(pki.CertError, match="lives"):
        pki.issue_client(ca, pki.make_csr(pki.make_key(), "s"), uri, NOW, ttl_s=1)
    with pytest.raises(pki.CertError, match="over"):
        pki.issue_client(ca, b"x" * 10_000, uri, NOW)
    # A CSR whose signature does not match its key (the body tampered after signing).
    good = pki.make_csr(pki.make_key(), "s")
    der = x509.load_pem_x509_csr(good).public_bytes(serialization.Encoding.DER)
    bad = bytearray(der)
    bad[-5] ^= 0x01  # inside the signature
    pem = (
        b"-----BEGIN CERTIFICATE REQUEST-----\n"
        + __import__("base64").encodebytes(bytes(bad))
        + b"-----END CERTIFICATE REQUEST-----\n"
    )
    with pytest.raises(pki.CertError):
        pki.issue_client(ca, pem, uri, NOW)


def test_the_ca_signs_leaves_only(ca) -> None:
    cert = pki.load_cert(ca.cert_pem)
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca and bc.path_length == 0
    assert cert.not_valid_before_utc.timestamp() == NOW - pki.ca.SKEW_S
