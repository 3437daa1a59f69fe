"""Providers, sites and pools in the store: registration, heartbeats, liveness, discovery."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, undefer

from cpnet import ident, sched
from cpnet.errors import Conflict, Forbidden, Invalid, NotFound
from cpnet.ident.labels import slug_label, unique_label
from cpnet.market import prices as market_prices
from cpnet.market import sla as market_sla
from cpnet.measure import scu, vector
from cpnet.registry.model import (
    Capacity,
    Hardware,
    Heartbeat,
    Measurements,
    PoolDescriptor,
    PoolRecord,
    PoolType,
    Price,
    ProviderRecord,
    Region,
    RegisterResult,
    Registration,
    SiteRecord,
)
from cpnet.sched.score import used_share
from cpnet.store import audit, usage
from cpnet.store import prices as price_store
from cpnet.store import sla as sla_store
from cpnet.store.tables import Pool, Provider, Site


def ts(t: float | None) -> datetime | None:
    """An epoch float as an aware UTC datetime (None stays None)."""
    return None if t is None else datetime.fromtimestamp(t, UTC)


def _authority_labels(authority: str) -> list[str]:
    return [part for part in authority.lower().split(".") if part]


# ---- providers and sites ----


def create_provider(s: Session, org_id: str, name: str, authority: str, now: float) -> Provider:
    """Create a provider (or return the existing one of that name: creation is idempotent)."""
    existing = s.scalar(select(Provider).where(Provider.org_id == org_id, Provider.name == name))
    if existing is not None:
        return existing
    taken = set(s.scalars(select(Provider.label)))
    label = unique_label(slug_label(name), taken)
    pid = ident.make([*_authority_labels(authority), label], ident.IdType.NONE).text
    row = Provider(id=pid, org_id=org_id, name=name, label=label, created_at=now)
    s.add(row)
    s.flush()
    audit.created(s, row.id)
    return row


def get_provider(s: Session, provider_id: str) -> Provider:
    row = s.get(Provider, provider_id.lower())
    if row is None:
        raise NotFound(f"no provider {provider_id!r}", field="provider_id")
    return row


def list_providers(s: Session, org_id: str | None) -> list[Provider]:
    q = select(Provider).order_by(Provider.created_at)
    if org_id is not None:
        q = q.where(Provider.org_id == org_id)
    return list(s.scalars(q))


def provider_record(p: Provider) -> ProviderRecord:
    return ProviderRecord(
        id=p.id,
        name=p.name,
        org_id=p.org_id,
        created_at=ts(p.created_at),
        retired=p.retired_at is not None,
    )


def create_site(
    s: Session,
    provider: Provider,
    *,
    name: str,
    type: str,
    region: Region,
    now: float,
) -> Site:
    """Create a site under a provider (idempotent by name; its region may be updated)."""
    existing = s.scalar(select(Site).where(Site.provider_id == provider.id, Site.name == name))
    if existing is not None:
        if existing.type != type:
            raise Conflict(
                f"site {name!r} exists with type {existing.type}; its identifier is typed, "
                "so create a new site for another type",
                field="type",
            )
        existing.region_code, existing.region_name = region.code, region.name
        existing.lat, existing.lon = region.lat, region.lon
        return existing
    taken = set(s.scalars(select(Site.label).where(Site.provider_id == provider.id)))
    label = unique_label(slug_label(name), taken)
    prefix = provider.id.rsplit(".", 1)[0].split(".")
    sid = ident.make([*prefix, label], ident.IdType.from_pool_type(type)).text
    row = Site(
        id=sid,
        provider_id=provider.id,
        org_id=provider.org_id,
        name=name,
        label=label,
        type=type,
        region_code=region.code,
        region_name=region.name,
        lat=region.lat,
        lon=region.lon,
        agent={},
        created_at=now,
    )
    s.add(row)
    s.flush()
    audit.created(s, row.id)
    return row


def get_site(s: Session, site_id: str) -> Site:
    row = s.get(Site, site_id.lower())
    if row is None:
        raise NotFound(f"no site {site_id!r}", field="site_id")
    return row


def list_sites(s: Session, org_id: str | None) -> list[Site]:
    q = select(Site).order_by(Site.created_at)
    if org_id is not None:
        q = q.where(Site.org_id == org_id)
    return list(s.scalars(q))


def site_record(s: Session, site: Site) -> SiteRecord:
    pools = list(s.scalars(select(Pool.id).where(Pool.site_id == site.id).order_by(Pool.name)))
    return SiteRecord(
        id=site.id,
        name=site.name,
        provider_id=site.provider_id,
        type=PoolType(site.type),
        region=_region(site),
        endpoint=site.endpoint,
        online=site.online,
        last_heartbeat=ts(site.last_heartbeat),
        created_at=ts(site.created_at),
        retired=site.retired_at is not None,
        pools=pools,
    )


def _region(site: Site) -> Region:
    return Region(code=site.region_code, name=site.region_name, lat=site.lat, lon=site.lon)


# ---- agents: registration and heartbeats ----


def capacity_of(desc: PoolDescriptor, probe: vector.ProbeReport | None) -> dict:
    """The pool's capacity vector (with SCU rates) from its descriptor and last probe, as JSON."""
    hw = desc.hardware
    acc = hw.accelerators[0] if hw.accelerators else None
    vec = vector.build(
        cpu_model=hw.cpu_model,
        cpu_cores=hw.cpu_cores,
        memory_gb=hw.memory_gb,
        disk_gb=hw.disk_gb,
        accelerator_model=acc.model if acc else None,
        accelerator_count=hw.gpus,
        accelerator_memory_gb=acc.memory_gb if acc else 0.0,
        declared=desc.declared,
        probe=probe,
    )
    return scu.rate_all(vec).model_dump(mode="json")


