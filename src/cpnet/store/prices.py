"""Pools' price books: append-only entries (the history), and the ones in force at a time."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from cpnet.market import prices
from cpnet.market.records import DynamicRuleIn, PriceEntryRecord, utc
from cpnet.store.tables import PriceEntry


def add(
    s: Session, pool_id: str, entries: Sequence[prices.Entry], set_by: str, now: float
) -> list[PriceEntry]:
    """Append entries to a pool's book (validated by the caller); never changes older rows."""
    rows = []
    for e in entries:
        row = PriceEntry(
            pool_id=pool_id,
            kind=e.kind,
            currency=e.currency,
            cpu_core_hour=e.cpu_core_hour,
            ram_gb_hour=e.ram_gb_hour,
            gpu_hour=e.gpu_hour,
            gpu_models=dict(e.gpu_models),
            scu_hour=dict(e.scu_hour),
            dynamic=None
            if e.dynamic is None
            else {
                "target": e.dynamic.target,
                "k": e.dynamic.k,
                "floor": e.dynamic.floor,
                "cap": e.dynamic.cap,
            },
            valid_from=e.valid_from,
            valid_until=e.valid_until,
            set_by=set_by,
            set_at=now,
        )
        s.add(row)
        rows.append(row)
    s.flush()
    return rows


def entry(row: PriceEntry) -> prices.Entry:
    """A stored row as the pure entry (its id is the publication order)."""
    d = row.dynamic
    return prices.Entry(
        kind=row.kind,
        currency=row.currency,
        cpu_core_hour=row.cpu_core_hour,
        ram_gb_hour=row.ram_gb_hour,
        gpu_hour=row.gpu_hour,
        gpu_models=tuple((row.gpu_models or {}).items()),
        scu_hour=tuple(sorted((row.scu_hour or {}).items())),
        valid_from=row.valid_from,
        valid_until=row.valid_until,
        dynamic=None
        if d is None
        else prices.DynamicRule(d["target"], d["k"], d["floor"], d["cap"]),
        seq=row.id,
    )


def record(row: PriceEntry, in_force: bool = False) -> PriceEntryRecord:
    return PriceEntryRecord(
        id=row.id,
        pool_id=row.pool_id,
        kind=row.kind,
        currency=row.currency,
        cpu_core_hour=row.cpu_core_hour,
        ram_gb_hour=row.ram_gb_hour,
        gpu_hour=row.gpu_hour,
        gpu_models=row.gpu_models or {},
        scu_hour=row.scu_hour or {},
        dynamic=None if row.dynamic is None else DynamicRuleIn(**row.dynamic),
        valid_from=utc(row.valid_from),
        valid_until=None if row.valid_until is None else utc(row.valid_until),
        set_by=row.set_by,
        set_at=utc(row.set_at),
        in_force=in_force,
    )


def history(s: Session, pool_id: str) -> list[PriceEntry]:
    """Every entry ever published for the pool, oldest first."""
    q = select(PriceEntry).where(PriceEntry.pool_id == pool_id).order_by(PriceEntry.id)
    return list(s.scalars(q))


def rows_in_force(s: Session, at: float) -> dict[str, list[PriceEntry]]:
    """Per pool, the entry rows whose period covers ``at`` (for showing every pool's prices)."""
    q = select(PriceEntry).where(
        PriceEntry.valid_from <= at,
        or_(PriceEntry.valid_until.is_(None), PriceEntry.valid_until > at),
    )
    out: dict[str, list[PriceEntry]] = {}
    for row in s.scalars(q):
        out.setdefault(row.pool_id, []).append(row)
    return out


_COLUMNS = (
    PriceEntry.id,
    PriceEntry.pool_id,
    PriceEntry.kind,
    PriceEntry.currency,
    PriceEntry.cpu_core_hour,
    PriceEntry.ram_gb_hour,
    PriceEntry.gpu_hour,
    PriceEntry.gpu_models,
    PriceEntry.scu_hour,
    PriceEntry.dynamic,
    PriceEntry.valid_from,
    PriceEntry.valid_until,
)


def entries_in_force(
    s: Session, now: float, pool_ids: Sequence[str] | None = None
) -> dict[str, list[prices.Entry]]:
    """Per pool, the entries whose period covers ``now`` (market/prices picks the one in force
    among them), as pure entries; pools without any are absent. Read as plain rows: the
    scheduler's pass reads this for every pool each time, and ORM objects cost several times
    more."""
    q = select(*_COLUMNS).where(
        PriceEntry.valid_from <= now,
        or_(PriceEntry.valid_until.is_(None), PriceEntry.valid_until > now),
    )
    if pool_ids is not None:
        q = q.where(PriceEntry.pool_id.in_(list(pool_ids)))
    out: dict[str, list[prices.Entry]] = {}
    for seq, pool_id, kind, cur, cpu, ram, gpu, models, scu, d, start, until in s.execute(q):
        out.setdefault(pool_id, []).append(
            prices.Entry(
                kind=kind,
                currency=cur,
                cpu_core_hour=cpu,
                ram_gb_hour=ram,
                gpu_hour=gpu,
                gpu_models=tuple(models.items()) if models else (),
                scu_hour=tuple(sorted(scu.items())) if scu else (),
                valid_from=start,
                valid_until=until,
                dynamic=None
                if d is None
                else prices.DynamicRule(d["target"], d["k"], d["floor"], d["cap"]),
                seq=seq,
            )
        )
    return out
