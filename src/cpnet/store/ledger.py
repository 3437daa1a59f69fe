"""The ledger in the store: accounts, immutable transfers, holds and spending limits.

Every function runs in the caller's transaction, so a task's state change and the money it
moves commit together or not at all. The rules are `cpnet.market.ledger`'s; here they are
loaded and written. A debit is one conditional UPDATE (`balance - amount >= floor`), so two
transfers racing for the last of an account's money can never both land, on SQLite or
PostgreSQL; a transfer's unique id makes a replay a no-op.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

from sqlalchemy import Update, bindparam, case, func, insert, or_, select, text
from sqlalchemy import update as _sql_update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cpnet.errors import Conflict, NotFound, PaymentRequired
from cpnet.market import charge, money
from cpnet.market import ledger as L
from cpnet.store import audit, usage
from cpnet.store import quotes as quote_store
from cpnet.store.tables import (
    Attempt,
    LedgerAccount,
    LedgerHold,
    LedgerTransfer,
    Org,
    Pool,
    Site,
    SpendingLimit,
    Task,
)
from cpnet.tasks.states import State


def _update(model: type) -> Update:
    return _sql_update(model).execution_options(synchronize_session=False)


# ---- accounts and transfers ----


def ensure_account(s: Session, account_id: str, now: float) -> None:
    """Open the account with its kind's default floor if it is not open yet."""
    if s.execute(select(LedgerAccount.id).where(LedgerAccount.id == account_id)).first():
        return
    kind = L.kind_of(account_id)
    org = (
        account_id.split(":", 1)[1]
        if kind in (L.Kind.ORG, L.Kind.ESCROW, L.Kind.PROVIDER)
        else None
    )
    try:
        with s.begin_nested():
            s.execute(
                insert(LedgerAccount).values(
                    id=account_id,
                    kind=kind.value,
                    org_id=org,
                    currency=money.CURRENCY,
                    balance=0,
                    floor=L.default_floor(kind),
                    created_at=now,
                )
            )
    except IntegrityError:
        pass  # opened meanwhile by a concurrent transaction: the same account


def account(s: Session, account_id: str) -> L.Account:
    row = s.execute(
        select(LedgerAccount.kind, LedgerAccount.balance, LedgerAccount.floor).where(
            LedgerAccount.id == account_id
        )
    ).first()
    if row is None:
        return L.Account(
            account_id, L.kind_of(account_id), 0, L.default_floor(L.kind_of(account_id))
        )
    return L.Account(account_id, L.Kind(row.kind), int(row.balance), row.floor)


def _transfer(r: LedgerTransfer) -> L.Transfer:
    return L.Transfer(
        r.id,
        r.debit,
        r.credit,
        int(r.amount),
        L.TransferKind(r.kind),
        r.at,
        task_id=r.task_id,
        hold_id=r.hold_id,
        attempt_id=r.attempt_id,
        memo=r.memo,
    )


# Built once: statements with bind parameters compile once and are cached by SQLAlchemy.
# Core statements on the tables (executed on the session's connection, not as ORM bulk
# operations, whose parameter lists mean something else).
_T = LedgerTransfer.__table__
_A = LedgerAccount.__table__
# One transfer. Plain SQL, the same on SQLite and PostgreSQL: the dialects' INSERT … ON
# CONFLICT constructs have no cache key, so SQLAlchemy compiled them anew on every execution
# (a hold at every single submission); a text() statement compiles once.
_COLS = [c.name for c in _T.c if c.name != "seq"]
_NEW_TRANSFER = (
    text(
        f"INSERT INTO {_T.name} ({', '.join(_COLS)}) "
        f"VALUES ({', '.join(':' + c for c in _COLS)}) "
        "ON CONFLICT (id) DO NOTHING RETURNING seq"
    )
    .bindparams(*(bindparam(c, type_=_T.c[c].type) for c in _COLS))
    .columns(_T.c.seq)
)
# Run with a list of rows (SQLAlchemy's "insertmanyvalues": multi-row INSERTs from one compiled
# statement); RETURNING names the rows that were new.
_NEW_TRANSFERS = {
    "postgresql": pg_insert(_T).on_conflict_do_nothing(index_elements=["id"]).returning(_T.c.id),
    "sqlite": sqlite_insert(_T).on_conflict_do_nothing(index_elements=["id"]).returning(_T.c.id),
}
_NEW_HOLD = LedgerHold.__table__.insert()
_DEBIT = (
    _A.update()
    .where(
        _A.c.id == bindparam("acc"),
        or_(_A.c.floor.is_(None), _A.c.balance - bindparam("amount") >= _A.c.floor),
    )
    .values(balance=_A.c.balance - bindparam("amount"))
)
_CREDIT = (
    _A.update()
    .where(_A.c.id == bindparam("acc"))
    .values(balance=_A.c.balance + bindparam("amount"))
)


