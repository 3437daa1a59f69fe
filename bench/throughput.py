"""End-to-end task throughput and latency: SDK → hub → one local agent → runner → ``true``.

What it measures, in one run and side by side (compare the ratios; absolute figures depend on
the machine, which the result file records):

1. **raw `true`** (the baseline): ``subprocess.run(["true"])`` for every task from a thread pool as
   large as the agent pool's effective concurrency (``--concurrency``). Latency is enqueue →
   exit; all tasks are enqueued at once, so it is mostly queueing, as it is through the hub.
2. **raw runner**: the same thread pool running what the local backend starts for every
   attempt, ``python -m cpnet.agent.runner WORK_DIR`` on a prepared ``job.json`` that runs
   ``true`` (a sample of the tasks). 1 → 2 is the cost of the per-attempt runner; 2 → 5 is the
   hub, the agent and the protocol.
3. **hub: submission alone**: a separate hub with no agent; ``--clients`` SDK threads submit the
   tasks with ``Client.submit``. Rate, per-request latency, hub CPU per task.
4. **hub: one task at a time**: on the end-to-end hub, ``submit`` then ``wait`` a few times,
   before the bulk run: the latency of a task when nothing else runs.
5. **hub: end to end**: a hub and one agent whose declared pool fits ``--concurrency`` tasks at
   once. The client threads submit every task while the main thread asks the hub every 0.5 s
   whether any is left (``Client.tasks(state=<non-terminal>, limit=1)``: one cheap list call,
   never one GET per task) until none is. tasks/s = COMPLETE tasks ÷ (first submit → latest
   attempt ``end_time``); latency per task = hub ``created_at`` → the final attempt's
   ``end_time`` (when the agent saw the runner's final status, as the hub recorded it), not
   when the poller saw it.

Where the time goes is measured: the hub's timestamps split each task into stages (queued →
placed → runner spawned → executor started → executor ended → end reported), ``/proc`` gives
the CPU seconds of the hub, the agent and the runners (reaped children of the agent and of its
fork server), and a sequential profile times ``python -c pass``, ``import cpnet.agent.runner``, a
whole runner spawned and one forked by the local backend's fork server, and a durable status
write. The notes name the bottleneck and the ceilings these imply.

Run: ``.venv/bin/python bench/throughput.py [--tasks N] [--quick]`` (or via ``bench/run.py``).
Writes ``bench/results/throughput.md``; every process started is stopped at the end.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import (
    PY,
    Agent,
    BenchError,
    Hub,
    Procs,
    Section,
    changed_note,
    cores,
    cpu_seconds,
    machine,
    make_world,
    ms,
    num,
    own_cpu,
    per_s,
    percentile,
    pool_table,
    progress,
    ratio,
    standalone,
    wait_until,
    write_report,
)

from cpnet.agent import hostinfo
from cpnet.agent.backends.base import Job
from cpnet.agent.backends.local import _ForkServer
from cpnet.agent.runner import write_atomic, write_json_atomic
from cpnet.client import Client
from cpnet.registry.model import HEARTBEAT_INTERVAL_S
from cpnet.tasks.model import TaskSpec, TaskView
from cpnet.tasks.states import TERMINAL, State

# Issue 15's targets, reported and never asserted: end to end with single submissions, with
# arrays, and the hub's CPU per task.
TARGET_TASKS_S = 250.0
TARGET_ARRAYS_S = 500.0
TARGET_HUB_CPU_S = 0.002
NON_TERMINAL = [s.value for s in State if s not in TERMINAL]
TASK_CORES = 1.0
TASK_RAM_GB = 0.25
POLL_S = 0.5  # the end-to-end poller asks the hub whether any task is still non-terminal


def acknowledged(agent_work_dir: Path) -> int:
    """Attempts whose end the hub acknowledged to the agent (the local backend then marks the
    attempt's work dir ``forgotten``): a progress count that costs the hub nothing."""
    n = 0
    with os.scandir(agent_work_dir / "attempts") as it:
        for entry in it:
            if os.path.exists(os.path.join(entry.path, "forgotten")):
                n += 1
    return n


@dataclass
class Params:
    tasks: int = 2000
    clients: int = 4
    concurrency: int = 64
    runner_sample: int = 200
    profile_n: int = 10
    serial: int = 10
    heartbeat_s: float = HEARTBEAT_INTERVAL_S  # the agent's default
    timeout_s: float = 900.0
    database_url: str | None = None
    command: str = "bench/throughput.py"


@dataclass
class Run:
    """One measured way of running the tasks."""

    name: str
    tasks: int
    complete: int
    wall_s: float
    latencies: list[float] = field(default_factory=list)
    service: list[float] = field(default_factory=list)  # start → end, without queueing

    @property
    def rate(self) -> float:
        return per_s(self.complete, self.wall_s)


def spec(run_id: str, i: int) -> dict[str, Any]:
    """One trivial task: ``true``, one core, a little memory, no retries (failures stay visible)."""
    return {
        "name": f"bench-{i}",
        "executors": [{"command": ["true"]}],
        "resources": {"cpu_cores": TASK_CORES, "ram_gb": TASK_RAM_GB},
        "tags": {"bench": run_id},
        "max_attempts": 1,
    }


# ---- baselines without a hub --------------------------------------------------------------------


def pool_run(
    name: str, n: int, workers: int, job: Callable[[int], bool], timeout_s: float, bar: Any
) -> Run:
    """Run ``job(i)`` for i < n on `workers` threads, all enqueued at once; bounded by time."""
    deadline = time.monotonic() + timeout_s
    t0 = time.perf_counter()
    lat: list[float] = []
    svc: list[float] = []
    ok = [0]
    lock = threading.Lock()

    def one(i: int) -> None:
        if time.monotonic() > deadline:
            return
        started = time.perf_counter()
        good = job(i)
        end = time.perf_counter()
        with lock:
            lat.append(end - t0)
            svc.append(end - started)
            ok[0] += good
        bar(1)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(one, i) for i in range(n)]
        try:
            for f in futures:
                f.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    wall = time.perf_counter() - t0
    return Run(name, n, ok[0], wall, lat, svc)


