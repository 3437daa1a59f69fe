"""HTTPS for the hub with uvicorn, and the client certificate passed to the app.

uvicorn verifies a client certificate against the CA during the handshake but does not hand it
to the application; these protocol classes add it to each request's scope as the ASGI TLS
extension (``scope["extensions"]["tls"]["client_cert_chain"]``: the PEM of the peer's
certificate), where `hub/pki.check_agent` reads it.
"""

from __future__ import annotations

import ssl
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools is optional for uvicorn
    HttpToolsProtocol = None  # type: ignore[assignment,misc]


def _peer_pem(transport: Any) -> str | None:
    obj = transport.get_extra_info("ssl_object") if transport is not None else None
    der = obj.getpeercert(binary_form=True) if obj is not None else None
    return ssl.DER_cert_to_PEM_cert(der) if der else None


def _wrap_app(protocol: Any) -> None:
    """Make the protocol's ASGI app add the TLS extension before it runs."""
    app = protocol.app

    async def with_tls(scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") == "http":
            chain = [protocol._peer] if protocol._peer else []
            scope.setdefault("extensions", {})["tls"] = {"client_cert_chain": chain}
        await app(scope, receive, send)

    protocol.app = with_tls


class H11Peer(H11Protocol):
    _peer: str | None = None

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._peer = _peer_pem(transport)
        _wrap_app(self)


if HttpToolsProtocol is not None:

    class HttpToolsPeer(HttpToolsProtocol):  # type: ignore[valid-type,misc]
        _peer: str | None = None

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._peer = _peer_pem(transport)
            _wrap_app(self)

    PROTOCOL: type = HttpToolsPeer
else:  # pragma: no cover
    PROTOCOL = H11Peer
