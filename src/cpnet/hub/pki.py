"""The hub's certificate authority around the pure `cpnet.pki`: its key pair kept in the store
(every replica shares it, like the signing keys), the development TLS files `cpnet hub init`
writes, the agents' client certificates, and the per-request check of a presented one."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from cryptography import x509

from cpnet import pki
from cpnet.config import HubSettings
from cpnet.errors import Invalid, Unauthorized
from cpnet.hub.keys import get_meta, set_meta
from cpnet.store import certs
from cpnet.store.db import Store

CA_KEY, CA_CERT = "pki.ca_key", "pki.ca_cert"


def ca(store: Store, authority: str) -> pki.KeyPair:
    """The hub's CA, made on first use and kept in the store."""
    with store.read() as s:
        key, cert = get_meta(s, CA_KEY), get_meta(s, CA_CERT)
    if key and cert:
        return pki.KeyPair(key.encode(), cert.encode())
    made = pki.make_ca(f"cpnet hub CA ({authority})", time.time())
    with store.tx() as s:
        # Two replicas starting at once: the first to commit wins, the other reads it back.
        if get_meta(s, CA_KEY) is None:
            set_meta(s, CA_KEY, made.key_pem.decode())
            set_meta(s, CA_CERT, made.cert_pem.decode())
    return ca(store, authority)


def dev_hosts(host: str) -> list[str]:
    """The names a development certificate covers: loopback, this machine's name, `host`."""
    hosts = ["localhost", "127.0.0.1", "::1", socket.gethostname()]
    if host and host not in ("0.0.0.0", "::"):
        hosts.append(host)
    return hosts


def _write(path: Path, data: bytes, private: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def write_dev_files(
    settings: HubSettings, store: Store, authority: str, hosts: list[str] | None = None
) -> dict[str, str]:
    """Write DATA_DIR/tls/{ca.crt, server.crt, server.key}: a server certificate for `hosts`
    signed by the hub's CA. Agents and users trust ca.crt (`--ca-file`)."""
    authority_ca = ca(store, authority)
    server = pki.issue_server(authority_ca, hosts or dev_hosts(settings.host), time.time())
    d = settings.tls_dir
    _write(d / "ca.crt", authority_ca.cert_pem, private=False)
    _write(d / "server.crt", server.cert_pem + authority_ca.cert_pem, private=False)
    _write(d / "server.key", server.key_pem, private=True)
    return {
        "ca_file": str(d / "ca.crt"),
        "tls_cert": str(d / "server.crt"),
        "tls_key": str(d / "server.key"),
    }


def ca_file(settings: HubSettings, store: Store, authority: str) -> Path:
    """The CA certificate as a file, for the TLS layer's client-certificate check."""
    path = settings.tls_dir / "ca.crt"
    pem = ca(store, authority).cert_pem
    if not path.exists() or path.read_bytes() != pem:
        _write(path, pem, private=False)
    return path


def issue(
    store: Store, authority: str, site_id: str, csr_pem: bytes, ttl_s: float, now: float
) -> pki.Issued:
    """A client certificate for a site's agent from its CSR, recorded so it can be revoked."""
    try:
        issued = pki.issue_client(
            ca(store, authority), csr_pem, pki.spiffe_uri(authority, site_id), now, ttl_s
        )
    except pki.CertError as exc:
        raise Invalid(str(exc), field="csr") from None
    with store.tx() as s:
        certs.record(s, issued.serial, site_id, now, issued.not_after)
    return issued


def presented(scope: dict) -> x509.Certificate | None:
    """The client certificate of this request's TLS connection (the ASGI TLS extension), if
    any."""
    chain = (scope.get("extensions") or {}).get("tls", {}).get("client_cert_chain") or []
    if not chain:
        return None
    return pki.load_cert(chain[0].encode() if isinstance(chain[0], str) else chain[0])


def check_agent(store: Store, authority: str, scope: dict, site_id: str, now: float) -> None:
    """Unauthorized unless this request came with a valid client certificate of `site_id`."""
    cert = presented(scope)
    if cert is None:
        raise Unauthorized(
            "this hub requires agents to present a client certificate (mutual TLS): run the "
            'agent with `client_cert = "auto"` and the hub\'s CA (`ca_file`), and it gets one'
        )
    try:
        named = pki.site_of(cert, authority)
    except pki.CertError as exc:
        raise Unauthorized(str(exc)) from None
    if named != site_id:
        raise Unauthorized("the client certificate names another site than the token's")
    with store.read() as s:
        why = certs.refusal(s, cert.serial_number, site_id, now)
    if why is not None:
        raise Unauthorized(f"{why}: the agent gets a new one with its token on restart")
