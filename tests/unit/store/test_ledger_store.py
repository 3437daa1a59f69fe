"""The ledger in the store (cpnet.store.ledger, cpnet.store.books) on SQLite and PostgreSQL:
holds at submission, settlement in the transaction that ends a task, exactly once, and books
that check."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from cpnet.auth.model import Principal, Role
from cpnet.errors import Conflict, PaymentRequired
from cpnet.ident.keys import SigningKey
from cpnet.market import charge, metering
from cpnet.market import ledger as L
from cpnet.registry.model import PoolDescriptor, Region, Registration
from cpnet.sched import Resources
from cpnet.store import accounts, books, ledger, registry
from cpnet.store import tasks as ts
from cpnet.store.db import Store
from cpnet.store.tables import Attempt, LedgerTransfer, Task
from cpnet.tasks.model import AttemptUpdate, TaskSpec, Usage
from cpnet.tasks.states import State

PRICE = {"cpu_core_hour": 1.25, "ram_gb_hour": 0.05}
KEY = SigningKey.generate()  # the site's usage key, as its agent would register it


@pytest.fixture
def store(database_url: str):
    s = Store(database_url)
    s.migrate()
    yield s
    s.close()


def _world(store: Store):
    """A user org (acme) and a provider org (hostco) with one priced pool."""
    now = time.time()
    with store.tx() as s:
        org = accounts.create_org(s, "acme", now)
        user = accounts.create_user(s, org.id, "alice", Role.USER, now)
        host = accounts.create_org(s, "hostco", now)
        prov = registry.create_provider(s, host.id, "Host Co", "cn.dev", now)
        site = registry.create_site(
            s, prov, name="sz", type="general", region=Region(code="440300"), now=now
        )
        desc = PoolDescriptor(name="cpu", hardware={"cpu_cores": 8, "memory_gb": 64}, price=PRICE)
        reg = Registration(pools=[desc], usage_key={"public_key": KEY.public_key_b64})
        pool_id = registry.register(s, site.id, reg, now).pools["cpu"]
    who = Principal(token_id="t", role=Role.USER, org_id=org.id, user_id=user.id)
    return who, host.id, site.id, pool_id


def _submit(store: Store, who: Principal, hold: int, now: float) -> str:
    spec = TaskSpec(executors=[{"command": ["true"]}], resources={"cpu_cores": 2, "ram_gb": 4})
    with store.tx() as s:
        task, _ = ts.create_task(s, who, spec, now)
        ledger.open_hold(s, who.org_id, who.user_id, task.id, hold, 500, now)
        return task.id


def _place(store: Store, task_id: str, pool_id: str, site_id: str) -> str:
    with store.tx() as s:
        task = s.scalar(select(Task).where(Task.id == task_id))
        aid = ts.place(s, task, pool_id, site_id, Resources(2, 4, 0, 0), time.time(), "test")
        assert aid
        return aid


def _report(store: Store, site_id: str, aid: str, state: State, at: float, wall: float = 0):
    """An agent's report at `at`; with `wall`, a final one carrying its signed usage record
    (the attempt ran from at − wall to at)."""
    record = None
    if wall:
        with store.read() as s:
            a = s.get(Attempt, aid)
            assert a is not None
            task_id, pool_id = a.task_id, a.pool_id
        record = metering.sign(
            metering.build(
                site_id=site_id,
                task_id=task_id,
                attempt_id=aid,
                pool_id=pool_id,
                started_at=at - wall,
                ended_at=at,
                wall_s=wall,
                demand={"cpu_cores": 2, "ram_gb": 4},
            ),
            KEY,
        )
    u = AttemptUpdate(
        attempt_id=aid,
        state=state,
        at=datetime.fromtimestamp(at, UTC),
        usage=Usage(wall_s=wall) if wall else None,
        usage_record=record,
    )
    with store.tx() as s:
        return ts.apply_update(s, site_id, u, at)


def _balances(store: Store) -> dict[str, int]:
    with store.read() as s:
        return {a: ledger.account(s, a).balance for a in _ids(s)}


def _ids(s) -> list[str]:  # type: ignore[no-untyped-def]
    from cpnet.store.tables import LedgerAccount

    return list(s.scalars(select(LedgerAccount.id)))


def test_a_task_is_held_then_charged_what_ran_and_the_books_check(store: Store) -> None:
    who, host, site, pool = _world(store)
    now = time.time()
    with store.tx() as s:
        assert ledger.topup(s, who.org_id, 10_000, "top-1", now)
        assert not ledger.topup(s, who.org_id, 10_000, "top-1", now)  # a replay: no-op
    tid = _submit(store, who, 3_000, now)
    with store.read() as s:
        sm = books.summary(s, who.org_id, now)
    assert (sm["balance"], sm["held"], sm["available"]) == (7_000, 3_000, 7_000)
    aid = _place(store, tid, pool, site)
    _report(store, site, aid, State.RUNNING, now + 1)
    # 1800.5 s of 2 cores × 1.25 + 4 GB × 0.05 = 2.70/h → 135.0375 CNY... capped? no: 0.75 h
    wall = 1000.0
    expected = charge.usage_charge(PRICE, {"cpu_cores": 2, "ram_gb": 4}, wall)
    assert expected == 75  # 2.70 × 1000/3600 = 0.75 CNY
    done = _report(store, site, aid, State.COMPLETE, now + 1 + wall, wall)
    assert done.usage is not None and done.usage.verdict is metering.Verdict.ACCEPTED
    again = _report(store, site, aid, State.COMPLETE, now + 1 + wall, wall)  # a replayed report
    assert again.status == "duplicate" and again.usage.verdict is metering.Verdict.DUPLICATE
    with store.read() as s:
        settled = ledger.settle_task(s, tid, now + 4)  # settling again: nothing (read-only tx)
        assert settled is None
        sm = books.summary(s, who.org_id, now)
        fee = charge.split(expected, 500)[1]
        assert sm["balance"] == 10_000 - expected and sm["held"] == 0
        assert ledger.account(s, L.provider_account(host)).balance == expected - fee
        assert ledger.account(s, L.REVENUE).balance == fee
        result = books.check(s)
        assert result.ok, result.problems
        assert result.total == 0
        bill = books.bill(s, who.org_id, L.period_of(now + 1 + wall))
    assert bill.charged == expected == bill.fees + bill.payouts
    (line,) = bill.lines
    assert line["pool_id"] == pool and line["provider_org"] == host and line["seconds"] == wall


def test_a_hold_that_cannot_be_placed_is_refused_naming_the_shortfall(store: Store) -> None:
    who, *_ = _world(store)
    now = time.time()
    with store.tx() as s:
        ledger.topup(s, who.org_id, 1_000, "top", now)
        ledger.set_credit_limit(s, who.org_id, 200, now)
    with pytest.raises(PaymentRequired) as e:
        _submit(store, who, 1_500, now)
    assert e.value.status == 402 and e.value.field == "constraints.budget"
    assert "short by 3.00 CNY" in e.value.message
    with store.read() as s:  # the task went with its transaction
        assert s.scalar(select(func.count()).select_from(Task)) == 0
        assert books.check(s).ok
    _submit(store, who, 1_200, now)  # within balance + credit
    with store.read() as s:
        assert books.summary(s, who.org_id, now)["available"] == 0


def test_monthly_spending_limits_per_user_and_org(store: Store) -> None:
    who, *_ = _world(store)
    now = time.time()
    with store.tx() as s:
        ledger.topup(s, who.org_id, 100_000, "top", now)
        ledger.set_spending_limit(s, who.org_id, who.user_id, 500, now)
    _submit(store, who, 400, now)
    with pytest.raises(PaymentRequired) as e:
        _submit(store, who, 200, now)
    assert "monthly spending limit of user" in e.value.message
    assert e.value.extra["shortfall_minor"] == 100
    with store.tx() as s:
        ledger.set_spending_limit(s, who.org_id, who.user_id, None, now)
        ledger.set_spending_limit(s, who.org_id, None, 450, now)
    with pytest.raises(PaymentRequired, match="organisation"):
        _submit(store, who, 100, now)


def test_cancel_before_it_ran_releases_the_hold_whole(store: Store) -> None:
    who, _host, site, pool = _world(store)
    now = time.time()
    with store.tx() as s:
        ledger.topup(s, who.org_id, 5_000, "top", now)
    tid = _submit(store, who, 2_000, now)
    _place(store, tid, pool, site)
    with store.tx() as s:
        ts.cancel_task(s, s.scalar(select(Task).where(Task.id == tid)), now + 1)
    with store.read() as s:
        assert books.summary(s, who.org_id, now)["balance"] == 5_000
        assert books.check(s).ok


def test_cancel_of_a_running_task_charges_what_ran(store: Store) -> None:
    who, _host, site, pool = _world(store)
    now = time.time()
    with store.tx() as s:
        ledger.topup(s, who.org_id, 5_000, "top", now)
    tid = _submit(store, who, 2_000, now)
    aid = _place(store, tid, pool, site)
    _report(store, site, aid, State.RUNNING, now + 1)
    with store.tx() as s:
        ts.cancel_task(s, s.scalar(select(Task).where(Task.id == tid)), now + 2)
    _report(store, site, aid, State.CANCELED, now + 3601, wall=3600.0)  # 2.70 CNY
    with store.read() as s:
        assert books.summary(s, who.org_id, now)["balance"] == 5_000 - 270
        assert books.check(s).ok


def test_a_system_error_is_not_charged_and_a_lost_site_settles(store: Store) -> None:
    who, _host, site, pool = _world(store)
    now = time.time()
    with store.tx() as s:
        ledger.topup(s, who.org_id, 5_000, "top", now)
    spec = TaskSpec(executors=[{"command": ["true"]}], max_attempts=1)
    with store.tx() as s:
        task, _ = ts.create_task(s, who, spec, now)
        ledger.open_hold(s, who.org_id, who.user_id, task.id, 1_000, 500, now)
        tid = task.id
    aid = _place(store, tid, pool, site)
    _report(store, site, aid, State.RUNNING, now + 1)
    with store.tx() as s:
        ts.fail_site(s, site, now + 5, "lost")
    with store.read() as s:
        assert s.scalar(select(Task.state).where(Task.id == tid)) == "SYSTEM_ERROR"
        assert books.summary(s, who.org_id, now)["balance"] == 5_000
        assert books.check(s).ok


def test_a_transfer_id_is_never_reused_and_check_finds_tampering(store: Store) -> None:
    who, *_ = _world(store)
    now = time.time()
    with store.tx() as s:
        ledger.topup(s, who.org_id, 100, "t1", now)
    with pytest.raises(Conflict), store.tx() as s:
        ledger.topup(s, who.org_id, 101, "t1", now)
    with store.tx() as s:
        s.execute(
            LedgerTransfer.__table__.update().where(LedgerTransfer.id == "t1").values(amount=99)
        )
    with store.read() as s:
        problems = books.check(s).problems
    assert any("postings sum to" in p for p in problems)


def test_a_crash_before_commit_leaves_no_hold_and_no_money_moved(store: Store) -> None:
    who, *_ = _world(store)
    now = time.time()
    with store.tx() as s:
        ledger.topup(s, who.org_id, 1_000, "top", now)

    class Crash(Exception):
        pass

    spec = TaskSpec(executors=[{"command": ["true"]}])
    with pytest.raises(Crash), store.tx() as s:
        task, _ = ts.create_task(s, who, spec, now)
        ledger.open_hold(s, who.org_id, who.user_id, task.id, 700, 500, now)
        raise Crash  # the process dies before COMMIT
    with store.read() as s:
        assert books.summary(s, who.org_id, now)["balance"] == 1_000
        assert books.check(s).ok and books.check(s).holds == 0


def test_racing_holds_never_overdraw(store: Store) -> None:
    """Eight submissions race for 1000 fen, 300 each: exactly three holds land, whichever
    database, and the account never goes below its floor."""
    import threading

    who, *_ = _world(store)
    now = time.time()
    with store.tx() as s:
        ledger.topup(s, who.org_id, 1_000, "top", now)
    spec = TaskSpec(executors=[{"command": ["true"]}])
    won, refused, errors = [], [], []
    go = threading.Barrier(8)

    def submit() -> None:
        go.wait()
        try:
            with store.tx() as s:
                task, _ = ts.create_task(s, who, spec, time.time())
                ledger.open_hold(s, who.org_id, who.user_id, task.id, 300, 500, time.time())
            won.append(task.id)
        except PaymentRequired:
            refused.append(1)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(won) == 3 and len(refused) == 5
    with store.read() as s:
        sm = books.summary(s, who.org_id, now)
        assert (sm["balance"], sm["held"]) == (100, 900)
        assert books.check(s).ok


def test_post_many_skips_replays_and_keeps_floors_for_the_batch(store: Store) -> None:
    who, host, *_ = _world(store)
    now = time.time()
    org, prov = L.org_account(who.org_id), L.provider_account(host)

    def t(i: str, amount: int, debit: str = org, credit: str = prov) -> L.Transfer:
        return L.Transfer(i, debit, credit, amount, L.TransferKind.ADJUST, now)

    with store.tx() as s:
        ledger.topup(s, who.org_id, 1_000, "top", now)
        assert ledger.post(s, t("a", 100))
    with store.tx() as s:  # "a" again is a replay; "b" and "c" are new
        assert ledger.post_many(s, [t("a", 100), t("b", 200), t("c", 300)]) == 2
    with pytest.raises(PaymentRequired), store.tx() as s:  # 400 there, 500 in, 1000 out
        ledger.post_many(s, [t("d", 500, prov, org), t("e", 1_000)])
    with pytest.raises(Conflict), store.tx() as s:
        ledger.post_many(s, [t("b", 201), t("f", 1)])
    with store.read() as s:
        assert ledger.account(s, org).balance == 400
        assert ledger.account(s, prov).balance == 600
        assert books.check(s).ok
