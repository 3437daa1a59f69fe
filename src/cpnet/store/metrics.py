"""What GET /metrics reads from the store at each scrape: a few aggregate queries, each served
by an index or a small table (telemetry/metrics.StoreCollector turns them into metrics)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cpnet.store.tables import LedgerTransfer, Pool, Site, Task
from cpnet.tasks.states import TERMINAL, State

# The states a task can wait or run in: counted through ix_tasks_state_seq (the terminal ones
# grow without bound; their flow is cpnet_attempts_ended_total).
LIVE_STATES = tuple(s.value for s in State if s not in TERMINAL)


@dataclass(frozen=True, slots=True)
class PoolTotals:
    pools: int = 0
    cpu_cores: float = 0.0
    cpu_cores_reserved: float = 0.0
    gpus: int = 0
    gpus_reserved: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    tasks: dict[str, int] = field(default_factory=dict)  # live state -> tasks in it
    sites: dict[bool, int] = field(default_factory=dict)  # online -> sites
    pools: dict[bool, PoolTotals] = field(default_factory=dict)  # online -> totals
    ledger_transfers: int = 0


def snapshot(s: Session) -> Snapshot:
    tasks = {st: 0 for st in LIVE_STATES}
    q = select(Task.state, func.count()).where(Task.state.in_(LIVE_STATES)).group_by(Task.state)
    tasks.update({st: n for st, n in s.execute(q)})
    sites = {True: 0, False: 0}
    q = select(Site.online, func.count()).where(Site.retired_at.is_(None)).group_by(Site.online)
    sites.update({bool(online): n for online, n in s.execute(q)})
    pools = {True: PoolTotals(), False: PoolTotals()}
    q = (
        select(
            Pool.online,
            func.count(),
            func.coalesce(func.sum(Pool.total_cpu), 0.0),
            func.coalesce(func.sum(Pool.reserved_cpu), 0.0),
            func.coalesce(func.sum(Pool.total_gpus), 0),
            func.coalesce(func.sum(Pool.reserved_gpus), 0),
        )
        .where(Pool.retired_at.is_(None))
        .group_by(Pool.online)
    )
    for online, n, cpu, cpu_r, gpus, gpus_r in s.execute(q):
        pools[bool(online)] = PoolTotals(n, float(cpu), float(cpu_r), int(gpus), int(gpus_r))
    transfers = s.scalar(select(func.count()).select_from(LedgerTransfer)) or 0
    return Snapshot(tasks, sites, pools, int(transfers))
