"""The local backend and the runner end to end: real runner processes, real executors."""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cpnet.agent import hostinfo
from cpnet.agent.backends import BACKENDS, get_backend
from cpnet.agent.backends.base import BackendError, Handle
from cpnet.agent.backends.local import LocalBackend
from cpnet.tasks.states import State

from .conftest import gate_command, job, small_pool, wait_final, wait_for

BUSY = [sys.executable, "-c", "x = 0\nfor i in range(2_000_000):\n    x += i\nprint(x)"]


def test_two_executors_complete_with_exit_codes_tails_and_usage(backend: LocalBackend) -> None:
    spec = {"executors": [{"command": ["sh", "-c", "echo hi; echo oops >&2"]}, {"command": BUSY}]}
    handle = backend.submit(job(spec))
    status = wait_final(backend, handle)
    assert status.state is State.COMPLETE, status.reason
    first, second = status.executor_logs
    assert (first.exit_code, first.stdout, first.stderr) == (0, "hi\n", "oops\n")
    assert second.exit_code == 0 and second.stdout == f"{sum(range(2_000_000))}\n"
    assert first.start_time <= first.end_time <= second.start_time <= second.end_time
    assert status.usage is not None
    assert status.usage.cpu_s > 0 and status.usage.peak_rss_mb > 0 and status.usage.wall_s > 0
    assert backend.logs(handle) == status.executor_logs
    assert backend.usage(handle) == status.usage


def test_failing_executor_stops_the_rest(backend: LocalBackend) -> None:
    spec = {
        "executors": [
            {"command": ["sh", "-c", "exit 3"]},
            {"command": ["touch", "second-ran"]},
        ]
    }
    handle = backend.submit(job(spec))
    status = wait_final(backend, handle)
    assert status.state is State.EXECUTOR_ERROR
    assert "executor 0" in (status.reason or "") and "exit code 3" in (status.reason or "")
    assert [log.exit_code for log in status.executor_logs] == [3]
    assert not (Path(handle) / "files" / "second-ran").exists()


def test_ignore_error_continues(backend: LocalBackend) -> None:
    spec = {
        "executors": [
            {"command": ["sh", "-c", "exit 1"], "ignore_error": True},
            {"command": ["true"]},
        ]
    }
    status = wait_final(backend, backend.submit(job(spec)))
    assert status.state is State.COMPLETE
    assert [log.exit_code for log in status.executor_logs] == [1, 0]


def test_missing_command_is_exit_127(backend: LocalBackend) -> None:
    spec = {"executors": [{"command": ["no-such-command-cpnet"]}]}
    status = wait_final(backend, backend.submit(job(spec)))
    assert status.state is State.EXECUTOR_ERROR
    assert status.executor_logs[0].exit_code == 127
    assert "'no-such-command-cpnet' not found" in (status.reason or "")


def test_stdin_stdout_redirection_and_workdir(backend: LocalBackend, tmp_path: Path) -> None:
    out = tmp_path / "upper.txt"
    spec = {
        "inputs": [{"path": "/data/in.txt", "content": "hello\n"}],
        "executors": [
            {"command": ["tr", "a-z", "A-Z"], "stdin": "/data/in.txt", "stdout": "/data/o.txt"},
            {"command": ["pwd"], "workdir": "/work/sub"},
        ],
        "outputs": [{"path": "/data/o.txt", "url": out.as_uri()}],
    }
    handle = backend.submit(job(spec))
    status = wait_final(backend, handle)
    assert status.state is State.COMPLETE, status.reason
    assert out.read_text() == "HELLO\n"
    assert status.executor_logs[0].stdout == "HELLO\n"  # the tail follows the redirect
    files = (Path(handle) / "files").resolve()
    assert status.executor_logs[1].stdout == f"{files}/work/sub\n"


