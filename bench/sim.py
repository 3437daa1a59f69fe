"""The simulator's policy comparison and replay speed (issue 12, bench item 5(b)).

Replays an HPC log in SWF (KTH-SP2) and the Alibaba GPU trace (2023) over simulated national
networks of about 30 and 300 sites, every policy on the same jobs, network and failures; solves
the LP lower bound where the instance is small enough (else on the first ``--bound-jobs`` jobs,
a separate smaller comparison said so in its row); and times a 100,000-job replay of LANL-CM5
over 300 sites. Writes ``bench/results/sim.md`` and ``bench/results/sim_*.png``.

Everything runs in this process: no hub, agents or database.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

from common import RESULTS, Section, console, machine, progress, write_report

from cpnet.sim import plots, run, traces
from cpnet.sim.bound import MAX_VARIABLES, gap
from cpnet.sim.metrics import Metrics
from cpnet.sim.policies import POLICIES

SIMPLE = [p for p in POLICIES if p != "cpnet"]
DEFAULT_JOBS = {"kth": 5000, "alibaba2023": None}  # None: the whole trace
SCALES = (30, 300)
SPEED_JOBS = 100_000
CPNET_SPEED_JOBS = 10_000  # cpnet's policy in the speed table, unless --sim-speed-cpnet


@dataclass(frozen=True)
class Params:
    jobs: int | None  # override of the per-trace job count
    bound_jobs: int
    speed_jobs: int
    speed_cpnet: bool
    seed: int
    command: str


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--sim-jobs", type=int, default=None, help="sim: jobs per trace")
    ap.add_argument(
        "--sim-bound-jobs", type=int, default=800, help="sim: jobs in the bound's sub-instance"
    )
    ap.add_argument(
        "--sim-speed-jobs", type=int, default=None, help=f"sim: jobs replayed ({SPEED_JOBS:,})"
    )
    ap.add_argument(
        "--sim-speed-cpnet",
        action="store_true",
        help="sim: also time cpnet's policy on the whole speed replay (minutes)",
    )


def params(args: argparse.Namespace, command: str) -> Params:
    quick = args.quick
    return Params(
        jobs=args.sim_jobs or (500 if quick else None),
        bound_jobs=min(args.sim_bound_jobs, 200) if quick else args.sim_bound_jobs,
        speed_jobs=args.sim_speed_jobs or (5000 if quick else SPEED_JOBS),
        speed_cpnet=args.sim_speed_cpnet,
        seed=1,
        command=command,
    )


def _fmt_h(seconds: float) -> str:
    return "–" if math.isnan(seconds) else f"{seconds / 3600:.2f}"


def _fmt_gap(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:+.1%}"


def _compare(scenario: run.Scenario, names: list[str], label: str) -> dict[str, Metrics]:
    with progress() as bar:
        ids = {n: bar.add_task(f"{label} {n}", total=len(scenario.jobs), info="") for n in names}
        return run.compare(scenario, names, lambda n, done: bar.update(ids[n], completed=done))


def _rows(
    trace: str, scenario: run.Scenario, results: dict[str, Metrics], bound_note: str, gaps: dict
) -> list[list[str]]:
    rows = []
    for name, m in results.items():
        g_jct, g_cost = gaps.get(name, (None, None))
        rows.append(
            [
                trace,
                str(len(scenario.net.sites)),
                f"{len(scenario.jobs):,}",
                name,
                _fmt_h(m.mean_jct_s),
                _fmt_h(m.p95_jct_s),
                _fmt_h(m.p99_jct_s),
                _fmt_h(m.makespan_s),
                f"{m.cost:,.0f}",
                f"{m.cpu_utilisation:.1%}",
                f"{m.gpu_utilisation:.1%}",
                f"{m.cross_region_bytes / 1e12:.2f}",
                str(m.deadline_misses),
                f"{m.carbon_kg / 1000:.2f}",
                str(m.failed),
                _fmt_gap(g_jct),
                _fmt_gap(g_cost),
                bound_note,
            ]
        )
    return rows


def _bound_gaps(
    scenario: run.Scenario, results: dict[str, Metrics], p: Params, label: str
) -> tuple[dict, str, dict | None]:
    """Gaps to the LP bound: on the scenario itself when small enough, else on its first jobs."""
    target, sub = scenario, results
    note = "whole instance"
    if len(scenario.jobs) * len(scenario.net.pools) > MAX_VARIABLES:
        n = min(p.bound_jobs, MAX_VARIABLES // len(scenario.net.pools))
        target = run.Scenario(
            scenario.trace, scenario.jobs[:n], scenario.net, scenario.seed, 0, 1.0, 0.0
        )
        sub = _compare(target, list(results), f"{label} bound")
        note = f"first {n} jobs (separate run)"
    t0 = time.perf_counter()
    bound = run.bound_for(target, sub)
    note += f", LP {time.perf_counter() - t0:.1f} s"
    gaps = {}
    for name, m in sub.items():
        if m.completed == m.jobs and bound.status == "optimal":
            gaps[name] = (gap(m.mean_jct_s, bound.mean_jct_s), gap(m.cost, bound.cost))
    sub_summary = None
    if target is not scenario:
        sub_summary = {n: (m.mean_jct_s, m.cost) for n, m in sub.items()}
    return gaps, note, {"bound": bound, "sub": sub_summary}


def _targets(trace: str, sites: int, results: dict[str, Metrics], gaps: dict) -> str:
    """The issue's target, stated against these figures (reported, never asserted)."""
    cp = results["cpnet"]
    # A baseline that lost jobs averages its JCT over fewer (often the long ones are lost), so
    # it is compared only when none completed everything.
    whole = [n for n in SIMPLE if results[n].completed == results[n].jobs] or SIMPLE
    best = min(whole, key=lambda n: results[n].mean_jct_s)
    b = results[best]
    jct_gain = 1 - cp.mean_jct_s / b.mean_jct_s
    cheaper = min(whole, key=lambda n: results[n].cost)
    c = results[cheaper]
    cost_gain = 1 - cp.cost / c.cost
    jct_ok = jct_gain >= 0.30 and cp.cost <= b.cost
    cost_ok = cost_gain >= 0.20 and cp.mean_jct_s <= c.mean_jct_s
    g = gaps.get("cpnet", (None, None))[0]
    bound_txt = "no bound" if g is None or math.isnan(g) else f"{g:+.1%} from the JCT bound"
    return (
        f"{trace} × {sites} sites: cpnet's mean JCT is {cp.mean_jct_s / b.mean_jct_s - 1:+.1%} "
        f"against the best complete baseline by JCT ({best}), at {cp.cost / b.cost - 1:+.1%} "
        f"cost; its cost is {cp.cost / c.cost - 1:+.1%} against the cheapest complete "
        f"baseline ({cheaper}), at "
        f"{cp.mean_jct_s / c.mean_jct_s - 1:+.1%} mean JCT; {bound_txt}. Target (≥30 % lower JCT "
        f"at no higher cost, or ≥20 % lower cost at no worse JCT): "
        f"{'met' if jct_ok or cost_ok else 'NOT met'}."
    )


