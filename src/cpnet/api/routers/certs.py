"""Agents' client certificates for mutual TLS (docs/security.md).

- ``POST /v1/agents/certificate`` (an agent token): the hub's CA signs the agent's CSR and
  answers a short-lived certificate naming ``spiffe://<authority>/site/<its site>``. This route
  needs no client certificate itself: it is how an agent gets (and renews) one with its token.
- ``GET /v1/sites/{site_id}/certificates`` (the site's provider admins): what was issued.
- ``POST /v1/sites/{site_id}/certificates/revoke`` (the site's provider admins): revoke every
  certificate of the site and its agent tokens; under ``--mtls require`` its agent is refused
  from the next request on, and a new agent token is needed to join again.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from cpnet import pki
from cpnet.api.deps import caller, hub, provider_admin
from cpnet.api.routers.accounts import own_site as _own_site
from cpnet.auth.model import Principal, Role
from cpnet.errors import Forbidden
from cpnet.hub import pki as hub_pki
from cpnet.hub.service import Hub
from cpnet.store import certs, registry

router = APIRouter(tags=["agents"])


class CsrIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    csr: Annotated[str, Field(min_length=1, max_length=pki.ca.MAX_CSR_BYTES)]


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


@router.post("/v1/agents/certificate", status_code=201)
def issue_certificate(body: CsrIn, who: Principal = Depends(caller), h: Hub = Depends(hub)) -> dict:
    """Sign the agent's CSR: a client certificate for its own site, valid
    ``client_cert_ttl_s`` (CPNET_CLIENT_CERT_TTL_S, default a day)."""
    if who.role is not Role.AGENT or not who.site_id:
        raise Forbidden("only a site's agent token gets a client certificate")
    now = time.time()
    with h.store.read() as s:
        site = registry.get_site(s, who.site_id)
        if site.retired_at is not None:
            raise Forbidden(f"site {site.id} is retired", field="site_id")
    issued = hub_pki.issue(
        h.store, h.authority, who.site_id, body.csr.encode(), h.settings.client_cert_ttl_s, now
    )
    ca = hub_pki.ca(h.store, h.authority).cert_pem.decode()
    return {
        "certificate": issued.cert_pem.decode(),
        "ca": ca,
        "serial": str(issued.serial),
        "uri": issued.uri,
        "not_after": _iso(issued.not_after),
        "renew_after": _iso(now + (issued.not_after - now) * 2 / 3),
    }


@router.get("/v1/sites/{site_id}/certificates")
def list_certificates(
    site_id: str, who: Principal = Depends(provider_admin), h: Hub = Depends(hub)
) -> dict:
    with h.store.read() as s:
        _own_site(s, who, site_id)
        rows = certs.of_site(s, site_id)
        return {
            "certificates": [
                {
                    "serial": r.serial,
                    "issued_at": _iso(r.issued_at),
                    "not_after": _iso(r.not_after),
                    "revoked_at": None if r.revoked_at is None else _iso(r.revoked_at),
                }
                for r in rows
            ]
        }


@router.post("/v1/sites/{site_id}/certificates/revoke")
def revoke_certificates(
    site_id: str,
    request: Request,
    who: Principal = Depends(provider_admin),
    h: Hub = Depends(hub),
) -> dict:
    now = time.time()
    with h.store.tx() as s:
        _own_site(s, who, site_id)
        n = certs.revoke_site(s, site_id, now)
        tokens = certs.revoke_agent_tokens(s, site_id, now)
    request.app.state.token_cache.clear()  # this replica refuses the tokens at once
    return {"site_id": site_id, "certificates_revoked": n, "agent_tokens_revoked": tokens}