def post(s: Session, t: L.Transfer, detail: dict | None = None, what: str | None = None) -> bool:
    """Write one transfer and move its two balances; False when it is a replay (written before
    with the same content: nothing changes). PaymentRequired, naming the shortfall, when the
    debit would pass its account's floor (the caller's transaction then rolls back whole);
    Conflict when the id was used for another transfer.

    Three statements in the common case: the INSERT (a duplicate id inserts nothing: ON
    CONFLICT DO NOTHING), the conditional debit UPDATE and the credit UPDATE; an account is
    opened on first use."""
    L.validate(t)
    row = _row(t, detail)
    conn = s.connection()
    inserted = conn.execute(_NEW_TRANSFER, row).first()
    if inserted is None:  # the id exists (maybe committed by a concurrent transaction)
        old = s.scalar(select(LedgerTransfer).where(LedgerTransfer.id == t.id))
        assert old is not None
        L.is_replay(t, _transfer(old))  # Conflict when the id was used for other content
        return False
    # The two rows are locked in account order, as post_many locks them: a hold taken at
    # submission and a settlement refunding the same account never wait for each other in a
    # cycle (PostgreSQL would abort one of them as a deadlock).
    if t.credit < t.debit:
        _credit(s, conn, t)
        _debit(s, conn, t, what)
    else:
        _debit(s, conn, t, what)
        _credit(s, conn, t)
    _audit(s, t)
    return True


def _debit(s: Session, conn: Connection, t: L.Transfer, what: str | None) -> None:
    debit = {"acc": t.debit, "amount": t.amount}
    # Not debited: an account not opened yet (open it, its floor decides), or too little.
    if conn.execute(_DEBIT, debit).rowcount != 1 and not (
        _opened(s, t.debit, t.at) and conn.execute(_DEBIT, debit).rowcount == 1
    ):
        acc = account(s, t.debit)
        raise L.short_error(acc, L.shortfall(acc, t.amount), what or f"transfer {t.id}")


def _credit(s: Session, conn: Connection, t: L.Transfer) -> None:
    credit = {"acc": t.credit, "amount": t.amount}
    if conn.execute(_CREDIT, credit).rowcount != 1:
        _opened(s, t.credit, t.at)
        conn.execute(_CREDIT, credit)


