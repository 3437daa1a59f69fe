"""Warm workers (cpnet.agent.warm): long-lived runners that run attempts one after another,
each attempt keeping its own process tree, cancel, work dir, private /tmp, usage and durable
status. Real processes throughout; every wait is for an event, with a deadline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from cpnet.agent import hostinfo
from cpnet.agent.backends import local
from cpnet.agent.backends.base import Handle
from cpnet.agent.backends.local import LocalBackend
from cpnet.agent.runner import probe_private_tmp
from cpnet.tasks.states import State

from .conftest import LOOPBACK, gate_command, job, wait_final, wait_for

BUSY = [sys.executable, "-c", "x = 0\nfor i in range(2_000_000):\n    x += i\nprint(x)"]
QUICK = {"executors": [{"command": ["true"]}]}
PRIVATE_TMP = os.geteuid() == 0 and probe_private_tmp(Path("/var/tmp")) is None


def runner_record(handle: Handle) -> list[int]:
    return [int(f) for f in (Path(handle) / "runner.pid").read_text().split()]


def warm_backend(make_backend: Callable[..., LocalBackend], **options: str) -> LocalBackend:
    """A backend with one warm worker, ready: its first attempt is forked while the worker
    starts, and the worker is idle once that attempt is over."""
    backend = make_backend(warm_workers="1", **options)
    first = backend.submit(job(QUICK, "warm-up"))
    assert wait_final(backend, first).state is State.COMPLETE
    wait_for(lambda: backend.idle_warm_worker_pids, what="the warm worker to be ready")
    return backend


def run_on_worker(backend: LocalBackend, spec: dict, attempt: str) -> Handle:
    """Submit `spec`; it must go to the (one, idle) warm worker."""
    (worker,) = backend.idle_warm_worker_pids
    handle = backend.submit(job(spec, attempt))
    assert runner_record(handle)[0] == worker, "not run by the idle warm worker"
    return handle


def test_attempts_run_one_after_another_in_the_same_worker(make_backend) -> None:
    backend = warm_backend(make_backend)
    (worker,) = backend.idle_warm_worker_pids
    ticks = hostinfo.proc_stat(worker).start_ticks  # type: ignore[union-attr]
    spec = {"executors": [{"command": ["sh", "-c", "echo $CPNET_ATTEMPT_ID; pwd; echo $$"]}]}
    seen = []
    for i in range(3):
        handle = run_on_worker(backend, spec, f"a{i}")
        assert runner_record(handle) == [worker, ticks, i + 1]  # pid, start ticks, sequence
        status = wait_final(backend, handle)
        assert status.state is State.COMPLETE, status.reason
        attempt, cwd, shell = status.executor_logs[0].stdout.split()
        assert attempt == f"a{i}"
        assert Path(cwd) == (Path(handle) / "files").resolve()  # its own work dir
        seen.append(int(shell))
        wait_for(lambda: backend.idle_warm_worker_pids == [worker], what="the worker idle again")
    assert len(set(seen)) == 3  # an executor process per attempt, the same worker throughout
    assert hostinfo.proc_stat(worker).sid == worker  # type: ignore[union-attr]


def test_usage_and_tmp_are_per_attempt(make_backend) -> None:
    backend = warm_backend(make_backend)
    write = "echo one > $TMPDIR/mine; ls /tmp; echo $TMPDIR"
    if PRIVATE_TMP:  # else /tmp is the host's: nothing to write there
        write = "echo one > /tmp/mine; " + write
    busy = run_on_worker(
        backend,
        {"executors": [{"command": BUSY}, {"command": ["sh", "-c", write]}]},
        "busy",
    )
    first = wait_final(backend, busy)
    assert first.state is State.COMPLETE, first.reason
    wait_for(lambda: backend.idle_warm_worker_pids, what="the worker idle again")
    look = "ls -a /tmp; echo $TMPDIR; cat $TMPDIR/mine 2>/dev/null; echo end"
    quick = run_on_worker(backend, {"executors": [{"command": ["sh", "-c", look]}]}, "quick")
    second = wait_final(backend, quick)
    assert second.state is State.COMPLETE, second.reason

    # Usage is the attempt's own executors', not the worker's running total.
    assert first.usage is not None and second.usage is not None
    assert first.usage.cpu_s > 0.05
    assert second.usage.cpu_s < first.usage.cpu_s / 2
    assert second.usage.wall_s < first.usage.wall_s
    # Each has its own TMPDIR, under its own work dir; the second sees nothing of the first's.
    out = second.executor_logs[0].stdout.split()
    assert out[-1] == "end" and str(Path(quick) / "tmp") in out and "one" not in out
    assert str(Path(busy) / "tmp") in first.executor_logs[1].stdout
    if PRIVATE_TMP:
        assert "mine" in first.executor_logs[1].stdout.split()  # its /tmp held its file
        assert "mine" not in out  # a private /tmp per attempt
        assert any("/tmp: private" in line for line in second.system_logs)
    # The worker entered each attempt's namespace and CPUs on its own main thread, once per
    # attempt, and is back in the host's namespace and on its own CPUs between attempts.
    (worker,) = wait_for(lambda: backend.idle_warm_worker_pids, what="the worker idle again")
    assert os.readlink(f"/proc/{worker}/ns/mnt") == os.readlink("/proc/self/ns/mnt")
    assert os.sched_getaffinity(worker) == os.sched_getaffinity(0)


def test_cancel_kills_the_attempts_tree_and_the_worker_goes_on(make_backend) -> None:
    backend = warm_backend(make_backend)
    (worker,) = backend.idle_warm_worker_pids
    spec = {"executors": [{"command": ["sh", "-c", "sleep 60 & echo $! > child.pid; wait"]}]}
    handle = run_on_worker(backend, spec, "long")
    pid_file = Path(handle) / "files" / "child.pid"
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), what="the grandchild")
    grandchild = int(pid_file.read_text())
    assert hostinfo.proc_stat(grandchild).sid == worker  # type: ignore[union-attr]
    backend.cancel(handle)
    status = wait_final(backend, handle)
    assert status.state is State.CANCELED, status.reason
    assert status.reason == "canceled while executor 0 was running"  # by the worker itself
    wait_for(lambda: not hostinfo.alive(grandchild), timeout=5.0, what="the grandchild to die")
    assert hostinfo.session_members(worker) == [worker]  # nothing of the attempt is left

    wait_for(lambda: backend.idle_warm_worker_pids == [worker], what="the worker idle again")
    after = run_on_worker(backend, QUICK, "after")
    assert wait_final(backend, after).state is State.COMPLETE


def test_cancel_while_staging_and_a_late_sigterm_is_ignored(make_backend, http_store) -> None:
    base, _files = http_store
    backend = warm_backend(make_backend, allow_private_urls=LOOPBACK)
    (worker,) = backend.idle_warm_worker_pids
    spec = {
        "inputs": [{"url": f"{base}/slow", "path": "in.bin"}],
        "executors": [{"command": ["touch", "ran"]}],
    }
    handle = run_on_worker(backend, spec, "staging")
    wait_for(lambda: list((Path(handle) / "files").glob(".in.bin.part")), what="the download")
    backend.cancel(handle)
    status = wait_final(backend, handle)
    assert status.state is State.CANCELED, status.reason
    assert status.reason == "canceled while staging"
    assert not (Path(handle) / "files" / "ran").exists()  # no executor ever ran

    # A SIGTERM that arrives after its attempt ended (a late cancel) leaves the next one alone.
    wait_for(lambda: backend.idle_warm_worker_pids == [worker], what="the worker idle again")
    gate = Path(backend.work_root).parent / "gate"
    nxt = run_on_worker(backend, {"executors": [{"command": gate_command(gate)}]}, "next")
    wait_for(lambda: backend.poll(nxt).state is State.RUNNING, what="running")
    os.killpg(worker, signal.SIGTERM)
    gate.touch()
    status = wait_final(backend, nxt)
    assert status.state is State.COMPLETE, status.reason


def test_killed_worker_fails_its_attempt_and_is_replaced(make_backend) -> None:
    backend = warm_backend(make_backend)
    (worker,) = backend.idle_warm_worker_pids
    spec = {"executors": [{"command": ["sh", "-c", "echo $$ > sh.pid; exec sleep 60"]}]}
    handle = run_on_worker(backend, spec, "doomed")
    pid_file = Path(handle) / "files" / "sh.pid"
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), what="the executor")
    executor = int(pid_file.read_text())
    os.kill(worker, signal.SIGKILL)
    status = wait_final(backend, handle)
    assert status.state is State.SYSTEM_ERROR  # as for any runner that died: once
    assert "runner died" in (status.reason or "")
    wait_for(lambda: not hostinfo.alive(executor), timeout=5.0, what="the orphaned executor")

    # The next attempt is forked while a new worker starts, and the new one takes the rest.
    forked = backend.submit(job(QUICK, "forked"))
    assert runner_record(forked)[0] != worker
    assert wait_final(backend, forked).state is State.COMPLETE
    (second,) = wait_for(lambda: backend.idle_warm_worker_pids, what="a new worker")
    assert second != worker
    assert wait_final(backend, run_on_worker(backend, QUICK, "b")).state is State.COMPLETE


def test_hung_worker_is_killed_and_its_attempt_fails(make_backend, monkeypatch) -> None:
    monkeypatch.setattr(local, "WARM_PICKUP_S", 0.5)
    backend = warm_backend(make_backend)
    (worker,) = backend.idle_warm_worker_pids
    os.kill(worker, signal.SIGSTOP)  # alive, but never reads the request
    handle = backend.submit(job({"executors": [{"command": ["touch", "ran"]}]}, "stuck"))
    assert runner_record(handle)[0] == worker
    status = wait_final(backend, handle)
    assert status.state is State.SYSTEM_ERROR and "runner died" in (status.reason or "")
    wait_for(lambda: not hostinfo.alive(worker), timeout=5.0, what="the hung worker to die")
    assert not (Path(handle) / "files" / "ran").exists()


def test_cancel_escalation_kills_the_worker_session(make_backend) -> None:
    """An attempt that does not end within cancel_grace_s of SIGTERM (here: the runner gives
    its executor far longer) has its worker's whole session killed; the worker is replaced."""
    backend = warm_backend(make_backend, cancel_grace_s="0.5", executor_grace_s="60")
    (worker,) = backend.idle_warm_worker_pids
    stubborn = "trap '' TERM; echo $$ > sh.pid; while :; do sleep 0.05; done"
    handle = run_on_worker(backend, {"executors": [{"command": ["sh", "-c", stubborn]}]}, "st")
    pid_file = Path(handle) / "files" / "sh.pid"
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), what="the executor")
    executor = int(pid_file.read_text())
    backend.cancel(handle)
    status = wait_final(backend, handle)
    assert status.state is State.CANCELED, status.reason
    assert status.reason == "canceled (the runner was stopped)"  # by the backend, once
    wait_for(lambda: not hostinfo.alive(worker), timeout=5.0, what="the worker to be killed")
    wait_for(lambda: not hostinfo.alive(executor), timeout=5.0, what="the executor to be killed")


