"""Signed metering: an agent sends a usage record; a task's owner, or a site's provider, reads
the records received with their verdicts (docs/market.md, "Metering")."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from cpnet.api.deps import caller, hub, provider_admin
from cpnet.api.routers.agents import agent_for
from cpnet.auth.model import Principal
from cpnet.errors import Conflict, DomainError, Forbidden, Invalid
from cpnet.hub.service import Hub
from cpnet.market.metering import SignedUsage, Verdict
from cpnet.market.wire import UsageList, UsageVerdict
from cpnet.store import registry, usage
from cpnet.store import tasks as store

router = APIRouter(prefix="/v1", tags=["market"])

# How a refused record is answered: malformed 400, not the site's signature 403, a
# contradiction with what the hub holds (an accepted record, the attempt it observed) 409.
_REFUSED: dict[Verdict, type[DomainError]] = {
    Verdict.INVALID: Invalid,
    Verdict.BAD_SIGNATURE: Forbidden,
    Verdict.CONFLICT: Conflict,
    Verdict.NOT_OURS: Conflict,
    Verdict.NEVER_RAN: Conflict,
    Verdict.LONGER_THAN_OBSERVED: Conflict,
}


@router.post("/sites/{site_id}/usage", response_model=UsageVerdict, status_code=201)
def post_usage(
    site_id: str,
    body: SignedUsage,
    response: Response,
    who: Principal = Depends(caller),
    h: Hub = Depends(hub),
) -> UsageVerdict:
    """A usage record signed with the site's usage key, by itself (agents also send it with an
    attempt's final update). Kept as evidence whatever the verdict; refused: 400/403/409 with
    the verdict as the error code and the record's field. A duplicate of an accepted record is
    a no-op (200). A record accepted after its task was settled does not change the bill."""
    sid = agent_for(site_id, who)
    with h.store.tx() as s:
        j = usage.take(s, sid, body.model_dump(mode="json"), time.time())
    # Raised after the commit, so that the refused record stays as evidence.
    if j.verdict.refused:
        raise _REFUSED[j.verdict](
            f"usage record refused ({j.verdict.value}): {j.reason}",
            code=j.verdict.value,
            field=f"record.{j.field}" if j.field else "record",
            verdict=j.verdict.value,
        )
    if j.verdict is Verdict.DUPLICATE:
        response.status_code = 200
    return UsageVerdict(verdict=j.verdict.value, reason=j.reason, record_id=j.record_id)


@router.get("/tasks/{task_id}/usage", response_model=UsageList)
def task_usage(task_id: str, who: Principal = Depends(caller), h: Hub = Depends(hub)) -> UsageList:
    """Every usage record received about the task's attempts, with its verdict, oldest first
    (the task's organisation, or an admin)."""
    with h.store.read() as s:
        task = store.get_task(s, who, task_id)
        return UsageList.model_validate({"records": usage.of_task(s, task.id)})


@router.get("/sites/{site_id}/usage", response_model=UsageList)
def site_usage(
    site_id: str,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    who: Principal = Depends(provider_admin),
    h: Hub = Depends(hub),
) -> UsageList:
    """The newest usage records the site's agent sent, with their verdicts (the site's own
    provider organisation, or an admin)."""
    with h.store.read() as s:
        site = registry.get_site(s, site_id)
        who.must_see(site.org_id, "site", site_id, "site_id")
        return UsageList.model_validate({"records": usage.of_sites(s, [site.id], limit)})