def test_inline_input_file_output_round_trip(backend: LocalBackend, tmp_path: Path) -> None:
    text = "some content\n" * 100
    dest = tmp_path / "out" / "copy.txt"
    spec = {
        "inputs": [{"path": "/in/a.txt", "content": text}],
        "executors": [{"command": ["cp", "in/a.txt", "b.txt"]}],
        "outputs": [{"path": "b.txt", "url": dest.as_uri()}],
    }
    status = wait_final(backend, backend.submit(job(spec)))
    assert status.state is State.COMPLETE, status.reason
    assert dest.read_text() == text
    (out,) = status.outputs
    assert out.size_bytes == len(text)
    assert out.sha256 == hashlib.sha256(text.encode()).hexdigest()
    assert status.usage is not None
    assert status.usage.bytes_in == len(text) and status.usage.bytes_out == len(text)


def test_sha256_mismatch_is_system_error(backend: LocalBackend) -> None:
    spec = {
        "inputs": [{"path": "x", "content": "abc", "sha256": "0" * 64}],
        "executors": [{"command": ["true"]}],
    }
    status = wait_final(backend, backend.submit(job(spec)))
    assert status.state is State.SYSTEM_ERROR
    actual = hashlib.sha256(b"abc").hexdigest()
    assert "0" * 64 in (status.reason or "") and actual in (status.reason or "")
    assert status.executor_logs == []


def test_output_through_symlink_out_of_work_dir_is_refused(
    backend: LocalBackend, tmp_path: Path
) -> None:
    spec = {
        "executors": [{"command": ["ln", "-s", "/etc", "escape"]}],
        "outputs": [{"path": "escape/hostname", "url": (tmp_path / "stolen").as_uri()}],
    }
    status = wait_final(backend, backend.submit(job(spec)))
    assert status.state is State.SYSTEM_ERROR
    assert "outside the task's work dir" in (status.reason or "")
    assert not (tmp_path / "stolen").exists()


def test_stdout_through_symlink_out_of_work_dir_is_refused(
    backend: LocalBackend, tmp_path: Path
) -> None:
    spec = {
        "executors": [
            {"command": ["ln", "-s", str(tmp_path), "escape"]},
            {"command": ["echo", "pwned"], "stdout": "escape/pwned.txt"},
        ]
    }
    status = wait_final(backend, backend.submit(job(spec)))
    assert status.state is State.EXECUTOR_ERROR
    assert "outside the task's work dir" in (status.reason or "")
    assert not (tmp_path / "pwned.txt").exists()


