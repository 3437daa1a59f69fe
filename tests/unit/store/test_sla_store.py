"""SLAs in the store and the hub's sweep (store/sla.py, hub/sla.py) on SQLite and PostgreSQL:
liveness transitions recorded where pools come and go, agent-declared terms kept as history, a
breached window credited through the ledger exactly once, and reputations refreshed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from cpnet.auth.model import Principal, Role
from cpnet.errors import Invalid
from cpnet.hub import sla as hub_sla
from cpnet.market import ledger as L
from cpnet.market import sla
from cpnet.registry.model import PoolDescriptor, Region, Registration, SlaTermsIn
from cpnet.sched import Resources
from cpnet.store import accounts, books, ledger, registry
from cpnet.store import sla as sla_store
from cpnet.store import tasks as ts
from cpnet.store.db import Store
from cpnet.store.tables import LedgerTransfer, SlaEvaluation, Task
from cpnet.tasks.model import AttemptUpdate, TaskSpec, Usage
from cpnet.tasks.states import State

W = 60.0  # window, s
T0 = 1_000_020.0  # a window boundary (16 667 × 60)
PRICE = {"cpu_core_hour": 360.0}  # 0.1 CNY per core-second
TERMS = SlaTermsIn(window_s=W, credit_percent=10, availability=0.99)


@pytest.fixture
def store(database_url: str):
    s = Store(database_url)
    s.migrate()
    yield s
    s.close()


def _world(store: Store):
    with store.tx() as s:
        org = accounts.create_org(s, "acme", T0)
        user = accounts.create_user(s, org.id, "alice", Role.USER, T0)
        host = accounts.create_org(s, "hostco", T0)
        prov = registry.create_provider(s, host.id, "Host Co", "cn.dev", T0)
        site = registry.create_site(
            s, prov, name="sz", type="general", region=Region(code="440300"), now=T0
        )
        desc = PoolDescriptor(
            name="cpu", hardware={"cpu_cores": 8, "memory_gb": 64}, price=PRICE, sla=TERMS
        )
        reg = Registration(pools=[desc], heartbeat_interval_s=5)
        pool_id = registry.register(s, site.id, reg, T0, sla_min_window_s=W).pools["cpu"]
        ledger.topup(s, org.id, 100_000, "top", T0)
    who = Principal(token_id="t", role=Role.USER, org_id=org.id, user_id=user.id)
    return who, site.id, pool_id, reg


def _run_task(
    store: Store, who: Principal, site_id: str, pool_id: str, placed: float, ends: bool = True
) -> str:
    spec = TaskSpec(executors=[{"command": ["true"]}], resources={"cpu_cores": 2, "ram_gb": 1})
    with store.tx() as s:
        task, _ = ts.create_task(s, who, spec, placed)
        ledger.open_hold(s, who.org_id, who.user_id, task.id, 10_000, 500, placed)
    with store.tx() as s:
        task = s.scalar(select(Task).where(Task.id == task.id))
        aid = ts.place(s, task, pool_id, site_id, Resources(2, 1, 0, 0), placed, "test")
    steps = [(State.RUNNING, placed + 1, 0.0), (State.COMPLETE, placed + 6, 5.0)]
    for state, at, wall in steps if ends else steps[:1]:
        u = AttemptUpdate(
            attempt_id=aid,
            state=state,
            at=datetime.fromtimestamp(at, UTC),
            usage=Usage(wall_s=wall) if wall else None,
        )
        with store.tx() as s:
            ts.apply_update(s, site_id, u, at)
    return aid


def _end(store: Store, site_id: str, aid: str, at: float, wall: float) -> None:
    u = AttemptUpdate(
        attempt_id=aid,
        state=State.COMPLETE,
        at=datetime.fromtimestamp(at, UTC),
        usage=Usage(wall_s=wall),
    )
    with store.tx() as s:
        ts.apply_update(s, site_id, u, at)


def test_a_window_is_evaluated_once_its_attempts_ended_so_their_charges_count(
    store: Store,
) -> None:
    who, site_id, pool_id, _ = _world(store)
    aid = _run_task(store, who, site_id, pool_id, placed=T0 + W + 2, ends=False)
    with store.tx() as s:  # the site is lost in window 2 (its runner goes on, as on a crash)
        assert registry.sweep_liveness(s, T0 + W + 40, 3, T0) == [site_id]
    early = hub_sla.sweep(store, T0 + 2 * W + 1, 3600.0)
    assert early.evaluated == 1  # window 1; window 2 waits for its running attempt
    _end(store, site_id, aid, T0 + 2 * W + 3, 5.0)
    late = hub_sla.sweep(store, T0 + 2 * W + 4, 3600.0)
    assert (late.evaluated, late.breached, late.credits) == (1, 1, 1)
    with store.read() as s:  # settled after the window: 60 s observed × 2 cores × 0.1 CNY
        charged = sla_store.charged(s, pool_id, T0 + W, T0 + 2 * W)
    assert charged == {who.org_id: 1_200}
    assert _balance(store, L.SLA) == -120  # 10 % of it


def test_a_breached_window_credits_the_user_once_and_the_books_check(store: Store) -> None:
    who, site_id, pool_id, reg = _world(store)
    with store.read() as s:
        (row,) = sla_store.history(s, pool_id)
        assert (row.source, row.window_s, row.credit_bps, row.availability) == (
            "agent",
            W,
            1000,
            0.99,
        )
    with store.tx() as s:  # the same terms on re-registration: no new row
        registry.register(s, site_id, reg, T0 + 1, sla_min_window_s=W)
        assert len(sla_store.history(s, pool_id)) == 1
    _run_task(store, who, site_id, pool_id, placed=T0 + W + 2)  # in window 2
    with store.tx() as s:  # silent since T0 + 1: lost at T0 + 100 (40 of window 2's 60 s up)
        assert registry.sweep_liveness(s, T0 + W + 40, 3, T0) == [site_id]
    with store.read() as s:
        moves = sla_store.transitions(s, pool_id, T0 + W, T0 + 2 * W)
    assert moves == [(T0, True), (T0 + W + 40, False)]
    with store.read() as s:
        charged = sla_store.charged(s, pool_id, T0 + W, T0 + 2 * W)
    assert charged == {who.org_id: 100}  # 2 cores × 5 s × 0.1 CNY = 1.00 CNY
    before = _balance(store, L.org_account(who.org_id))

    first = hub_sla.sweep(store, T0 + 2 * W + 1, 3600.0)
    assert (first.evaluated, first.breached, first.credits) == (2, 1, 1)
    assert _balance(store, L.org_account(who.org_id)) == before + 10  # 10 % of 100
    assert _balance(store, L.SLA) == -10
    again = hub_sla.sweep(store, T0 + 2 * W + 5, 3600.0)
    assert (again.evaluated, again.credits) == (0, 0)
    with store.read() as s:
        # Even evaluating the window anew owes the very same transfer: posting it is a replay.
        ev = sla.evaluate(
            pool_id,
            sla_store.terms_of(sla_store.in_force(s, pool_id)),
            T0 + W,
            T0 + 2 * W,
            sla_store.transitions(s, pool_id, T0 + W, T0 + 2 * W),
            sla_store.attempt_facts(s, pool_id, T0 + W, T0 + 2 * W),
        )
    with store.tx() as s:
        assert ledger.post_many(s, sla.credits(ev, charged, T0 + 999)) == 0
    assert _balance(store, L.org_account(who.org_id)) == before + 10
    with store.read() as s:
        credits = s.scalars(select(LedgerTransfer).where(LedgerTransfer.kind == "credit")).all()
        assert [t.id for t in credits] == [sla.credit_id(pool_id, T0 + W, who.org_id)]
        assert books.check(s).ok
        shown = hub_sla.show(s, pool_id)
        rows = s.scalars(select(SlaEvaluation).order_by(SlaEvaluation.window_start)).all()
        assert [r.breached for r in rows] == [False, True]
        assert rows[1].evidence["availability"]["offline"] == [[T0 + W + 40, T0 + 2 * W]]
    assert shown.credited == 10 and shown.evaluations[0].breaches == ["availability"]
    assert shown.terms is not None and shown.terms.credit_percent == 10
    assert shown.reputation is not None and shown.reputation.score < 1.0
    with store.read() as s:
        rec = registry.get_pool(s, pool_id)
    assert rec.sla and rec.reputation == pytest.approx(shown.reputation.score)


def test_terms_out_of_bounds_are_refused_naming_the_term(store: Store) -> None:
    _, _, pool_id, _ = _world(store)
    admin = Principal(token_id="t", role=Role.ADMIN, org_id="org_admin")
    with pytest.raises(Invalid) as err:
        hub_sla.set_terms(store, admin, pool_id, SlaTermsIn(window_s=10), W, T0)
    assert err.value.field == "window_s" and "60..2592000" in err.value.message
    shown = hub_sla.set_terms(
        store, admin, pool_id, SlaTermsIn(window_s=W, success_rate=0.9), W, T0 + 5
    )
    assert [h.source for h in shown.history] == ["agent", "admin"]
    assert shown.terms is not None and shown.terms.success_rate == 0.9


def test_a_bad_sla_in_a_descriptor_refuses_the_registration(store: Store) -> None:
    _, site_id, _, reg = _world(store)
    bad = reg.model_copy(
        update={"pools": [reg.pools[0].model_copy(update={"sla": SlaTermsIn(window_s=5)})]}
    )
    with pytest.raises(Invalid) as err, store.tx() as s:
        registry.register(s, site_id, bad, T0 + 2, sla_min_window_s=W)
    assert err.value.field == "pools.0.sla.window_s"


def _balance(store: Store, account: str) -> int:
    with store.read() as s:
        return ledger.account(s, account).balance