def _speed(p: Params) -> tuple[list[list[str]], list[str]]:
    """Time a large replay (LANL-CM5, 300 sites) per policy."""
    t0 = time.perf_counter()
    trace = traces.load("lanl", limit=p.speed_jobs)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    scenario = run.prepare(trace, 300, p.seed)
    prep_s = time.perf_counter() - t0
    names = SIMPLE + (["cpnet"] if p.speed_cpnet else [])
    results = _compare(scenario, names, "speed")
    if not p.speed_cpnet:
        # cpnet's policy on a prefix only: the scheduler's per-task cost at 300 pools would take
        # this benchmark past its time budget on the whole replay.
        first = run.Scenario(
            scenario.trace, scenario.jobs[:CPNET_SPEED_JOBS], scenario.net, scenario.seed, 0,
            1.0, 0.0,
        )  # fmt: skip
        results["cpnet"] = _compare(first, ["cpnet"], "speed")["cpnet"]
    rows = [
        [
            name,
            f"{m.jobs:,}",
            f"{m.events:,}",
            f"{m.wall_s:.1f}",
            f"{m.events_per_s:,.0f}",
            "yes" if m.wall_s + load_s + prep_s < 120 else "no",
        ]
        for name, m in results.items()
    ]
    if not p.speed_cpnet:
        m = results["cpnet"]
        rows[-1][-1] = f"~{(m.wall_s / m.events) * 3 * len(scenario.jobs):,.0f} s (extrapolated)"

    notes = [
        f"Speed replay: LANL-CM5, first {len(scenario.jobs):,} jobs, 300 sites; reading the "
        f"trace took {load_s:.1f} s and building the network and fitting the jobs {prep_s:.1f} s "
        "(counted in the under-2-minutes column)."
    ]
    if not p.speed_cpnet:
        notes.append(
            f"cpnet's policy is timed on the first {CPNET_SPEED_JOBS:,} jobs of the same scenario "
            "only (its 'under 2 min' cell extrapolates linearly, ~3 events per job): with the "
            "scheduler in the loop a 300-pool pass costs milliseconds per task, almost all in "
            "cpnet.sched's per-(task, pool) terms. --sim-speed-cpnet times it on the whole replay."
        )
    return rows, notes


