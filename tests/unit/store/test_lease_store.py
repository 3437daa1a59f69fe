"""Leases in the store (cpnet.store.leases, hub/auctions.sweep) on SQLite and PostgreSQL: the
award's hold, settlement as the window runs and at its end, exactly once, an early cancel, and
books that check after each."""

from __future__ import annotations

import time

import pytest

from cpnet.auth.model import Principal, Role
from cpnet.errors import Conflict, PaymentRequired
from cpnet.hub import auctions
from cpnet.market import lease as M
from cpnet.registry.model import PoolDescriptor, Region, Registration
from cpnet.sched import Resources
from cpnet.store import accounts, books, ledger, registry
from cpnet.store import leases as lease_store
from cpnet.store.db import Store
from cpnet.store.tables import LeaseRow


@pytest.fixture
def store(database_url: str):
    s = Store(database_url)
    s.migrate()
    yield s
    s.close()


def _world(store: Store, funds: int = 1_000_000):
    now = time.time()
    with store.tx() as s:
        org = accounts.create_org(s, "acme", now)
        user = accounts.create_user(s, org.id, "alice", Role.USER, now)
        host = accounts.create_org(s, "hostco", now)
        prov = registry.create_provider(s, host.id, "Host Co", "cn.dev", now)
        site = registry.create_site(
            s, prov, name="sz", type="general", region=Region(code="440300"), now=now
        )
        desc = PoolDescriptor(name="cpu", hardware={"cpu_cores": 8, "memory_gb": 64})
        pool_id = registry.register(s, site.id, Registration(pools=[desc]), now).pools["cpu"]
        if funds:
            ledger.topup(s, org.id, funds, f"fund-{org.id}", now)
    who = Principal(token_id="t", role=Role.USER, org_id=org.id, user_id=user.id)
    return who, host.id, pool_id


def _lease(who: Principal, host: str, pool_id: str, start: float, seconds: float) -> M.Lease:
    return M.Lease(
        id=f"lse_{int(start * 1000)}",
        request_id=f"auc_{int(start * 1000)}",
        pool_id=pool_id,
        org_id=who.org_id,
        provider_org=host,
        resources=Resources(2, 4),
        start=start,
        end=start + seconds,
        price=3_600,  # 1 fen a second
    )


def _check(store: Store) -> None:
    with store.read() as s:
        c = books.check(s)
    assert c.ok, c.problems


def test_a_lease_is_held_paid_as_it_runs_and_settled_once(store: Store) -> None:
    who, host, pool_id = _world(store)
    t0 = time.time()
    x = _lease(who, host, pool_id, t0, 600)
    with store.tx() as s:
        lease_store.create(s, x, who.user_id, 500, t0)
    with store.read() as s:
        assert books.summary(s, who.org_id, t0)["held"] == 600
    _check(store)
    auctions.sweep(store, 500, t0 + 30, period_s=60)  # no whole period yet
    with store.read() as s:
        assert s.get(LeaseRow, x.id).charged == 0  # type: ignore[union-attr]
    for t in (t0 + 130, t0 + 130, t0 + 170):  # two periods; a replay; not a third yet
        auctions.sweep(store, 500, t, period_s=60)
        _check(store)
    with store.read() as s:
        row = s.get(LeaseRow, x.id)
        assert row is not None and row.charged == 120 and row.state == "active"
        assert books.summary(s, who.org_id, t0)["held"] == 480
    auctions.sweep(store, 500, t0 + 900, period_s=60)  # past the end: the rest, nothing left
    with store.read() as s:
        row = s.get(LeaseRow, x.id)
        summ = books.summary(s, who.org_id, t0)
        assert row is not None and row.charged == 600 and row.state == "ended"
        assert summ["held"] == 0 and summ["balance"] == 1_000_000 - 600
        assert books.summary(s, host, t0)["earned"] == 600 - 30  # 5 % fee on each part
    _check(store)


def test_a_window_shorter_than_a_period_is_settled_at_its_end(store: Store) -> None:
    who, host, pool_id = _world(store)
    t0 = time.time()
    x = _lease(who, host, pool_id, t0, 90)
    with store.tx() as s:
        lease_store.create(s, x, who.user_id, 500, t0)
    auctions.sweep(store, 500, t0 + 100, period_s=3_600)
    with store.read() as s:
        row = s.get(LeaseRow, x.id)
        assert row is not None and row.state == "ended" and row.charged == 90
    _check(store)


def test_cancel_pays_what_elapsed_once(store: Store) -> None:
    who, host, pool_id = _world(store)
    t0 = time.time() - 100  # began 100 s ago
    x = _lease(who, host, pool_id, t0, 600)
    with store.tx() as s:
        lease_store.create(s, x, who.user_id, 500, t0)
    with store.tx() as s:
        row = lease_store.cancel(s, who, x.id, t0 + 100)
        assert row.state == "cancelled" and row.charged == 100
    with pytest.raises(Conflict), store.tx() as s:
        lease_store.cancel(s, who, x.id, t0 + 150)
    stranger = Principal(token_id="s", role=Role.USER, org_id="org_other")
    with store.read() as s:
        assert lease_store.visible(s, stranger) == []
        assert books.summary(s, who.org_id, t0)["held"] == 0
    _check(store)


def test_an_award_the_org_cannot_cover_is_refused_whole(store: Store) -> None:
    who, host, pool_id = _world(store, funds=0)
    t0 = time.time()
    with pytest.raises(PaymentRequired) as e, store.tx() as s:
        lease_store.create(s, _lease(who, host, pool_id, t0, 600), who.user_id, 500, t0)
    assert e.value.extra["shortfall_minor"] == 600
    with store.read() as s:
        assert lease_store.visible(s, who) == []
    _check(store)
