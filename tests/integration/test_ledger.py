"""The market end to end: a task on a real agent is held at submission and settled at the
metered usage × price when it ends — bill = provider payout + platform fee, to the minor unit —
even when the hub is SIGKILLed between the hold and the settlement (SQLite and PostgreSQL); and a
task whose hold cannot be placed is refused with 402, naming the shortfall."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from cpnet.client import CpnetError
from cpnet.market import charge, money
from cpnet.market import ledger as L
from cpnet.tasks.states import State
from tests.integration.procs import WORLD_FUNDS, AgentProc, HubProc, make_world, pool, wait_until

pytestmark = pytest.mark.integration

PRICE = 360.0  # CNY per core-hour: 0.1 CNY per core-second, so short tasks cost whole fen
CORES = 2


@pytest.fixture
def db_hub(tmp_path: Path, database_url: str, agents):
    from services import free_port

    h = HubProc(tmp_path / "hub", free_port())
    h.data_dir.mkdir()
    if database_url.startswith("postgresql"):
        h.database_url = database_url
    h.init()
    h.start()
    yield h
    h.kill()


def _ledger_check(hub: HubProc) -> dict:
    args = ["--data-dir", str(hub.data_dir)]
    if hub.database_url:
        args += ["--database-url", hub.database_url]
    out = subprocess.run(
        [sys.executable, "-m", "cpnet", "ledger", "check", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)


def _start(hub: HubProc, agents: list, tmp_path: Path):  # type: ignore[no-untyped-def]
    world = make_world(hub, {"a": ("general", "440100")})
    agent = AgentProc(
        hub, world.site_tokens["a"], tmp_path / "agent", [pool("cpu", cores=4, price=PRICE)]
    )
    agent.start()
    agents.append(agent)
    user = hub.client(world.user_token)
    wait_until(lambda: user.pools(), 30, "pool online", log=agent.log)
    return world, user


def _spec(seconds: float) -> dict:
    return {
        "executors": [{"command": ["sleep", str(seconds)]}],
        "resources": {"cpu_cores": CORES, "ram_gb": 0.5},
        "expected_runtime_s": 60,
    }


def _wall(task, user) -> float:  # type: ignore[no-untyped-def]
    """The wall seconds settlement charges the task's one attempt: its accepted signed usage
    record's (docs/market.md, "Metering")."""
    (att,) = task.attempts
    (rec,) = [r for r in user.task_usage(task.id).records if r.verdict == "accepted"]
    assert rec.attempt_id == att.attempt_id and rec.wall_s is not None and rec.wall_s > 0
    return rec.wall_s


def _expected(task, user) -> int:  # type: ignore[no-untyped-def]
    """The charge of the task's one attempt: its signed wall seconds × the price."""
    price = {"cpu_core_hour": PRICE}
    return charge.usage_charge(price, {"cpu_cores": CORES, "ram_gb": 0.5}, _wall(task, user))


def test_bill_payout_and_fee_add_up_to_metered_usage_at_the_price(
    db_hub: HubProc, agents, tmp_path
):
    hub = db_hub
    world, user = _start(hub, agents, tmp_path)
    funds = int(WORLD_FUNDS.replace(".", ""))
    t = user.submit(_spec(1))
    acc = user.account(world.org_id)
    # held: the predicted cost (2 cores × 360/h × 60 s = 12 CNY) × the 1.5 margin
    assert acc.held == 1_800 and acc.balance == funds - 1_800
    done = user.wait(t.id, timeout=60)
    assert done.state is State.COMPLETE, done.reason
    expected = _expected(done, user)
    period = L.period_of(time.time())
    bill = user.bill(world.org_id, period)
    (line,) = bill.lines
    assert line.task_id == t.id and line.charge == expected
    assert bill.charged == expected == bill.payouts + bill.fees
    assert bill.fees == charge.split(expected, 500)[1]
    acc = user.account(world.org_id)
    assert acc.held == 0 and acc.balance == funds - expected
    assert acc.earned == bill.payouts  # the same org is the provider here
    check = _ledger_check(hub)
    assert check["ok"] and check["total"] == 0, check

    # A correction is a new transfer: the platform refunds its fee, once however often posted.
    with hub.client() as admin:
        fee = money.major(bill.fees)
        args = ("refund", L.REVENUE, L.org_account(world.org_id), fee)
        first = admin.post_correction(*args, transfer_id=f"refund-{t.id}", task_id=t.id)
        again = admin.post_correction(*args, transfer_id=f"refund-{t.id}", task_id=t.id)
        assert first.created and not again.created
        with pytest.raises(CpnetError) as e:  # the same id with other content
            other = money.major(bill.fees + 1)
            admin.post_correction(*args[:3], other, transfer_id=f"refund-{t.id}", task_id=t.id)
        assert e.value.status == 409
    assert user.account(world.org_id).balance == funds - expected + bill.fees
    assert _ledger_check(hub)["ok"]


