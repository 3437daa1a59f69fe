"""Identifier resolution, the hub's public keys, and health."""

from __future__ import annotations

from anyio import to_thread
from fastapi import APIRouter, Depends, Response

from cpnet import __version__
from cpnet.api.deps import hub
from cpnet.errors import Invalid, NotFound
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
    "/.well-known/cpnet/dns-anchor.json",
    responses={200: {"description": "the DNS zone's trust anchor"}, 404: {}},
)
async def dns_anchor(h: Hub = Depends(hub)) -> dict:
    """The DNSSEC trust anchor of the zone this hub's DNS gateway serves (``cpnet hub --dns``):
    the DS record for the parent zone, the DNSKEY for validators and a ``trust-anchors`` clause
    (``delv -a``, BIND). Public, like the signing keys: it is published in DNS anyway; fetch it
    over TLS from a hub you trust (``cpnet dns anchor --hub URL``)."""
    if h.dns is None:
        raise NotFound(
            "this hub does not run the DNS gateway: start it with `cpnet hub --dns`",
            field="dns",
        )
    doc = h.dns.anchor_document()
    if doc is None:
        raise NotFound(
            "this hub's DNS gateway has no zone key yet: run `cpnet dns init` on the hub",
            field="dns",
        )
    return doc


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
