"""The hub's market shell against a real store: price books drive the scheduler's prices, quotes
bind a task to a pool and a charge cap, and misused quotes are refused naming quote_id."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cpnet.auth.model import Principal, Role
from cpnet.config import HubSettings
from cpnet.errors import Conflict, Invalid, NotFound
from cpnet.hub import market, scheduling, tasks
from cpnet.hub.bootstrap import init_hub
from cpnet.hub.service import Hub
from cpnet.market.records import PriceBookIn
from cpnet.registry.model import Heartbeat, PoolDescriptor, Region, Registration
from cpnet.store import accounts, ledger, registry
from cpnet.store import quotes as quote_store
from cpnet.store import tasks as task_store
from cpnet.tasks.model import TaskSpec


def make_hub(tmp_path: Path, **settings: object) -> Hub:
    s = HubSettings(data_dir=tmp_path, **settings)  # type: ignore[arg-type]
    init_hub(s)
    return Hub(s)


@pytest.fixture
def hub(tmp_path: Path) -> Hub:
    return make_hub(tmp_path)


def world(h: Hub) -> tuple[Principal, Principal, Principal, dict[str, str]]:
    """A user and a provider admin of one org, a user of another, and two online pools."""
    now = time.time()
    with h.store.tx() as s:
        org = accounts.create_org(s, "acme", now)
        other = accounts.create_org(s, "globex", now)
        for o in (org, other):  # every task holds its maximum charge (docs/market.md)
            ledger.topup(s, o.id, 10**10, f"funds-{o.id}", now)
        u1 = accounts.create_user(s, org.id, "alice", Role.USER, now)
        pa = accounts.create_user(s, org.id, "padmin", Role.PROVIDER_ADMIN, now)
        u2 = accounts.create_user(s, other.id, "bob", Role.USER, now)
        prov = registry.create_provider(s, org.id, "ACME", "cn.dev", now)
        site = registry.create_site(
            s, prov, name="sz1", type="general", region=Region(code="440300"), now=now
        )
        pools = [
            PoolDescriptor(
                name=name,
                hardware={"cpu_cores": 8, "memory_gb": 32},
                price={"cpu_core_hour": price},
            )
            for name, price in (("cheap", 0.05), ("dear", 0.5))
        ]
        res = registry.register(s, site.id, Registration(pools=pools), now)
        registry.heartbeat(s, site.id, Heartbeat(), now)
    alice = Principal(token_id="t1", role=Role.USER, org_id=org.id, user_id=u1.id)
    padmin = Principal(token_id="t3", role=Role.PROVIDER_ADMIN, org_id=org.id, user_id=pa.id)
    bob = Principal(token_id="t2", role=Role.USER, org_id=other.id, user_id=u2.id)
    return alice, padmin, bob, res.pools


def spec(**kw: object) -> TaskSpec:
    return TaskSpec.model_validate(
        {"executors": [{"command": ["true"]}], "expected_runtime_s": 3600, **kw}
    )


def views(h: Hub) -> dict[str, object]:
    with h.store.read() as s:
        return {v.id: v for v in scheduling.pool_views(s, time.time())}


def test_a_price_book_sets_the_schedulers_price_and_keeps_history(hub: Hub) -> None:
    _, padmin, bob, pools = world(hub)
    cheap = pools["cheap"]
    assert views(hub)[cheap].price.cpu_core_hour == 0.05  # declared, no book yet
    later = datetime.now(UTC) + timedelta(hours=1)
    book = PriceBookIn.model_validate(
        {
            "entries": [
                {"cpu_core_hour": 0.07, "scu_hour": {"general": 0.3}},
                {"kind": "spot", "cpu_core_hour": 0.02},
                {"cpu_core_hour": 0.09, "valid_from": later.isoformat()},
            ]
        }
    )
    shown = market.publish(hub, padmin, cheap, book)
    assert shown.on_demand.cpu_core_hour == 0.07 and shown.on_demand.source == "book"
    assert shown.spot is not None and shown.spot.cpu_core_hour == 0.02
    view = views(hub)[cheap]
    assert view.price.cpu_core_hour == 0.07
    assert view.price.per_scu_hour("general") == 0.3
    with hub.store.read() as s:
        hist = market.pool_prices(s, cheap, time.time(), full_history=True)
        future = market.pool_prices(s, cheap, later.timestamp() + 1)
    assert len(hist.entries) == 3
    assert future.on_demand.cpu_core_hour == 0.09
    # Another organisation's admin cannot price the pool; a bad figure names its field.
    outsider = dataclasses.replace(bob, role=Role.PROVIDER_ADMIN)
    with pytest.raises(NotFound):
        market.publish(hub, outsider, cheap, book)
    bad = PriceBookIn.model_validate({"entries": [{"dynamic": {"cap": 1.5, "floor": 0.9}}] * 1})
    market.publish(hub, padmin, cheap, bad)  # within bounds
    late = PriceBookIn.model_validate(
        {"entries": [{"valid_from": later.isoformat(), "valid_until": later.isoformat()}]}
    )
    with pytest.raises(Invalid) as err:
        market.publish(hub, padmin, cheap, late)
    assert err.value.field == "entries.0.valid_until"


def test_a_dynamic_rule_follows_the_pools_load(hub: Hub) -> None:
    _, padmin, _, pools = world(hub)
    dear = pools["dear"]
    rule = {"target": 0.5, "k": 2.0, "floor": 0.5, "cap": 2.0}
    market.publish(
        hub,
        padmin,
        dear,
        PriceBookIn.model_validate({"entries": [{"cpu_core_hour": 1.0, "dynamic": rule}]}),
    )
    assert views(hub)[dear].price.cpu_core_hour == pytest.approx(0.5)  # idle: the floor


def test_a_quote_binds_one_task_to_its_pool_and_cap(hub: Hub) -> None:
    alice, _, bob, pools = world(hub)
    q = market.make_quote(hub, alice, spec(objective="cheapest"), 5)
    assert [o.pool_id for o in q.options] == [pools["cheap"], pools["dear"]]
    assert q.fee_bps == 500 and "overrun" in q.overruns
    first = q.options[0]
    assert first.max_charge == pytest.approx(first.cost)
    assert first.fee == pytest.approx(first.cost * 0.05)
    # Take the second option: the task may run only there.
    done = tasks.submit(
        hub, alice, spec(objective="cheapest", name="x", quote_id=q.id, quote_option=2)
    )
    assert done.view is not None
    assert done.view.spec.constraints.pools == [pools["dear"]]
    scheduling.schedule_once(hub.store, time.time())
    with hub.store.read() as s:
        task = task_store.get_task(s, alice, done.id)
        assert task.pool_id == pools["dear"]
        cap = quote_store.charge_cap(s, done.id)
    assert cap is not None and cap.max_charge == pytest.approx(q.options[1].max_charge)
    assert cap.overrun_unit == "hour" and cap.fee_bps == 500
    # Used once; another org cannot see it; a changed spec is refused.
    with pytest.raises(Conflict) as err:
        tasks.submit(hub, alice, spec(objective="cheapest", quote_id=q.id))
    assert err.value.field == "quote_id" and "new quote" in err.value.message
    q2 = market.make_quote(hub, alice, spec(), 5)
    with pytest.raises(NotFound) as err:
        tasks.submit(hub, bob, spec(quote_id=q2.id))
    assert err.value.field == "quote_id"
    with pytest.raises(Invalid) as err:
        tasks.submit(hub, alice, spec(expected_runtime_s=7200, quote_id=q2.id))
    assert err.value.field == "quote_id" and err.value.code == "quote_mismatch"
    with pytest.raises(Invalid) as err:
        tasks.submit(hub, alice, spec(quote_id=q2.id, quote_option=9))
    assert err.value.field == "quote_option"
    # A retried submission (same idempotency key) finds its task, not "quote used".
    one = tasks.submit(hub, alice, spec(quote_id=q2.id, idempotency_key="k"))
    two = tasks.submit(hub, alice, spec(quote_id=q2.id, idempotency_key="k"))
    assert one.id == two.id and not two.created


def test_an_expired_quote_is_refused(tmp_path: Path) -> None:
    h = make_hub(tmp_path, quote_ttl_s=0.0)
    alice, _, _, _ = world(h)
    q = market.make_quote(h, alice, spec(), 5)
    with pytest.raises(Conflict) as err:
        tasks.submit(h, alice, spec(quote_id=q.id))
    assert err.value.field == "quote_id" and err.value.code == "quote_expired"


def test_no_feasible_pool_is_a_conflict_saying_why(hub: Hub) -> None:
    alice, _, _, _ = world(hub)
    with pytest.raises(Conflict) as err:
        market.make_quote(hub, alice, spec(resources={"cpu_cores": 64}), 5)
    assert "larger than the whole pool" in err.value.message


def test_discovery_shows_the_price_the_scheduler_uses(hub: Hub) -> None:
    _, padmin, _, pools = world(hub)
    cheap = pools["cheap"]
    book = {
        "entries": [
            {
                "cpu_core_hour": 0.5,
                "scu_hour": {"general": 0.25},
                "dynamic": {"target": 0.5, "k": 2, "floor": 0.5, "cap": 2},
            }
        ]
    }
    market.publish(hub, padmin, cheap, PriceBookIn.model_validate(book))
    now = time.time()
    with hub.store.read() as s:
        listed = {r.id: r for r in registry.list_pools(s, registry.PoolFilter(), now)}
        one = registry.get_pool(s, cheap, now)
        declared = registry.get_pool(s, cheap)
        scu = registry.list_pools(s, registry.PoolFilter(profile="general"), now)
    assert listed[cheap].price.cpu_core_hour == pytest.approx(0.25)  # idle: 0.5× floor
    assert one.price.cpu_core_hour == pytest.approx(0.25)
    assert declared.price.cpu_core_hour == 0.05  # without `now`: as declared
    assert listed[pools["dear"]].price.cpu_core_hour == 0.5  # no book
    per = {r.id: r.price_per_scu_hour for r in scu}
    assert per[cheap] == pytest.approx(0.125)
    assert views(hub)[cheap].price.cpu_core_hour == pytest.approx(0.25)