def request_measurement(s: Session, pool_id: str, now: float) -> float:
    """Ask the pool's agent to probe it again (told in its next heartbeat); returns the time."""
    row = s.get(Pool, pool_id.lower())
    if row is None or row.retired_at is not None:
        raise NotFound(f"no pool {pool_id!r}", field="pool_id")
    row.measure_requested = now
    return now


def pending_measurements(s: Session, site_id: str) -> dict[str, float]:
    """The site's pools whose measurement was asked for and not yet reported: name -> when."""
    q = select(Pool.name, Pool.measure_requested).where(
        Pool.site_id == site_id, Pool.measure_requested.is_not(None)
    )
    return {name: at for name, at in s.execute(q)}


def capacity_notes(cap: dict) -> list[str]:
    """What of a capacity vector could not be used, in sentences for the pool's operator."""
    notes = []
    for part in (cap.get("cpu"), cap.get("accelerator")):
        if part and part.get("model") and part.get("catalogue") is None:
            notes.append(f"{part['kind']}: {part['match']}")
    notes += [f"{f['field']}: {f['reason']}" for f in cap.get("flags", [])]
    return notes


def _probe(row: Pool) -> vector.ProbeReport | None:
    return None if row.probe is None else vector.ProbeReport.model_validate(row.probe)


def record_measurements(s: Session, site_id: str, m: Measurements, now: float) -> dict[str, dict]:
    """Store each pool's probe report and rebuild its capacity vector; return the vectors."""
    site = get_site(s, site_id)
    pools = {p.name: p for p in s.scalars(select(Pool).where(Pool.site_id == site.id))}
    missing = [pm.name for pm in m.pools if pm.name not in pools]
    if missing:
        raise NotFound(f"site {site.id} has no pool {missing[0]!r}", field="pools")
    out = {}
    for pm in m.pools:
        row = pools[pm.name]
        probe = pm.probe.model_copy(update={"measured_at": pm.probe.measured_at or now})
        row.probe = probe.model_dump(mode="json")
        row.capacity = capacity_of(PoolDescriptor.model_validate(row.descriptor), probe)
        row.scu = row.capacity["scu"]
        if row.measure_requested is not None and probe.measured_at >= row.measure_requested:
            row.measure_requested = None  # a probe that started after the request answers it
        out[pm.name] = row.capacity
    return out


