"""Reading the ledger: `check` (do the books balance?), an organisation's account summary, and
its bill for a month. Read-only; the writes are in store/ledger.py."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cpnet.errors import Invalid
from cpnet.market import ledger as L
from cpnet.market import money
from cpnet.store.ledger import account, spent
from cpnet.store.tables import LedgerAccount, LedgerHold, LedgerTransfer, SpendingLimit, Task


@dataclass(frozen=True, slots=True)
class Check:
    """The result of checking the books: no problems means they balance."""

    accounts: int
    transfers: int
    holds: int
    total: int  # Σ balances: 0 in balanced books
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def check(s: Session) -> Check:
    """Verify that the books balance (Σ balances = 0), that every account equals the sum of its
    postings and is not below its floor, that every transfer is positive between known accounts,
    that each organisation's escrow holds exactly what its pending holds have not paid yet, and
    that every hold was paid out, charged and released to the minor unit."""
    problems: list[str] = []
    accs = {a.id: a for a in s.scalars(select(LedgerAccount))}
    sums: dict[str, int] = defaultdict(int)
    by_hold: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    n = 0
    for t in s.execute(
        select(
            LedgerTransfer.id,
            LedgerTransfer.debit,
            LedgerTransfer.credit,
            LedgerTransfer.amount,
            LedgerTransfer.kind,
            LedgerTransfer.hold_id,
        )
    ):
        n += 1
        if t.amount <= 0:
            problems.append(f"transfer {t.id} moves {t.amount} (not positive)")
        for side in (t.debit, t.credit):
            if side not in accs:
                problems.append(f"transfer {t.id} names unknown account {side}")
        sums[t.debit] -= t.amount
        sums[t.credit] += t.amount
        if t.hold_id:
            by_hold[t.hold_id][t.kind] += t.amount
    total = sum(int(a.balance) for a in accs.values())
    if total != 0:
        problems.append(f"the books do not balance: Σ balances = {total} minor units")
    for a in accs.values():
        if int(a.balance) != sums.get(a.id, 0):
            problems.append(
                f"account {a.id}: balance {a.balance} but its postings sum to {sums.get(a.id, 0)}"
            )
        if a.floor is not None and a.balance < a.floor:
            problems.append(f"account {a.id}: balance {a.balance} below its floor {a.floor}")
    pending: dict[str, int] = defaultdict(int)
    holds = 0
    for h in s.scalars(select(LedgerHold)):
        holds += 1
        got = by_hold.get(h.id, {})
        if got.get(L.TransferKind.RESERVE.value, 0) != h.amount:
            problems.append(f"{h.id}: reserved {got.get('reserve', 0)}, holds {h.amount}")
        paid = got.get("payout", 0) + got.get("fee", 0)
        if h.state == L.HoldState.PENDING.value:
            # A task's hold pays nothing until it is settled; a lease's pays as it runs
            # (market/lease.py), its `charged` counting what it has paid so far.
            pending[h.org_id] += h.amount - h.charged
            if paid != h.charged or got.get("release", 0):
                problems.append(
                    f"{h.id}: pending, charged {h.charged}, but paid {paid} and released "
                    f"{got.get('release', 0)}"
                )
        elif paid != h.charged or got.get("release", 0) != h.amount - h.charged:
            problems.append(
                f"{h.id}: charged {h.charged} of {h.amount}, but paid {paid} and released "
                f"{got.get('release', 0)}"
            )
    for a in accs.values():
        if a.kind == L.Kind.ESCROW.value and int(a.balance) != pending.get(a.org_id or "", 0):
            problems.append(
                f"account {a.id}: holds {a.balance} but its pending holds sum to "
                f"{pending.get(a.org_id or '', 0)}"
            )
    return Check(len(accs), n, holds, total, tuple(problems))


def summary(s: Session, org_id: str, now: float) -> dict:
    """An organisation's money: balance, held, available, credit limit, spending limits with
    what this month used, and (if it provides compute) what it has earned."""
    own = account(s, L.org_account(org_id))
    held = account(s, L.escrow_account(org_id)).balance
    earned = account(s, L.provider_account(org_id)).balance
    period = L.period_of(now)
    limits = []
    for lim in s.scalars(select(SpendingLimit).where(SpendingLimit.org_id == org_id)):
        used = spent(s, org_id, period, lim.user_id or None)
        limits.append(
            {"user_id": lim.user_id or None, "monthly": lim.monthly, "used": used, "period": period}
        )
    floor = own.floor if own.floor is not None else 0
    return {
        "org_id": org_id,
        "currency": money.CURRENCY,
        "balance": own.balance,  # spendable money now (held money is not in it)
        "held": held,
        "credit_limit": -floor,
        "available": own.balance - floor,
        "earned": earned,
        "limits": limits,
    }


def month_bounds(period: str) -> tuple[float, float]:
    """[start, end) of a calendar month "YYYY-MM" (UTC), as epoch seconds."""
    try:
        start = datetime.strptime(period, "%Y-%m").replace(tzinfo=UTC)
    except ValueError:
        raise Invalid(f"period {period!r} is not a month such as 2026-12", field="period") from None
    y, m = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
    return start.timestamp(), datetime(y, m, 1, tzinfo=UTC).timestamp()


@dataclass
class Bill:
    """An organisation's bill for a month: one line per charged attempt, and the totals.

    charge = payout + fee on every line and in the totals, to the minor unit."""

    org_id: str
    period: str
    currency: str = money.CURRENCY
    lines: list[dict] = field(default_factory=list)
    topups: int = 0
    charged: int = 0
    fees: int = 0
    payouts: int = 0
    released: int = 0
    held_now: int = 0


def bill(s: Session, org_id: str, period: str) -> Bill:
    """The organisation's bill for `period`: what its tasks were charged by settlements in that
    month, itemised per attempt (pool, provider, seconds, price, charge, fee)."""
    start, end = month_bounds(period)
    b = Bill(org_id, period)
    in_month = (LedgerTransfer.at >= start) & (LedgerTransfer.at < end)
    rows = s.execute(
        select(LedgerTransfer, Task.name)
        .join(LedgerHold, LedgerHold.id == LedgerTransfer.hold_id)
        .outerjoin(Task, Task.id == LedgerTransfer.task_id)
        .where(LedgerHold.org_id == org_id, in_month)
        .order_by(LedgerTransfer.seq)
    )
    lines: dict[str, dict] = {}
    for t, name in rows:
        if t.kind == L.TransferKind.RELEASE.value:
            b.released += t.amount
            continue
        if t.kind not in (L.TransferKind.PAYOUT.value, L.TransferKind.FEE.value):
            continue
        d = t.detail or {}
        line = lines.setdefault(
            t.attempt_id or d.get("line") or t.id,  # a lease's line: one period of it
            {
                "task_id": t.task_id,
                "task_name": name or d.get("label", ""),
                "attempt_id": t.attempt_id,
                "settled_at": datetime.fromtimestamp(t.at, UTC).isoformat(timespec="seconds"),
                "pool_id": d.get("pool_id", ""),
                "provider_org": d.get("payee_org", ""),
                "seconds": d.get("seconds", 0.0),
                "hourly": d.get("hourly", ""),
                "charge": 0,
                "fee": 0,
                "payout": 0,
            },
        )
        key = "payout" if t.kind == L.TransferKind.PAYOUT.value else "fee"
        line[key] += t.amount
        line["charge"] += t.amount
    b.lines = list(lines.values())
    b.charged = sum(x["charge"] for x in b.lines)
    b.fees = sum(x["fee"] for x in b.lines)
    b.payouts = sum(x["payout"] for x in b.lines)
    b.topups = int(
        s.scalar(
            select(func.coalesce(func.sum(LedgerTransfer.amount), 0)).where(
                LedgerTransfer.credit == L.org_account(org_id),
                LedgerTransfer.kind == L.TransferKind.TOPUP.value,
                in_month,
            )
        )
        or 0
    )
    b.held_now = account(s, L.escrow_account(org_id)).balance
    return b