def runner_env() -> dict[str, str]:
    """The environment the local backend gives a runner (this cpnet on PYTHONPATH)."""
    import cpnet

    env = dict(os.environ)
    src = str(Path(cpnet.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return env


def prepare_job(work_dir: Path, i: int) -> Path:
    """A work dir with the ``job.json`` the local backend would write for one ``true`` task."""
    d = work_dir / f"att-{i}"
    d.mkdir(parents=True)
    ts = TaskSpec.model_validate(spec("raw", i))
    job = Job(f"att-{i}", f"tsk-{i}", "bench", ts, d).to_dict()
    (d / "job.json").write_text(json.dumps(job))
    return d


def run_runner(d: Path, env: dict[str, str]) -> bool:
    """Run one runner the way the local backend does; True if it recorded COMPLETE."""
    subprocess.run(
        [PY, "-m", "cpnet.agent.runner", str(d)],
        cwd=d,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        timeout=120,
    )
    try:
        return json.loads((d / "status.json").read_text())["state"] == "COMPLETE"
    except (OSError, ValueError, KeyError):
        return False


def forked_attempts(dirs: list[Path]) -> tuple[float, float]:
    """(wall s, CPU s) of running each prepared attempt, one after another, the way the local
    backend does by default: forked by a fork server (request → runner.pid → go → runner exit).
    CPU is the server's own and its reaped children's (the runners and their executors), plus
    this process's share (the requests); the server's start-up is not counted."""
    server = _ForkServer.start(dirs[0].parent)
    try:
        own0, kids0 = cpu_seconds(server.pid)
        c0, t0 = own_cpu(), time.perf_counter()
        for d in dirs:
            pid, ticks = server.request_start(d)
            write_atomic(d / "runner.pid", f"{pid} {ticks}\n")  # as the backend does
            server.send(f"go {pid}")
            while hostinfo.alive(pid, ticks):
                time.sleep(0.0005)
        wall = time.perf_counter() - t0
        time.sleep(0.05)  # let the server reap the last one
        own1, kids1 = cpu_seconds(server.pid)
        cpu = (own1 - own0) + (kids1 - kids0) + (own_cpu() - c0)
    finally:
        server.close()
    bad = [d for d in dirs if json.loads((d / "status.json").read_text())["state"] != "COMPLETE"]
    if bad:
        raise RuntimeError(f"forked runners did not complete: {bad[:3]}")
    return wall, cpu


def profile(work_dir: Path, n: int) -> list[tuple[str, float, float]]:
    """(what, wall s, CPU s) per step, each run `n` times one after another on an idle machine."""
    env = runner_env()
    dirs = [prepare_job(work_dir / "profile", i) for i in range(n)]
    forked = [prepare_job(work_dir / "profile-forked", i) for i in range(n)]
    cases: list[tuple[str, Callable[[int], object]]] = [
        ("`true`", lambda i: subprocess.run(["true"], check=True)),
        ("`python -c pass`", lambda i: subprocess.run([PY, "-c", "pass"], env=env, check=True)),
        (
            "`python -c 'import cpnet.agent.runner'`",
            lambda i: subprocess.run([PY, "-c", "import cpnet.agent.runner"], env=env, check=True),
        ),
        (
            "`python -m cpnet.agent.runner DIR` (a whole attempt)",
            lambda i: run_runner(dirs[i], env),
        ),
    ]
    out = []
    for what, step in cases:
        c0, t0 = _children_cpu(), time.perf_counter()
        for i in range(n):
            step(i)
        wall, cpu = time.perf_counter() - t0, _children_cpu() - c0
        out.append((what, wall / n, cpu / n))
    wall, cpu = forked_attempts(forked)
    out.append(
        (
            "the same attempt forked by the fork server (the local backend's default)",
            wall / n,
            cpu / n,
        )
    )
    # The durable small-file write that the runner and the local backend make several times per
    # attempt.
    target = work_dir / "profile" / "status.json"
    c0, t0 = own_cpu(), time.perf_counter()
    for i in range(n * 5):
        write_json_atomic(target, {"state": "RUNNING", "i": i})
    wall, cpu = time.perf_counter() - t0, own_cpu() - c0
    out.append(
        ("`write_json_atomic` (write, fsync, rename, fsync dir)", wall / (n * 5), cpu / (n * 5))
    )
    return out


def agent_cpu(agent: Agent) -> tuple[float, float]:
    """(own, runners') CPU seconds of the agent: runners are reaped by the agent (spawned) or by
    its fork server, a live child of the agent whose own CPU is counted with the runners."""
    own, kids = agent.cpu()
    if agent.proc is not None:
        for child in hostinfo.children(agent.proc.pid):
            c_own, c_kids = cpu_seconds(child)
            if not math.isnan(c_own):
                kids += c_own + c_kids
    return own, kids


def _children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


# ---- through the hub ----------------------------------------------------------------------------


def submit_all(
    hub_url: str, token: str, specs: list[dict], clients: int, deadline: float, bar: Any
) -> tuple[list[TaskView], list[float], float, float]:
    """Submit `specs` from `clients` SDK clients (threads); return views, request latencies,
    first-start and last-end wall-clock times."""
    chunks = [specs[i::clients] for i in range(clients)]
    views: list[TaskView] = []
    lat: list[float] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    stop = threading.Event()

    def worker(chunk: list[dict]) -> None:
        try:
            with Client(hub_url, token, timeout=60) as c:
                for s in chunk:
                    if stop.is_set() or time.monotonic() > deadline:
                        return
                    t = time.perf_counter()
                    v = c.submit(s)
                    d = time.perf_counter() - t
                    with lock:
                        views.append(v)
                        lat.append(d)
                    bar(1)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(ch,), daemon=True) for ch in chunks]
    first = time.time()
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    except BaseException:
        stop.set()
        raise
    last = time.time()
    if errors:
        raise BenchError(f"submission failed: {errors[0]!r}")
    return views, lat, first, last