def register(
    s: Session,
    site_id: str,
    reg: Registration,
    now: float,
    sla_min_window_s: float = market_sla.MIN_WINDOW_S,
) -> RegisterResult:
    """Record an agent's start: its endpoint and pools. Same names keep the same identifiers.
    A pool that comes online is recorded as a liveness transition; SLA terms in a pool's
    descriptor are appended to its terms when the agent changed them (store/sla.py)."""
    site = get_site(s, site_id)
    if site.retired_at is not None:
        raise Forbidden(f"site {site.id} is retired", field="site_id")
    site.endpoint = reg.endpoint
    site.agent = {"version": reg.agent_version, "backend": reg.backend}
    if reg.probe_url:
        site.agent["probe_url"] = reg.probe_url
    site.heartbeat_interval_s = reg.heartbeat_interval_s
    site.last_heartbeat = now
    if reg.usage_key is not None:
        usage.register_key(s, site.id, reg.usage_key, now)
    site.online = True
    q = select(Pool).where(Pool.site_id == site.id).options(undefer(Pool.probe))
    existing = {p.name: p for p in s.scalars(q)}
    taken = {p.label for p in existing.values()}
    ids: dict[str, str] = {}
    notes: dict[str, list[str]] = {}
    came_online: list[str] = []
    went_offline: list[str] = []
    declared: list[tuple[str, int, market_sla.Terms]] = []
    for n, desc in enumerate(reg.pools):
        if desc.sla is not None:
            try:
                terms = sla_store.terms_from(desc.sla).check(sla_min_window_s)
            except market_sla.TermsError as exc:
                raise Invalid(exc.message, field=f"pools.{n}.sla.{exc.field}") from None
            declared.append((desc.name, n, terms))
        hw = desc.hardware
        row = existing.get(desc.name)
        if row is None:
            label = unique_label(slug_label(desc.name), taken)
            taken.add(label)
            pid = ident.make(
                [*site.id.rsplit(".", 1)[0].split("."), label],
                ident.IdType.from_pool_type(desc.type.value),
            ).text
            row = Pool(
                id=pid,
                site_id=site.id,
                name=desc.name,
                label=label,
                created_at=now,
                reserved_cpu=0.0,
                reserved_ram=0.0,
                reserved_disk=0.0,
                reserved_gpus=0,
                queue_length=0,
                running=0,
            )
            s.add(row)
        elif row.retired_at is not None:
            raise Conflict(
                f"pool {desc.name!r} ({row.id}) was retired; register it under a new name",
                field="pools",
            )
        row.type = desc.type.value
        row.descriptor = desc.model_dump(mode="json")
        row.capacity = capacity_of(desc, _probe(row))
        row.scu = row.capacity["scu"]
        if pool_notes := capacity_notes(row.capacity):
            notes[desc.name] = pool_notes
        row.gpu_model = hw.gpu_model
        row.total_cpu, row.total_ram = hw.cpu_cores, hw.memory_gb
        row.total_disk, row.total_gpus = hw.disk_gb, hw.gpus
        # Until the first heartbeat, assume everything not reserved by the hub is free.
        row.free_cpu = max(0.0, hw.cpu_cores - (row.reserved_cpu or 0.0))
        row.free_ram = max(0.0, hw.memory_gb - (row.reserved_ram or 0.0))
        row.free_disk = max(0.0, hw.disk_gb - (row.reserved_disk or 0.0))
        row.free_gpus = max(0, hw.gpus - (row.reserved_gpus or 0))
        if not row.online:
            came_online.append(row.id)
        row.online = True
        row.last_heartbeat = now
        ids[desc.name] = row.id
    # Pools this agent no longer offers leave discovery (they keep their identifiers).
    for name, row in existing.items():
        if name not in ids:
            if row.online:
                went_offline.append(row.id)
            row.online = False
    s.flush()
    sla_store.mark(s, came_online, True, now)
    sla_store.mark(s, went_offline, False, now)
    for name, _, terms in declared:
        sla_store.declared_by_agent(s, ids[name], terms, now)
    return RegisterResult(
        site_id=site.id,
        provider_id=site.provider_id,
        pools=ids,
        heartbeat_interval_s=reg.heartbeat_interval_s,
        capacity_notes=notes,
    )