def test_a_hub_killed_between_hold_and_settlement_charges_exactly_once(
    db_hub: HubProc, agents, tmp_path
):
    hub = db_hub
    world, user = _start(hub, agents, tmp_path)
    funds = int(WORLD_FUNDS.replace(".", ""))
    t = user.submit(_spec(4))
    wait_until(lambda: user.task(t.id).state is State.RUNNING, 60, "the task to run")
    hub.kill()  # SIGKILL: the hold is written, the settlement is not
    hub.start()
    user = hub.client(world.user_token)
    done = user.wait(t.id, timeout=90)
    assert done.state is State.COMPLETE, done.reason
    bill = user.bill(world.org_id, L.period_of(time.time()))
    # On a slow machine the restarted hub may find the site's heartbeats stale and declare the
    # attempt lost (SYSTEM_ERROR, not charged), then run the task again: one bill line per
    # charged attempt, each charged once at its metered seconds.
    charged = [a for a in done.attempts if a.state is not State.SYSTEM_ERROR]
    lines = [x for x in bill.lines if x.task_id == t.id]
    assert sorted(x.attempt_id for x in lines) == sorted(a.attempt_id for a in charged)
    demand = {"cpu_cores": CORES, "ram_gb": 0.5}
    price = {"cpu_core_hour": PRICE}
    assert all(x.charge == charge.usage_charge(price, demand, x.seconds) for x in lines)
    expected = sum(x.charge for x in lines)
    assert bill.charged == expected > 0
    if len(done.attempts) == 1:  # the usual case: the signed record's seconds
        assert expected == _expected(done, user)
    acc = user.account(world.org_id)
    assert acc.held == 0 and acc.balance == funds - expected
    check = _ledger_check(hub)
    assert check["ok"] and check["holds"] == 1, check


def test_a_hold_that_cannot_be_placed_is_refused_with_402(hub: HubProc, agents, tmp_path):
    _start(hub, agents, tmp_path)
    with hub.client() as admin:
        poor = admin.create_org("poor")
        _, u = admin.create_user(poor.id, "bob", role="user")
        admin.topup(poor.id, "5.00", transfer_id="poor-1")
    with hub.client(u.token) as bob, pytest.raises(CpnetError) as e:
        bob.submit(_spec(1))  # held 18.00 CNY, 5.00 there
    assert e.value.status == 402 and e.value.code == "insufficient_funds"
    assert "short by 13.00 CNY" in str(e.value) and "cpnet account topup" in str(e.value)
    # the TES front door takes the same path: the same 402 body
    r = httpx.post(
        f"{hub.url}/ga4gh/tes/v1/tasks",
        json={
            "executors": [{"image": "alpine", "command": ["true"]}],
            "resources": {"cpu_cores": CORES},
        },
        headers={"authorization": f"Bearer {u.token}"},
        timeout=30,
    )
    assert r.status_code == 402, r.text
    err = r.json()["error"]
    assert err["code"] == "insufficient_funds" and "short by" in err["message"]
    assert err["shortfall_minor"] > 0
    with hub.client(u.token) as bob:
        assert not list(bob.iter_tasks())
        assert bob.account(poor.id).balance == 500


