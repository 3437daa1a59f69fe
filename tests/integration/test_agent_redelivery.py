"""An assignment that reaches the agent after the hub acknowledged the attempt's end never runs
again.

The race this covers: after a hub restart the agent's long poll and its update flush reach the
new hub together. The poll can be answered from a moment when the attempt was still QUEUED (the
agent's reports had not arrived yet) while the flush gets the end acknowledged first; the agent
then receives, as new work, an attempt it has already run and forgotten. The test replays that
late reply into a real agent (in process, against a real hub) and checks nothing is accepted."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from cpnet.agent.main import Agent
from cpnet.agent.settings import AgentSettings
from cpnet.registry.model import PoolDescriptor
from cpnet.tasks.model import Assignment, TaskSpec
from cpnet.tasks.states import State
from tests.integration.procs import HubProc, make_world, pool, wait_until

pytestmark = pytest.mark.integration


def test_late_redelivery_of_an_ended_attempt_is_ignored(hub: HubProc, tmp_path: Path) -> None:
    world = make_world(hub, {"a": ("general", "440100")})
    settings = AgentSettings(
        hub_url=hub.url,
        token=world.site_tokens["a"],
        work_dir=tmp_path / "agent",
        pools=[PoolDescriptor.model_validate(pool("cpu", cores=2))],
        heartbeat_interval_s=0.5,
        measure_on_join=False,
    )
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
