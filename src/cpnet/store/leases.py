"""Leases in the store: created by an award with their hold, settled as their window runs,
cancelled by their owner, and what they hold of their pools for the scheduler.

Every function runs in the caller's transaction; the money rules are market/lease.py's.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cpnet.auth.model import Principal
from cpnet.errors import Conflict, NotFound
from cpnet.market import auction as A
from cpnet.market import lease as M
from cpnet.market import ledger as L
from cpnet.market import money
from cpnet.sched.snapshot import Resources
from cpnet.store import ledger as ledger_store
from cpnet.store.tables import Attempt, LeaseRow, LedgerHold, Task
from cpnet.store.tasks import QueuedTask
from cpnet.tasks.lifecycle import ACTIVE_ATTEMPT
from cpnet.tasks.states import State


def lease_of(r: LeaseRow) -> M.Lease:
    return M.Lease(
        id=r.id,
        request_id=r.auction_id,
        pool_id=r.pool_id,
        org_id=r.org_id,
        provider_org=r.provider_org,
        resources=Resources(r.cpu_cores, r.ram_gb, r.disk_gb, r.gpus),
        start=r.start,
        end=r.end,
        price=int(r.price),
        state=M.LeaseState(r.state),
        charged=int(r.charged),
        paid_to=r.paid_to,
    )


def create(s: Session, lease: M.Lease, user_id: str | None, fee_bps: int, now: float) -> LeaseRow:
    """Write an awarded lease and hold its whole window's cost from its organisation
    (PaymentRequired naming the shortfall when it cannot: the caller rolls back)."""
    r = lease.resources
    row = LeaseRow(
        id=lease.id,
        auction_id=lease.request_id,
        pool_id=lease.pool_id,
        org_id=lease.org_id,
        user_id=user_id,
        provider_org=lease.provider_org,
        cpu_cores=r.cpu_cores,
        ram_gb=r.ram_gb,
        disk_gb=r.disk_gb,
        gpus=r.gpus,
        start=lease.start,
        end=lease.end,
        price=lease.price,
        fee_bps=fee_bps,
        state=lease.state.value,
        charged=0,
        paid_to=None,
        created_at=now,
    )
    s.add(row)
    s.flush()
    ledger_store.open_hold(
        s,
        lease.org_id,
        user_id,
        lease.id,
        lease.total,
        fee_bps,
        now,
        hold_id=lease.hold_id,
        what=f"lease {lease.id}'s hold of its window",
    )
    return row


def get(s: Session, who: Principal, lease_id: str) -> LeaseRow:
    row = s.get(LeaseRow, lease_id)
    if row is None or not (who.sees(row.org_id) or who.sees(row.provider_org)):
        raise NotFound(f"no lease {lease_id!r}", field="lease_id")
    return row


def visible(s: Session, who: Principal, state: str | None = None, limit: int = 200) -> list:
    """The leases the caller's organisation holds or provides (admins: all), newest first."""
    q = select(LeaseRow).order_by(LeaseRow.created_at.desc()).limit(limit)
    if not who.is_admin:
        q = q.where((LeaseRow.org_id == who.org_id) | (LeaseRow.provider_org == who.org_id))
    if state:
        q = q.where(LeaseRow.state == state)
    return list(s.scalars(q))


def settle(
    s: Session, row: LeaseRow, now: float, *, cancel: bool = False, period_s: float = M.PERIOD_S
) -> M.Lease:
    """Settle what the lease owes at ``now`` (its elapsed whole periods; at its end, or when
    cancelled, the rest up to then, and release what is left of its hold). Exactly once per
    part: the lease row moves by compare-and-set on what it had charged, and the transfer ids
    derive from the lease and the period."""
    before = lease_of(row)
    after, transfers, key = M.settle(before, row.fee_bps, now, cancel=cancel, period_s=period_s)
    if key is None:
        return before
    moved = s.execute(
        update(LeaseRow)
        .where(
            LeaseRow.id == row.id,
            LeaseRow.state == M.LeaseState.ACTIVE.value,
            LeaseRow.charged == before.charged,
        )
        .values(state=after.state.value, charged=after.charged, paid_to=after.paid_to)
        .execution_options(synchronize_session=False)
    )
    if moved.rowcount != 1:
        return before  # settled by a concurrent transaction
    over = after.state is not M.LeaseState.ACTIVE
    s.execute(
        update(LedgerHold)
        .where(LedgerHold.id == before.hold_id)
        .values(
            charged=after.charged,
            state=L.HoldState.POSTED.value if over else L.HoldState.PENDING.value,
            settled_at=now if over else None,
        )
        .execution_options(synchronize_session=False)
    )
    since = before.start if before.paid_to is None else before.paid_to
    upto = after.paid_to if after.paid_to is not None else since
    when = datetime.fromtimestamp(since, UTC).strftime("%H:%M:%S")
    detail = {
        "pool_id": row.pool_id,
        "payee_org": row.provider_org,
        "seconds": max(0.0, upto - since),
        "hourly": money.major(int(row.price)),
        "line": f"{before.hold_id}:{key}",
        "label": f"lease {row.id} from {when}",
        "lease_id": row.id,
    }
    ledger_store.post_many(s, transfers, [detail] * len(transfers))
    row.state, row.charged, row.paid_to = after.state.value, after.charged, after.paid_to
    return after


