"""An attempt report the hub cannot take does not hold back the agent's other reports, and its
state still reaches the hub.

Real case: a task whose executors print control characters fills its executor logs with JSON
escapes (one byte becomes six), so its final report is over the hub's 1 MiB request limit and the
hub answers 413. Before, the agent put the refused batch back at the front and sent it again for
ever: no later report of any attempt on that site reached the hub."""

from __future__ import annotations

from pathlib import Path

import pytest

from cpnet.agent.main import build_update
from cpnet.tasks.model import MAX_OUTPUT_LOGS
from cpnet.tasks.states import State
from tests.integration.procs import AgentProc, HubProc, make_world, pool

pytestmark = pytest.mark.integration

# Each stream's 16 KiB tail of \x01 bytes is ~96 KiB of JSON; 6 executors × 2 streams > 1 MiB.
NOISY = "head -c 20000 /dev/zero | tr '\\0' '\\001'; head -c 20000 /dev/zero | tr '\\0' '\\001' >&2"


def test_a_report_over_the_hubs_limit_is_sent_without_details(
    hub: HubProc, agents: list[AgentProc], tmp_path: Path
) -> None:
    world = make_world(hub, {"a": ("general", "440100")})
    agent = AgentProc(hub, world.site_tokens["a"], tmp_path / "agent", [pool("cpu", cores=4)])
    agent.start()
    agents.append(agent)
    with hub.client(world.user_token) as c:
        noisy = c.submit({"name": "noisy", "executors": [{"command": ["sh", "-c", NOISY]}] * 6})
        quiet = c.submit({"name": "quiet", "executors": [{"command": ["echo", "fine"]}]})
        done_quiet = c.wait(quiet.id, timeout=120)
        done_noisy = c.wait(noisy.id, timeout=120)

    assert done_quiet.state is State.COMPLETE, done_quiet.reason
    assert done_quiet.attempts[-1].executor_logs[0].stdout == "fine\n"
    # The noisy task's state got through; its logs did not, and the attempt says why.
    assert done_noisy.state is State.COMPLETE, done_noisy.reason
    attempt = done_noisy.attempts[-1]
    # An earlier RUNNING report may have brought the logs of the executors done (or started) by
    # then, as it fit; the final one, with all six ended, did not.
    ended = [x for x in attempt.executor_logs if x.end_time is not None]
    assert len(ended) < 6, attempt.executor_logs
    refused = [line for line in attempt.system_logs if "the hub refused the full report" in line]
    assert refused and "413" in refused[0], attempt.system_logs
    assert len(done_noisy.attempts) == 1  # not run again: the end was reported, not lost
    log = agent.log.read_text() if agent.log else ""
    assert "sending them one by one" in log or "refused the update" in log


def test_an_update_too_big_for_the_model_keeps_its_state() -> None:
    """What the backend reported breaks the update's own limits: the update is built without
    the details, saying which limit, instead of raising (which lost the attempt's end)."""
    outputs = [
        {"url": f"file:///o/{i}", "path": f"/o/{i}", "size_bytes": 1}
        for i in range(MAX_OUTPUT_LOGS + 1)
    ]
    u = build_update(
        attempt_id="att-1",
        state=State.COMPLETE,
        at="2026-11-25T12:00:00Z",
        reason=None,
        outputs=outputs,
        usage=None,
    )
    assert u.state is State.COMPLETE and u.attempt_id == "att-1"
    assert u.outputs is None
    assert (
        u.system_logs
        and "outputs" in u.system_logs[0]
        and "could not be sent" in (u.system_logs[0])
    )
