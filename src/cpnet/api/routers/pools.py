"""Discovery of live pools, and retiring a pool."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from cpnet.api.deps import caller, hub, provider_admin
from cpnet.auth.model import Principal
from cpnet.errors import Invalid, NotFound
from cpnet.hub import auctions
from cpnet.hub.service import Hub
from cpnet.measure import catalogue, scu
from cpnet.registry.model import PoolRecord, PoolType
from cpnet.store import registry

router = APIRouter(prefix="/v1", tags=["pools"])


def parse_pairs(values: list[str], field: str) -> tuple[tuple[str, str], ...]:
    """`k=v` strings from the query into pairs (400 naming the field if one has no '=')."""
    out = []
    for v in values:
        k, sep, val = v.partition("=")
        if not sep or not k:
            raise Invalid(f"{field} must look like key=value, got {v!r}", field=field)
        out.append((k, val))
    return tuple(out)


def check_profile(profile: str | None) -> None:
    """A 400 naming ``profile`` (and the known ones) for a workload profile that does not exist."""
    if profile is not None:
        try:
            scu.profile(profile)
        except scu.UnknownProfile as exc:
            raise Invalid(str(exc), field="profile") from None


@router.get("/pools")
def list_pools(
    type: PoolType | None = None,
    region: Annotated[str | None, Query(max_length=64)] = None,
    accelerator: Annotated[str | None, Query(max_length=128)] = None,
    min_gpus: Annotated[int | None, Query(ge=0)] = None,
    min_cores: Annotated[float | None, Query(ge=0)] = None,
    min_memory_gb: Annotated[float | None, Query(ge=0)] = None,
    label: Annotated[list[str], Query(max_length=32)] = [],  # noqa: B006
    online: Literal["true", "false", "any"] = "true",
    profile: Annotated[str | None, Query(max_length=64)] = None,
    min_scu: Annotated[float | None, Query(ge=0, le=1e12)] = None,
    who: Principal = Depends(caller),
    h: Hub = Depends(hub),
) -> dict[str, list[PoolRecord]]:
    """Live pools matching every filter (free-capacity minimums use what is free now).

    With ``profile`` each pool carries its SCU rate and price per SCU-hour for that workload
    profile, and ``min_scu`` keeps pools rated at least that many SCU.
    """
    check_profile(profile)
    if profile is None and min_scu is not None:
        raise Invalid("min_scu needs a profile (e.g. profile=ai-train)", field="min_scu")
    f = registry.PoolFilter(
        type=type.value if type else None,
        region=region,
        accelerator=accelerator,
        min_gpus=min_gpus,
        min_cores=min_cores,
        min_memory_gb=min_memory_gb,
        labels=parse_pairs(label, "label"),
        online={"true": True, "false": False, "any": None}[online],
        profile=profile,
        min_scu=min_scu,
    )
    now = time.time()
    with h.store.read() as s:
        recs = registry.list_pools(s, f, now)
        held = auctions.pool_leases(s, who, [r.id for r in recs], now)
    return {"pools": [r.model_copy(update={"leases": held[r.id]}) for r in recs]}


@router.get("/pools/{pool_id}", response_model=PoolRecord)
def get_pool(
    pool_id: str,
    profile: Annotated[str | None, Query(max_length=64)] = None,
    who: Principal = Depends(caller),
    h: Hub = Depends(hub),
) -> PoolRecord:
    check_profile(profile)
    now = time.time()
    with h.store.read() as s:
        rec = registry.get_pool(s, pool_id, now)
        rec = rec.model_copy(update={"leases": auctions.pool_leases(s, who, [rec.id], now)[rec.id]})
    return rec if profile is None else registry.with_scu(rec, profile)


@router.post("/pools/{pool_id}/measure", status_code=202)
def measure_pool(
    pool_id: str, who: Principal = Depends(provider_admin), h: Hub = Depends(hub)
) -> dict:
    """Ask the pool's agent to run its calibration probes again (as a job of the pool).

    The agent hears of it in its next heartbeat; the pool's ``capacity.measured_at`` moves past
    ``requested_at`` when the new report is in.
    """
    with h.store.tx() as s:
        who.must_see(registry.pool_owner_org(s, pool_id), "pool", pool_id, "pool_id")
        at = registry.request_measurement(s, pool_id, time.time())
    return {"pool_id": pool_id.lower(), "requested_at": at}


@router.get("/catalogue/match")
def match_hardware(
    model: Annotated[str, Query(min_length=1, max_length=256)],
    kind: Literal["accelerator", "cpu"] = "accelerator",
    who: Principal = Depends(caller),
) -> dict:
    """The hardware catalogue entry a model string matches (404 naming ``model`` if none)."""
    m = catalogue.match_cpu(model) if kind == "cpu" else catalogue.match_accelerator(model)
    if isinstance(m, catalogue.NoMatch):
        raise NotFound(m.reason, field="model")
    spec = m.spec
    return {"query": model, "kind": kind, "name": spec.name, "note": m.note, "spec": spec}


@router.delete("/pools/{pool_id}", response_model=PoolRecord)
def retire_pool(
    pool_id: str, who: Principal = Depends(provider_admin), h: Hub = Depends(hub)
) -> PoolRecord:
    """Retire a pool: it leaves discovery and its identifier resolves to a signed tombstone."""
    with h.store.tx() as s:
        who.must_see(registry.pool_owner_org(s, pool_id), "pool", pool_id, "pool_id")
        rec = registry.retire_pool(s, pool_id, time.time())
    h.resolver.invalidate([rec.id])
    return rec
