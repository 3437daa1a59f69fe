"""Kill the hub (SIGKILL) under a burst of submissions: nothing acknowledged is lost or run twice.
Stall it (SIGSTOP) past its liveness timeout: it calls no live agent lost.

The burst runs on both stores: the embedded SQLite and a real PostgreSQL server.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest

from cpnet.tasks.states import State
from tests.integration.procs import (
    HEARTBEAT_S,
    AgentProc,
    HubProc,
    make_world,
    pool,
    wait_until,
)

pytestmark = pytest.mark.integration


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


def test_hub_sigkill_under_burst_loses_nothing(db_hub: HubProc, agents, tmp_path: Path):
    hub = db_hub
    world = make_world(hub, {"a": ("general", "440100")})
    agent = AgentProc(hub, world.site_tokens["a"], tmp_path / "agent", [pool("cpu", cores=4)])
    # The restarted hub waits 3 heartbeats before calling a silent site lost (and running its
    # attempts again elsewhere, by design): 9 s, not 3, on a loaded CI machine.
    agent.heartbeat_s = 3.0
    agent.start()
    agents.append(agent)
    user = hub.client(world.user_token)
    pools_before = wait_until(lambda: user.pools(), 30, "pool online")
    ledger = tmp_path / "ledger.txt"
    ledger.touch()
    spec = {
        "executors": [{"command": ["sh", "-c", f'echo "$CPNET_TASK_ID" >> {ledger}']}],
        "resources": {"cpu_cores": 0.5},
    }
    acked: dict[str, str] = {}  # idempotency key -> task id the hub acknowledged
    sent: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def burst() -> None:
        with httpx.Client(
            base_url=hub.url, headers={"authorization": f"Bearer {world.user_token}"}, timeout=10
        ) as c:
            while not stop.is_set():
                key = uuid.uuid4().hex
                with lock:
                    sent.append(key)
                try:
                    r = c.post("/v1/tasks", json={**spec, "idempotency_key": key})
                except httpx.TransportError:
                    return  # the hub is gone
                if r.status_code in (200, 201):
                    with lock:
                        acked[key] = r.json()["id"]

    threads = [threading.Thread(target=burst) for _ in range(3)]
    for t in threads:
        t.start()
    wait_until(lambda: len(acked) >= 40, 60, "40 acknowledged submissions")
    hub.kill()  # SIGKILL in the middle of the burst
    stop.set()
    for t in threads:
        t.join(timeout=30)
    hub.start()

    # Every acknowledged task is there and finishes; the pool kept its identifier.
    with hub.client(world.user_token) as c:
        for task_id in acked.values():
            final = c.wait(task_id, timeout=120)
            assert final.state is State.COMPLETE, (task_id, final.state, final.reason)
        # Retrying any submission (acknowledged or not) with its key never makes a second task.
        for key in sent:
            again = c.submit({**spec, "idempotency_key": key})
            if key in acked:
                assert again.id == acked[key]
        everything = list(c.iter_tasks())
        assert len(everything) == len(sent)
        for t in everything:
            c.wait(t.id, timeout=120)
        assert {p.id for p in c.pools()} == {p.id for p in pools_before}
    # No task ran twice.
    runs = Counter(ledger.read_text().split())
    assert runs and max(runs.values()) == 1, runs.most_common(3)
    assert set(acked.values()) <= set(runs)


def test_a_stalled_hub_calls_no_live_agent_lost(hub: HubProc, agents, tmp_path: Path):
    """A hub that did not run for longer than its liveness timeout (an overloaded machine, a long
    pause: here SIGSTOP) finds its agents' heartbeats waiting unread when it resumes. Their
    silence was its own: no site is lost, no attempt failed over and run a second time."""
    world = make_world(hub, {"a": ("general", "440100")})
    agent = AgentProc(hub, world.site_tokens["a"], tmp_path / "agent", [pool("cpu", cores=2)])
    agent.start()
    agents.append(agent)
    user = hub.client(world.user_token)
    wait_until(lambda: user.pools(), 30, "pool online")
    t = user.submit({"executors": [{"command": ["sh", "-c", "sleep 10; echo once"]}]})
    wait_until(lambda: user.task(t.id).state is State.RUNNING, 30, "running")
    assert hub.proc is not None
    os.killpg(hub.proc.pid, signal.SIGSTOP)
    try:
        # The fault itself: the hub stays stopped well past 3 missed heartbeats.
        time.sleep(3 * HEARTBEAT_S + 2)
    finally:
        os.killpg(hub.proc.pid, signal.SIGCONT)
    final = user.wait(t.id, timeout=60)
    assert final.state is State.COMPLETE, final.reason
    assert len(final.attempts) == 1, [(a.state, a.reason) for a in final.attempts]
    assert [p.online for p in user.pools()] == [True]
    assert hub.log is not None and "the hub stalled for" in hub.log.read_text()
