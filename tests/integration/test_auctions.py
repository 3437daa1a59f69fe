"""Reservations by auction through a real hub and real local agents: a user posts a request,
two providers bid (one through the API, one by its pool's bid rule), the hub's sweep awards it
at the close, the lease shows in discovery, the user's task runs on the leased pool first while
another organisation's task cannot take the leased capacity, the lease is paid as it runs and
on an early cancel, `cpnet ledger check` passes and the bill is payouts + fees to the fen. A
request whose organisation cannot cover the hold fails its award, naming the shortfall."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cpnet.cli import output
from cpnet.cli.config import CliState
from cpnet.cli.main import app
from cpnet.client import CpnetError
from cpnet.market import ledger as L
from cpnet.tasks.states import State
from services import free_port
from tests.integration.procs import HubProc, make_world, pool, start_agent, wait_until
from tests.integration.test_ledger import _ledger_check

pytestmark = pytest.mark.integration
runner = CliRunner()


def _hub(tmp_path: Path, database_url: str | None = None):  # type: ignore[no-untyped-def]
    h = HubProc(tmp_path / "hub", free_port(), env={"CPNET_LEASE_PERIOD_S": "2"})
    h.data_dir.mkdir()
    if database_url and database_url.startswith("postgresql"):
        h.database_url = database_url
    h.init()
    h.start()
    return h


@pytest.fixture
def hub(tmp_path: Path):
    h = _hub(tmp_path)
    yield h
    h.kill()


@pytest.fixture
def db_hub(tmp_path: Path, database_url: str):
    """A hub on SQLite, then on PostgreSQL (the award locks its pools; settlements race)."""
    h = _hub(tmp_path, database_url)
    yield h
    h.kill()


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def _spec(cores: float, seconds: float, pools: list[str] | None = None) -> dict:
    spec = {
        "executors": [{"command": ["sleep", str(seconds)]}],
        "resources": {"cpu_cores": cores, "ram_gb": 0.25},
        "expected_runtime_s": 30,
    }
    if pools:
        spec["constraints"] = {"pools": pools}
    return spec


def test_auction_award_lease_scheduling_and_settlement(
    db_hub: HubProc, agents, tmp_path, monkeypatch
):
    hub = db_hub
    one = make_world(hub, {"a": ("general", "440100")}, org="provone")
    two = make_world(hub, {"b": ("general", "440300")}, org="provtwo")
    buyer = make_world(hub, {}, org="buyer")
    other = make_world(hub, {}, org="other")
    start_agent(hub, agents, tmp_path, one, "a", [pool("p1", cores=4, price=360.0)])
    start_agent(hub, agents, tmp_path, two, "b", [pool("p2", cores=4, price=720.0)])
    user = hub.client(buyer.user_token)
    live = wait_until(lambda: len(user.pools()) == 2 and user.pools(), 60, "two live pools")
    ids = {p.name: p.id for p in live}
    p1, p2 = ids["p1"], ids["p2"]

    # Provider two bids by rule: a quarter of p2's on-demand price of whatever is asked.
    rule = hub.client(two.padmin_token).set_bid_rule(p2, 0.25)
    assert rule.factor == 0.25

    start = time.time() + 10
    auc = user.create_auction(
        start=_iso(start),
        end=_iso(start + 120),
        max_price="1000.00",
        resources={"cpu_cores": 2, "ram_gb": 1},
    )
    assert auc.state == "open" and auc.total.cpu_cores == 2

    # Provider one sees the open request and bids through the API; bids are sealed.
    p_one = hub.client(one.padmin_token)
    assert auc.id in {a.id for a in p_one.auctions(state="open")}
    p_one.bid(auc.id, p1, "600.00")
    with pytest.raises(CpnetError) as e:  # not its pool: as if it did not exist
        p_one.bid(auc.id, p2, "1.00")
    assert e.value.status == 404
    with pytest.raises(CpnetError) as e:
        p_one.bid(auc.id, p1, "6.001")
    assert e.value.status == 400 and e.value.field == "price"
    seen = user.auction(auc.id)
    assert seen.bids == [] and seen.bids_count == 1  # the owner sees no bid before the close
    with pytest.raises(CpnetError) as e:  # another organisation's user does not see it
        hub.client(other.user_token).auction(auc.id)
    assert e.value.status == 404

    # The sweep awards at bids_close_at (the start): the rule's 360/h beats the API's 600/h.
    done = wait_until(
        lambda: (a := user.auction(auc.id)).state != "open" and a, 60, "the award", log=hub.log
    )
    assert done.state == "awarded", done.reason
    by_pool = {b.pool_id: b for b in done.bids}
    assert by_pool[p2].rule and by_pool[p2].price == 36_000  # 2 cores × 720 × 0.25, in fen
    assert not by_pool[p1].rule and by_pool[p1].price == 60_000
    assert by_pool[p2].score < by_pool[p1].score
    assert [b.pool_id for b in p_one.auction(auc.id).bids] == [p1]  # still only its own
    (lease,) = user.leases()
    assert lease.id == done.lease_id and lease.pool_id == p2 and lease.price == 36_000
    assert lease.total == 1_200  # 360.00/h × 120 s
    acc = user.account(buyer.org_id)
    assert acc.held == 1_200

    # Discovery: the pool shows its lease; its owner sees which.
    mine = user.pool(p2).leases
    assert mine is not None and mine.active == 1 and mine.own == [lease.id]
    theirs = hub.client(other.user_token).pool(p2).leases
    assert theirs is not None and theirs.active == 1 and theirs.own == []

    wait_until(lambda: time.time() >= start + 0.5, 30, "the lease's window")
    assert user.pool(p2).leases.live == 1  # type: ignore[union-attr]
    monkeypatch.setattr(output.console, "_width", 250)
    out = cpnet(hub, buyer.user_token, "pools")
    assert out.exit_code == 0 and "2 cores · 1 lease (1 yours)" in out.output, out.output
    out = cpnet(hub, buyer.user_token, "lease", "list")
    assert out.exit_code == 0 and lease.id in out.output and "active (live)" in out.output

    # Another org: 3 cores on p2 do not fit beside the lease (4 − 2 leased); 2 do.
    them = hub.client(other.user_token)
    big = them.submit(_spec(3, 60, [p2]))
    small = them.submit(_spec(2, 60, [p2]))
    wait_until(lambda: them.task(small.id).state is State.RUNNING, 60, "the small task runs")
    assert them.task(big.id).state is State.QUEUED

    # The lease holder's task goes to its lease on p2 first (p1 is cheaper on demand).
    mine_task = user.submit(_spec(2, 1))
    finished = user.wait(mine_task.id, timeout=60)
    assert finished.state is State.COMPLETE, finished.reason
    assert finished.pool_id == p2
    assert any("on lease" in (ev.reason or "") for ev in user.events(mine_task.id))

    # Paid as it runs: whole 2 s periods settle without anyone asking.
    wait_until(lambda: user.leases()[0].charged > 0, 30, "a period paid", log=hub.log)
    them.cancel(big.id)
    them.cancel(small.id)
    wait_until(lambda: them.task(small.id).state is State.CANCELED, 60, "the small task settled")

    # Cancelled early: it pays what elapsed, the rest of the hold goes back.
    ended = user.cancel_lease(lease.id)
    assert ended.state == "cancelled" and 0 < ended.charged < 1_200
    with pytest.raises(CpnetError) as e:
        user.cancel_lease(lease.id)
    assert e.value.status == 409
    assert user.pool(p2).leases.active == 0  # type: ignore[union-attr]

    period = L.period_of(time.time())
    bill = user.bill(buyer.org_id, period)
    lease_lines = [x for x in bill.lines if x.task_id == lease.id]
    assert lease_lines and sum(x.charge for x in lease_lines) == ended.charged
    assert all(x.pool_id == p2 for x in lease_lines)
    assert not [x for x in bill.lines if x.task_id == mine_task.id]  # its lease paid for it
    assert bill.charged == bill.payouts + bill.fees == ended.charged
    acc = user.account(buyer.org_id)
    assert acc.held == 0 and acc.balance == 100_000_000 - ended.charged
    # Provider two earned the lease's payouts and what the other org's small task ran up.
    earned = hub.client(two.padmin_token).account(two.org_id).earned
    theirs_bill = them.bill(other.org_id, period)
    assert {x.task_id for x in theirs_bill.lines} <= {small.id}
    assert earned == bill.payouts + theirs_bill.payouts
    check = _ledger_check(hub)
    assert check["ok"] and check["total"] == 0, check


def cpnet(hub: HubProc, token: str, *args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["--hub", hub.url, "--token", token, *args], obj=CliState())


def test_an_award_the_buyer_cannot_pay_fails_naming_the_shortfall(hub: HubProc, agents, tmp_path):
    """Through the CLI: a bid rule, a request, its close, the failed award, the tables."""
    prov = make_world(hub, {"a": ("general", "440100")}, org="prov")
    start_agent(hub, agents, tmp_path, prov, "a", [pool("p1", cores=4, price=360.0)])
    with hub.client() as admin:
        poor = admin.create_org("poor")
        _, alice = admin.create_user(poor.id, "alice", role="user")
    user = hub.client(alice.token)
    (p1,) = wait_until(lambda: user.pools(), 60, "a live pool")
    out = cpnet(hub, prov.padmin_token, "auction", "rule", p1.id, "--factor", "1", "--json")
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["factor"] == 1.0
    start = _iso(time.time() + 600)
    out = cpnet(hub, alice.token, "auction", "create", "--start", start, "--hours", "-1",
                "--cores", "1", "--max-price", "100")  # fmt: skip
    assert out.exit_code != 0 and "end" in out.output  # a window that ends before it starts
    out = cpnet(hub, alice.token, "auction", "create", "--start", start, "--hours", "1",
                "--cores", "2", "--max-price", "1000.00", "--json")  # fmt: skip
    assert out.exit_code == 0, out.output
    auc = json.loads(out.output)["id"]
    out = cpnet(hub, prov.padmin_token, "auction", "list", "--state", "open")
    assert out.exit_code == 0 and auc in out.output, out.output
    out = cpnet(hub, alice.token, "auction", "close", auc, "--json")
    assert out.exit_code == 0, out.output
    closed = json.loads(out.output)
    assert closed["state"] == "failed" and closed["lease_id"] is None
    assert "short by 720.00 CNY" in closed["reason"], closed["reason"]
    out = cpnet(hub, alice.token, "auction", "show", auc)
    assert out.exit_code == 0 and "rule" in out.output and "failed" in out.output, out.output
    out = cpnet(hub, alice.token, "lease", "list", "--json")
    assert out.exit_code == 0 and json.loads(out.output) == {"leases": []}, out.output
    check = _ledger_check(hub)
    assert check["ok"], check