def heartbeat(s: Session, site_id: str, hb: Heartbeat, now: float) -> bool:
    """Record live state; returns True if the site was offline and came back."""
    site = get_site(s, site_id)
    came_back = not site.online
    site.last_heartbeat = now
    site.online = True
    pools = {p.name: p for p in s.scalars(select(Pool).where(Pool.site_id == site.id))}
    for live in hb.pools:
        row = pools.get(live.name)
        if row is None or row.retired_at is not None:
            continue
        if not row.online:
            came_back = True
            sla_store.mark(s, [row.id], True, now)
        row.free_cpu, row.free_ram = live.free.cpu_cores, live.free.ram_gb
        row.free_disk, row.free_gpus = live.free.disk_gb, live.free.gpus
        row.queue_length, row.running = live.queue_length, live.running
        row.online = True
        row.last_heartbeat = now
    return came_back


def sweep_liveness(
    s: Session,
    now: float,
    missed: int,
    not_before: float,
    heard: Mapping[str, float] | None = None,
) -> list[str]:
    """Mark sites (and their pools) offline after `missed` heartbeat intervals; return their ids.

    `not_before` is when this hub process started (or last stalled): a hub that was itself down
    must give agents a full timeout after its restart before calling them lost. `heard`: when
    this hub last received any request from a site's agent (a sign of life even before the
    heartbeat it may be carrying is committed).
    """
    heard = heard or {}
    lost: list[str] = []
    for site in s.scalars(select(Site).where(Site.online.is_(True))):
        last = max(site.last_heartbeat or 0.0, heard.get(site.id, 0.0), not_before)
        if now - last > missed * site.heartbeat_interval_s:
            site.online = False
            gone = s.scalars(
                select(Pool.id).where(Pool.site_id == site.id, Pool.online.is_(True))
            ).all()
            s.execute(update(Pool).where(Pool.site_id == site.id).values(online=False))
            sla_store.mark(s, gone, False, now)
            lost.append(site.id)
    return lost


# ---- pools: discovery, retirement ----


@dataclass(frozen=True, slots=True)
class PoolFilter:
    type: str | None = None
    region: str | None = None
    accelerator: str | None = None
    min_gpus: int | None = None
    min_cores: float | None = None
    min_memory_gb: float | None = None
    labels: tuple[tuple[str, str], ...] = ()
    online: bool | None = True  # None = any
    profile: str | None = None  # a workload profile: fills scu_rate and price_per_scu_hour
    min_scu: float | None = None  # at least this SCU rate for ``profile``


def _free(p: Pool) -> Capacity:
    # What a new task could get now: the backend's own report, bounded by what the hub has
    # not yet reserved (the backend may not have seen the newest placements yet).
    return Capacity(
        cpu_cores=max(0.0, min(p.free_cpu, p.total_cpu - p.reserved_cpu)),
        ram_gb=max(0.0, min(p.free_ram, p.total_ram - p.reserved_ram)),
        disk_gb=max(0.0, min(p.free_disk, p.total_disk - p.reserved_disk)),
        gpus=max(0, min(p.free_gpus, p.total_gpus - p.reserved_gpus)),
    )