def post_many(
    s: Session, transfers: Sequence[L.Transfer], details: Sequence[dict | None] = ()
) -> int:
    """Write several transfers at once (a settlement's payouts, fees and release); how many were
    new. One multi-row INSERT … ON CONFLICT DO NOTHING, then one balance UPDATE per account for
    its net change — conditional on its floor where the net is a debit — so the floors hold for
    the batch as a whole. Replays are skipped exactly as `post` skips them."""
    if len(transfers) <= 1:
        return sum(post(s, t, d) for t, d in zip(transfers, details or [None], strict=False))
    for t in transfers:
        L.validate(t)
    details = list(details) or [None] * len(transfers)
    conn = s.connection()
    rows = [_row(t, d) for t, d in zip(transfers, details, strict=True)]
    new = {r.id for r in conn.execute(_NEW_TRANSFERS[conn.dialect.name], rows)}
    fresh = []
    for t in transfers:
        if t.id in new:
            fresh.append(t)
            continue
        old = s.scalar(select(LedgerTransfer).where(LedgerTransfer.id == t.id))
        assert old is not None
        L.is_replay(t, _transfer(old))  # Conflict when the id was used for other content
    net: dict[str, int] = {}
    for t in fresh:
        net[t.debit] = net.get(t.debit, 0) - t.amount
        net[t.credit] = net.get(t.credit, 0) + t.amount
    at = transfers[0].at
    for acc, change in sorted(net.items()):  # a fixed order: no deadlock between two batches
        if change < 0:
            debit = {"acc": acc, "amount": -change}
            if conn.execute(_DEBIT, debit).rowcount != 1 and not (
                _opened(s, acc, at) and conn.execute(_DEBIT, debit).rowcount == 1
            ):
                got = account(s, acc)
                raise L.short_error(got, L.shortfall(got, -change), f"transfers to {acc}")
        elif change > 0:
            credit = {"acc": acc, "amount": change}
            if conn.execute(_CREDIT, credit).rowcount != 1:
                _opened(s, acc, at)
                conn.execute(_CREDIT, credit)
    for t in fresh:
        _audit(s, t)
    return len(fresh)


def _audit(s: Session, t: L.Transfer) -> None:
    """The audit record of a new transfer, in its transaction (a replay writes none)."""
    org = next((a.split(":", 1)[1] for a in (t.debit, t.credit) if a.startswith("org:")), None)
    audit.append(
        s,
        "ledger.transfer",
        t.at,
        org_id=org,
        object_id=t.id,
        detail={
            "kind": t.kind.value,
            "debit": t.debit,
            "credit": t.credit,
            "amount": t.amount,
            "task_id": t.task_id,
        },
    )


def _row(t: L.Transfer, detail: dict | None) -> dict:
    return {
        "id": t.id,
        "debit": t.debit,
        "credit": t.credit,
        "amount": t.amount,
        "currency": money.CURRENCY,
        "kind": t.kind.value,
        "at": t.at,
        "task_id": t.task_id,
        "hold_id": t.hold_id,
        "attempt_id": t.attempt_id,
        "memo": t.memo,
        "detail": detail,
    }


def _opened(s: Session, account_id: str, now: float) -> bool:
    """Open the account if it was not open; True if this call opened it."""
    if s.execute(select(LedgerAccount.id).where(LedgerAccount.id == account_id)).first():
        return False
    ensure_account(s, account_id, now)
    return True


def topup(
    s: Session, org_id: str, amount: int, transfer_id: str, now: float, memo: str = ""
) -> bool:
    """Fund an organisation's account from outside the books (False: a replayed id)."""
    _org(s, org_id)
    t = L.Transfer(
        transfer_id, L.FUNDING, L.org_account(org_id), amount, L.TransferKind.TOPUP, now, memo=memo
    )
    return post(s, t)


def set_credit_limit(s: Session, org_id: str, limit: int, now: float) -> None:
    """Let the organisation's account go down to −limit (0: pay before use). A limit below the
    credit already in use is refused (Conflict): no account is ever below its floor."""
    _org(s, org_id)
    acc = L.org_account(org_id)
    ensure_account(s, acc, now)
    res = s.execute(
        _update(LedgerAccount)
        .where(LedgerAccount.id == acc, LedgerAccount.balance >= -limit)
        .values(floor=-limit)
    )
    if res.rowcount != 1:
        used = -account(s, acc).balance
        raise Conflict(
            f"{org_id} already uses {money.fmt(used)} of credit: a credit limit of "
            f"{money.fmt(limit)} would put it below its floor; top it up first",
            field="credit_limit",
        )


def set_spending_limit(
    s: Session, org_id: str, user_id: str | None, monthly: int | None, now: float
) -> None:
    """Set (or with None remove) the monthly spending limit of an organisation or one user."""
    _org(s, org_id)
    key = (org_id, user_id or "")
    row = s.get(SpendingLimit, key)
    if monthly is None:
        if row is not None:
            s.delete(row)
        return
    if row is None:
        s.add(SpendingLimit(org_id=org_id, user_id=user_id or "", monthly=monthly, set_at=now))
    else:
        row.monthly, row.set_at = monthly, now
    s.flush()


