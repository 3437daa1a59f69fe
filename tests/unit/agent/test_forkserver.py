"""Runners forked by the fork server behave exactly like spawned ones: real processes throughout.

Warm workers are off here (``warm_workers=0``): these tests are about the fork server, the
fallback when no warm worker is idle (tests/unit/agent/test_warm.py covers the workers)."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cpnet.agent import hostinfo
from cpnet.agent.backends import local
from cpnet.agent.backends.local import LocalBackend, _ForkServer
from cpnet.agent.runner import write_json_atomic
from cpnet.tasks.states import State

from .conftest import gate_command, job, wait_final, wait_for

BUSY = [sys.executable, "-c", "x = 0\nfor i in range(2_000_000):\n    x += i\nprint(x)"]
MODES = {"forked": "true", "spawned": "false"}


def runner_pid(handle: os.PathLike[str] | str) -> int:
    return int((Path(handle) / "runner.pid").read_text().split()[0])


def parent_of(pid: int) -> int:
    st = hostinfo.proc_stat(pid)
    assert st is not None, f"process {pid} is gone"
    return st.ppid


@pytest.mark.parametrize("mode", MODES)
def test_complete_fail_and_usage_alike(
    make_backend: Callable[..., LocalBackend], mode: str
) -> None:
    backend = make_backend(fork_server=MODES[mode], warm_workers="0")
    gate = Path(backend.work_root).parent / "gate"
    spec = {"executors": [{"command": gate_command(gate)}, {"command": BUSY}]}
    ok = backend.submit(job(spec, "ok"))
    pid = runner_pid(ok)
    if mode == "forked":
        assert backend.fork_server_pid is not None
        assert parent_of(pid) == backend.fork_server_pid
    else:
        assert backend.fork_server_pid is None
        assert parent_of(pid) == os.getpid()
    st = hostinfo.proc_stat(pid)
    assert st is not None and st.sid == pid  # a session leader, either way
    assert backend.poll(ok).state in (State.INITIALIZING, State.RUNNING)
    gate.touch()
    status = wait_final(backend, ok)
    assert status.state is State.COMPLETE, status.reason
    assert status.executor_logs[1].stdout == f"{sum(range(2_000_000))}\n"
    assert status.usage is not None
    # The busy loop's CPU and RSS are the executor's own, measured by the runner's wait4.
    assert status.usage.cpu_s > 0.05 and status.usage.peak_rss_mb > 5
    assert status.usage.wall_s > 0

    bad = backend.submit(
        job({"executors": [{"command": ["sh", "-c", "echo no >&2; exit 3"]}]}, "bad")
    )
    status = wait_final(backend, bad)
    assert status.state is State.EXECUTOR_ERROR
    assert "exit code 3" in (status.reason or "")
    assert status.executor_logs[0].stderr == "no\n"


@pytest.mark.parametrize("mode", MODES)
def test_cancel_kills_the_session_including_a_grandchild(
    make_backend: Callable[..., LocalBackend], mode: str
) -> None:
    backend = make_backend(fork_server=MODES[mode], warm_workers="0")
    spec = {"executors": [{"command": ["sh", "-c", "sleep 60 & echo $! > child.pid; wait"]}]}
    handle = backend.submit(job(spec))
    pid_file = Path(handle) / "files" / "child.pid"
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), what="the grandchild")
    grandchild = int(pid_file.read_text())
    runner = runner_pid(handle)
    assert grandchild in hostinfo.session_members(runner)
    backend.cancel(handle)
    status = wait_final(backend, handle, timeout=8.0)
    assert status.state is State.CANCELED, status.reason
    wait_for(lambda: not hostinfo.alive(grandchild), timeout=2.0, what="the grandchild to die")
    wait_for(lambda: not hostinfo.session_members(runner), timeout=2.0, what="the session")


def test_runner_crash_is_reported_like_a_spawned_one(make_backend) -> None:
    """A runner that dies without a final state: SYSTEM_ERROR with runner.log quoted."""
    backend = make_backend(warm_workers="0")
    gate = Path(backend.work_root).parent / "never"
    handle = backend.submit(job({"executors": [{"command": gate_command(gate)}]}))
    runner = runner_pid(handle)
    wait_for(lambda: backend.poll(handle).state is State.RUNNING, what="running")
    os.kill(runner, signal.SIGKILL)
    status = wait_final(backend, handle)
    assert status.state is State.SYSTEM_ERROR
    assert "runner died" in (status.reason or "")


def test_reattached_after_the_backend_is_dropped(make_backend, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    first = make_backend(warm_workers="0")
    handle = first.submit(job({"executors": [{"command": gate_command(gate)}]}))
    server = first.fork_server_pid
    runner = runner_pid(handle)
    assert server is not None and parent_of(runner) == server
    assert first.poll(handle).state in (State.INITIALIZING, State.RUNNING)
    del first
    gc.collect()
    wait_for(lambda: not hostinfo.alive(server), timeout=5.0, what="the fork server to exit")
    assert hostinfo.alive(runner)  # its runner did not notice

    second = make_backend(warm_workers="0")
    assert second.poll(handle).state is State.RUNNING
    gate.touch()
    assert wait_final(second, handle).state is State.COMPLETE
    assert second.fork_server_pid is None  # re-attaching forks nothing


def test_killed_fork_server_is_restarted(make_backend, tmp_path: Path) -> None:
    backend = make_backend(warm_workers="0")
    quick = {"executors": [{"command": ["true"]}]}
    assert wait_final(backend, backend.submit(job(quick, "a"))).state is State.COMPLETE
    first = backend.fork_server_pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: not hostinfo.alive(first), what="the fork server to die")

    gate = tmp_path / "gate"
    b = backend.submit(job({"executors": [{"command": gate_command(gate)}]}, "b"))
    second = backend.fork_server_pid
    assert second is not None and second != first
    assert parent_of(runner_pid(b)) == second
    gate.touch()
    assert wait_final(backend, b).state is State.COMPLETE


def test_hung_fork_server_falls_back_to_spawn_then_restarts(
    make_backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local, "FORK_SERVER_REPLY_S", 0.5)
    backend = make_backend(warm_workers="0")
    quick = {"executors": [{"command": ["true"]}]}
    assert wait_final(backend, backend.submit(job(quick, "a"))).state is State.COMPLETE
    first = backend.fork_server_pid
    assert first is not None
    os.kill(first, signal.SIGSTOP)  # alive, but answers nothing: the request times out

    gate = tmp_path / "gate"
    b = backend.submit(job({"executors": [{"command": gate_command(gate)}]}, "b"))
    assert parent_of(runner_pid(b)) == os.getpid()  # spawned
    wait_for(lambda: not hostinfo.alive(first), timeout=5.0, what="the hung server to be killed")
    c = backend.submit(job({"executors": [{"command": gate_command(gate)}]}, "c"))
    second = backend.fork_server_pid
    assert second is not None and second != first  # restarted lazily, at the next start
    assert parent_of(runner_pid(c)) == second
    gate.touch()
    assert wait_final(backend, b).state is State.COMPLETE
    assert wait_final(backend, c).state is State.COMPLETE


def test_child_never_runs_when_the_server_dies_before_go(work_root: Path) -> None:
    """Forked but not yet released: the server's death makes the child exit without running,
    so the backend's fallback cannot run the attempt twice."""
    d = work_root / "x1"
    d.mkdir()
    write_json_atomic(d / "job.json", {"spec": {"executors": [{"command": ["touch", "ran"]}]}})
    server = _ForkServer.start(work_root)
    pid, ticks = server.request_start(d)
    assert hostinfo.alive(pid, ticks)
    assert hostinfo.proc_stat(pid).sid == pid  # type: ignore[union-attr]
    os.kill(server.pid, signal.SIGKILL)
    wait_for(lambda: not hostinfo.alive(pid, ticks), timeout=5.0, what="the child to exit")
    server.close()
    assert not (d / "status.json").exists() and not (d / "files").exists()
    assert "not started" in (d / "runner.log").read_text()