def pool_record(p: Pool, site: Site, provider: Provider) -> PoolRecord:
    desc = p.descriptor
    return PoolRecord(
        id=p.id,
        name=p.name,
        site_id=site.id,
        site_name=site.name,
        provider_id=provider.id,
        provider_name=provider.name,
        type=PoolType(p.type),
        region=_region(site),
        hardware=Hardware.model_validate(desc["hardware"]),
        labels=desc.get("labels", {}),
        price=Price.model_validate(desc.get("price", {})),
        can_run_images=bool(desc.get("can_run_images", False)),
        endpoint=site.endpoint,
        total=Capacity(
            cpu_cores=p.total_cpu, ram_gb=p.total_ram, disk_gb=p.total_disk, gpus=p.total_gpus
        ),
        free=_free(p),
        reserved=Capacity(
            cpu_cores=p.reserved_cpu,
            ram_gb=p.reserved_ram,
            disk_gb=p.reserved_disk,
            gpus=p.reserved_gpus,
        ),
        queue_length=p.queue_length,
        running=p.running,
        online=p.online and p.retired_at is None,
        last_heartbeat=ts(p.last_heartbeat),
        created_at=ts(p.created_at),
        capacity=p.capacity,
    )


def _joined(s: Session):  # type: ignore[no-untyped-def]
    return (
        select(Pool, Site, Provider)
        .options(undefer(Pool.capacity))
        .join(Site, Pool.site_id == Site.id)
        .join(Provider, Site.provider_id == Provider.id)
    )


def list_pools(s: Session, f: PoolFilter, now: float | None = None) -> list[PoolRecord]:
    """Discovery: live (or all) pools matching every given filter, by identifier.

    With ``now``, each pool's ``price`` is its price book's on-demand entry in force then, with
    its dynamic rule applied (the price the scheduler uses), else the declared one.
    """
    books = price_store.entries_in_force(s, now) if now is not None else {}
    scores = sla_store.scores(s)
    with_terms = sla_store.pools_with_terms(s)
    q = _joined(s).where(Pool.retired_at.is_(None))
    if f.online is not None:
        q = q.where(Pool.online.is_(f.online))
    if f.type:
        q = q.where(Pool.type == f.type)
    if f.region:
        q = q.where(or_(Site.region_code.startswith(f.region), Site.region_name == f.region))
    if f.accelerator:
        q = q.where(Pool.gpu_model.ilike(f"%{f.accelerator}%"))
    out = []
    for pool, site, prov in s.execute(q.order_by(Pool.id)):
        rec = pool_record(pool, site, prov)
        rec.reputation = scores.get(rec.id)
        rec.sla = rec.id in with_terms
        if now is not None and rec.id in books:
            priced(rec, books[rec.id], now)
        if f.min_gpus is not None and rec.free.gpus < f.min_gpus:
            continue
        if f.min_cores is not None and rec.free.cpu_cores < f.min_cores:
            continue
        if f.min_memory_gb is not None and rec.free.ram_gb < f.min_memory_gb:
            continue
        if any(rec.labels.get(k) != v for k, v in f.labels):
            continue
        if f.profile is not None:
            with_scu(rec, f.profile)
            if f.min_scu is not None and (rec.scu_rate or 0.0) < f.min_scu:
                continue
        out.append(rec)
    return out


def priced(rec: PoolRecord, book: Sequence[market_prices.Entry], now: float) -> PoolRecord:
    """Set the record's price to its book's on-demand entry in force at ``now``, the dynamic
    rule applied at its utilisation (reserved over total), and keep the entry's SCU-hour prices
    for ``with_scu``."""
    t, r = rec.total, rec.reserved
    total = sched.Resources(t.cpu_cores, t.ram_gb, t.disk_gb, t.gpus)
    free = sched.Resources(
        max(0.0, t.cpu_cores - r.cpu_cores),
        max(0.0, t.ram_gb - r.ram_gb),
        max(0.0, t.disk_gb - r.disk_gb),
        max(0, t.gpus - r.gpus),
    )
    gpu_model = rec.hardware.gpu_model
    p = market_prices.price_at(book, now, used_share(total, free), gpu_model=gpu_model)
    if p is not None:
        # Not validated again: a dynamic price may pass the declared price's upper limit.
        rec.price = Price.model_construct(
            currency=p.currency,
            cpu_core_hour=p.cpu_core_hour,
            ram_gb_hour=p.ram_gb_hour,
            gpu_hour=p.gpu_hour,
        )
        rec.scu_hour_prices = dict(p.scu_hour) or None
    return rec