def cancel(s: Session, who: Principal, lease_id: str, now: float) -> LeaseRow:
    """End a lease early (its organisation's members, or an admin): it pays what elapsed, the
    rest of its hold goes back, and its capacity is free from now."""
    row = get(s, who, lease_id)
    if not who.sees(row.org_id):
        raise NotFound(f"no lease {lease_id!r}", field="lease_id")
    if row.state != M.LeaseState.ACTIVE.value:
        raise Conflict(f"lease {lease_id} is {row.state} already", field="lease_id")
    settle(s, row, now, cancel=True)
    return row


def due(s: Session, now: float, period_s: float = M.PERIOD_S) -> list[LeaseRow]:
    """Active leases with something to settle at ``now``: a whole period elapsed since they
    were last settled, or their window over."""
    rows = s.scalars(
        select(LeaseRow).where(
            LeaseRow.state == M.LeaseState.ACTIVE.value,
            (LeaseRow.start + period_s <= now) | (LeaseRow.end <= now),
        )
    )
    return [
        r
        for r in rows
        if now >= r.end or now - (r.paid_to if r.paid_to is not None else r.start) >= period_s
    ]


def held(s: Session, pool_ids: list[str]) -> dict[str, tuple[A.Held, ...]]:
    """The active leases of these pools, as the award rule weighs them."""
    out: dict[str, list[A.Held]] = defaultdict(list)
    if not pool_ids:
        return {}
    for r in s.scalars(
        select(LeaseRow).where(
            LeaseRow.pool_id.in_(pool_ids), LeaseRow.state == M.LeaseState.ACTIVE.value
        )
    ):
        out[r.pool_id].append(
            A.Held(r.start, r.end, Resources(r.cpu_cores, r.ram_gb, r.disk_gb, r.gpus))
        )
    return {k: tuple(v) for k, v in out.items()}


def live(s: Session, now: float) -> list[tuple[M.Lease, Resources]]:
    """The leases holding capacity at ``now``, each with what its tasks use of it (the demand
    of its attempts that have not released their capacity)."""
    rows = list(
        s.scalars(
            select(LeaseRow).where(
                LeaseRow.state == M.LeaseState.ACTIVE.value,
                LeaseRow.start <= now,
                LeaseRow.end > now,
            )
        )
    )
    if not rows:
        return []
    used: dict[str, Resources] = defaultdict(Resources)
    for lease_id, demand in s.execute(
        select(Attempt.lease_id, Attempt.demand).where(
            Attempt.lease_id.in_([r.id for r in rows]), Attempt.released.is_(False)
        )
    ):
        d = demand or {}
        used[lease_id] = used[lease_id] + Resources(
            d.get("cpu_cores", 0.0), d.get("ram_gb", 0.0), d.get("disk_gb", 0.0), d.get("gpus", 0)
        )
    return [(lease_of(r), used[r.id]) for r in rows]


def queued_of(s: Session, org_ids: list[str], limit: int) -> list[tuple[str, QueuedTask]]:
    """The waiting tasks of these organisations, oldest first, with their organisation."""
    placed = (
        select(Attempt.id)
        .where(Attempt.task_id == Task.id, Attempt.state.in_([x.value for x in ACTIVE_ATTEMPT]))
        .exists()
    )
    q = (
        select(Task.org_id, Task.id, Task.attempts, Task.spec, Task.seq)
        .where(Task.state == State.QUEUED.value, Task.org_id.in_(org_ids), ~placed)
        .order_by(Task.seq)
        .limit(limit)
    )
    return [(org, QueuedTask(tid, n, spec, seq)) for org, tid, n, spec, seq in s.execute(q)]


def on_pools(s: Session, now: float) -> dict[str, list[LeaseRow]]:
    """Active leases (in their window or still to come) by pool, for discovery."""
    out: dict[str, list[LeaseRow]] = defaultdict(list)
    for r in s.scalars(
        select(LeaseRow).where(LeaseRow.state == M.LeaseState.ACTIVE.value, LeaseRow.end > now)
    ):
        out[r.pool_id].append(r)
    return out
