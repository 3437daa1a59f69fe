"""Identifier resolution, the hub's public keys, and health."""

from __future__ import annotations

from anyio import to_thread
from fastapi import APIRouter, Depends, Response

from cpnet import __version__
from cpnet.api.deps import hub
from cpnet.errors import Invalid
from cpnet.hub.service import Hub
from cpnet.ident import jwks

router = APIRouter(tags=["identifiers"])


@router.get("/v1/health")
async def health(h: Hub = Depends(hub)) -> dict:
    """Liveness, for load balancers too; ``replica`` names the hub process that answered and
    ``leader`` says whether it leads the background loops (docs/operations.md)."""
    return {
        "status": "ok",
        "version": __version__,
        "authority": h.authority,
        "replica": h.replica,
        "leader": h.leading,
    }


@router.get("/.well-known/cpnet/keys.json")
async def keys(h: Hub = Depends(hub)) -> dict:
    """The hub's public signing keys (JWKS): verify resolution records offline with these."""
    return jwks(h.keys)


@router.get(
    "/v1/resolve/{identifier}",
    responses={200: {"description": "a signed record"}, 400: {}, 404: {}},
)
async def resolve(identifier: str, h: Hub = Depends(hub)) -> Response:
    """The signed record of a provider, site or pool (a signed tombstone once retired)."""
    if len(identifier) > 256:
        raise Invalid(
            "identifier longer than 128 characters", field="id", code="identifier_too_long"
        )
    hit = h.resolver.cached(identifier)
    body = (
        hit if hit is not None else await to_thread.run_sync(h.resolver.resolve_bytes, identifier)
    )
    return Response(body, media_type="application/json")
