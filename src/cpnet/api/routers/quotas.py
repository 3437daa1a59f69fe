"""Organisations' quotas: queued tasks, and cores and GPUs of queued and running tasks."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends

from cpnet.api.deps import admin, caller, hub
from cpnet.auth.model import Principal
from cpnet.hub.service import Hub
from cpnet.limits.quota import Quota
from cpnet.limits.wire import QuotaUpdate, QuotaView
from cpnet.store import accounts, quotas

router = APIRouter(prefix="/v1", tags=["accounts"])


def _view(h: Hub, org_id: str) -> QuotaView:
    with h.store.read() as s:
        accounts.get_org(s, org_id)
        q, u = quotas.get(s, org_id), quotas.usage(s, org_id)
    return QuotaView(
        org_id=org_id,
        queued=q.queued,
        cores=q.cores,
        gpus=q.gpus,
        used_queued=u.queued,
        used_cores=u.cores,
        used_gpus=u.gpus,
    )


@router.get("/accounts/{org_id}/quota", response_model=QuotaView)
def get_quota(org_id: str, who: Principal = Depends(caller), h: Hub = Depends(hub)) -> QuotaView:
    """The organisation's quotas and use (its own members and admins)."""
    who.must_see(org_id, "organisation", org_id, "org_id")
    return _view(h, org_id)


@router.put("/accounts/{org_id}/quota", response_model=QuotaView)
def set_quota(
    org_id: str, body: QuotaUpdate, _: Principal = Depends(admin), h: Hub = Depends(hub)
) -> QuotaView:
    """Set the organisation's quotas (admin); all null removes them. Tasks already accepted
    stay; new ones are checked against the new quotas."""
    with h.store.tx() as s:
        accounts.get_org(s, org_id)
        quotas.put(s, org_id, Quota(body.queued, body.cores, body.gpus), time.time())
    return _view(h, org_id)
