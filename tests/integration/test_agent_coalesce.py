"""An attempt seen starting and ending while its reports wait to be sent costs the hub two
reports, INITIALIZING and the end, not three (cpnet issue 15): the agent drops the RUNNING
report a final one makes moot, and the hub takes INITIALIZING → COMPLETE. A real agent (in
process, its loop driven by the test) against a real hub."""

from __future__ import annotations

from pathlib import Path

import pytest

from cpnet.agent.backends.base import JobStatus
from cpnet.agent.main import Agent
from cpnet.tasks.states import State
from tests.integration.procs import HubProc, agent_settings, make_world, wait_until

pytestmark = pytest.mark.integration


def test_running_is_dropped_when_the_end_is_queued_behind_it(hub: HubProc, tmp_path: Path) -> None:
    world = make_world(hub, {"a": ("general", "440100")})
    settings = agent_settings(hub, world, "a", tmp_path / "agent")
    agent = Agent(settings)
    try:
        agent.join()
        agent.heartbeat_once()
        with hub.client(world.user_token) as c:
            task = c.submit({"executors": [{"command": ["true"]}]})
            got = []

            def assigned() -> bool:
                got.extend(agent.hub.assignments(agent.site_id, 1.0).assignments)
                return bool(got)

            wait_until(assigned, 30, "the assignment")
            agent._accept(got[0])  # journaled, started; INITIALIZING queued
            (e,) = agent.entries.values()
            handle = agent.handles[e.attempt_id]
            wait_until(lambda: agent.backend.poll(handle).final, 30, "the attempt's end")
            agent._queue(e, JobStatus(State.RUNNING, None))  # as a poll before the end saw it
            agent.poll_once()  # queues COMPLETE behind it
            assert [u.state for u in agent.pending] == [
                State.INITIALIZING,
                State.RUNNING,
                State.COMPLETE,
            ]
            agent.flush()
            assert not agent.pending
            assert e.attempt_id in agent.ended  # the hub acknowledged the end
            final = c.task(task.id)
            assert final.state is State.COMPLETE, final.reason
            states = [ev.to_state for ev in c.events(task.id)]
            assert State.RUNNING not in states and states[-1] is State.COMPLETE, states
            assert final.attempts[0].start_time is not None
    finally:
        agent.stop.set()
        agent.backend.close()