def _org(s: Session, org_id: str) -> None:
    if s.execute(select(Org.id).where(Org.id == org_id)).first() is None:
        raise NotFound(f"no organisation {org_id!r}", field="org_id")


# ---- holds and settlement ----


def spent(s: Session, org_id: str, period: str, user_id: str | None = None) -> int:
    """What an organisation (or one user) has held and spent in a month: pending holds in full,
    settled ones at their charge."""
    q = select(
        func.coalesce(
            func.sum(
                case(
                    (LedgerHold.state == L.HoldState.PENDING.value, LedgerHold.amount),
                    else_=LedgerHold.charged,
                )
            ),
            0,
        )
    ).where(LedgerHold.org_id == org_id, LedgerHold.period == period)
    if user_id is not None:
        q = q.where(LedgerHold.user_id == user_id)
    return int(s.scalar(q) or 0)


def open_hold(
    s: Session,
    org_id: str,
    user_id: str | None,
    task_id: str,
    amount: int,
    fee_bps: int,
    now: float,
    *,
    hold_id: str | None = None,
    what: str = "this task's hold",
) -> L.Hold:
    """Place a new task's hold: check the monthly spending limits, then move `amount` from the
    organisation's account to its escrow. PaymentRequired naming the shortfall when either
    refuses (the caller's transaction, with the task in it, then rolls back). A lease's hold
    passes its own ``hold_id`` (``lease:<id>``) and its lease id as ``task_id``."""
    period = L.period_of(now)
    limits = dict(s.connection().execute(_LIMITS, {"b_org": org_id, "b_user": user_id or ""}).all())
    for key, lim in sorted(limits.items()):
        uid = key or None
        used = spent(s, org_id, period, uid)
        over = L.over_limit(lim, used, amount)
        if over:
            whose = f"user {uid}" if uid else f"organisation {org_id}"
            raise PaymentRequired(
                f"{what} of {money.fmt(amount)} would pass the monthly spending limit "
                f"of {whose} ({money.fmt(lim)}, {money.fmt(used)} used in {period}): short "
                f"by {money.fmt(over)}; lower constraints.budget or ask an admin to raise the "
                "limit (`cpnet account limit`)",
                field="constraints.budget",
                shortfall=money.major(over),
                shortfall_minor=over,
                currency=money.CURRENCY,
            )
    h = L.Hold(hold_id or L.hold_id(task_id), org_id, task_id, amount, user_id, period=period)
    s.connection().execute(_NEW_HOLD, _hold_row(h, fee_bps, now))
    for t in L.reserve(h, now):
        try:
            post(s, t, what=f"{what} of {money.fmt(amount)}")
        except PaymentRequired as exc:
            exc.field = "constraints.budget"
            raise
    return h


def _hold_row(h: L.Hold, fee_bps: int, now: float) -> dict:
    """A new hold's row (_NEW_HOLD)."""
    return {
        "id": h.id,
        "task_id": h.task_id,
        "org_id": h.org_id,
        "user_id": h.user_id,
        "amount": h.amount,
        "charged": 0,
        "fee_bps": fee_bps,
        "state": h.state.value,
        "period": h.period,
        "created_at": now,
        "settled_at": None,
    }


# The monthly spending limits that apply to a submitter: its organisation's ("") and its own.
_LIMITS = (
    select(SpendingLimit.user_id, SpendingLimit.monthly)
    .where(
        SpendingLimit.org_id == bindparam("b_org"),
        SpendingLimit.user_id.in_(["", bindparam("b_user")]),
    )
    .with_for_update()
)


