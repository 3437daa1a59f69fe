"""CPU per attempt and attempts per second of the local backend's ways to run an attempt, side by
side with a raw ``subprocess.run(["true"])`` (``bench/run.py warm``).

Every row runs the same trivial attempt (one executor, ``true``; no inputs or outputs) one
after another, on this machine only (no hub, no agent):

- raw ``true``: the baseline, ``subprocess.run(["true"])``;
- spawned runner: ``python -m cpnet.agent.runner DIR`` per attempt (``fork_server=false``,
  ``warm_workers=0``);
- forked runner: a child of the fork server per attempt (``cpnet.agent.forkserver``: request,
  runner.pid, go), the fallback when no warm worker is idle;
- warm worker: one ``cpnet.agent.warm`` process running the attempts in turn (runner.pid, run,
  done).

Each twice where it matters: with a bare ``job.json`` (no ``runner`` block, as
``bench/throughput.py`` measures: shared /tmp, no pinning, no memory limit) and with the
``runner`` block and CPU assignment the local backend writes by default (as root: a private
/tmp per executor, pinned to a CPU, under RLIMIT_AS). Then the same attempts through
``LocalBackend`` itself (submit, poll), with warm workers off and on.

CPU is user+system of every process involved: this one (requests, polling), the fork server or
worker, and what they reaped (runners, executors); the start-up of the fork server and of the
worker is not counted (each runs a first attempt before the clock starts).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import (
    PY,
    Section,
    changed_note,
    console,
    cpu_seconds,
    machine,
    ms,
    num,
    own_cpu,
    ratio,
    source_digest,
    write_report,
)

from cpnet.agent.backends.base import BackendConfig, Job, PoolCapacity, PoolDecl
from cpnet.agent.backends.local import LocalBackend, _ForkServer, _WarmWorker
from cpnet.agent.backends.runner_job import runner_env
from cpnet.agent.runner import write_atomic
from cpnet.tasks.model import TaskSpec

DEFAULT_ATTEMPTS = 300
SPAWNED_SHARE = 10  # the spawned runner (~90 ms each) runs a tenth as many
WAIT_S = 60.0  # any single attempt ends within this, or the benchmark fails
SPEC = {"executors": [{"command": ["true"]}], "resources": {"cpu_cores": 1, "ram_gb": 0.25}}


@dataclass(frozen=True, slots=True)
class Params:
    attempts: int
    command: str


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    n: int
    wall: float
    cpu: float
    how: str

    @property
    def rate(self) -> float:
        return self.n / self.wall if self.wall > 0 else float("nan")

    @property
    def cpu_each(self) -> float:
        return self.cpu / self.n


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--warm-attempts", type=int, default=None,
        help=f"warm: attempts per row ({DEFAULT_ATTEMPTS}; the spawned runner a tenth)",
    )  # fmt: skip


def params(args: argparse.Namespace, command: str) -> Params:
    n = args.warm_attempts or (40 if args.quick else DEFAULT_ATTEMPTS)
    return Params(max(SPAWNED_SHARE, n), command)


# ---- the attempts -----------------------------------------------------------------------------


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def prepare(root: Path, n: int, backend: LocalBackend | None) -> list[Path]:
    """`n` work dirs holding the job.json of the trivial attempt: bare, or with the runner block
    and CPU assignment `backend` would write."""
    spec = TaskSpec.model_validate(SPEC)
    dirs = []
    root.mkdir(parents=True)
    for i in range(n):
        d = root / f"att-{i}"
        d.mkdir()
        data: dict[str, Any] = Job(f"att-{i}", f"tsk-{i}", "local", spec, d).to_dict()
        if backend is not None:
            data["runner"] = backend._runner_settings(spec)
            cpu = sorted(os.sched_getaffinity(0))[i % len(os.sched_getaffinity(0))]
            (d / "assign.json").write_text(json.dumps({"cpus": [cpu], "cpu_cores": 1.0}))
        (d / "job.json").write_text(json.dumps(data))
        dirs.append(d)
    return dirs


def _complete(dirs: list[Path], what: str) -> None:
    bad = []
    for d in dirs:
        try:
            if json.loads((d / "status.json").read_text())["state"] != "COMPLETE":
                bad.append(d)
        except (OSError, ValueError, KeyError):
            bad.append(d)
    if bad:
        log = (bad[0] / "runner.log").read_text() if (bad[0] / "runner.log").exists() else ""
        raise RuntimeError(f"{what}: {len(bad)} attempts did not complete, e.g. {bad[0]}: {log}")


def raw_true(n: int) -> tuple[float, float]:
    c0, t0 = _children_cpu(), time.perf_counter()
    for _ in range(n):
        subprocess.run(["true"], check=True)
    return time.perf_counter() - t0, _children_cpu() - c0


def spawned(dirs: list[Path]) -> tuple[float, float]:
    env = runner_env()
    c0, t0 = _children_cpu(), time.perf_counter()
    for d in dirs:
        with (d / "runner.log").open("ab") as out:
            subprocess.run(
                [PY, "-m", "cpnet.agent.runner", str(d)],
                cwd=d,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                timeout=WAIT_S,
            )
    wall, cpu = time.perf_counter() - t0, _children_cpu() - c0
    _complete(dirs, "spawned")
    return wall, cpu


def _wait_exit(pid: int) -> None:
    """Until the process `pid` (not our child) has exited: a pidfd, no polling."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        if not select.select([fd], [], [], WAIT_S)[0]:
            raise RuntimeError(f"runner {pid} still running after {WAIT_S:g} s")
    finally:
        os.close(fd)