def test_executor_env_is_minimal(backend: LocalBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CPNET_AGENT_SECRET", "do-not-leak")
    spec = {"executors": [{"command": ["env"], "env": {"MINE": "1"}}]}
    handle = backend.submit(job(spec))
    status = wait_final(backend, handle)
    env = dict(line.split("=", 1) for line in status.executor_logs[0].stdout.splitlines())
    assert "CPNET_AGENT_SECRET" not in env
    assert env["MINE"] == "1" and env["CPNET_TASK_ID"] == "task-a1"
    assert env["CPNET_ATTEMPT_ID"] == "a1" and env["HOME"] == env["CPNET_WORK_DIR"] == str(handle)
    assert env["TMPDIR"] == f"{handle}/tmp"


def test_http_input_and_put_output(make_backend, http_store) -> None:
    # the test's server is on loopback, which the operator must allow (the SSRF guard)
    backend = make_backend(allow_private_urls="127.0.0.1/32")
    base, files = http_store
    files["/in.bin"] = payload = os.urandom(200_000)
    spec = {
        "inputs": [
            {
                "path": "in.bin",
                "url": f"{base}/in.bin",
                "sha256": hashlib.sha256(payload).hexdigest(),
            }
        ],
        "executors": [{"command": ["cp", "in.bin", "out.bin"]}],
        "outputs": [{"path": "out.bin", "url": f"{base}/result.bin"}],
    }
    status = wait_final(backend, backend.submit(job(spec)))
    assert status.state is State.COMPLETE, status.reason
    assert files["/result.bin"] == payload
    assert status.usage is not None and status.usage.bytes_in == len(payload)


def test_http_input_or_output_on_loopback_is_refused_unless_allowed(
    backend: LocalBackend, http_store
) -> None:
    base, files = http_store
    files["/in.bin"] = b"secret of the provider's own machine"
    spec = {
        "inputs": [{"path": "x", "url": f"{base}/in.bin"}],
        "executors": [{"command": ["true"]}],
    }
    status = wait_final(backend, backend.submit(job(spec)))
    assert status.state is State.SYSTEM_ERROR
    reason = status.reason or ""
    assert "127.0.0.1, a loopback address" in reason and "allow_private_urls" in reason, reason
    # an output PUT to loopback is refused too, and nothing reaches the server
    spec = {
        "executors": [{"command": ["sh", "-c", "echo hi > out.txt"]}],
        "outputs": [{"path": "out.txt", "url": f"{base}/stolen.txt"}],
    }
    status = wait_final(backend, backend.submit(job(spec, attempt_id="a2")))
    assert status.state is State.SYSTEM_ERROR
    assert "loopback" in (status.reason or "") and "/stolen.txt" not in files


def test_http_404_is_system_error(make_backend, http_store) -> None:
    backend = make_backend(allow_private_urls="127.0.0.1/32")
    base, _files = http_store
    spec = {"inputs": [{"path": "x", "url": f"{base}/nope"}], "executors": [{"command": ["true"]}]}
    status = wait_final(backend, backend.submit(job(spec)))
    assert status.state is State.SYSTEM_ERROR
    assert "HTTP 404" in (status.reason or "")


def test_cancel_kills_the_whole_process_group(backend: LocalBackend) -> None:
    spec = {"executors": [{"command": ["sh", "-c", "sleep 60 & echo $! > child.pid; wait"]}]}
    handle = backend.submit(job(spec))
    pid_file = Path(handle) / "files" / "child.pid"
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), what="the grandchild")
    grandchild = int(pid_file.read_text())
    assert hostinfo.alive(grandchild)
    assert backend.poll(handle).state is State.RUNNING
    started = time.monotonic()
    backend.cancel(handle)
    assert time.monotonic() - started < 1.0  # cancel does not block
    status = wait_final(backend, handle, timeout=8.0)
    assert status.state is State.CANCELED, status.reason
    assert time.monotonic() - started < 6.0
    wait_for(lambda: not hostinfo.alive(grandchild), timeout=2.0, what="the grandchild to die")
    backend.cancel(handle)  # idempotent once final
    assert backend.poll(handle).state is State.CANCELED


def test_executor_ignoring_sigterm_is_killed_after_the_grace(make_backend) -> None:
    backend = make_backend(executor_grace_s="0.5")
    spec = {"executors": [{"command": ["sh", "-c", "trap '' TERM; touch ready; sleep 60"]}]}
    handle = backend.submit(job(spec))
    wait_for(lambda: (Path(handle) / "files" / "ready").exists(), what="the trap")
    started = time.monotonic()
    backend.cancel(handle)
    status = wait_final(backend, handle, timeout=5.0)
    assert status.state is State.CANCELED
    assert status.executor_logs[0].exit_code == 128 + signal.SIGKILL
    assert 0.4 < time.monotonic() - started < 4.0


def test_stuck_runner_is_killed_by_the_backend(make_backend) -> None:
    backend = make_backend(cancel_grace_s="0.5")
    handle = backend.submit(job({"executors": [{"command": ["sleep", "60"]}]}))
    wait_for(lambda: backend.poll(handle).state is State.RUNNING, what="RUNNING")
    runner_pid = int((Path(handle) / "runner.pid").read_text().split()[0])
    wait_for(lambda: hostinfo.children(runner_pid), what="the executor to start")
    (executor,) = hostinfo.children(runner_pid)
    os.kill(runner_pid, signal.SIGSTOP)  # a runner that cannot react to SIGTERM
    backend.cancel(handle)
    status = wait_final(backend, handle, timeout=5.0)
    assert status.state is State.CANCELED
    wait_for(lambda: not hostinfo.alive(executor), timeout=2.0, what="the executor to die")


