"""The unsigned bodies of resolution records (provider, site, pool, tombstone), read from the
store: one at a time for ``GET /v1/resolve`` (hub/resolver.py), or in bulk for the DNS
publisher (dns/publisher.py), which must produce the same records for the same registry."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from cpnet.ident import tombstone
from cpnet.measure.vector import CapacityVector
from cpnet.registry.model import Capacity, Hardware
from cpnet.store import registry as reg
from cpnet.store.registry import PoolRecord
from cpnet.store.tables import Pool, Provider, Site


def pool_body(rec: PoolRecord, authority: str) -> dict:
    """A live pool's record."""
    return {
        "id": rec.id,
        "kind": "pool",
        "authority": authority,
        "name": rec.name,
        "type": rec.type.value,
        "owner": {"provider_id": rec.provider_id, "provider": rec.provider_name},
        "site_id": rec.site_id,
        "region": rec.region.model_dump(mode="json", exclude_none=True),
        "endpoint": rec.endpoint,
        "capacity": {
            "total": rec.total.model_dump(mode="json"),
            "free": rec.free.model_dump(mode="json"),
            "accelerators": [a.model_dump(mode="json") for a in rec.hardware.accelerators],
            "cpu_model": rec.hardware.cpu_model,
            # The capacity vector in short: parts, catalogue matches, SCU rates.
            "vector": (
                CapacityVector.model_validate(rec.capacity).summary() if rec.capacity else None
            ),
        },
        "state": {"online": rec.online, "queue_length": rec.queue_length, "running": rec.running},
        "price": rec.price.model_dump(mode="json"),
        "sla": None,
    }


def site_body(site: Site, pool_ids: Iterable[str], authority: str) -> dict:
    """A live site's record, naming its pools."""
    return {
        "id": site.id,
        "kind": "site",
        "authority": authority,
        "name": site.name,
        "type": site.type,
        "owner": {"provider_id": site.provider_id},
        "region": {"code": site.region_code, "name": site.region_name},
        "endpoint": site.endpoint,
        "state": {"online": site.online},
        "pools": sorted(pool_ids),
    }


def provider_body(prov: Provider, authority: str) -> dict:
    """A live provider's record."""
    return {
        "id": prov.id,
        "kind": "provider",
        "authority": authority,
        "name": prov.name,
        "org_id": prov.org_id,
    }


def retired_body(id_text: str, retired_at: float, authority: str) -> dict:
    """The tombstone of a retired provider, site or pool."""
    return tombstone(id_text, retired_at=_dt(retired_at), authority=authority)


def pool_dns_body(
    pool_id: str,
    name: str,
    type_: str,
    total: tuple[float, float, float, int],
    descriptor: dict,
    region_code: str,
    endpoint: str,
    authority: str,
) -> dict:
    """A live pool's record reduced to the fields its DNS profile keeps (ident/dns.py), read
    from columns: what ``pool_body`` holds there, without its live state, price and capacity
    vector (tests/unit/hub/test_records.py holds the two profiles equal)."""
    cpu, ram, disk, gpus = total
    hardware = Hardware.model_validate(descriptor["hardware"])
    return {
        "id": pool_id,
        "kind": "pool",
        "authority": authority,
        "name": name,
        "type": type_,
        "region": {"code": region_code},
        "endpoint": endpoint,
        "capacity": {
            "total": Capacity(cpu_cores=cpu, ram_gb=ram, disk_gb=disk, gpus=gpus).model_dump(
                mode="json"
            ),
            "accelerators": [a.model_dump(mode="json") for a in hardware.accelerators],
        },
    }


def bodies(
    s: Session, authority: str, ids: Iterable[str] | None = None, *, dns: bool = False
) -> dict[str, dict]:
    """The record body of every provider, site and pool (``ids`` None), or of those named: a
    site named brings its pools along (their records repeat its endpoint and region), and a
    pool its site (whose record lists its pools). Unknown ids are left out. ``dns``: a live
    pool's body holds only what its DNS profile keeps (``pool_dns_body``), read from columns
    (the DNS publisher's full pass reads every pool: the full record costs 3x as much)."""
    wanted = None if ids is None else {i.lower() for i in ids}
    sites_q, pools_q, provs_q = select(Site), reg._joined(s), select(Provider)
    if wanted is not None:
        site_ids = set(wanted) | set(
            s.scalars(select(Pool.site_id).where(Pool.id.in_(wanted))).all()
        )
        sites_q = sites_q.where(Site.id.in_(site_ids))
        pools_q = pools_q.where(or_(Pool.id.in_(wanted), Pool.site_id.in_(site_ids)))
        provs_q = provs_q.where(Provider.id.in_(wanted))
    out: dict[str, dict] = {}
    for prov in s.scalars(provs_q):
        out[prov.id] = (
            retired_body(prov.id, prov.retired_at, authority)
            if prov.retired_at is not None
            else provider_body(prov, authority)
        )
    sites = list(s.scalars(sites_q))
    pools_of: dict[str, list[str]] = defaultdict(list)
    if sites:
        q = select(Pool.id, Pool.site_id)
        if wanted is not None:
            q = q.where(Pool.site_id.in_([site.id for site in sites]))
        for pool_id, site_id in s.execute(q):
            pools_of[site_id].append(pool_id)
    for site in sites:
        out[site.id] = (
            retired_body(site.id, site.retired_at, authority)
            if site.retired_at is not None
            else site_body(site, pools_of[site.id], authority)
        )
    if dns:
        cols = select(
            Pool.id,
            Pool.name,
            Pool.type,
            Pool.total_cpu,
            Pool.total_ram,
            Pool.total_disk,
            Pool.total_gpus,
            Pool.descriptor,
            Pool.retired_at,
            Site.region_code,
            Site.endpoint,
        ).join(Site, Pool.site_id == Site.id)
        if pools_q.whereclause is not None:  # the ids asked for (none: every pool)
            cols = cols.where(pools_q.whereclause)
        for pid, name, type_, cpu, ram, disk, gpus, desc, retired, code, endpoint in s.execute(
            cols
        ):
            out[pid] = (
                retired_body(pid, retired, authority)
                if retired is not None
                else pool_dns_body(
                    pid, name, type_, (cpu, ram, disk, gpus), desc, code, endpoint, authority
                )
            )
        return out
    for pool, site, prov in s.execute(pools_q):
        out[pool.id] = (
            retired_body(pool.id, pool.retired_at, authority)
            if pool.retired_at is not None
            else pool_body(reg.pool_record(pool, site, prov), authority)
        )
    return out


def changed_since(s: Session, since: float) -> dict[str, bool]:
    """Identifiers created or retired at ``since`` or later (by their rows' own timestamps),
    each with whether it is retired now."""
    out: dict[str, bool] = {}
    for table in (Provider, Site, Pool):
        q = select(table.id, table.retired_at).where(
            or_(table.created_at >= since, table.retired_at >= since)
        )
        out.update((i, retired is not None) for i, retired in s.execute(q))
    return out


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)