def run_bench(p: Params) -> object:
    sections_rows: list[list[str]] = []
    notes: list[str] = []
    targets: list[str] = []
    pngs: list[str] = []
    speeds: list[str] = []
    for trace_name, default_jobs in DEFAULT_JOBS.items():
        limit = p.jobs if p.jobs is not None else default_jobs
        trace = traces.load(trace_name, limit=limit)
        for sites in SCALES:
            label = f"{trace_name}/{sites}"
            scenario = run.prepare(trace, sites, p.seed)
            results = _compare(scenario, list(POLICIES), label)
            gaps, note, extra = _bound_gaps(scenario, results, p, label)
            sections_rows += _rows(trace_name, scenario, results, note, gaps)
            png = RESULTS / f"sim_{trace_name}_{sites}sites.png"
            title = f"{trace_name}: {len(scenario.jobs):,} jobs, {sites} sites (seed {p.seed})"
            bound = extra["bound"] if extra["sub"] is None else None
            plots.comparison(results, title, png, bound)
            pngs.append(png.name)
            targets.append(_targets(trace_name, sites, results, gaps))
            notes.append(
                f"{label}: {len(scenario.jobs):,} jobs ({scenario.unplaceable} fit no pool; "
                f"skipped rows {dict(scenario.skipped)}), arrivals × {scenario.time_scale:.3g} "
                f"→ offered load {scenario.offered_load:.2f}; LP bound "
                f"{extra['bound'].status}: mean JCT {_fmt_h(extra['bound'].mean_jct_s)} h, cost "
                f"{extra['bound'].cost:,.0f} CNY ({note})."
            )
            speeds.append(
                f"{label}: " + ", ".join(f"{n} {m.events_per_s:,.0f}" for n, m in results.items())
            )
    speed_rows, speed_notes = _speed(p)
    columns = [
        "trace", "sites", "jobs", "policy", "mean JCT h", "p95 h", "p99 h", "makespan h",
        "cost CNY", "CPU use", "GPU use", "x-region TB", "deadline misses", "CO2 t", "failed",
        "gap JCT", "gap cost", "bound on",
    ]  # fmt: skip
    notes = [
        *targets,
        *notes,
        "Simulated events per second in the comparison runs: " + "; ".join(speeds) + ".",
        *speed_notes,
        "Gaps are to the LP relaxation (cpnet/sim/bound.py): no queueing, capacity as volume "
        "from each job's submit to the horizon (the latest makespan compared); a policy that "
        "left a job failed has no gap (its mean covers fewer jobs).",
        "A complete baseline completed every job; one that lost jobs (the failed column) "
        "averages its JCT over fewer, usually without the longest, so it is not the yardstick.",
        "The machine is shared: the load average above says how busy it was; wall times and "
        "events/s are for this run only.",
        "Pools, prices, speeds, failure rates, WAN bandwidth, input sizes and deadlines are "
        "drawn from the seed (docs/simulator.md); arrivals are compressed to offered load 0.7.",
        "Plots: " + ", ".join(pngs) + ".",
    ]
    return write_report(
        "sim",
        "Simulator: policy comparison and replay speed",
        command=p.command,
        sections=[
            Section("Policy comparison (times in hours)", columns, sections_rows),
            Section(
                "Replay speed",
                ["policy", "jobs", "events", "wall s", "events/s", "under 2 min"],
                speed_rows,
            ),
        ],
        notes=notes,
        machine_info=machine(),
    )


def run_all(p: Params):  # type: ignore[no-untyped-def]
    """Entry point for bench/run.py."""
    console.print(f"[dim]sim: seed {p.seed}[/]")
    return run_bench(p)