def open_holds(
    s: Session,
    org_id: str,
    user_id: str | None,
    holds: Sequence[tuple[str, int]],
    fee_bps: int,
    now: float,
) -> bool:
    """`open_hold` for many new tasks of one submitter at once: (task id, amount) each. The hold
    rows go in one multi-row INSERT and their transfers through `post_many` (one balance change
    per account for the batch, checked against its floor as a whole: PaymentRequired when the
    batch does not fit, and the caller then opens them one by one, so that those that fit still
    do). False, having written nothing, when a monthly spending limit applies to the submitter:
    each hold is then checked against it by `open_hold`."""
    if s.connection().execute(_LIMITS, {"b_org": org_id, "b_user": user_id or ""}).first():
        return False
    period = L.period_of(now)
    made = [
        L.Hold(L.hold_id(tid), org_id, tid, amount, user_id, period=period) for tid, amount in holds
    ]
    if not made:
        return True
    s.connection().execute(_NEW_HOLD, [_hold_row(h, fee_bps, now) for h in made])
    transfers = [t for h in made for t in L.reserve(h, now)]
    try:
        for i in range(0, len(transfers), 500):  # bound the statement's parameters
            post_many(s, transfers[i : i + 500])
    except PaymentRequired as exc:
        exc.field = "constraints.budget"
        raise
    return True


@dataclass(frozen=True, slots=True)
class Metered:
    """One attempt as charged: where it ran, for how long, at what price."""

    attempt_id: str
    pool_id: str
    payee_org: str
    seconds: float
    hourly: str  # price of one hour of it, major units (exact decimal text)
    charge: int  # minor units, before the quote's and the hold's caps
    scu_h: float | None = None  # SCU-hours of work, when SCU-priced


# Built once: settlement runs as every task ends (see store/tasks._event for why).
_METERED = (
    select(
        Attempt.id,
        Attempt.pool_id,
        Attempt.state,
        Attempt.start_time,
        Attempt.end_time,
        Attempt.demand,
        Attempt.price,
        Attempt.lease_id,
        Pool.descriptor,
        Site.org_id,
    )
    .join(Pool, Pool.id == Attempt.pool_id)
    .join(Site, Site.id == Pool.site_id)
    .where(Attempt.task_id == bindparam("b_task"))
    .order_by(Attempt.n)
)
_METERED_MANY = (
    select(*_METERED.selected_columns, Attempt.task_id)
    .join_from(Attempt, Pool, Pool.id == Attempt.pool_id)
    .join(Site, Site.id == Pool.site_id)
    .where(Attempt.task_id.in_(bindparam("b_tasks", expanding=True)))
    .order_by(Attempt.task_id, Attempt.n)
)


_UNREAD = object()  # quote_capped's "read the task's charge cap yourself"


def metered(s: Session, task_id: str) -> list[Metered]:
    """The charge of each attempt of a task, oldest first, at the price recorded on it when it
    was placed (the pool's declared price for attempts placed before that was recorded), for
    its accepted signed usage record's wall_s, else its observed end − start (store/usage.py).
    Attempts that never started, those that ended SYSTEM_ERROR (the site's fault), and those
    that ran on a lease of the task's organisation (the lease pays for its resources), are not
    charged."""
    rows = s.connection().execute(_METERED, {"b_task": task_id})
    return _lines(rows, usage.accepted_walls(s, task_id))


def _lines(rows: Iterable[Row], walls: Mapping[str, float]) -> list[Metered]:
    """`metered`'s lines of these attempt rows (_METERED's columns), given the accepted walls."""
    out = []
    for a in rows:
        if a.start_time is None or a.state == State.SYSTEM_ERROR.value or a.lease_id:
            continue  # not started, the site's fault, or paid by its lease (store/leases.py)
        # The accepted signed usage record's wall_s; without one, the span the hub observed
        # (never an unsigned figure of the agent's).
        wall = walls.get(a.id)
        if wall is None:
            end = a.end_time if a.end_time is not None else a.start_time
            wall = max(0.0, end - a.start_time)
        price = a.price if a.price is not None else (a.descriptor or {}).get("price") or {}
        out.append(
            Metered(
                a.id,
                a.pool_id,
                a.org_id,
                float(wall),
                str(charge.hourly(price, a.demand)),
                charge.usage_charge(price, a.demand, float(wall)),
                charge.scu_hours(price, float(wall)),
            )
        )
    return out