AGENT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from cpnet.agent.backends.base import BackendConfig, Job
    from cpnet.agent.backends.local import LocalBackend
    from cpnet.tasks.model import TaskSpec

    root, gate = Path(sys.argv[1]), sys.argv[2]
    backend = LocalBackend(BackendConfig(work_root=root, options={"warm_workers": "0"}))
    code = "import os, time\\nwhile not os.path.exists(%r): time.sleep(0.02)" % gate
    cmd = [sys.executable, "-c", code]
    spec = TaskSpec.model_validate({"executors": [{"command": cmd}]})
    handle = backend.submit(Job("a1", "t1", "local", spec, Path(".")))
    print(backend.fork_server_pid, flush=True)
    time.sleep(60)
    """
)


def test_fork_server_exits_when_its_agent_dies(
    make_backend, work_root: Path, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    agent = subprocess.Popen(
        [sys.executable, "-c", AGENT, str(work_root), str(gate)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert agent.stdout is not None
        server = int(agent.stdout.readline())
        runner = runner_pid(str(work_root / "a1"))
        assert parent_of(runner) == server
    finally:
        agent.kill()  # SIGKILL: no clean-up of any kind in the agent
        agent.wait()
    wait_for(lambda: not hostinfo.alive(server), timeout=5.0, what="the fork server to exit")
    assert hostinfo.alive(runner)
    backend = make_backend(warm_workers="0")  # the next agent re-attaches
    handle = backend.handle(str(work_root / "a1"))  # as the agent reads its journal
    assert backend.poll(handle).state in (State.INITIALIZING, State.RUNNING)
    gate.touch()
    assert wait_final(backend, handle).state is State.COMPLETE


def test_close_stops_the_server_only(make_backend, tmp_path: Path) -> None:
    backend = make_backend(warm_workers="0")
    gate = tmp_path / "gate"
    handle = backend.submit(job({"executors": [{"command": gate_command(gate)}]}))
    server = backend.fork_server_pid
    assert server is not None
    backend.close()
    wait_for(lambda: not hostinfo.alive(server), timeout=5.0, what="the fork server to exit")
    assert backend.fork_server_pid is None
    gate.touch()
    assert wait_final(backend, handle).state is State.COMPLETE
    t0 = time.monotonic()
    assert wait_final(backend, backend.submit(job({"executors": [{"command": ["true"]}]}, "b")))
    assert time.monotonic() - t0 < 10
