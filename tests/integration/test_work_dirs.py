"""An attempt's work dir on the provider (staged inputs, outputs, logs) is removed once the hub
has its final state, unless the task (keep_work_dir) or the agent's operator (keep_work_dirs)
keeps it (docs/security.md, "Data on providers")."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from cpnet.tasks.states import State
from tests.integration.procs import AgentProc, HubProc, make_world, pool, start_agent, wait_until

pytestmark = pytest.mark.integration

# Leaves an input, an output and a read-only directory behind in its work dir.
WRITES = ["sh", "-c", "mkdir -p ro/deep && echo data > ro/deep/f && chmod -R a-w ro && cat in.txt"]


def _attempt_dir(agent: AgentProc, task) -> Path:
    return agent.work_dir / "attempts" / task.attempts[-1].attempt_id


def test_work_dirs_go_unless_the_task_keeps_its_own(hub: HubProc, agents, tmp_path: Path):
    world = make_world(hub, {"a": ("general", "440100")})
    agent = start_agent(hub, agents, tmp_path, world, "a", [pool("cpu", cores=4)])
    user = hub.client(world.user_token)
    wait_until(lambda: user.pools(), 30, "pool online")
    inputs = [{"path": "in.txt", "content": "private input\n"}]
    plain = user.submit({"name": "plain", "inputs": inputs, "executors": [{"command": WRITES}]})
    failed = user.submit({"name": "fails", "executors": [{"command": ["sh", "-c", "exit 4"]}]})
    kept = user.submit(
        {
            "name": "kept",
            "inputs": inputs,
            "executors": [{"command": WRITES}],
            "keep_work_dir": True,
        }
    )
    tes = httpx.post(
        f"{hub.url}/ga4gh/tes/v1/tasks",
        headers={"Authorization": f"Bearer {world.user_token}"},
        json={
            "executors": [{"image": "", "command": WRITES}],
            "inputs": [{"path": "in.txt", "content": "private input\n"}],
            "resources": {"backend_parameters": {"cpnet.keep_work_dir": "true"}},
        },
    )
    assert tes.status_code == 200, tes.text
    sleeper = user.submit({"name": "sleeper", "executors": [{"command": ["sleep", "120"]}]})

    ended = {t.id: user.wait(t.id, timeout=60) for t in (plain, failed, kept)}
    ended[tes.json()["id"]] = user.wait(tes.json()["id"], timeout=60)
    assert ended[plain.id].state is State.COMPLETE, ended[plain.id].reason
    assert ended[failed.id].state is State.EXECUTOR_ERROR
    assert ended[kept.id].spec.keep_work_dir is True

    # Complete and failed alike: gone once the hub has the final state (the agent removes it
    # right after the hub acknowledged it).
    for task_id in (plain.id, failed.id):
        gone = _attempt_dir(agent, ended[task_id])
        wait_until(lambda d=gone: not d.exists(), 30, f"{gone} removed", log=agent.log)
    # Kept, native and TES: every file is still there.
    for task_id in (kept.id, tes.json()["id"]):
        d = _attempt_dir(agent, ended[task_id])
        assert (d / "files" / "ro" / "deep" / "f").read_text() == "data\n"
        assert (d / "files" / "in.txt").read_text() == "private input\n"
    # A canceled attempt's dir goes too.
    running = wait_until(
        lambda: (t := user.task(sleeper.id)).state is State.RUNNING and t, 60, "sleeper running"
    )
    assert _attempt_dir(agent, running).is_dir()
    user.cancel(sleeper.id)
    assert user.wait(sleeper.id, timeout=60).state is State.CANCELED
    wait_until(lambda: not _attempt_dir(agent, running).exists(), 60, "canceled dir removed")


def test_an_operator_keeps_every_work_dir(hub: HubProc, agents, tmp_path: Path):
    world = make_world(hub, {"a": ("general", "440100")})
    agent = AgentProc(
        hub,
        world.site_tokens["a"],
        tmp_path / "agent-a",
        [pool("cpu", cores=2)],
        args=["--keep-work-dirs"],
    )
    agent.start()
    agents.append(agent)
    user = hub.client(world.user_token)
    wait_until(lambda: user.pools(), 30, "pool online")
    t = user.submit({"executors": [{"command": ["sh", "-c", "echo kept > out.txt"]}]})
    done = user.wait(t.id, timeout=60)
    assert done.state is State.COMPLETE, done.reason
    # Another task ends after it, in a later batch of updates of the same agent loop: once its
    # journal entry is gone, the agent has long acted on the first one's end.
    later = user.submit({"executors": [{"command": ["true"]}]})
    later_done = user.wait(later.id, timeout=60)
    assert later_done.state is State.COMPLETE
    entry = agent.work_dir / "journal" / f"{later_done.attempts[-1].attempt_id}.json"
    wait_until(lambda: not entry.exists(), 30, "the later attempt acted on", log=agent.log)
    assert (_attempt_dir(agent, done) / "files" / "out.txt").read_text() == "kept\n"
