"""Signed metering in the store (cpnet.store.usage) on SQLite and PostgreSQL: sites' usage
keys, every record kept with its verdict, and settlement by the accepted record's wall_s or
else the span the hub observed — never an unsigned figure."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from cpnet.errors import Conflict
from cpnet.ident.keys import SigningKey
from cpnet.market import charge, metering
from cpnet.market.metering import Verdict
from cpnet.registry.model import PoolDescriptor, Region, Registration
from cpnet.store import books, ledger, registry, usage
from cpnet.store import tasks as ts
from cpnet.store.db import Store
from cpnet.store.tables import Attempt
from cpnet.tasks.model import AttemptUpdate, Usage
from cpnet.tasks.states import State
from tests.unit.store.test_ledger_store import KEY, PRICE, _place, _report, _submit, _world


@pytest.fixture
def store(database_url: str):
    s = Store(database_url)
    s.migrate()
    yield s
    s.close()


def _second_site(store: Store, key: SigningKey | None) -> str:
    now = time.time()
    with store.tx() as s:
        prov = registry.create_provider(
            s, registry.list_sites(s, None)[0].org_id, "B", "cn.dv", now
        )
        site = registry.create_site(
            s, prov, name="bj", type="general", region=Region(code="110000"), now=now
        )
        desc = PoolDescriptor(name="cpu", hardware={"cpu_cores": 8, "memory_gb": 64}, price=PRICE)
        uk = {"public_key": key.public_key_b64} if key else None
        registry.register(s, site.id, Registration(pools=[desc], usage_key=uk), now)
        return site.id


def test_a_key_is_one_sites_only_and_a_rotated_key_is_kept(store: Store) -> None:
    _world(store)
    with pytest.raises(Conflict) as e:  # site B's agent registering site A's key
        _second_site(store, KEY)
    assert e.value.field == "usage_key.public_key"
    newer = SigningKey.generate()
    with store.tx() as s:
        site_a = registry.list_sites(s, None)[0].id
        usage.register_key(s, site_a, metering.UsageKey(public_key=newer.public_key_b64), 1.0)
    with store.read() as s:
        assert usage.site_keys(s, site_a) == {
            KEY.key_id: KEY.public_key_b64,
            newer.key_id: newer.public_key_b64,
        }


def _envelope(store: Store, site: str, aid: str, wall: float, at: float, key=KEY) -> dict:
    with store.read() as s:
        a = s.get(Attempt, aid)
        task_id, pool_id = a.task_id, a.pool_id
    rec = metering.build(
        site_id=site,
        task_id=task_id,
        attempt_id=aid,
        pool_id=pool_id,
        started_at=at - wall,
        ended_at=at,
        wall_s=wall,
        demand={"cpu_cores": 2, "ram_gb": 4},
    )
    return metering.sign(rec, key)


def _sig(body: dict) -> str:
    return KEY.sign(metering.canonical_json(body))


def test_a_record_for_an_attempt_that_never_started_is_refused_and_kept_once(store) -> None:
    who, _host, site, pool = _world(store)
    now = time.time()
    with store.tx() as s:
        ledger.topup(s, who.org_id, 10_000, "top", now)
    tid = _submit(store, who, 3_000, now)
    aid = _place(store, tid, pool, site)  # placed, never started
    env = _envelope(store, site, aid, 10.0, now + 20)
    for _ in range(2):  # the same refused envelope again is not kept twice
        with store.tx() as s:
            j = usage.take(s, site, env, now + 20)
        assert j.verdict is Verdict.NEVER_RAN and j.field == "attempt_id"
    with store.tx() as s:  # not this site's attempt at all
        assert usage.take(s, site, {**env}, now).verdict is Verdict.NEVER_RAN
        body = {**env["record"], "attempt_id": "att_nope", "record_id": "att_nope/1"}
        other = {"record": body, "signature": {**env["signature"], "value": _sig(body)}}
        assert usage.take(s, site, other, now).verdict is Verdict.NOT_OURS
    with store.read() as s:
        kept = usage.of_task(s, tid)
    assert [r["verdict"] for r in kept] == ["never_ran"]  # not_ours names no task of ours
    assert kept[0]["envelope"] == env and kept[0]["site_id"] == site


def test_settlement_charges_the_observed_span_without_an_accepted_record(store) -> None:
    who, _host, site, pool = _world(store)
    now = time.time()
    with store.tx() as s:
        ledger.topup(s, who.org_id, 100_000, "top", now)
    # An attempt whose record claims more than the hub saw: refused, charged the 600 s observed.
    tid = _submit(store, who, 90_000, now)
    aid = _place(store, tid, pool, site)
    _report(store, site, aid, State.RUNNING, now + 1)
    env = _envelope(store, site, aid, 3600.0, now + 601)

    u = AttemptUpdate(
        attempt_id=aid,
        state=State.COMPLETE,
        at=datetime.fromtimestamp(now + 601, UTC),
        usage=Usage(wall_s=3600.0),  # the agent's unsigned figure: never charged
        usage_record=env,
    )
    with store.tx() as s:
        res = ts.apply_update(s, site, u, now + 601)
    assert res.usage is not None and res.usage.verdict is Verdict.LONGER_THAN_OBSERVED
    expected = charge.usage_charge(PRICE, {"cpu_cores": 2, "ram_gb": 4}, 600.0)
    with store.read() as s:
        bill = books.bill(
            s, who.org_id, __import__("cpnet.market.ledger").market.ledger.period_of(now + 601)
        )
        (line,) = bill.lines
        assert line["seconds"] == 600.0 and bill.charged == expected == bill.payouts + bill.fees
        (kept,) = usage.of_task(s, tid)
        assert kept["verdict"] == "longer_than_observed" and kept["wall_s"] is None


def test_a_record_with_an_update_for_another_sites_attempt_is_kept_as_not_ours(store) -> None:
    who, _host, site, pool = _world(store)
    now = time.time()
    with store.tx() as s:
        ledger.topup(s, who.org_id, 10_000, "top", now)
    tid = _submit(store, who, 3_000, now)
    aid = _place(store, tid, pool, site)
    _report(store, site, aid, State.RUNNING, now + 1)
    other_key = SigningKey.generate()
    site_b = _second_site(store, other_key)
    env = _envelope(store, site, aid, 5.0, now + 10, key=other_key)
    u = AttemptUpdate(
        attempt_id=aid,
        state=State.COMPLETE,
        at=datetime.fromtimestamp(now + 10, UTC),
        usage_record=env,
    )
    with store.tx() as s:  # site B reporting site A's attempt, with B's own key
        res = ts.apply_update(s, site_b, u, now + 10)
    assert res.status == "rejected" and res.usage.verdict is Verdict.NOT_OURS
    with store.read() as s:
        (kept,) = usage.of_sites(s, [site_b], 10)
        assert kept["verdict"] == "not_ours" and kept["envelope"] == env
        assert usage.of_sites(s, [site], 10) == []
