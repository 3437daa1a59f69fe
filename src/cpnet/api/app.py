"""The hub's FastAPI application."""

from __future__ import annotations

import gc
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from cpnet import __version__
from cpnet.api import errors, query
from cpnet.api.audit import AuditCalls
from cpnet.api.fastpath import ResolveCache
from cpnet.api.limits import BodyLimit
from cpnet.api.ratelimit import RateLimit
from cpnet.api.routers import (
    accounts,
    agents,
    auctions,
    audit,
    blobs,
    certs,
    ident,
    ledger,
    market,
    metrics,
    network,
    pools,
    quotas,
    sla,
    tasks,
    tes,
    ui,
    usage,
)
from cpnet.api.telemetry import Telemetry
from cpnet.config import HubSettings
from cpnet.hub.service import Hub
from cpnet.telemetry import logs

DESCRIPTION = """
cpnet hub: compute identifiers and resolution, the live registry of providers, sites and pools,
tasks and their scheduler. Authenticate with `Authorization: Bearer <token>`.
Every error has the shape `{"error": {"code", "message", "field"?}}`. An unknown query parameter
is refused (400 `unknown_parameter`) on every route outside `/ga4gh/tes/`.
"""


def create_app(settings: HubSettings, hub: Hub | None = None) -> FastAPI:
    """Build the app; the hub (store, keys, loops) starts with the app's lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        h = hub or Hub(settings)
        app.state.hub = h
        app.state.token_cache = {}
        app.state.blobs = h.blobs
        await h.start()
        try:
            yield
        finally:
            await h.stop()

    app = FastAPI(
        title="cpnet hub",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # Unknown query parameters are a 400 naming them on every native route (query.py).
        dependencies=[Depends(query.only_known)],
    )
    errors.install(app)
    routers = (
        ident, accounts, pools, tasks, agents, certs, network, market, ledger, usage, auctions,
        audit, sla, quotas, metrics, ui,
    )  # fmt: skip
    for r in routers:
        app.include_router(r.router)
    app.include_router(blobs.router)
    app.include_router(tes.router)  # GA4GH TES v1.1 over the same task store
    ui.mount(app)  # the dashboard's files at /ui/
    # blob uploads have their own (larger) limit, enforced by the route as the body streams in
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, exempt=("/v1/blobs",))
    app.add_middleware(ResolveCache)
    # Every request gets its id, every mutating call (a 413 too) its audit record; inside
    # the rate limit, so a refused flood (429, nothing changed) costs no write.
    app.add_middleware(AuditCalls)
    # outermost: a caller out of requests costs the hub a dictionary look-up, nothing more
    app.add_middleware(
        RateLimit,
        user=settings.rate_limit,
        agent=settings.rate_limit_agent,
        anonymous=settings.rate_limit_anonymous,
    )
    app.add_middleware(Telemetry)  # counts and times every request, a refused one too
    return app


def serve(settings: HubSettings, sock: socket.socket | None = None) -> None:
    """Run a hub in this process until interrupted (what `cpnet hub` does); with `sock`, serve
    on that listening socket (a replica of `cpnet hub --workers`, api/replicas.py)."""
    import uvicorn

    logs.setup(settings.log_format, settings.log_level)
    logs.quiet_highs()
    # Fails before binding the port if the store was never initialised.
    hub = Hub(settings)
    tls: dict = {}
    if settings.tls_cert is not None:
        import ssl

        from cpnet.api.tls import PROTOCOL
        from cpnet.hub import pki

        tls = {"ssl_certfile": str(settings.tls_cert), "ssl_keyfile": str(settings.tls_key)}
        if settings.mtls != "off":
            # Verified against the hub's CA during the handshake when presented; whether an
            # agent must present one is the app's decision (api/deps.caller), per request.
            tls["ssl_ca_certs"] = str(pki.ca_file(settings, hub.store, hub.authority))
            tls["ssl_cert_reqs"] = ssl.CERT_OPTIONAL
            tls["http"] = PROTOCOL
    config = uvicorn.Config(
        create_app(settings, hub),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # logs.setup above: one format for uvicorn's lines and ours
        access_log=False,  # ours, with the route and request id: CPNET_ACCESS_LOG
        timeout_keep_alive=75,
        timeout_graceful_shutdown=5,
        **tls,
    )
    server = uvicorn.Server(config)
    handle_exit = server.handle_exit

    def _exit(sig: int, frame: object) -> None:
        # Agents hold long polls open; answer them now instead of waiting out the grace period.
        hub.begin_shutdown()
        handle_exit(sig, frame)  # type: ignore[arg-type]

    server.handle_exit = _exit  # type: ignore[method-assign]
    # What exists now (modules, the ORM's and pydantic's schemas, the app) lives as long as the
    # process: out of the cyclic collector's way, so that the full collections a request that
    # allocates thousands of objects (a batch) triggers do not walk it all again (a batch of
    # 1,000 took 15-30 % less CPU). Only here, in a hub process of its own: tests that start
    # many hubs in one process would keep each one's cycles for good.
    gc.collect()
    gc.freeze()
    server.run(sockets=[sock] if sock is not None else None)
