"""`cpnet sim`: replay a real trace over a simulated national network and compare policies."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cpnet.cli.output import console, errors, fail, print_json, table
from cpnet.sim import plots, run, traces
from cpnet.sim.metrics import Metrics
from cpnet.sim.policies import POLICIES

HELP = """Replay a workload trace over a simulated national network and compare placement policies.

Runs in this process: no hub, no agents. The network has N sites in real Chinese cities
(data/geo), each with one pool drawn from the seed; the jobs come from the trace, their arrivals
compressed so the offered load is `--load` of the network's capacity. Every policy replays the
same jobs with the same failures; `cpnet` calls the hub's own scheduler. See docs/simulator.md.

**Traces by name** (from `$CPNET_SHARED/data/traces`, default `../shared`): kth, lanl, nasa,
lcg (Parallel Workloads Archive, SWF), alibaba2023 (GPU cluster), alibaba2025 (DLRM serving).

**Your own trace** — give its path and `--format`:

- SWF (Parallel Workloads Archive, 18 fields, `;` comments, .gz fine):
  `cpnet sim mylog.swf.gz --format swf`
- Alibaba GPU 2023 pod list (`openb_pod_list_*.csv`):
  `cpnet sim pods.csv --format alibaba2023`
- Alibaba GPU 2025 DLRM instances (`disaggregated_DLRM_trace.csv[.gz]`):
  `cpnet sim dlrm.csv.gz --format alibaba2025`
- Any CSV with a header, through a column mapping (seconds, cores, GB; `col/1000` or `col*60`
  converts units; keys: id, submit, runtime | end [+ start], cpus, ram_gb, gpus, estimate,
  input_bytes, deadline):
  `cpnet sim jobs.csv -f csv --map submit=t0,runtime=dur,cpus=cpu_milli/1000,gpus=ngpu`

**Examples:** `cpnet sim kth --jobs 2000 --sites 30 --bound --plot out/` ·
`cpnet sim alibaba2023 --sites 300 -p cpnet -p cheapest --json`
"""


def sim(
    trace: Annotated[str, typer.Argument(help="A known trace name or a trace file's path.")],
    fmt: Annotated[
        str | None,
        typer.Option("--format", "-f", help="swf | alibaba2023 | alibaba2025 | csv."),
    ] = None,
    mapping: Annotated[
        str | None,
        typer.Option("--map", metavar="KEY=COL,...", help="Column mapping for --format csv."),
    ] = None,
    sites: Annotated[int, typer.Option("--sites", min=1, help="Sites in the network.")] = 30,
    jobs: Annotated[
        int | None, typer.Option("--jobs", min=1, help="Replay only the first N jobs.")
    ] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of every random draw.")] = 1,
    policy: Annotated[
        list[str] | None,
        typer.Option("--policy", "-p", help=f"Repeatable; default all: {', '.join(POLICIES)}."),
    ] = None,
    load: Annotated[
        float,
        typer.Option("--load", min=0, help="Offered load to scale arrivals to (0: as recorded)."),
    ] = run.DEFAULT_LOAD,
    with_bound: Annotated[
        bool, typer.Option("--bound", help="Also solve the LP lower bound (small instances).")
    ] = False,
    plot: Annotated[
        Path | None, typer.Option("--plot", metavar="DIR", help="Write PNG plots here.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    names = policy or list(POLICIES)
    unknown = [p for p in names if p not in POLICIES]
    if unknown:
        fail(f"unknown policy {unknown[0]!r}", f"choose from {', '.join(POLICIES)}")
    try:
        cols = traces.parse_mapping(mapping) if mapping else None
        loaded = traces.load(trace, fmt, limit=jobs, mapping=cols)
    except (traces.TraceError, OSError, KeyError, ValueError) as err:
        fail(f"cannot read the trace: {err}", "check the path, --format and --map")
    if not loaded.jobs:
        fail("the trace has no usable jobs", "check --format and --map")
    scenario = run.prepare(loaded, sites, seed, load or None)
    results = _replay(scenario, names, quiet=json_out)
    bound = run.bound_for(scenario, results) if with_bound else None
    data = run.summary(scenario, results, bound)
    if plot is not None:
        name = f"sim_{scenario.trace}_{sites}sites.png".replace("/", "_")
        title = f"{scenario.trace}: {len(scenario.jobs)} jobs, {sites} sites, seed {seed}"
        written = plots.comparison(results, title, plot / name, bound)
        data["plot"] = str(written)
    if json_out:
        print_json(data)
        return
    _show(data, results)


sim.__doc__ = HELP


def _replay(scenario: run.Scenario, names: list[str], quiet: bool) -> dict[str, Metrics]:
    """Replay each policy with a progress bar on stderr (none with --json)."""
    if quiet:
        return run.compare(scenario, names)
    total = len(scenario.jobs)
    with Progress(
        TextColumn("[bold]{task.description:>12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=errors,
    ) as bar:
        ids = {name: bar.add_task(name, total=total) for name in names}
        return run.compare(
            scenario, names, lambda name, done: bar.update(ids[name], completed=done)
        )


def _show(data: dict, results: dict[str, Metrics]) -> None:  # type: ignore[type-arg]
    """Print the scenario line and one table row per policy."""
    console.print(
        f"{data['trace']}: {data['jobs']} jobs on {data['sites']} sites, seed {data['seed']}, "
        f"arrivals × {data['time_scale']:.3g} → offered load {data['offered_load']:.2f}"
        + (f"; {data['unplaceable']} jobs fit no pool, left out" if data["unplaceable"] else "")
    )
    grid = table(
        None,
        [
            "policy",
            "mean JCT",
            "p95",
            "p99",
            "makespan",
            "cost CNY",
            "CPU use",
            "GPU use",
            "x-region TB",
            "missed",
            "CO2 t",
            "failed",
            "gap JCT",
            "gap cost",
        ],
    )
    for name, m in results.items():
        row = data["policies"][name]
        grid.add_row(
            name,
            _h(m.mean_jct_s), _h(m.p95_jct_s), _h(m.p99_jct_s), _h(m.makespan_s),
            f"{m.cost:,.0f}", f"{m.cpu_utilisation:.1%}", f"{m.gpu_utilisation:.1%}",
            f"{m.cross_region_bytes / 1e12:.2f}", str(m.deadline_misses),
            f"{m.carbon_kg / 1000:.2f}", str(m.failed),
            _pct(row.get("gap_mean_jct")), _pct(row.get("gap_cost")),
        )  # fmt: skip
    console.print(grid)
    speeds = ", ".join(f"{n} {m.events_per_s:,.0f}" for n, m in results.items())
    console.print(f"simulated events per second: {speeds}")
    bound = data["bound"]
    if bound is not None:
        console.print(
            f"LP lower bound ({bound['status']}, {bound['variables']:,} variables): mean JCT "
            f"{_h(bound['mean_jct_s'])}, cost {bound['cost']:,.0f} CNY"
        )
    if "plot" in data:
        console.print(f"plot: {data['plot']}")


def _h(seconds: float) -> str:
    """Seconds as hours or minutes for the table."""
    if math.isnan(seconds):
        return "-"
    return f"{seconds / 3600:.2f}h" if seconds >= 3600 else f"{seconds / 60:.1f}m"


def _pct(value: float | None) -> str:
    """A gap as a percentage ('-' when there is none)."""
    return "-" if value is None or math.isnan(value) else f"{value:+.1%}"
