"""Leases: capacity an auction awarded, held for one organisation's tasks in a window, and the
money that moves for it (pure).

At the award the whole window's cost is **held** (org → escrow, a ledger hold whose id is
``lease:<lease id>``). As the window runs the hub **settles** what has elapsed, one period at a
time (``PERIOD_S``): the charge up to a moment is the lease's price × the seconds elapsed,
rounded half-even once (``cost_to``), so the periods' charges add up to the window's cost
exactly; each period's charge goes from escrow to the provider less the platform's fee
(``charge.split``: payout + fee = charge to the minor unit). At the end — or when the lease is
cancelled early, when the user pays what elapsed — the last part is charged and the rest of the
hold is released to the organisation. Every transfer's id derives from the lease and the period
(``lease:<id>:pay:<s>``, ``…:fee:<s>`` where ``s`` is the seconds from the window's start
the part is paid up to, ``…:pay:end``, ``…:release``), so a replayed settlement
changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from cpnet.market import ledger as L
from cpnet.market.auction import window_cost
from cpnet.market.charge import split
from cpnet.sched.snapshot import Resources

PERIOD_S = 60.0  # a lease is paid minute by minute as it runs


class LeaseState(StrEnum):
    ACTIVE = "active"  # awarded: held, and reserved on its pool in its window
    ENDED = "ended"  # the window is over and settled
    CANCELLED = "cancelled"  # ended early by its owner: paid what elapsed


@dataclass(frozen=True, slots=True)
class Lease:
    id: str
    request_id: str
    pool_id: str
    org_id: str  # who holds it (and pays)
    provider_org: str  # who is paid
    resources: Resources
    start: float
    end: float
    price: int  # minor units per hour, the winning bid
    state: LeaseState = LeaseState.ACTIVE
    charged: int = 0  # minor units settled so far
    paid_to: float | None = None  # the moment settled up to (None: nothing yet, the start)

    @property
    def hold_id(self) -> str:
        return f"lease:{self.id}"

    @property
    def total(self) -> int:
        """The whole window's cost: what the award holds."""
        return window_cost(self.price, self.end - self.start)

    def live(self, now: float) -> bool:
        """Whether the lease holds its capacity at ``now``."""
        return self.state is LeaseState.ACTIVE and self.start <= now < self.end

    def cost_to(self, t: float) -> int:
        """What the lease owes for its window up to ``t``."""
        return window_cost(self.price, min(t, self.end) - self.start)


def hold(lease: Lease, user_id: str | None = None) -> L.Hold:
    """The ledger hold an award places: the whole window's cost."""
    return L.Hold(lease.hold_id, lease.org_id, lease.id, lease.total, user_id)


def _lines(lease: Lease, key: str, amount: int, fee_bps: int, now: float) -> list[L.Transfer]:
    payout, fee = split(amount, fee_bps)
    common = {"task_id": lease.id, "hold_id": lease.hold_id}
    out = []
    esc = L.escrow_account(lease.org_id)
    if payout:
        out.append(
            L.Transfer(
                f"{lease.hold_id}:pay:{key}",
                esc,
                L.provider_account(lease.provider_org),
                payout,
                L.TransferKind.PAYOUT,
                now,
                **common,
            )
        )
    if fee:
        out.append(
            L.Transfer(
                f"{lease.hold_id}:fee:{key}", esc, L.REVENUE, fee, L.TransferKind.FEE, now, **common
            )
        )
    return out


def settle(
    lease: Lease, fee_bps: int, now: float, *, cancel: bool = False, period_s: float = PERIOD_S
) -> tuple[Lease, tuple[L.Transfer, ...], str | None]:
    """What settling the lease at ``now`` posts: the new lease, its transfers, and the key of
    the part charged (None: nothing due). While the window runs only whole periods are charged;
    at its end, or on ``cancel``, the rest up to then is charged and the hold's remainder
    released, and the lease is over. A lease already over gives nothing (idempotent)."""
    if lease.state is not LeaseState.ACTIVE:
        return lease, (), None
    final = cancel or now >= lease.end
    if final:
        upto = max(lease.start, min(now, lease.end))
        key = "end"
    else:
        if now < lease.start:
            return lease, (), None
        k = int((now - lease.start) // period_s)
        if k == 0:
            return lease, (), None
        upto = lease.start + k * period_s
        key = f"{int(k * period_s)}s"
    since = lease.start if lease.paid_to is None else lease.paid_to
    if not final and upto <= since:
        return lease, (), None
    due = lease.cost_to(upto) - lease.charged
    out = _lines(lease, key, due, fee_bps, now) if due > 0 else []
    charged = lease.charged + max(due, 0)
    if final:
        left = lease.total - charged
        if left:
            out.append(
                L.Transfer(
                    f"{lease.hold_id}:release",
                    L.escrow_account(lease.org_id),
                    L.org_account(lease.org_id),
                    left,
                    L.TransferKind.RELEASE,
                    now,
                    task_id=lease.id,
                    hold_id=lease.hold_id,
                )
            )
        state = LeaseState.CANCELLED if cancel and now < lease.end else LeaseState.ENDED
        return replace(lease, state=state, charged=charged, paid_to=upto), tuple(out), key
    return replace(lease, charged=charged, paid_to=upto), tuple(out), key