def _reaped(pid: int) -> None:
    """Until its parent reaped `pid` (its CPU is then in the parent's cutime)."""
    deadline = time.monotonic() + 5.0
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.001)


def forked(dirs: list[Path]) -> tuple[float, float]:
    """Through a fork server, as the local backend does when no warm worker is idle."""
    server = _ForkServer.start(dirs[0].parent, None)
    try:

        def one(d: Path) -> int:
            pid, ticks = server.request_start(d)
            write_atomic(d / "runner.pid", f"{pid} {ticks}\n", durable=False)
            server.send(f"go {pid}")
            _wait_exit(pid)
            return pid

        _reaped(one(dirs[0]))  # the server's first fork is not counted
        own0, kids0 = cpu_seconds(server.pid)
        c0, t0 = own_cpu(), time.perf_counter()
        last = 0
        for d in dirs[1:]:
            last = one(d)
        wall = time.perf_counter() - t0
        _reaped(last)
        own1, kids1 = cpu_seconds(server.pid)
        cpu = (own1 - own0) + (kids1 - kids0) + (own_cpu() - c0)
    finally:
        server.close()
    _complete(dirs, "forked")
    return wall, cpu


def warm(dirs: list[Path]) -> tuple[float, float]:
    """Through one warm worker, as the local backend does when one is idle."""
    worker = _WarmWorker.start(dirs[0].parent, None)
    try:

        def wait_idle() -> None:
            deadline = time.monotonic() + WAIT_S
            while True:
                worker.pump()
                if worker.gone:
                    raise RuntimeError(f"warm worker {worker.pid} is gone")
                if worker.idle:
                    return
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([worker._out], [], [], left)[0]:
                    raise RuntimeError(f"warm worker {worker.pid} silent for {WAIT_S:g} s")

        def one(d: Path) -> None:
            worker.seq += 1
            record = f"{worker.pid} {worker.ticks} {worker.seq}\n"
            write_atomic(d / "runner.pid", record, durable=False)
            worker.send(f"run {worker.seq} {d}")
            worker.busy = str(d)
            wait_idle()

        wait_idle()  # its start-up is not counted
        one(dirs[0])  # nor its first attempt
        own0, kids0 = cpu_seconds(worker.pid)
        c0, t0 = own_cpu(), time.perf_counter()
        for d in dirs[1:]:
            one(d)
        wall = time.perf_counter() - t0
        own1, kids1 = cpu_seconds(worker.pid)
        cpu = (own1 - own0) + (kids1 - kids0) + (own_cpu() - c0)
    finally:
        worker.close()
    _complete(dirs, "warm")
    return wall, cpu


# ---- through LocalBackend ---------------------------------------------------------------------


