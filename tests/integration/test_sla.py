"""SLAs and reputation end to end, with a real hub and real agent processes: a pool's agent
declares availability terms, a user's task is charged there, the agent is SIGKILLed so the pool
goes offline past its term, the hub's sweep evaluates the window and credits the user's
organisation exactly once through the ledger (the books check), the pool's reputation drops
and shows in discovery, and the scheduler then prefers the better-reputed pool."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cpnet.market import ledger as L
from cpnet.market import sla
from cpnet.tasks.states import State
from tests.integration.procs import AgentProc, HubProc, make_world, pool, wait_until

pytestmark = pytest.mark.integration

WINDOW_S = 30.0  # the SLA window: long enough for a task and a lost agent inside one window
CREDIT_PERCENT = 50
CHEAP, DEAR = 380.0, 400.0  # CNY per core-hour: the flaky pool is the cheaper one


@pytest.fixture
def sla_hub(tmp_path: Path):
    from services import free_port

    h = HubProc(tmp_path / "hub", free_port())
    h.env = {
        "CPNET_SLA_INTERVAL_S": "0.5",  # sweep twice a second
        "CPNET_SLA_MIN_WINDOW_S": "1",  # allow a 30 s window
        "CPNET_REPUTATION_HALF_LIFE_S": "3600",
    }
    h.data_dir.mkdir()
    h.init()
    h.start()
    yield h
    h.kill()


def _ledger_check(hub: HubProc) -> dict:
    where = ["--data-dir", str(hub.data_dir)]
    out = subprocess.run(
        [sys.executable, "-m", "cpnet", "ledger", "check", "--json", *where],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)


def _spec(seconds: float, **constraints) -> dict:  # type: ignore[no-untyped-def]
    return {
        "executors": [{"command": ["sleep", str(seconds)]}],
        "resources": {"cpu_cores": 2, "ram_gb": 0.5},
        "expected_runtime_s": 60,
        "constraints": constraints,
    }


def test_a_lost_pool_credits_its_users_once_and_loses_reputation(
    sla_hub: HubProc, agents, tmp_path: Path
) -> None:
    hub = sla_hub
    world = make_world(hub, {"a": ("general", "440100"), "b": ("general", "440100")})
    terms = {"window_s": WINDOW_S, "credit_percent": CREDIT_PERCENT, "availability": 0.99}
    flaky_pools = [pool("flaky", cores=4, price=CHEAP, sla=terms)]
    flaky = AgentProc(hub, world.site_tokens["a"], tmp_path / "agent-a", flaky_pools)
    steady = AgentProc(
        hub, world.site_tokens["b"], tmp_path / "agent-b", [pool("steady", cores=4, price=DEAR)]
    )
    for a in (flaky, steady):
        a.start()
        agents.append(a)
    user = hub.client(world.user_token)
    found = wait_until(
        lambda: (
            {p.name: p for p in user.pools()}.keys() == {"flaky", "steady"}
            and {p.name: p for p in user.pools()}
        ),
        30,
        "both pools online",
    )
    ids = {name: p.id for name, p in found.items()}
    shown = user.sla(ids["flaky"])
    assert shown.terms is not None and shown.terms.source == "agent"
    assert shown.terms.availability == 0.99 and shown.terms.credit_percent == CREDIT_PERCENT

    # The first whole window after the terms were declared: a task runs on the flaky pool.
    start = (shown.terms.set_at.timestamp() // WINDOW_S + 1) * WINDOW_S
    wait_until(lambda: time.time() >= start, WINDOW_S + 5, "the first SLA window to begin")
    task = user.submit(_spec(1, pools=[ids["flaky"]]))
    done = user.wait(task.id, timeout=60)
    assert done.state is State.COMPLETE
    (line,) = [x for x in user.bill(world.org_id, L.period_of(time.time())).lines]
    assert line.pool_id == ids["flaky"] and line.charge > 0

    flaky.kill()  # SIGKILL: heartbeats stop; the pool goes offline within ~1.5 s
    wait_until(lambda: not user.pool(ids["flaky"]).online, 30, "the flaky pool to go offline")
    assert time.time() < start + WINDOW_S, "the machine was too slow to lose the pool in-window"
    balance = user.account(world.org_id).balance

    # The sweep evaluates the window once it ends: breached, credited once.
    def evaluated():  # type: ignore[no-untyped-def]
        got = user.sla(ids["flaky"])
        return [e for e in got.evaluations if e.window_start.timestamp() == start] and got

    got = wait_until(evaluated, WINDOW_S + 30, "the window to be evaluated")
    (ev,) = [e for e in got.evaluations if e.window_start.timestamp() == start]
    assert ev.breached and ev.breaches == ["availability"]
    assert ev.evidence["availability"]["measured"] < 0.99
    assert ev.evidence["availability"]["offline"], ev.evidence
    owed = sla.credit_amount(line.charge, CREDIT_PERCENT * 100)
    assert owed > 0 and ev.credits == {world.org_id: owed}
    assert user.account(world.org_id).balance == balance + owed

    # Later sweeps evaluate the next window (offline, nobody charged) and credit nothing more.
    wait_until(
        lambda: any(
            e.window_start.timestamp() == start + WINDOW_S
            for e in user.sla(ids["flaky"]).evaluations
        ),
        WINDOW_S + 30,
        "the next window to be evaluated",
    )
    assert user.account(world.org_id).balance == balance + owed
    check = _ledger_check(hub)
    assert check["ok"], check["problems"]

    # Back online, the flaky pool is worse reputed than the steady one, in discovery too.
    again = AgentProc(hub, world.site_tokens["a"], tmp_path / "agent-a2", flaky_pools)
    again.start()
    agents.append(again)

    def reputed():  # type: ignore[no-untyped-def]
        pools = {p.name: p for p in user.pools()}
        f, s = pools.get("flaky"), pools.get("steady")
        if f is None or s is None or f.reputation is None or s.reputation is None:
            return None
        return (f, s) if f.reputation < s.reputation else None

    f, s = wait_until(reputed, 30, "the flaky pool online with a lower reputation")
    assert f.sla and not s.sla
    assert s.reputation == pytest.approx(1.0)
    rep = user.reputation(ids["flaky"])
    assert rep.evidence["availability"] < 1.0 and rep.evidence["breached_windows"] >= 1

    # The scheduler prefers the steady pool now, though the flaky one is cheaper.
    placed = user.submit(_spec(0.1))
    assert user.wait(placed.id, timeout=60).state is State.COMPLETE
    assert user.task(placed.id).pool_id == ids["steady"]
    why = user.explain(placed.id)
    by_pool = {p["pool_id"]: p for p in why["placements"]}
    assert by_pool[ids["steady"]]["rank"] < by_pool[ids["flaky"]]["rank"]
    assert any("risk: reputation" in r for r in by_pool[ids["flaky"]]["reasons"])
