"""An assignment that reaches the agent after the hub acknowledged the attempt's end never runs
again.

The race this covers: after a hub restart the agent's long poll and its update flush reach the
new hub together. The poll can be answered from a moment when the attempt was still QUEUED (the
agent's reports had not arrived yet) while the flush gets the end acknowledged first; the agent
then receives, as new work, an attempt it has already run and forgotten. The test replays that
late reply into a real agent (in process, against a real hub) and checks nothing is accepted."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from cpnet.agent.main import Agent
from cpnet.tasks.model import Assignment, TaskSpec
from cpnet.tasks.states import State
from tests.integration.procs import (
    HubProc,
    agent_settings,
    make_world,
    pool,
    start_agent,
    wait_until,
)

pytestmark = pytest.mark.integration


def test_late_redelivery_of_an_ended_attempt_is_ignored(hub: HubProc, tmp_path: Path) -> None:
    world = make_world(hub, {"a": ("general", "440100")})
    settings = agent_settings(hub, world, "a", tmp_path / "agent")
    agent = Agent(settings)
    runner = threading.Thread(target=agent.run, daemon=True)
    runner.start()
    try:
        ledger = tmp_path / "ledger.txt"
        spec = {"executors": [{"command": ["sh", "-c", f'echo "$CPNET_TASK_ID" >> {ledger}']}]}
        with hub.client(world.user_token) as c:
            task = c.submit(spec)
            final = c.wait(task.id, timeout=60)
        assert final.state is State.COMPLETE
        attempt = final.attempts[0]
        # The agent forgets an attempt once the hub acknowledged its end.
        wait_until(lambda: attempt.attempt_id in agent.ended, 30, "the end acknowledged")
        assert ledger.read_text().split() == [task.id]

        late = Assignment(
            attempt_id=attempt.attempt_id,
            task_id=task.id,
            attempt=attempt.attempt,
            pool_id=attempt.pool_id,
            pool_name="cpu",
            spec=TaskSpec.model_validate(spec),
        )
        agent._accept(late)  # what the assignment loop does with a long poll's reply

        assert attempt.attempt_id not in agent.entries
        assert [e.attempt_id for e in agent.journal.load()] == []
        assert ledger.read_text().split() == [task.id]
    finally:
        agent.stop.set()
        runner.join(timeout=30)
        agent.backend.close()


def test_a_dead_agents_long_poll_takes_no_new_work(hub: HubProc, tmp_path: Path, agents) -> None:
    """An agent killed mid long poll leaves that poll waiting in the hub. When the restarted
    agent polls, the old poll is superseded and answers empty at once; it must not be the one
    that takes the next placement (its reply would go to a closed socket, and the live agent
    would get the work only after REDELIVER_AFTER_S and another poll)."""
    world = make_world(hub, {"a": ("general", "440100")})
    site_id = world.site_ids["a"]
    orphan: dict[str, object] = {}

    def dead_agents_poll() -> None:
        with httpx.Client(
            base_url=hub.url,
            headers={"authorization": f"Bearer {world.site_tokens['a']}"},
            timeout=90,
        ) as c:
            t0 = time.monotonic()
            # The longest wait a poll may ask (60 s): without supersession it would hold that long.
            r = c.get(f"/v1/sites/{site_id}/assignments", params={"wait": 60})
            orphan.update(status=r.status_code, body=r.json(), after_s=time.monotonic() - t0)

    poll = threading.Thread(target=dead_agents_poll)
    poll.start()
    try:
        # The orphan poll is in the hub before the agent starts (that takes seconds).
        start_agent(hub, agents, tmp_path, world, "a", [pool("cpu", cores=2)])
        with hub.client(world.user_token) as user:
            wait_until(lambda: user.pools(), 30, "pool online")
            # The agent's first poll superseded the orphan, which answered empty before any
            # task existed.
            poll.join(timeout=40)
            assert not poll.is_alive(), "the superseded poll is still waiting"
            assert orphan["after_s"] < 50, orphan
            assert orphan["status"] == 200
            assert orphan["body"] == {"assignments": [], "cancel": []}, orphan
            task = user.submit({"executors": [{"command": ["true"]}]})
            done = user.wait(task.id, timeout=60)
        assert done.state is State.COMPLETE
        assert len(done.attempts) == 1
    finally:
        poll.join(timeout=90)