def test_worker_retires_after_its_attempt_limit(make_backend, monkeypatch) -> None:
    monkeypatch.setattr(local, "WARM_MAX_ATTEMPTS", 2)
    backend = warm_backend(make_backend)
    (worker,) = backend.idle_warm_worker_pids
    assert wait_final(backend, run_on_worker(backend, QUICK, "one")).state is State.COMPLETE
    wait_for(lambda: backend.idle_warm_worker_pids == [worker], what="the worker idle again")
    assert wait_final(backend, run_on_worker(backend, QUICK, "two")).state is State.COMPLETE
    wait_for(lambda: not hostinfo.alive(worker), timeout=5.0, what="the worker to retire")
    wait_for(lambda: not backend.warm_worker_pids, what="the backend to drop it")


AGENT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from cpnet.agent.backends.base import BackendConfig, Job
    from cpnet.agent.backends.local import LocalBackend
    from cpnet.tasks.model import TaskSpec

    root, gate = Path(sys.argv[1]), sys.argv[2]
    backend = LocalBackend(BackendConfig(work_root=root, options={"warm_workers": "1"}))
    def submit(attempt, spec):
        task = TaskSpec.model_validate(spec)
        return backend.submit(Job(attempt, "t-" + attempt, "local", task, Path(".")))
    first = submit("warm-up", {"executors": [{"command": ["true"]}]})
    while not backend.poll(first).final or not backend.idle_warm_worker_pids:
        time.sleep(0.02)
    code = "import os, time\\nwhile not os.path.exists(%r): time.sleep(0.02)" % gate
    ran = "echo ran >> ran.txt"
    gated = [sys.executable, "-c", code]
    submit("a1", {"executors": [{"command": ["sh", "-c", ran]}, {"command": gated}]})
    print(backend.warm_worker_pids[0], flush=True)
    time.sleep(60)
    """
)


def test_agent_sigkill_mid_attempt_then_restart_completes_it_once(
    make_backend, work_root: Path, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    agent = subprocess.Popen(
        [sys.executable, "-c", AGENT, str(work_root), str(gate)],
        stdout=subprocess.PIPE,
        text=True,
    )
    a1 = work_root / "a1"
    try:
        assert agent.stdout is not None
        worker = int(agent.stdout.readline())
        assert runner_record(Handle(a1))[0] == worker
        wait_for(lambda: (a1 / "files" / "ran.txt").exists(), what="the attempt to run")
    finally:
        agent.kill()  # SIGKILL: no clean-up of any kind in the agent
        agent.wait()
    assert hostinfo.alive(worker)  # it runs the attempt on

    backend = make_backend(warm_workers="1")  # the next agent re-attaches
    handle = backend.handle(str(a1))  # as the agent reads its journal
    assert backend.poll(handle).state is State.RUNNING
    gate.touch()
    status = wait_final(backend, handle)
    assert status.state is State.COMPLETE, status.reason
    assert (a1 / "files" / "ran.txt").read_text() == "ran\n"  # once
    # Its backend gone, the worker takes nothing more: it exits once the attempt is over.
    wait_for(lambda: not hostinfo.alive(worker), timeout=5.0, what="the orphaned worker to exit")
    assert backend.poll(handle).state is State.COMPLETE  # reported final, and stays so


@pytest.mark.parametrize("size", ["0"])
def test_off_forks_every_attempt(make_backend, size: str) -> None:
    backend = make_backend(warm_workers=size)
    for i in range(2):
        handle = backend.submit(job(QUICK, f"a{i}"))
        assert len(runner_record(handle)) == 2  # "pid start_ticks": a runner of its own
        assert wait_final(backend, handle).state is State.COMPLETE
    assert backend.warm_worker_pids == []
