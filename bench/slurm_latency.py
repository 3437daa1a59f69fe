"""Submit-to-start latency on the real dev Slurm: through cpnet against straight ``sbatch``.

Both paths start the same trivial job on partition ``cpu`` of the dev cluster
(``scripts/dev-slurm.sh``), one at a time, interleaved (the first path alternates per run):

1. **sbatch**: ``sbatch --parsable -p cpu --wrap '<write marker>'``; latency = the time the job's
   first command wrote into its marker file − the time just before ``sbatch`` was run.
2. **cpnet**: ``Client.submit`` of a task with the same command, constrained to the ``cpu``
   partition's pool, to a hub with one Slurm agent (the agent submits it with ``sbatch`` in turn);
   latency to the executor writing its marker, and to the hub recording RUNNING (the agent's
   report), from just before ``submit``.

The marker is ``date +%s.%N`` written by the job itself; the cluster, hub, agent and this process
share one clock (all on this machine). Between runs the cluster is left to drain so each job
starts on an idle partition. The ratio cpnet ÷ sbatch is reported for medians and p95 (target
≤ 1.1×, reported, never asserted).

Slurm comes from ``CPNET_TEST_SLURM_CONF`` (as ``scripts/services.sh`` writes it into
``${CPNET_DEV_DIR:-.dev}/services.env``), else that file, else a running ``scripts/dev-slurm.sh``;
failing all three the benchmark starts the cluster with ``scripts/dev-slurm.sh start`` (as root;
the script ``services.sh up`` uses for Slurm) and stops it again at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from common import (
    ROOT,
    Agent,
    BenchError,
    Hub,
    Procs,
    Section,
    console,
    machine,
    make_world,
    ms,
    num,
    percentile,
    ratio,
    wait_until,
    write_report,
)

from cpnet.tasks.states import State

DEFAULT_RUNS = 20
DEFAULT_JOBS = 200  # per throughput row (the dev cluster's MaxArraySize is 1001)
PARTITION = "cpu"
JOB_TIMEOUT_S = 120.0
BURST_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class Params:
    runs: int
    command: str
    jobs: int = DEFAULT_JOBS


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--slurm-runs",
        type=int,
        default=None,
        help=f"slurm_latency: runs per path ({DEFAULT_RUNS})",
    )
    ap.add_argument(
        "--slurm-jobs",
        type=int,
        default=None,
        help=f"slurm_latency: trivial jobs per throughput row ({DEFAULT_JOBS}, at most 1000)",
    )


def params(args: argparse.Namespace, command: str) -> Params:
    quick = getattr(args, "quick", False)
    runs = args.slurm_runs or (5 if quick else DEFAULT_RUNS)
    jobs = min(1000, args.slurm_jobs or (40 if quick else DEFAULT_JOBS))
    return Params(runs, command, jobs)


# ---- the cluster --------------------------------------------------------------------------------


def _conf_from_env_file() -> str | None:
    path = Path(os.environ.get("CPNET_DEV_DIR") or ROOT / ".dev") / "services.env"
    if not path.is_file():
        return None
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "CPNET_TEST_SLURM_CONF" and value.strip():
            return value.strip().strip("'\"")
    return None


@contextlib.contextmanager
def slurm_cluster() -> Iterator[dict[str, str]]:
    """The environment for Slurm clients (``SLURM_CONF``); start the dev cluster if needed."""
    conf = os.environ.get("CPNET_TEST_SLURM_CONF") or _conf_from_env_file()
    script = ROOT / "scripts" / "dev-slurm.sh"
    started = False
    if not conf:
        running = subprocess.run(["bash", str(script), "env"], capture_output=True, text=True)
        if running.returncode != 0:
            console.print("no Slurm running: starting scripts/dev-slurm.sh (stopped at the end)")
            start = subprocess.run(["bash", str(script), "start"], capture_output=True, text=True)
            if start.returncode != 0:
                raise BenchError(
                    "could not start the dev Slurm cluster (scripts/dev-slurm.sh start needs "
                    f"root and the slurm packages): {start.stderr.strip()[-1000:]}"
                )
            started = True
            running = subprocess.run(["bash", str(script), "env"], capture_output=True, text=True)
        conf = running.stdout.strip().partition("=")[2]
    if not conf or not Path(conf).is_file():
        raise BenchError(f"no slurm.conf at {conf!r}: set CPNET_TEST_SLURM_CONF")
    try:
        yield {"SLURM_CONF": conf}
    finally:
        if started:
            subprocess.run(["bash", str(script), "stop"], capture_output=True, timeout=120)


def _slurm(env: dict[str, str], *argv: str) -> str:
    out = subprocess.run(
        list(argv), env={**os.environ, **env}, capture_output=True, text=True, timeout=30
    )
    if out.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed: {out.stderr.strip()}")
    return out.stdout


def _marker_command(path: Path) -> str:
    """Shell that writes the start time atomically, so a reader never sees half a number."""
    return f"date +%s.%N > {path}.tmp && mv {path}.tmp {path}"


def _marker_time(path: Path) -> float:
    wait_until(path.is_file, JOB_TIMEOUT_S, f"the job to write {path.name}", every=0.005)
    return float(path.read_text())


def _idle(env: dict[str, str], timeout: float = JOB_TIMEOUT_S, every: float = 0.05) -> None:
    """Wait until no job of ours is left in the partition, so the next one starts on idle nodes."""
    user = os.environ.get("USER", "root")
    wait_until(
        lambda: not _slurm(env, "squeue", "-h", "-p", PARTITION, "-u", user).strip(),
        timeout,
        f"partition {PARTITION} to drain",
        every=every,
    )


# ---- the two paths ------------------------------------------------------------------------------


def _sbatch_once(env: dict[str, str], work: Path, i: int) -> float:
    marker = work / f"sbatch-{i}"
    t0 = time.time()
    _slurm(env, "sbatch", "--parsable", "-p", PARTITION, "-D", str(work), "-o", "/dev/null",
           "--wrap", _marker_command(marker))  # fmt: skip
    return _marker_time(marker) - t0


def _cpnet_once(user, work: Path, i: int) -> tuple[float, float | None]:  # type: ignore[no-untyped-def]
    """(submit → executor wrote its marker, submit → hub recorded RUNNING), seconds; None for
    the second when the agent saw the job only once it had ended (no RUNNING report)."""
    marker = work / f"cpnet-{i}"
    spec = {
        "name": f"latency-{i}",
        "executors": [{"command": ["sh", "-c", _marker_command(marker)]}],
        "resources": {"cpu_cores": 1, "ram_gb": 0.25},
        "constraints": {"labels": {"partition": PARTITION}},
        "max_attempts": 1,
    }
    t0 = time.time()
    task = user.submit(spec)
    started = _marker_time(marker) - t0
    done = user.wait(task.id, timeout=JOB_TIMEOUT_S)
    if done.state is not State.COMPLETE:
        raise BenchError(f"task {task.id} ended {done.state}: {done.reason}")
    running = [e.at.timestamp() for e in user.events(task.id) if e.to_state is State.RUNNING]
    return started, (running[0] - t0 if running else None)


# ---- throughput: many trivial jobs at once -----------------------------------------------------


def _drain_time(env: dict[str, str], t0: float) -> float:
    """Seconds from `t0` until the partition has none of our jobs left."""
    _idle(env, BURST_TIMEOUT_S, every=0.1)
    return time.time() - t0


def _sbatch_each(env: dict[str, str], work: Path, n: int) -> float:
    """`n` × ``sbatch --wrap true``, one call each, then until all ended: jobs/s."""
    t0 = time.time()
    for _ in range(n):
        _slurm(env, "sbatch", "--parsable", "-p", PARTITION, "-D", str(work), "-o", "/dev/null",
               "--wrap", "true")  # fmt: skip
    return n / _drain_time(env, t0)


def _sbatch_array(env: dict[str, str], work: Path, n: int) -> float:
    """One ``sbatch --array=0-(n-1) --wrap true``, then until all ended: jobs/s."""
    t0 = time.time()
    _slurm(env, "sbatch", "--parsable", "-p", PARTITION, "-D", str(work), "-o", "/dev/null",
           f"--array=0-{n - 1}", "--wrap", "true")  # fmt: skip
    return n / _drain_time(env, t0)


def _cpnet_array(user, n: int, run_id: str) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    """`n` tasks of ``true`` as one array (``submit_many``) to the hub with the Slurm agent,
    then until the hub has all of them final: (tasks/s, how many ended COMPLETE)."""
    specs = [
        {
            "name": f"array-{i}",
            "executors": [{"command": ["true"]}],
            "resources": {"cpu_cores": 1, "ram_gb": 0.25},
            "constraints": {"labels": {"partition": PARTITION}},
            "tags": {"bench": run_id},
            "max_attempts": 1,
        }
        for i in range(n)
    ]
    left = [s.value for s in State if not s.terminal]
    t0 = time.time()
    user.submit_many(specs)
    wait_until(
        lambda: not user.tasks(state=left, limit=1).tasks,
        BURST_TIMEOUT_S,
        f"the {n} tasks of the array to end",
        every=0.25,
    )
    wall = time.time() - t0
    done = sum(
        1
        for v in user.iter_tasks(tags={"bench": run_id}, page_size=1000)
        if v.state is State.COMPLETE
    )
    return n / wall, done


def run(p: Params) -> Path:
    info = machine()
    sbatch_s: list[float] = []
    marker_s: list[float] = []
    running_s: list[float] = []
    unreported = 0  # runs whose job ended before the agent saw it running
    with slurm_cluster() as env, Procs() as procs:
        # Markers outside /tmp: a task's /tmp may be private to it.
        work = ROOT / ".dev" / f"bench-slurm-{os.getpid()}"
        work.mkdir(parents=True, exist_ok=True)
        procs.dirs.append(work)
        hub = Hub(procs.scratch("slurm-hub"))
        hub.init()
        hub.start(procs)
        world = make_world(hub, ["hpc"])
        agent = Agent(
            hub,
            world.site_tokens["hpc"],
            procs.scratch("slurm-agent"),
            pools=[],
            backend="slurm",
            options={"slurm_conf": env["SLURM_CONF"]},
        )
        agent.start(procs)
        user = hub.client(world.user_token)
        wait_until(
            lambda: any(x.labels.get("partition") == PARTITION for x in user.pools()),
            60,
            f"the agent to register Slurm partition {PARTITION!r}",
            every=0.2,
        )
        # One of each first, not measured: imports, first sbatch, the agent's first poll.
        _idle(env)
        _sbatch_once(env, work, -1)
        _cpnet_once(user, work, -1)
        for i in range(p.runs):
            console.print(f"run {i + 1} of {p.runs}")
            first_sbatch = i % 2 == 0
            for path in ("sbatch", "cpnet") if first_sbatch else ("cpnet", "sbatch"):
                _idle(env)
                agent.check()
                if path == "sbatch":
                    sbatch_s.append(_sbatch_once(env, work, i))
                else:
                    started, reported = _cpnet_once(user, work, i)
                    marker_s.append(started)
                    if reported is None:
                        unreported += 1
                    else:
                        running_s.append(reported)
        # Throughput: the same partition, N trivial jobs at once, one way after another.
        console.print(f"throughput: {p.jobs} jobs per row")
        _idle(env)
        each = _sbatch_each(env, work, p.jobs)
        _idle(env)
        array = _sbatch_array(env, work, p.jobs)
        _idle(env)
        agent.check()
        through, complete = _cpnet_array(user, p.jobs, f"tp-{os.getpid()}")
    burst = {
        "each": each,
        "array": array,
        "cpnet": through,
        "complete": complete,
        "unreported": unreported,
    }
    return _report(p, info, sbatch_s, marker_s, running_s, burst)


def _report(
    p: Params,
    info: dict[str, str],
    sbatch_s: list,
    marker_s: list,
    running_s: list,
    burst: dict[str, float],
) -> Path:
    def row(name: str, xs: list[float]) -> list[str]:
        base_50, base_95 = percentile(sbatch_s, 50), percentile(sbatch_s, 95)
        return [
            name,
            str(len(xs)),
            ms(percentile(xs, 50)),
            ms(percentile(xs, 95)),
            ms(min(xs)),
            ms(max(xs)),
            ratio(percentile(xs, 50), base_50),
            ratio(percentile(xs, 95), base_95),
        ]

    rows = [
        row("straight sbatch → job wrote its marker", sbatch_s),
        row("cpnet submit → executor wrote its marker", marker_s),
        row("cpnet submit → hub recorded RUNNING (agent's report)", running_s),
    ]
    notes = [
        f"{p.runs} runs per path, interleaved (which path goes first alternates), each on an "
        f"idle partition {PARTITION!r} of the dev cluster (scripts/dev-slurm.sh: 4 slurmd on "
        "this machine, Slurm 22.05). One unmeasured warm-up of each path first.",
        "Latency starts just before `sbatch` is run or `Client.submit` is called. The job's "
        "first command writes `date +%s.%N`; the hub's RUNNING event time comes from "
        "`Client.events`. Ratio = cpnet ÷ sbatch at the same percentile; target ≤ 1.1×.",
        "cpnet's path: SDK → hub (queued) → scheduling pass → the agent's assignment poll → "
        "the Slurm backend's own `sbatch` of the runner → the runner starts the executor.",
    ]
    if burst["unreported"]:
        notes.append(
            f"In {int(burst['unreported'])} of {p.runs} cpnet runs the job ended before the "
            "agent's poll saw it running, so the hub recorded no RUNNING: the last row counts "
            "the others."
        )
    base = burst["array"]
    tp_rows = [
        [f"straight `sbatch --wrap true`, {p.jobs} calls", num(burst["each"]),
         ratio(burst["each"], base)],
        [f"straight `sbatch --array=0-{p.jobs - 1} --wrap true` (baseline)", num(base), "1.00×"],
        [f"cpnet: `submit_many` of {p.jobs} tasks (one array) → the Slurm agent "
         f"({int(burst['complete'])} COMPLETE)", num(burst["cpnet"]), ratio(burst["cpnet"], base)],
    ]  # fmt: skip
    notes.append(
        f"Throughput: {p.jobs} trivial jobs submitted at once on the same partition, each way "
        "after the partition drained; jobs/s = jobs ÷ (first submission → none left in "
        "`squeue`, or the hub having all tasks final). cpnet's Slurm backend submits one job per "
        "attempt, each running `python -m cpnet.agent.runner` on the node, so its row also pays a "
        "Python start-up per task that a bare `true` does not."
    )
    return write_report(
        "slurm_latency",
        "Submit-to-start latency and throughput on Slurm: cpnet against straight sbatch",
        command=p.command,
        sections=[
            Section(
                "Submit to start",
                ["path", "runs", "median", "p95", "min", "max", "median ratio", "p95 ratio"],
                rows,
            ),
            Section(
                f"Throughput: {p.jobs} trivial jobs at once",
                ["path", "jobs/s", "÷ `sbatch --array`"],
                tp_rows,
            ),
        ],
        notes=notes,
        machine_info=info,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="5 runs per path")
    add_args(ap)
    args = ap.parse_args()
    path = run(params(args, " ".join(["bench/slurm_latency.py", *sys.argv[1:]])))
    console.print(Path(path).read_text(), markup=False, highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