def through_backend(
    root: Path, n: int, warm_workers: int, at_once: bool
) -> tuple[float, float, dict[str, int]]:
    """(wall, CPU, how many attempts ran where) of `n` attempts through a LocalBackend: one at a
    time (submit, poll every millisecond until final), or all at once on a pool of 64 cores
    (poll all every 20 ms, roughly as the agent does)."""
    pool = PoolDecl(
        name="local",
        type="general",
        total=PoolCapacity(cpu_cores=64.0, ram_gb=64.0, disk_gb=100.0, gpus=0),
        cpu_model="bench",
        gpu_model=None,
        gpu_memory_gb=None,
        labels={},
    )
    options = {"warm_workers": str(warm_workers)}
    backend = LocalBackend(BackendConfig(work_root=root, pools=[pool], options=options))
    spec = TaskSpec.model_validate(SPEC)
    try:

        def submit(name: str) -> Any:
            return backend.submit(Job(name, f"t-{name}", "local", spec, Path(".")))

        def wait(handles: list[Any], every: float) -> None:
            deadline = time.monotonic() + WAIT_S * 5
            left = list(handles)
            while left:
                left = [h for h in left if not backend.poll(h).final]
                if left and time.monotonic() > deadline:
                    raise RuntimeError(f"{len(left)} attempts not final after {WAIT_S * 5:g} s")
                if left:
                    time.sleep(every)
            for h in handles:
                backend.forget(h)

        # Warm up: the fork server and the workers start, outside the measurement.
        wait([submit("warm-up-0")], 0.001)
        if warm_workers:
            deadline = time.monotonic() + WAIT_S
            while len(backend.idle_warm_worker_pids) < warm_workers:
                if time.monotonic() > deadline:
                    raise RuntimeError("warm workers not ready")
                # one more than there are workers, at once: one finds none idle, so the backend
                # starts another while there are fewer than warm_workers
                batch = [submit(f"warm-up-{time.monotonic_ns()}") for _ in range(warm_workers + 1)]
                wait(batch, 0.001)
        helpers = [p for p in [backend.fork_server_pid, *backend.warm_worker_pids] if p]
        before = [cpu_seconds(p) for p in helpers]
        c0, k0, t0 = own_cpu(), _children_cpu(), time.perf_counter()
        handles = []
        if at_once:
            handles = [submit(f"a{i}") for i in range(n)]
            wait(handles, 0.02)
        else:
            for i in range(n):
                handles.append(submit(f"a{i}"))
                wait(handles[-1:], 0.001)
        wall = time.perf_counter() - t0
        after = [cpu_seconds(p) for p in helpers]
        if any(p not in [*backend.warm_worker_pids, backend.fork_server_pid] for p in helpers):
            raise RuntimeError("a fork server or worker was replaced during the run")
        cpu = (own_cpu() - c0) + (_children_cpu() - k0)
        cpu += sum((a[0] - b[0]) + (a[1] - b[1]) for a, b in zip(after, before, strict=True))
        where = {"warm": 0, "forked or spawned": 0}
        for h in handles:
            fields = (Path(h) / "runner.pid").read_text().split()
            where["warm" if len(fields) == 3 else "forked or spawned"] += 1
    finally:
        backend.close()
    return wall, cpu, where


# ---- the report -------------------------------------------------------------------------------