def quote_capped(
    s: Session, task_id: str, lines: list[Metered], cap: object = _UNREAD
) -> list[Metered]:
    """`lines` cut, in order, to the task's binding quote (docs/market.md): its max charge while
    it ran as stated, plus the overrun rate for each hour (or SCU-hour) past that. A task
    submitted without a quote is returned as it is. `cap`: the task's charge cap, if read
    already (None: it has none)."""
    if cap is _UNREAD:
        cap = quote_store.charge_cap(s, task_id)
    if not isinstance(cap, quote_store.ChargeCap) or not lines:
        return lines
    spec = s.scalar(select(Task.spec).where(Task.id == task_id)) or {}
    work = spec.get("work") or {}
    scu = [m.scu_h for m in lines if m.scu_h is not None]
    limit = charge.quoted_cap(
        cap.max_charge,
        cap.overrun_rate,
        cap.overrun_unit,
        stated_s=float(spec.get("expected_runtime_s", 600.0)),
        used_s=sum(m.seconds for m in lines),
        stated_scu_h=work.get("scu_hours"),
        used_scu_h=sum(scu) if scu else None,
    )
    cut = charge.cap_lines([m.charge for m in lines], limit)
    return [m if c == m.charge else replace(m, charge=c) for m, c in zip(lines, cut, strict=True)]


def settle_task(s: Session, task_id: str, now: float) -> L.Hold | None:
    """Settle a finished task's hold in the caller's transaction: charge what ran (at most what
    its quote allows), pay the providers and the platform, release the rest. Exactly once: the
    hold moves from pending by compare-and-set, and every transfer's id derives from the hold
    and attempt. A task without a hold (created before the ledger) settles nothing."""
    s.flush()  # the attempts' final states, set on ORM objects, must be visible to the query
    row = s.connection().execute(_HOLD_OF_TASK, {"b_task": task_id}).first()
    if row is None or row.state != L.HoldState.PENDING.value:
        return None
    return _settle(s, row, quote_capped(s, task_id, metered(s, task_id)), now)


def settle_tasks(s: Session, ends: Mapping[str, float]) -> dict[str, L.Hold]:
    """`settle_task` for many finished tasks at once (task id → when it ended), set-wise: one
    query each for their pending holds (locked, in id order), their attempts, their accepted
    usage records and their quotes; the holds' compare-and-set as one statement; every payout,
    fee and release through one `post_many` (one multi-row INSERT, one balance change per
    account). The same transfers, with the same ids, as settling them one by one. Returns the
    settled holds by task id."""
    if not ends:
        return {}
    s.flush()  # the attempts' final states, set on ORM objects, must be visible to the queries
    conn = s.connection()
    ids = sorted(ends)
    pg = conn.dialect.name == "postgresql"
    holds = []
    for chunk in _chunks(ids):
        holds += list(conn.execute(_PENDING_HOLDS[pg], {"b_tasks": chunk}))
    if not holds:
        return {}
    held = sorted({h.task_id for h in holds})
    by_task: dict[str, list[Row]] = {tid: [] for tid in held}
    walls: dict[str, float] = {}
    caps: dict[str, quote_store.ChargeCap] = {}
    for chunk in _chunks(held):
        for a in conn.execute(_METERED_MANY, {"b_tasks": chunk}):
            by_task[a.task_id].append(a)
        walls.update(usage.accepted_walls_of(s, chunk))
        caps.update(quote_store.charge_caps(s, chunk))
    settled: dict[str, L.Hold] = {}
    marks: list[dict] = []
    transfers: list[L.Transfer] = []
    details: list[dict | None] = []
    for row in holds:
        at = ends[row.task_id]
        lines = quote_capped(
            s, row.task_id, _lines(by_task[row.task_id], walls), caps.get(row.task_id)
        )
        done, made = _settled(row, lines, at)
        settled[row.task_id] = done
        marks.append(
            {"b_id": row.id, "b_state": done.state.value, "b_charged": done.charged, "b_at": at}
        )
        transfers += made
        details += _details(made, lines)
    res = conn.execute(_SETTLE_HOLD, marks)
    if conn.dialect.supports_sane_multi_rowcount and res.rowcount != len(marks):
        # Cannot happen while the holds are locked (SQLite: one writer; PostgreSQL: FOR UPDATE).
        raise RuntimeError(f"{len(marks) - res.rowcount} holds were settled meanwhile")
    for i in range(0, len(transfers), 500):  # bound the statement's parameters
        post_many(s, transfers[i : i + 500], details[i : i + 500])
    return settled