def test_cancel_while_staging(loopback_backend: LocalBackend, http_store) -> None:
    backend = loopback_backend
    base, _files = http_store
    spec = {"inputs": [{"path": "x", "url": f"{base}/slow"}], "executors": [{"command": ["true"]}]}
    handle = backend.submit(job(spec))
    wait_for(lambda: backend.poll(handle).state is State.INITIALIZING, what="staging")
    wait_for(lambda: list((Path(handle) / "files").glob(".x.part")), what="the download")
    backend.cancel(handle)
    status = wait_final(backend, handle, timeout=5.0)
    assert (status.state, status.reason) == (State.CANCELED, "canceled while staging")
    assert list((Path(handle) / "files").iterdir()) == []  # the partial file is gone


def test_runner_killed_is_system_error_and_its_executors_die(backend: LocalBackend) -> None:
    spec = {"executors": [{"command": ["sleep", "60"]}]}
    handle = backend.submit(job(spec))
    wait_for(lambda: backend.poll(handle).state is State.RUNNING, what="RUNNING")
    runner_pid = int((Path(handle) / "runner.pid").read_text().split()[0])
    wait_for(lambda: hostinfo.children(runner_pid), what="the executor to start")
    (executor,) = hostinfo.children(runner_pid)
    os.kill(runner_pid, signal.SIGKILL)
    status = wait_final(backend, handle, timeout=5.0)
    assert status.state is State.SYSTEM_ERROR and "runner died" in (status.reason or "")
    wait_for(lambda: not hostinfo.alive(executor), timeout=2.0, what="the executor to die")