def submission_alone(p: Params, procs: Procs, prog: Any) -> tuple[Run, float]:
    """A fresh hub without agents: how fast the SDK clients create tasks, and the hub's CPU
    seconds per created task."""
    hub = Hub(procs.scratch("submit"), procs.database(p.database_url))
    hub.init()
    hub.start(procs)
    world = make_world(hub, [])
    run_id = uuid.uuid4().hex[:8]
    specs = [spec(run_id, i) for i in range(p.tasks)]
    bar = prog.add_task("hub: submission alone", total=p.tasks, info=f"{p.clients} clients")
    deadline = time.monotonic() + p.timeout_s
    cpu0 = hub.cpu()[0]
    views, lat, first, last = submit_all(
        hub.url, world.user_token, specs, p.clients, deadline, lambda k: prog.advance(bar, k)
    )
    hub_cpu = hub.cpu()[0] - cpu0
    procs.stop(hub.proc)  # type: ignore[arg-type]
    run = Run("hub: submission alone", p.tasks, len(views), last - first, lat)
    return run, hub_cpu / max(1, len(views))


def idle_requests(user: Client, task_id: str, n: int) -> list[tuple[str, list[float]]]:
    """Latency of single SDK calls, one at a time, on the idle hub after the run."""
    out: list[tuple[str, list[float]]] = []
    for what, call, k in (
        ("`health()`", user.health, n),
        ("`task(id)` (one task)", lambda: user.task(task_id), n),
        ("`tasks(limit=100)` (a page of 100 tasks)", lambda: user.tasks(limit=100), max(3, n // 5)),
        (
            "`tasks(limit=1000)` (a page of 1000 tasks)",
            lambda: user.tasks(limit=1000),
            max(3, n // 10),
        ),
        (
            "`tasks(state=non-terminal, limit=1)` (the poller's call)",
            lambda: user.tasks(state=NON_TERMINAL, limit=1),
            n,
        ),
    ):
        xs = []
        for _ in range(k):
            t = time.perf_counter()
            call()
            xs.append(time.perf_counter() - t)
        out.append((what, xs))
    return out


@dataclass
class EndToEnd:
    run: Run
    submit: Run
    views: list[TaskView]
    serial: Run
    serial_views: list[TaskView]
    cpu: dict[str, float]
    polls: list[float]
    idle: list[tuple[str, list[float]]]
    sites_lost: int


def views_run(name: str, views: list[TaskView], n: int, first_submit: float) -> Run:
    """A Run from the hub's records: COMPLETE count, first submit → latest end, latencies."""
    lat, svc, ends = [], [], []
    for v in views:
        a = v.attempts[-1] if v.attempts else None
        if a is None or a.end_time is None:
            continue
        ends.append(a.end_time.timestamp())
        lat.append((a.end_time - v.created_at).total_seconds())
        svc.append((a.end_time - a.created_at).total_seconds())
    complete = sum(1 for v in views if v.state is State.COMPLETE)
    wall = (max(ends) - first_submit) if ends else float("nan")
    return Run(name, n, complete, wall, lat, svc)


def submit_batches(
    hub_url: str, token: str, specs: list[dict], bar: Any
) -> tuple[list[TaskView], list[float], float, float]:
    """Submit `specs` through ``POST /v1/tasks:batch`` (SDK ``submit_many``: chunks of up to
    1,000), as an array would be; the same return as `submit_all` (latency per chunk)."""
    lat: list[float] = []
    first = time.time()
    with Client(hub_url, token, timeout=120) as c:
        t = [time.perf_counter()]

        def chunk(n: int) -> None:
            now = time.perf_counter()
            lat.append(now - t[0])
            t[0] = now
            bar(n)

        items = c.submit_many(specs, on_chunk=chunk)
    last = time.time()
    bad = [x for x in items if x.status != 201]
    if bad:
        raise BenchError(f"{len(bad)} items were not created, e.g. {bad[0]!r}")
    return items, lat, first, last  # type: ignore[return-value]  # counted, not read


def end_to_end(p: Params, procs: Procs, prog: Any, batch: bool = False) -> EndToEnd:
    """Hub + one agent: first a few tasks one at a time (unloaded latency), then every task
    submitted at once — by `clients` threads one request per task, or with `batch` as arrays
    through the batch endpoint; poll until all are terminal; read their records back."""
    hub = Hub(procs.scratch("hub"), procs.database(p.database_url))
    hub.init()
    hub.start(procs)
    world = make_world(hub, ["bench-site"])
    cores_needed = p.concurrency * TASK_CORES
    pools = [pool_table("bench", cores_needed, max(1.0, p.concurrency * TASK_RAM_GB * 2))]
    agent = Agent(
        hub, world.site_tokens["bench-site"], procs.scratch("agent"), pools, p.heartbeat_s
    )
    agent.start(procs)
    user = Client(hub.url, world.user_token, timeout=60)
    deadline = time.monotonic() + p.timeout_s
    try:

        def online() -> bool:
            agent.check()
            return any(x.name == "bench" for x in user.pools())

        wait_until(online, 60, "the agent's pool to come online", every=0.2)

        # One at a time: what a task costs when nothing else runs.
        serial_id = uuid.uuid4().hex[:8]
        bar = prog.add_task("hub: one task at a time", total=p.serial, info="")
        first = time.time()
        for i in range(p.serial):
            left = max(1.0, deadline - time.monotonic())
            user.wait(user.submit(spec(serial_id, i)).id, timeout=left, poll=0.05)
            prog.advance(bar, 1)
        serial_views = list(user.iter_tasks(tags={"bench": serial_id}, page_size=1000))
        serial = views_run("hub: one task at a time", serial_views, p.serial, first)
        serial.wall_s = time.time() - first  # includes the SDK's wait() polling

        run_id = uuid.uuid4().hex[:8]
        specs = [spec(run_id, i) for i in range(p.tasks)]
        cpu0 = {"hub": hub.cpu(), "agent": agent_cpu(agent), "bench": own_cpu()}
        sub_bar = prog.add_task("hub: submitting", total=p.tasks, info=f"{p.clients} clients")
        done_bar = prog.add_task("hub: ended", total=p.tasks, info="")
        submitted = [0]
        ended0 = acknowledged(agent.work_dir)

        def advance(k: int) -> None:
            submitted[0] += k
            prog.advance(sub_bar, k)

        result: dict[str, Any] = {}

        def submitter() -> None:
            try:
                result["submit"] = (
                    submit_batches(hub.url, world.user_token, specs, advance)
                    if batch
                    else submit_all(hub.url, world.user_token, specs, p.clients, deadline, advance)
                )
            except BaseException as exc:
                result["error"] = exc

        th = threading.Thread(target=submitter, daemon=True)
        first_submit = time.time()
        th.start()
        polls: list[float] = []
        while True:
            if "error" in result:
                raise BenchError(f"submission failed: {result['error']!r}")
            agent.check()
            ended = acknowledged(agent.work_dir) - ended0
            if time.monotonic() > deadline:
                raise BenchError(
                    f"only {ended} of {p.tasks} tasks ended within {p.timeout_s:g} s "
                    "(raise --timeout, or lower --tasks)"
                )
            prog.update(done_bar, completed=ended, info=f"{submitted[0] - ended} in flight")
            if "submit" in result:
                t = time.perf_counter()
                left_tasks = user.tasks(state=NON_TERMINAL, limit=1).tasks
                polls.append(time.perf_counter() - t)
                if not left_tasks:
                    break
            time.sleep(POLL_S)
        prog.update(done_bar, completed=acknowledged(agent.work_dir) - ended0, info="")
        cpu1 = {"hub": hub.cpu(), "agent": agent_cpu(agent), "bench": own_cpu()}
        th.join()
        sub_views, sub_lat, sub_first, sub_last = result["submit"]
        views = list(user.iter_tasks(tags={"bench": run_id}, page_size=1000))
        idle = idle_requests(user, views[0].id, 20) if views else []
    finally:
        user.close()
    cpu = {
        "hub": cpu1["hub"][0] - cpu0["hub"][0],
        "agent": cpu1["agent"][0] - cpu0["agent"][0],
        "runners": cpu1["agent"][1] - cpu0["agent"][1],
        "bench": cpu1["bench"] - cpu0["bench"],
    }
    what = "arrays" if batch else "hub"
    e2e = views_run(f"{what}: end to end", views, p.tasks, first_submit)
    submit = Run(
        f"{what}: submission during the run", p.tasks, len(sub_views), sub_last - sub_first
    )
    submit.latencies = sub_lat
    lost = hub.log.read_text(errors="replace").count(" lost; ") if hub.log else 0
    return EndToEnd(e2e, submit, views, serial, serial_views, cpu, polls, idle, lost)


def stages(views: list[TaskView]) -> list[tuple[str, list[float]]]:
    """Per-task durations of each stage, from the hub's records of the final attempt."""
    out: dict[str, list[float]] = {
        "queued until placed (task created → attempt created)": [],
        "placed until runner spawned (attempt created → INITIALIZING reported at)": [],
        "runner start-up (spawned → executor start_time)": [],
        "executor `true` (executor start → end)": [],
        "end noticed (executor end → attempt end_time)": [],
    }
    keys = list(out)
    for v in views:
        if not v.attempts:
            continue
        a = v.attempts[-1]
        if a.start_time is None or a.end_time is None or not a.executor_logs:
            continue
        x = a.executor_logs[0]
        if x.start_time is None or x.end_time is None:
            continue
        pts = [v.created_at, a.created_at, a.start_time, x.start_time, x.end_time, a.end_time]
        for k, (t0, t1) in zip(keys, itertools.pairwise(pts), strict=True):
            out[k].append((t1 - t0).total_seconds())
    return list(out.items())


# ---- report -------------------------------------------------------------------------------------


def report(
    p: Params,
    raw: Run,
    runner: Run,
    alone: tuple[Run, float],
    e2e: EndToEnd,
    arrays: EndToEnd,
    prof: list[tuple[str, float, float]],
    info: dict[str, str],
) -> Path:
    def row(r: Run, note: str = "") -> list[str]:
        return [
            r.name,
            f"{r.complete}/{r.tasks}",
            f"{r.wall_s:.2f} s",
            num(r.rate),
            ms(percentile(r.latencies, 50)),
            ms(percentile(r.latencies, 99)),
            ms(percentile(r.service, 50)) if r.service else "–",
            ratio(r.rate, raw.rate),
            note,
        ]

    hub, (alone_run, alone_cpu) = e2e.run, alone
    main = Section(
        "Throughput and latency",
        [
            "run",
            "COMPLETE / tasks",
            "wall",
            "tasks/s",
            "p50 latency",
            "p99 latency",
            "p50 service",
            "tasks/s ÷ raw `true`",
            "how",
        ],
        [
            row(raw, f"{p.concurrency} threads; latency = enqueue → exit"),
            row(runner, f"{p.concurrency} threads; latency = enqueue → runner exit"),
            row(
                alone_run,
                f"{p.clients} SDK clients, no agent; latency = one submit request; "
                f"hub CPU {ms(alone_cpu)} per task",
            ),
            row(e2e.submit, "the same, while the agent runs the tasks"),
            row(
                e2e.serial,
                "submit, then `wait()`, one after another; latency as below; wall includes the "
                "SDK's polling",
            ),
            row(hub, f"latency = hub created_at → attempt end_time; pool fits {p.concurrency}"),
            row(
                arrays.submit,
                "arrays: `submit_many` through `POST /v1/tasks:batch` (1,000 per request) while "
                "the agent runs them; latency = one request",
            ),
            row(
                arrays.run,
                f"arrays end to end, the same tasks; hub CPU "
                f"{ms(arrays.cpu['hub'] / max(1, arrays.run.complete))} per task",
            ),
        ],
    )
    budget = cores() * hub.wall_s
    total = sum(e2e.cpu.values())
    cpu_rows = []
    a_budget = cores() * arrays.run.wall_s
    a_total = sum(arrays.cpu.values())
    for who, what in (
        ("hub", "hub process (API, scheduler, store client)"),
        ("agent", "agent process (long poll, journal, spawning, status polling)"),
        (
            "runners",
            "runners + `true` (warm workers, the fork server and what they and the agent reaped)",
        ),
        ("bench", "this benchmark (SDK submit threads + poller)"),
        ("all", "all of the above"),
    ):
        sec = total if who == "all" else e2e.cpu[who]
        a_sec = a_total if who == "all" else arrays.cpu[who]
        cpu_rows.append(
            [
                what,
                f"{sec:.1f} s",
                ms(sec / max(1, hub.complete)),
                f"{100 * sec / budget:.0f} %",
                f"{a_sec:.1f} s",
                ms(a_sec / max(1, arrays.run.complete)),
                f"{100 * a_sec / a_budget:.0f} %",
            ]
        )
    cpu = Section(
        f"Where the CPU goes end to end ({cores()} cores × the run's wall time is the CPU "
        f"available: {budget:.0f} CPU-s single, {a_budget:.0f} CPU-s arrays)",
        [
            "process",
            "single: CPU",
            "per task",
            "share of capacity",
            "arrays: CPU",
            "per task",
            "share of capacity",
        ],
        cpu_rows,
    )
    loaded = stages(e2e.views)
    alone_stages = dict(stages(e2e.serial_views))
    stage = Section(
        "Where the wall time goes per task (the hub's timestamps of the final attempt)",
        ["stage", "one at a time: p50", f"all {hub.tasks} at once: p50", "p99"],
        [
            [
                name,
                ms(percentile(alone_stages[name], 50)),
                ms(percentile(xs, 50)),
                ms(percentile(xs, 99)),
            ]
            for name, xs in loaded
        ],
    )
    prof_sec = Section(
        f"Per-attempt costs, one at a time on an idle machine ({p.profile_n} runs each)",
        ["step", "wall", "CPU", f"ceiling on {cores()} cores (cores ÷ CPU), per s"],
        [[what, ms(w), ms(c), num(cores() / c) if c > 0 else "–"] for what, w, c in prof],
    )
    idle = Section(
        "Hub request latency on the idle hub after the run (one SDK call at a time)",
        ["call", "calls", "p50", "p99"],
        [[what, len(xs), ms(percentile(xs, 50)), ms(percentile(xs, 99))] for what, xs in e2e.idle],
    )
    runner_cpu = prof[4][2]  # forked: what the local backend does by default
    hub_cpu = e2e.cpu["hub"] / max(1, hub.complete)
    spawn1 = next(
        (percentile(xs, 50) for k, xs in stages(e2e.serial_views) if k.startswith("placed")),
        math.nan,
    )
    names = {"hub": "the hub process", "agent": "the agent process", "bench": "this benchmark"}
    names["runners"] = "the per-attempt runner processes"
    top = max(("hub", "agent", "runners", "bench"), key=lambda k: e2e.cpu[k])
    top_name, top_share = names[top], e2e.cpu[top] / max(1e-9, total)
    busy = total / budget
    limits = sorted(
        [
            (
                "the per-attempt runner's CPU",
                cores() / runner_cpu,
                f"{cores()} cores ÷ {ms(runner_cpu)} per forked runner",
            ),
            (
                "all CPU per task",
                cores() * hub.complete / max(1e-9, sum(e2e.cpu.values())),
                f"{cores()} cores ÷ {ms(sum(e2e.cpu.values()) / max(1, hub.complete))} per task",
            ),
            ("the hub process", 1 / hub_cpu, f"one process ÷ {ms(hub_cpu)} CPU per task"),
            (
                "the agent's serial accept-and-spawn",
                1 / spawn1,
                f"1 ÷ {ms(spawn1)} placement → spawned runner, one task at a time",
            ),
        ],
        key=lambda x: x[1],
    )
    complete = f"All {hub.complete} of {hub.tasks} tasks ended COMPLETE."
    if hub.complete != hub.tasks:
        why = Counter(
            f"{v.state.value}: {v.reason or (v.attempts[-1].reason if v.attempts else '')}"
            for v in e2e.views
            if v.state is not State.COMPLETE
        )
        complete = f"ONLY {hub.complete} of {hub.tasks} tasks ended COMPLETE; the others: " + (
            "; ".join(f"{n}× {what[:300]}" for what, n in why.most_common(3))
        )
    a_hub = arrays.cpu["hub"] / max(1, arrays.run.complete)
    notes = [
        f"Targets (reported, not asserted): ≥ {TARGET_TASKS_S:g} tasks/s end to end with single "
        f"submissions: measured {num(hub.rate)} ({hub.rate / TARGET_TASKS_S:.1%} of it); ≥ "
        f"{TARGET_ARRAYS_S:g} tasks/s with arrays: measured {num(arrays.run.rate)} "
        f"({arrays.run.rate / TARGET_ARRAYS_S:.1%}); hub CPU ≤ {ms(TARGET_HUB_CPU_S)} per task: "
        f"{ms(hub_cpu)} single, {ms(a_hub)} arrays. {complete} Arrays: "
        f"{arrays.run.complete} of {arrays.run.tasks} COMPLETE.",
        f"Ratio hub ÷ raw `true`: {ratio(hub.rate, raw.rate)}; hub ÷ raw runner: "
        f"{ratio(hub.rate, runner.rate)}.",
        f"Bottleneck: {top_name}, which used {top_share:.0%} of the CPU the end-to-end run "
        f"consumed (the {cores()} cores were {busy:.0%} busy). Ceilings measured on this "
        "machine, lowest first: "
        + "; ".join(f"{what} {num(x)}/s ({how})" for what, x, how in limits)
        + ".",
        f"Agent heartbeat every {p.heartbeat_s:g} s"
        + (" (the default)" if p.heartbeat_s == HEARTBEAT_INTERVAL_S else "")
        + f"; the hub declared the site lost {e2e.sites_lost} times during the run (each loss "
        "fails every running attempt).",
        "Tasks: `true`, 1 core, 0.25 GiB, max_attempts 1 (a failure shows instead of retrying); "
        f"one agent with one declared pool of {p.concurrency} cores; {p.clients} SDK client "
        "threads submit.",
        "tasks/s = COMPLETE tasks ÷ (first submit → latest attempt end_time). Latency = hub "
        "created_at → final attempt end_time, i.e. when the agent saw the runner's final status "
        "(the hub records the agent's time), not when the poller saw it; it includes queueing "
        "for the pool. 'p50 service' = attempt created (placed) → end_time for the hub; thread "
        "start → exit for the raw runs.",
        f"Completion poll: `tasks(state=non-terminal, limit=1)` every {POLL_S:g} s once all are "
        f"submitted ({len(e2e.polls)} calls, p50 {ms(percentile(e2e.polls, 50))}); the progress "
        "bar counts the attempts the agent's backend marked `forgotten` (hub-acknowledged ends), "
        "which costs the hub nothing.",
        f"Raw runner ran a sample of {runner.tasks} tasks. Raw runs enqueue everything at once, "
        "so their latency is mostly queueing, like the hub's.",
        "Client, hub, agent and runners share the same cores; CPU seconds from /proc/<pid>/stat "
        "(a runner's CPU is counted once the agent or its fork server reaps it)"
        + ("; the PostgreSQL server's CPU is not in the table." if p.database_url else "."),
    ]
    notes += changed_note(info["cpnet source digest"])
    return write_report(
        "throughput",
        "Task throughput and latency: hub end to end vs raw processes",
        command=p.command,
        sections=[main, cpu, stage, prof_sec, idle],
        notes=notes,
        machine_info=info,
    )


def run(p: Params) -> Path:
    """All phases in one run, sharing nothing but the machine; returns the result file."""
    info = machine(p.database_url)
    with Procs() as procs, progress() as prog:
        scratch = procs.scratch("raw")
        bar = prog.add_task("raw `true`", total=p.tasks, info=f"{p.concurrency} threads")
        raw = pool_run(
            'raw `subprocess.run(["true"])`',
            p.tasks,
            p.concurrency,
            lambda i: subprocess.run(["true"], check=False).returncode == 0,
            p.timeout_s,
            lambda k: prog.advance(bar, k),
        )

        bar = prog.add_task("per-attempt costs", total=1, info="one at a time")
        prof = profile(scratch, p.profile_n)
        prog.update(bar, completed=1)

        n = p.runner_sample
        dirs = [prepare_job(scratch / "runner", i) for i in range(n)]
        env = runner_env()
        bar = prog.add_task("raw runner", total=n, info=f"{p.concurrency} threads")
        runner = pool_run(
            "raw `python -m cpnet.agent.runner`",
            n,
            p.concurrency,
            lambda i: run_runner(dirs[i], env),
            p.timeout_s,
            lambda k: prog.advance(bar, k),
        )

        alone = submission_alone(p, procs, prog)
        e2e = end_to_end(p, procs, prog)
        arrays = end_to_end(p, procs, prog, batch=True)
    return report(p, raw, runner, alone, e2e, arrays, prof, info)


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--tasks", type=int, default=2000, help="tasks per run (default 2000)")
    ap.add_argument("--clients", type=int, default=4, help="SDK client threads (default 4)")
    ap.add_argument(
        "--concurrency", type=int, default=64, help="tasks the agent's pool runs at once (64)"
    )
    ap.add_argument(
        "--timeout", type=float, default=900.0, help="limit per phase in seconds (default 900)"
    )
    ap.add_argument(
        "--heartbeat",
        type=float,
        default=HEARTBEAT_INTERVAL_S,
        help=f"agent heartbeat interval (default {HEARTBEAT_INTERVAL_S:g} s, the agent's)",
    )
    ap.add_argument(
        "--database-url",
        default=None,
        help="a PostgreSQL server (SQLAlchemy URL) to put each hub's store on, in a new "
        "database dropped afterwards (default: SQLite in the hub's data dir)",
    )


def params(args: argparse.Namespace, command: str) -> Params:
    p = Params(
        tasks=args.tasks,
        clients=args.clients,
        concurrency=args.concurrency,
        timeout_s=args.timeout,
        heartbeat_s=args.heartbeat,
        database_url=args.database_url,
        command=command,
    )
    if getattr(args, "quick", False):
        p.tasks = min(p.tasks, 200)
        p.runner_sample, p.profile_n, p.serial = 40, 3, 3
    p.runner_sample = min(p.runner_sample, p.tasks)
    return p


def main(argv: list[str] | None = None) -> int:
    return standalone(
        "throughput.py", __doc__, add_args, params, run, "200 tasks, smaller samples", argv
    )


if __name__ == "__main__":
    sys.exit(main())