def _chunks(ids: list[str], size: int = 500) -> Iterator[list[str]]:
    for i in range(0, len(ids), size):
        yield ids[i : i + size]


_HOLD_COLS = (
    LedgerHold.id,
    LedgerHold.org_id,
    LedgerHold.task_id,
    LedgerHold.amount,
    LedgerHold.user_id,
    LedgerHold.period,
    LedgerHold.fee_bps,
    LedgerHold.state,
)
_HOLD_OF_TASK = select(*_HOLD_COLS).where(LedgerHold.task_id == bindparam("b_task"))
# Pending holds of many tasks, locked in id order on PostgreSQL, so that their compare-and-set
# lands (SQLite's BEGIN IMMEDIATE has one writer at a time already).
_PENDING_HOLDS = {
    pg: (
        select(*_HOLD_COLS)
        .where(
            LedgerHold.task_id.in_(bindparam("b_tasks", expanding=True)),
            LedgerHold.state == L.HoldState.PENDING.value,
        )
        .order_by(LedgerHold.id)
    )
    for pg in (False, True)
}
_PENDING_HOLDS[True] = _PENDING_HOLDS[True].with_for_update()
_SETTLE_HOLD = (
    _sql_update(LedgerHold.__table__)
    .where(
        LedgerHold.__table__.c.id == bindparam("b_id"),
        LedgerHold.__table__.c.state == L.HoldState.PENDING.value,
    )
    .values(
        state=bindparam("b_state"), charged=bindparam("b_charged"), settled_at=bindparam("b_at")
    )
)


def settle_hold(s: Session, task_id: str, lines: list[Metered], now: float) -> L.Hold | None:
    """Settle the task's pending hold against these metered lines (None: no pending hold)."""
    row = s.execute(select(*_HOLD_COLS).where(LedgerHold.task_id == task_id)).first()
    if row is None or row.state != L.HoldState.PENDING.value:
        return None
    return _settle(s, row, lines, now)


def _settle(s: Session, row: Row, lines: list[Metered], now: float) -> L.Hold | None:
    """Settle one pending hold (`row`: its _HOLD_COLS) by compare-and-set, then post."""
    done, transfers = _settled(row, lines, now)
    res = s.connection().execute(
        _SETTLE_HOLD,
        {"b_id": row.id, "b_state": done.state.value, "b_charged": done.charged, "b_at": now},
    )
    if res.rowcount != 1:
        return None  # settled by a concurrent transaction
    post_many(s, transfers, _details(transfers, lines))
    return done


def _settled(row: Row, lines: list[Metered], now: float) -> tuple[L.Hold, tuple[L.Transfer, ...]]:
    """The hold `row` (its _HOLD_COLS) settled against `lines`, and the transfers that does."""
    hold = L.Hold(row.id, row.org_id, row.task_id, int(row.amount), row.user_id, period=row.period)
    lines_ = [L.ChargeLine(m.attempt_id, m.payee_org, m.charge) for m in lines]
    return L.settle(hold, lines_, row.fee_bps, now)


def _details(transfers: Sequence[L.Transfer], lines: list[Metered]) -> list[dict | None]:
    """Each transfer's detail: the metered line it pays, if any."""
    by_attempt = {m.attempt_id: m for m in lines}
    out: list[dict | None] = []
    for t in transfers:
        m = by_attempt.get(t.attempt_id or "")
        out.append(
            None
            if m is None
            else {
                "pool_id": m.pool_id,
                "payee_org": m.payee_org,
                "seconds": m.seconds,
                "hourly": m.hourly,
                "metered_charge": m.charge,
            }
        )
    return out
