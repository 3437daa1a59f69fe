"""The hub's small certificate authority (pure: keys and certificates in, PEM out; `now` passed
in): a development server certificate for TLS, and short-lived client certificates for agents
whose SAN is the site's SPIFFE-style URI (docs/security.md)."""

from cpnet.pki.ca import (
    CLIENT_TTL_S,
    MAX_CLIENT_TTL_S,
    CertError,
    Issued,
    KeyPair,
    issue_client,
    issue_server,
    load_cert,
    make_ca,
    make_csr,
    make_key,
    site_of,
    spiffe_uri,
)

__all__ = [
    "CLIENT_TTL_S",
    "MAX_CLIENT_TTL_S",
    "CertError",
    "Issued",
    "KeyPair",
    "issue_client",
    "issue_server",
    "load_cert",
    "make_ca",
    "make_csr",
    "make_key",
    "site_of",
    "spiffe_uri",
]