def run(p: Params) -> Path:
    digest = source_digest()
    info = machine()
    n = p.attempts
    root = Path(tempfile.mkdtemp(prefix="cpnet-bench-warm-"))
    rows: list[Row] = []
    backend_rows: list[Row] = []
    try:
        settings = LocalBackend(BackendConfig(work_root=root / "settings", options={}))
        runs: list[tuple[str, Callable[[], tuple[float, float]], str]] = [
            ('raw `subprocess.run(["true"])`', lambda: raw_true(n), "the baseline"),
            (
                "spawned runner, bare job.json",
                lambda: spawned(prepare(root / "spawned", max(2, n // SPAWNED_SHARE), None)),
                "`python -m cpnet.agent.runner DIR`",
            ),
            (
                "forked runner, bare job.json",
                lambda: forked(prepare(root / "forked", n + 1, None)),
                "a fork server's child per attempt",
            ),
            (
                "warm worker, bare job.json",
                lambda: warm(prepare(root / "warm", n + 1, None)),
                "one worker, attempts in turn",
            ),
            (
                "forked runner, the local backend's job.json",
                lambda: forked(prepare(root / "forked-full", n + 1, settings)),
                "private /tmp (as root), pinned, RLIMIT_AS",
            ),
            (
                "warm worker, the local backend's job.json",
                lambda: warm(prepare(root / "warm-full", n + 1, settings)),
                "private /tmp (as root), pinned, RLIMIT_AS",
            ),
        ]
        for name, fn, how in runs:
            console.print(f"warm: {name}")
            wall, cpu = fn()
            count = max(2, n // SPAWNED_SHARE) if name.startswith("spawned") else n
            rows.append(Row(name, count, wall, cpu, how))
        settings.close()
        size = LocalBackend(BackendConfig(work_root=root / "size", options={})).warm_size
        for at_once in (False, True):
            for workers in (0, size):
                label = "all at once" if at_once else "one at a time"
                name = f"LocalBackend, {label}, warm_workers={workers}"
                console.print(f"warm: {name}")
                sub = root / f"backend-{int(at_once)}-{workers}"
                wall, cpu, where = through_backend(sub, n, workers, at_once)
                how = f"{where['warm']} on warm workers, {where['forked or spawned']} forked"
                backend_rows.append(Row(name, n, wall, cpu, how))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    base = rows[0]
    cols = [
        "run",
        "attempts",
        "wall",
        "attempts/s",
        "CPU per attempt",
        "CPU ÷ raw `true`",
        "attempts/s ÷ raw `true`",
        "ceiling on all cores (cores ÷ CPU), per s",
        "how",
    ]
    cores = len(os.sched_getaffinity(0))

    def cells(r: Row) -> list[str]:
        return [
            r.name,
            str(r.n),
            ms(r.wall),
            num(r.rate),
            ms(r.cpu_each),
            ratio(r.cpu_each, base.cpu_each),
            ratio(r.rate, base.rate),
            num(cores / r.cpu_each),
            r.how,
        ]

    by = {r.name: r for r in rows}
    forked_full = by["forked runner, the local backend's job.json"]
    warm_full = by["warm worker, the local backend's job.json"]
    forked_bare = by["forked runner, bare job.json"]
    warm_bare = by["warm worker, bare job.json"]
    bare_ratio = ratio(warm_bare.cpu_each, forked_bare.cpu_each)
    full_ratio = ratio(warm_full.cpu_each, forked_full.cpu_each)
    notes = [
        f"Warm worker ÷ forked runner, CPU per attempt: {bare_ratio} (bare job.json), "
        f"{full_ratio} (the local backend's).",
        "One attempt at a time, so the figures are costs, not the machine's parallel throughput "
        "(the ceiling column divides the cores by the CPU per attempt).",
        "CPU: user+system of this process, the fork server or worker and what they reaped "
        "(runners, executors), from /proc and getrusage; start-ups are not counted.",
        "The LocalBackend rows include this benchmark's polling (every 1 ms one at a time, "
        "every 20 ms all at once) and the backend's own work (job.json written durably, "
        "runner.pid, CPU assignment); 'all at once' submits every attempt to a pool of 64 "
        "declared cores, so attempts beyond the idle warm workers are forked.",
        f"Issue 15's target (≥ 500 tasks/s end to end, hub included) needs ≤ {ms(cores / 500)} "
        "of CPU per task for everything on these cores together.",
        "Private /tmp applies as root only; the machine line says nothing of the user, the "
        f"benchmark ran as uid {os.geteuid()}.",
        *changed_note(digest),
    ]
    sections = [
        Section(
            "Per attempt, one after another (the same trivial attempt)",
            cols,
            [cells(r) for r in rows],
        ),
        Section("Through LocalBackend (submit and poll)", cols, [cells(r) for r in backend_rows]),
    ]
    return write_report(
        "warm",
        "Warm workers: CPU per attempt against forked and spawned runners and raw `true`",
        command=p.command,
        sections=sections,
        notes=notes,
        machine_info=info,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    add_args(ap)
    args = ap.parse_args(argv)
    path = run(params(args, " ".join(["bench/warm.py", *(argv or sys.argv[1:])])))
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
