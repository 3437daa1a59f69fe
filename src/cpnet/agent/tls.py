"""The agent's side of TLS (docs/security.md): trusting the hub's private CA, and a client
certificate for mutual TLS that it gets with its token and renews before it expires, without a
restart.

Files, in WORK_DIR/tls/ (the key never leaves it; mode 0600):

- ``agent.key``: the agent's EC P-256 key, made once;
- ``agent.crt``: its current certificate (with the CA), replaced atomically on renewal;
- ``trust.pem``: the public roots plus the hub's CA; the agent sets ``SSL_CERT_FILE`` to it, so
  task runners (which fetch ``cpnet://blobs`` from the hub) trust the hub as well as public
  https:// inputs.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from cpnet import pki
from cpnet.siteclient import SiteClient

log = logging.getLogger("cpnet.agent")


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def trust_bundle(tls_dir: Path, ca_file: Path) -> Path:
    """Write TLS_DIR/trust.pem: certifi's public roots and the hub's CA."""
    import certifi

    tls_dir.mkdir(parents=True, exist_ok=True)
    out = tls_dir / "trust.pem"
    _write(out, Path(certifi.where()).read_bytes() + b"\n" + ca_file.read_bytes(), 0o644)
    return out


class ClientCert:
    """The agent's client certificate: got with its token, renewed at 2/3 of its life."""

    def __init__(self, tls_dir: Path) -> None:
        self.dir = tls_dir
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.key_file = self.dir / "agent.key"
        self.cert_file = self.dir / "agent.crt"
        self.renew_at = 0.0  # epoch seconds
        self.serial = ""

    def _key(self):  # type: ignore[no-untyped-def]
        if self.key_file.exists():
            return serialization.load_pem_private_key(self.key_file.read_bytes(), None)
        key = pki.make_key()
        _write(self.key_file, pki.ca.key_pem(key), 0o600)
        return key

    def due(self, now: float) -> bool:
        return now >= self.renew_at

    def renew(self, hub: SiteClient) -> None:
        """Ask the hub for a certificate (the key stays here) and use it from now on."""
        key = self._key()
        answer = hub.certificate(pki.make_csr(key, "agent"))
        _write(self.cert_file, (answer["certificate"] + answer["ca"]).encode(), 0o600)
        hub.use_cert(str(self.cert_file), str(self.key_file))
        self.serial = answer["serial"]
        self.renew_at = datetime.fromisoformat(answer["renew_after"]).timestamp()
        log.info(
            "client certificate %s for %s, valid until %s",
            self.serial,
            answer["uri"],
            answer["not_after"],
        )