def with_scu(rec: PoolRecord, profile: str) -> PoolRecord:
    """Fill the record's SCU rate and price per SCU-hour for a profile (0 rate: no price)."""
    rate = (rec.capacity or {}).get("scu", {}).get(profile, 0.0)
    p, t = rec.price, rec.total
    price = sched.Price(p.currency, p.cpu_core_hour, p.ram_gb_hour, p.gpu_hour)
    hourly = price.hourly(sched.Resources(t.cpu_cores, t.ram_gb, t.disk_gb, t.gpus))  # whole pool
    rec.scu_rate = rate
    published = (rec.scu_hour_prices or {}).get(profile)
    per = published if published is not None else scu.price_per_scu_hour(hourly, rate)
    rec.price_per_scu_hour = None if per is None else float(f"{per:.4g}")
    return rec


def get_pool(s: Session, pool_id: str, now: float | None = None) -> PoolRecord:
    """One pool as discovery shows it; with ``now``, priced from its book (see list_pools)."""
    row = s.execute(_joined(s).where(Pool.id == pool_id.lower())).first()
    if row is None:
        raise NotFound(f"no pool {pool_id!r}", field="pool_id")
    rec = pool_record(*row)
    rec.reputation = sla_store.scores(s, (rec.id,)).get(rec.id)
    rec.sla = sla_store.in_force(s, rec.id) is not None
    if now is not None:
        book = price_store.entries_in_force(s, now, (rec.id,)).get(rec.id)
        if book:
            priced(rec, book, now)
    return rec


def pool_owner_org(s: Session, pool_id: str) -> str:
    row = s.execute(
        select(Site.org_id).join(Pool, Pool.site_id == Site.id).where(Pool.id == pool_id.lower())
    ).first()
    if row is None:
        raise NotFound(f"no pool {pool_id!r}", field="pool_id")
    return row[0]


def retire_pool(s: Session, pool_id: str, now: float) -> PoolRecord:
    row = s.get(Pool, pool_id.lower())
    if row is None:
        raise NotFound(f"no pool {pool_id!r}", field="pool_id")
    if row.retired_at is None:
        if row.online:
            sla_store.mark(s, [row.id], False, now)
        row.retired_at = now
        row.online = False
    return get_pool(s, pool_id)


def any_room(s: Session) -> bool:
    """Whether some online pool of an online site has a CPU core not reserved: without one no
    placement can succeed (a pool view's available cores are its total less its reserved)."""
    return s.connection().execute(_ANY_ROOM).first() is not None


_ANY_ROOM = (
    select(Pool.id)
    .join(Site, Pool.site_id == Site.id)
    .where(
        Pool.retired_at.is_(None),
        Pool.online.is_(True),
        Site.online.is_(True),
        Pool.total_cpu - Pool.reserved_cpu > 0,
    )
    .limit(1)
)


def live_pools(s: Session, *, online_only: bool = True) -> list[tuple[Pool, Site]]:
    """Every online (or every unretired) pool with its site: the scheduler's snapshot source."""
    q = select(Pool, Site).join(Site, Pool.site_id == Site.id).where(Pool.retired_at.is_(None))
    if online_only:
        q = q.where(Pool.online.is_(True), Site.online.is_(True))
    return [(p, site) for p, site in s.execute(q)]


def site_regions(s: Session) -> dict[str, str]:
    """Every site's region code, by site id (where its network place lies)."""
    return dict(s.execute(select(Site.id, Site.region_code)).tuples().all())