def test_reattach_from_a_new_instance(make_backend, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    first = make_backend()
    handle = first.submit(job({"executors": [{"command": gate_command(gate)}]}))
    wait_for(lambda: first.poll(handle).state is State.RUNNING, what="RUNNING")
    second = make_backend()  # the agent restarted; the runner kept running
    assert second.poll(handle).state is State.RUNNING
    assert second.live()[0].running == 1
    gate.touch()
    assert wait_final(second, handle).state is State.COMPLETE
    assert first.poll(handle).state is State.COMPLETE  # and the first one reaps its child


def test_same_attempt_twice_starts_one_runner(backend: LocalBackend) -> None:
    spec = {"executors": [{"command": ["sh", "-c", "echo run >> count"]}]}
    handle = backend.submit(job(spec))
    pid = (Path(handle) / "runner.pid").read_text()
    assert backend.submit(job(spec)) == handle
    wait_final(backend, handle)
    assert backend.submit(job(spec)) == handle  # even after it ended
    assert (Path(handle) / "runner.pid").read_text() == pid
    assert (Path(handle) / "files" / "count").read_text() == "run\n"


def test_threads_submitting_and_polling_at_once(backend: LocalBackend) -> None:
    spec = {"executors": [{"command": ["sh", "-c", "echo run >> count"]}]}
    ids = ["t0", "t1", "t2", "t0", "t1", "t2"]  # each attempt submitted twice, concurrently
    with ThreadPoolExecutor(max_workers=6) as pool:
        handles = list(pool.map(lambda a: backend.submit(job(spec, a)), ids))
        statuses = list(pool.map(lambda h: wait_final(backend, h), handles))
        lives = list(pool.map(lambda _: backend.live(), range(6)))
    assert handles[:3] == handles[3:]
    assert all(s.state is State.COMPLETE for s in statuses) and len(lives) == 6
    for handle in handles[:3]:
        assert (Path(handle) / "files" / "count").read_text() == "run\n"


def test_concurrency_is_bounded_by_pool_capacity(make_backend, tmp_path: Path) -> None:
    backend = make_backend(pools=[small_pool("p2", cores=2.0)])
    gates = [tmp_path / f"gate{i}" for i in range(3)]
    res = {"cpu_cores": 1.0, "ram_gb": 0.5}
    handles = [
        backend.submit(
            job({"executors": [{"command": gate_command(g)}], "resources": res}, f"j{i}", "p2")
        )
        for i, g in enumerate(gates)
    ]
    states = [backend.poll(h).state for h in handles]
    assert states[2] is State.QUEUED and State.QUEUED not in states[:2]
    assert not (Path(handles[2]) / "runner.pid").exists()
    (live,) = backend.live()
    assert (live.running, live.queue_length, live.free.cpu_cores) == (2, 1, 0.0)
    assert live.free.ram_gb == pytest.approx(7.0)

    gates[0].touch()
    assert wait_final(backend, handles[0]).state is State.COMPLETE
    wait_for(lambda: backend.poll(handles[2]).state is not State.QUEUED, what="the third start")
    (live,) = backend.live()
    assert (live.running, live.queue_length) == (2, 0)
    for g in gates[1:]:
        g.touch()
    assert all(wait_final(backend, h).state is State.COMPLETE for h in handles)
    assert backend.live()[0].free.cpu_cores == 2.0


def test_queued_attempts_survive_a_restart(make_backend, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    pools = [small_pool("p1", cores=1.0)]
    first = make_backend(pools=pools)
    spec = {"executors": [{"command": gate_command(gate)}]}
    running = first.submit(job(spec, "r1", "p1"))
    queued = first.submit(job(spec, "q1", "p1"))
    assert first.poll(queued).state is State.QUEUED
    second = make_backend(pools=pools)  # restart: the new instance finds both in work_root
    assert second.poll(queued).state is State.QUEUED
    assert second.live()[0].queue_length == 1
    gate.touch()
    assert wait_final(second, running).state is State.COMPLETE
    assert wait_final(second, queued).state is State.COMPLETE
    first.poll(running)  # reap


def test_cancel_while_queued(make_backend, tmp_path: Path) -> None:
    backend = make_backend(pools=[small_pool("p1", cores=1.0)])
    gate = tmp_path / "gate"
    spec = {"executors": [{"command": gate_command(gate)}]}
    running = backend.submit(job(spec, "r1", "p1"))
    queued = backend.submit(job(spec, "q1", "p1"))
    backend.cancel(queued)
    status = backend.poll(queued)
    assert (status.state, status.reason) == (State.CANCELED, "canceled while queued")
    assert backend.live()[0].queue_length == 0
    gate.touch()
    assert wait_final(backend, running).state is State.COMPLETE
    assert not (Path(queued) / "files").exists()  # it never ran


def test_jobs_that_cannot_run_here_fail_at_poll(make_backend) -> None:
    backend = make_backend(pools=[small_pool("p2", cores=2.0)])
    unknown = backend.poll(backend.submit(job({"executors": [{"command": ["true"]}]}, "u", "x")))
    assert unknown.state is State.SYSTEM_ERROR and "'x' is not offered" in (unknown.reason or "")
    big = {"executors": [{"command": ["true"]}], "resources": {"cpu_cores": 4}}
    status = backend.poll(backend.submit(job(big, "b", "p2")))
    assert status.state is State.SYSTEM_ERROR and "more than pool 'p2'" in (status.reason or "")


def test_forget(make_backend, tmp_path: Path) -> None:
    backend = make_backend()
    gate = tmp_path / "gate"
    handle = backend.submit(job({"executors": [{"command": gate_command(gate)}]}))
    with pytest.raises(BackendError, match="not final"):
        backend.forget(handle)
    gate.touch()
    wait_final(backend, handle)
    backend.forget(handle)
    assert (Path(handle) / "forgotten").exists()  # no other instance adopts it
    # A task may leave read-only directories and links out of its dir: they go, and the
    # link's target stays.
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    (Path(handle) / "ro" / "deep").mkdir(parents=True)
    (Path(handle) / "ro" / "deep" / "f").write_text("x")
    (Path(handle) / "ro" / "link").symlink_to(outside)
    (Path(handle) / "ro" / "deep").chmod(0o500)
    (Path(handle) / "ro").chmod(0o500)
    backend.remove_work_dir(handle)
    assert not Path(handle).exists() and outside.read_text() == "keep me"
    backend.remove_work_dir(handle)  # idempotent
    backend.forget(handle)  # idempotent
    with pytest.raises(BackendError, match="not an attempt dir"):
        backend.remove_work_dir(Handle(tmp_path))
    with pytest.raises(BackendError, match="not a handle"):
        backend.handle("/etc")


def test_remove_work_dirs_removes_many_at_once_and_says_what_stays(
    make_backend, tmp_path: Path
) -> None:
    backend = make_backend()
    handles = [backend.submit(job({"executors": [{"command": ["true"]}]})) for _ in range(3)]
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    for h in handles:
        wait_final(backend, h)
        backend.forget(h)
    (Path(handles[0]) / "ro" / "deep").mkdir(parents=True)
    (Path(handles[0]) / "ro" / "link").symlink_to(outside)
    (Path(handles[0]) / "ro" / "deep").chmod(0o500)
    (Path(handles[0]) / "ro").chmod(0o500)
    stray = Handle(tmp_path)  # not an attempt dir of this backend: refused, left alone
    gone = Handle(backend.work_root / "att_gone")  # removed already: done
    out = backend.remove_work_dirs([*handles, stray, gone])
    assert out[:3] == [None, None, None] and out[4] is None
    assert isinstance(out[3], BackendError) and "not an attempt dir" in str(out[3])
    assert not any(Path(h).exists() for h in handles)
    assert outside.read_text() == "keep me" and tmp_path.exists()


def test_discover_describes_this_machine(backend: LocalBackend) -> None:
    (pool,) = backend.discover()
    assert pool.name == "local" and pool.type == "general"
    assert pool.total.cpu_cores == os.cpu_count() and pool.total.ram_gb > 0
    assert pool.cpu_model and pool.labels["os"] == "linux"
    assert BACKENDS["local"] is LocalBackend is get_backend("local")
    with pytest.raises(BackendError, match=r"known: (\w+, )*local\b"):
        get_backend("nope")


def test_changed_names_the_attempts_whose_runner_wrote_a_status(
    backend: LocalBackend, tmp_path: Path
) -> None:
    # The agent reads the status of these only (cpnet issue 15), so every state a runner
    # records must show up here: its start, each executor, its end.
    assert backend.changed() == set()
    gate = tmp_path / "gate"
    waiting = backend.submit(job({"executors": [{"command": gate_command(gate)}]}, "waits"))
    quick = backend.submit(job({"executors": [{"command": ["true"]}]}, "quick"))
    seen: set[Handle] = set()

    def quick_final_seen() -> bool:
        got = backend.changed()
        assert got is not None
        seen.update(got)
        return quick in got and backend.poll(quick).final

    wait_for(quick_final_seen, what="quick's final status reported as a change")
    assert waiting in seen  # it started (its runner wrote INITIALIZING, then RUNNING)
    assert backend.changed() == set()  # nothing new since
    gate.touch()
    wait_for(lambda: waiting in (backend.changed() or ()), what="waits' end as a change")
    assert backend.poll(waiting).state is State.COMPLETE
    backend.forget(quick)  # no longer watched
    os.replace(quick.work_dir / "status.json", quick.work_dir / "x")
    os.replace(quick.work_dir / "x", quick.work_dir / "status.json")
    assert backend.changed() == set()