def _line_charge(bill, task_id: str) -> tuple[int, float, str]:  # type: ignore[no-untyped-def]
    (line,) = [x for x in bill.lines if x.task_id == task_id]
    return line.charge, line.seconds, str(line.hourly)


def test_settlement_charges_the_book_price_at_placement_capped_by_the_quote(
    hub: HubProc, agents, tmp_path
):
    """The price a task pays is its pool's book entry in force when it was placed (not what the
    agent declared); a task submitted with a quote pays at most the quote while it runs as
    stated, and the quote's overrun rate past that — even after the provider raised the price."""
    world, user = _start(hub, agents, tmp_path)  # the agent declares PRICE per core-hour
    (p,) = user.pools()
    book = 720.0  # the provider's book: twice the declared price
    with hub.client(world.padmin_token) as padmin:
        padmin.set_prices(p.id, [{"cpu_core_hour": book}])
    period = L.period_of(time.time())
    demand = {"cpu_cores": CORES, "ram_gb": 0.5}

    # 1. No quote: charged the book's price, to the fen, from the metered seconds.
    t = user.submit(_spec(1))
    done = user.wait(t.id, timeout=60)
    assert done.state is State.COMPLETE, done.reason
    wall = _wall(done, user)
    c, secs, hourly = _line_charge(user.bill(world.org_id, period), t.id)
    assert secs == wall
    assert c == charge.usage_charge({"cpu_core_hour": book}, demand, wall) > 0
    assert float(hourly) == pytest.approx(CORES * book)

    # 2. Quoted at the book price, then the provider raises it tenfold: within the stated work
    # the task pays the quote's max charge, not the new price.
    stated = {**_spec(1), "expected_runtime_s": 30}
    q = user.quote(stated)
    opt = q.options[0]
    assert opt.max_charge == pytest.approx(CORES * book * 30 / 3600)  # 12 CNY, fee inside
    with hub.client(world.padmin_token) as padmin:
        padmin.set_prices(p.id, [{"cpu_core_hour": book * 10}])
    t2 = user.submit({**stated, "quote_id": q.id})
    done = user.wait(t2.id, timeout=60)
    assert done.state is State.COMPLETE, done.reason
    metered_now = charge.usage_charge({"cpu_core_hour": book * 10}, demand, _wall(done, user))
    c, _, hourly = _line_charge(user.bill(world.org_id, period), t2.id)
    assert float(hourly) == pytest.approx(CORES * book * 10)  # placed at the new price ...
    cap = charge.quoted_cap(opt.max_charge, opt.overrun_rate, "hour", stated_s=30, used_s=1)
    if metered_now > cap:  # ... 1 s at 14 400/h = 4 CNY, under the 12 CNY cap unless slow
        assert c == cap
    else:
        assert c == metered_now

    # 3. Quoted, then run over the stated work at the raised price: the cap plus the quote's
    # overrun rate for the extra seconds, never the raised price.
    over = {**_spec(5), "expected_runtime_s": 4}
    q = user.quote(over)
    opt = q.options[0]
    assert opt.overrun_unit == "hour" and opt.overrun_rate == pytest.approx(CORES * book * 10)
    with hub.client(world.padmin_token) as padmin:
        padmin.set_prices(p.id, [{"cpu_core_hour": book * 100}])
    t3 = user.submit({**over, "quote_id": q.id})
    done = user.wait(t3.id, timeout=60)
    assert done.state is State.COMPLETE, done.reason
    wall = _wall(done, user)
    assert wall > 4
    held = charge.hold_amount((opt.max_charge,), 1.5, 0)  # the quote's max charge × margin
    cap = charge.quoted_cap(opt.max_charge, opt.overrun_rate, "hour", stated_s=4, used_s=wall)
    c, _, _ = _line_charge(user.bill(world.org_id, period), t3.id)
    assert c == min(cap, held)
    assert c > charge.quoted_cap(opt.max_charge, opt.overrun_rate, "hour", stated_s=4, used_s=4)
    assert c < charge.usage_charge({"cpu_core_hour": book * 100}, demand, wall)

    bill = user.bill(world.org_id, period)
    assert bill.charged == bill.payouts + bill.fees
    assert _ledger_check(hub)["ok"]
