"""Pools' SLAs (declare terms, show terms, evaluations and credits) and reputations."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends

from cpnet.api.deps import caller, hub, provider_admin
from cpnet.auth.model import Principal
from cpnet.errors import NotFound
from cpnet.hub import sla
from cpnet.hub.service import Hub
from cpnet.market.records import PoolSla, ReputationRecord
from cpnet.registry.model import SlaTermsIn

router = APIRouter(prefix="/v1", tags=["sla"])


@router.get("/pools/{pool_id}/sla", response_model=PoolSla)
def get_sla(pool_id: str, who: Principal = Depends(caller), h: Hub = Depends(hub)) -> PoolSla:
    """A pool's SLA terms in force and their history, its newest evaluated windows with the
    evidence and the credits they posted, and its reputation."""
    with h.store.read() as s:
        return sla.show(s, pool_id)


@router.put("/pools/{pool_id}/sla", response_model=PoolSla)
def put_sla(
    pool_id: str,
    body: SlaTermsIn,
    who: Principal = Depends(provider_admin),
    h: Hub = Depends(hub),
) -> PoolSla:
    """Declare a pool's SLA terms (its provider's admins). Kept as history: the newest terms
    judge every whole window that begins after they were set."""
    return sla.set_terms(h.store, who, pool_id, body, h.settings.sla_min_window_s, time.time())


@router.get("/reputation")
def list_reputation(
    who: Principal = Depends(caller), h: Hub = Depends(hub)
) -> dict[str, list[ReputationRecord]]:
    """Every pool's reputation score with its evidence, best first."""
    with h.store.read() as s:
        return {"pools": sla.reputations(s)}


@router.get("/pools/{pool_id}/reputation", response_model=ReputationRecord)
def get_reputation(
    pool_id: str, who: Principal = Depends(caller), h: Hub = Depends(hub)
) -> ReputationRecord:
    """One pool's reputation score with its evidence (404 until the hub's SLA sweep first
    scored it)."""
    with h.store.read() as s:
        found = sla.reputations(s, pool_id)
    if not found:
        raise NotFound(
            f"pool {pool_id} has no reputation yet: the hub scores pools every "
            f"{h.settings.sla_interval_s:g} s",
            field="pool_id",
        )
    return found[0]
