"""Discovery of live pools, and retiring a pool."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from cpnet.api.deps import caller, hub, require
from cpnet.auth.model import Principal, Role
from cpnet.errors import Invalid, NotFound
from cpnet.hub.service import Hub
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
    who: Principal = Depends(caller),
    h: Hub = Depends(hub),
) -> dict[str, list[PoolRecord]]:
    """Live pools matching every filter (free-capacity minimums use what is free now)."""
    f = registry.PoolFilter(
        type=type.value if type else None,
        region=region,
        accelerator=accelerator,
        min_gpus=min_gpus,
        min_cores=min_cores,
        min_memory_gb=min_memory_gb,
        labels=parse_pairs(label, "label"),
        online={"true": True, "false": False, "any": None}[online],
    )
    with h.store.read() as s:
        return {"pools": registry.list_pools(s, f)}


@router.get("/pools/{pool_id}", response_model=PoolRecord)
def get_pool(pool_id: str, who: Principal = Depends(caller), h: Hub = Depends(hub)) -> PoolRecord:
    with h.store.read() as s:
        return registry.get_pool(s, pool_id)


@router.delete("/pools/{pool_id}", response_model=PoolRecord)
def retire_pool(
    pool_id: str, who: Principal = Depends(caller), h: Hub = Depends(hub)
) -> PoolRecord:
    """Retire a pool: it leaves discovery and its identifier resolves to a signed tombstone."""
    require(who, Role.PROVIDER_ADMIN)
    with h.store.tx() as s:
        if not who.is_admin and registry.pool_owner_org(s, pool_id) != who.org_id:
            raise NotFound(f"no pool {pool_id!r}", field="pool_id")
        rec = registry.retire_pool(s, pool_id, time.time())
    h.resolver._cache.clear()
    return rec
