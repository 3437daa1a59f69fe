"""Request dependencies: the hub object and the authenticated caller."""

from __future__ import annotations

import time
from collections.abc import Callable

from anyio import to_thread
from fastapi import Depends, Request

from cpnet.auth.model import Principal, Role
from cpnet.errors import Forbidden, Unauthorized
from cpnet.hub.service import Hub
from cpnet.store import accounts, audit

_CACHE_S = 5.0  # a revoked token stops working within this many seconds on every replica


async def hub(request: Request) -> Hub:
    # async: FastAPI would run a plain function in a worker thread, a hop for nothing.
    return request.app.state.hub


async def caller(request: Request) -> Principal:
    """The principal behind the bearer token (401 if missing, unknown or revoked).

    async, with the store's look-up (a token not in the cache, an agent's certificate under
    mTLS) in a worker thread: FastAPI runs a plain function in a worker thread on every call,
    and that hop, with the one for `needs`, was about a third of a simple request's CPU."""
    arrived = time.time()
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized(
            "missing bearer token: pass --token, set CPNET_TOKEN, or run `cpnet login`"
        )
    h: Hub = request.app.state.hub
    cache: dict[str, tuple[float, Principal | None]] = request.app.state.token_cache
    now = time.monotonic()
    hit = cache.get(token)
    if hit is not None and hit[0] > now:
        who = hit[1]
    else:
        who = await to_thread.run_sync(_principal_for, h, token.strip())
        if len(cache) > 10_000:
            cache.clear()
        cache[token] = (now + _CACHE_S, who)
    if who is None:
        raise Unauthorized("unknown or revoked token: ask your admin for a new one")
    call = audit.current.get()
    if call is not None:  # the audit record of this call names its principal (api/audit.py)
        call.who = who
    if who.role is Role.AGENT:
        if h.settings.mtls == "require":
            await to_thread.run_sync(_agent_cert, request, h, who)
        if who.site_id and request.url.path.startswith("/v1/sites/"):
            # A sign of life of the agent itself (not of a runner fetching a blob with its
            # token), dated when the request arrived: under load a heartbeat may wait for a
            # worker thread and the database longer than the liveness sweep does.
            h.heard[who.site_id] = arrived
    return who


def _principal_for(h: Hub, token: str) -> Principal | None:
    with h.store.read() as s:
        return accounts.principal_for(s, token)


# Agent-token requests that need no client certificate under mTLS "require": the route that
# issues one (the agent's bootstrap, with its token), and the blob store, which task runners
# on a cluster's compute nodes call with the agent's token but without the agent's key.
CERT_EXEMPT = ("/v1/agents/certificate", "/v1/blobs")


def _agent_cert(request: Request, h: Hub, who: Principal) -> None:
    path = request.url.path
    if any(path == p or path.startswith(p + "/") for p in CERT_EXEMPT):
        return
    from cpnet.hub import pki

    pki.check_agent(h.store, h.authority, request.scope, who.site_id or "", time.time())


def require(who: Principal, *roles: Role) -> None:
    """Refuse the call unless the caller has one of `roles` (admins always pass)."""
    if who.role is Role.ADMIN or who.role in roles:
        return
    names = ", ".join(r.value for r in roles) or "admin"
    raise Forbidden(f"this needs the role {names}; your token has {who.role.value}")


def needs(*roles: Role) -> Callable[..., Principal]:
    """A dependency: the caller, refused (403) unless it has one of `roles` (admins always pass;
    no roles: admins only). Routes declare who may call them in their signature."""

    async def dependency(who: Principal = Depends(caller)) -> Principal:  # async: no thread hop
        require(who, *roles)
        return who

    return dependency


admin = needs()
provider_admin = needs(Role.PROVIDER_ADMIN)
person = needs(Role.USER, Role.PROVIDER_ADMIN)  # a person of an organisation, not an agent
