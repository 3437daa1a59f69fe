"""`cpnet measure`: run the calibration probes here and show measured against catalogue peak."""

from __future__ import annotations

import contextlib
import socket
import time
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from cpnet.cli.config import connect
from cpnet.cli.output import console, errors, number, print_json, table
from cpnet.measure import catalogue, probes, scu, vector


def show_vector(vec: vector.CapacityVector) -> None:
    """Figures per part with their sources, the SCU rate per profile, and any flags."""
    for part in (vec.cpu, vec.accelerator):
        if part is not None:
            found = part.catalogue or "not in the catalogue"
            console.print(f"{part.kind}: {part.model or '?'} x {number(part.count)} → {found}")
    grid = table(
        "capacity vector (whole pool)",
        ["part", "figure", "peak", "measured", "declared", "used", "source", "ratio"],
    )
    for part in (vec.cpu, vec.accelerator):
        if part is None:
            continue
        for name, fig in part.figures.items():
            grid.add_row(
                part.kind,
                f"{name} {vector.UNITS[name]}",
                number(fig.nominal, 4),
                number(fig.measured, 4),
                number(fig.declared, 4),
                number(fig.value, 4),
                fig.source or "-",
                "-" if fig.ratio is None else f"{fig.ratio:.0%}",
            )
    console.print(grid)
    for part in (vec.cpu, vec.accelerator):
        if part is not None and part.catalogue is None and part.model:
            errors.print(f"{part.kind}: {part.match}", style="yellow")
    rates = table("SCU rate per profile", ["profile", "SCU", "what"])
    for name, p in scu.PROFILES.items():
        rates.add_row(name, number(vec.scu.get(name), 4), p.title)
    console.print(rates)
    for flag in vec.flags:
        errors.print(f"flagged {flag.field}: {flag.reason}", style="yellow")


def _remote(hub, pool: str, timeout: float, *, quiet: bool):  # type: ignore[no-untyped-def]
    """Ask the pool's agent for a new probe run and wait until its report is in."""
    asked = hub.request_measurement(pool)
    deadline = time.monotonic() + timeout
    waiting = f"waiting for {pool}'s agent to measure it …"
    with contextlib.nullcontext() if quiet else errors.status(waiting):
        while time.monotonic() < deadline:
            rec = hub.pool(pool)
            if ((rec.capacity or {}).get("measured_at") or 0) >= asked:
                return rec
            time.sleep(1.0)
    errors.print(
        f"no new measurement of {pool} within {timeout:g} s: is its agent online "
        "(`cpnet pools --all`)? Its log says why a probe failed."
    )
    raise typer.Exit(1)


def measure(
    ctx: typer.Context,
    budget: Annotated[
        float, typer.Option("--budget", metavar="S", min=1, max=600, help="Seconds in all.")
    ] = probes.DEFAULT_BUDGET_S,
    cpu_model: Annotated[
        str | None,
        typer.Option(
            "--cpu-model", metavar="M", help="Compare against this catalogue CPU instead."
        ),
    ] = None,
    torch_on_cpu: Annotated[
        bool,
        typer.Option("--torch-on-cpu", help="Run the PyTorch (GPU) probe path on the CPU."),
    ] = False,
    pool: Annotated[
        str | None,
        typer.Option(
            "--pool", metavar="POOL_ID", help="Show the hub's capacity vector of a pool instead."
        ),
    ] = None,
    run_remote: Annotated[
        bool,
        typer.Option("--run", help="With --pool: ask the pool's agent to measure it now, wait."),
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", metavar="S", min=1, help="How long --run waits.")
    ] = 300.0,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Measure this machine: FP64/FP32 GEMM, memory bandwidth, and the GPU path if there is one.

    Runs within `--budget` seconds and prints each figure next to the catalogue's peak for the
    detected CPU (and GPU), with measured/peak, and the SCU rate per workload profile. Agents
    run the same probes on each pool when they join (as a job of the pool).

    With `--pool` it runs nothing here and shows what the hub holds for a pool instead: each
    figure with its nominal, measured and declared values, the SCU rates and any flagged claims
    (the pool's agent measured it when it joined). `--pool ID --run` asks that agent to measure
    the pool again now (as a job of the pool) and waits for the new figures.

    **Example:** `cpnet measure --budget 20` · `cpnet measure --json` ·
    `cpnet measure --pool cn.dev.acme.sz1.gpu1.i0 --run`
    """
    if run_remote and pool is None:
        errors.print("--run needs --pool POOL_ID (the pool whose agent should measure it)")
        raise typer.Exit(2)
    if pool is not None:
        with connect(ctx) as hub:
            rec = hub.pool(pool)
            if run_remote:
                rec = _remote(hub, pool, timeout, quiet=json_out)
        if rec.capacity is None:
            errors.print(
                f"the hub has no capacity vector for {rec.id} yet (the agent registers it)"
            )
            raise typer.Exit(1)
        if json_out:
            print_json(rec.capacity)
            return
        vec = vector.CapacityVector.model_validate(rec.capacity)
        when = "measured on " + str(vec.measured_on) if vec.measured_at else "not measured yet"
        console.print(f"{rec.id} ({rec.name}): {when}")
        show_vector(vec)
        return
    from cpnet.agent import hostinfo

    model = cpu_model or hostinfo.cpu_model()
    if json_out:
        report = probes.run(
            budget_s=budget, cpu_model=model, host=socket.gethostname(), torch_on_cpu=torch_on_cpu
        )
    else:
        with Progress(
            TextColumn("[bold]measuring[/] {task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            console=errors,
            transient=True,
        ) as bar:
            task = bar.add_task("start", total=1.0)

            def step(name: str, done: float) -> None:
                bar.update(task, description=name, completed=done)

            report = probes.run(
                budget_s=budget,
                cpu_model=model,
                host=socket.gethostname(),
                torch_on_cpu=torch_on_cpu,
                progress=step,
            )
    vec = scu.rate_all(
        vector.build(
            cpu_model=model,
            cpu_cores=report.cores_used,
            memory_gb=0.0,
            accelerator_model=report.accelerator_model,
            accelerator_count=1 if report.accelerator_model else 0,
            probe=report,
        )
    )
    if json_out:
        print_json({"probe": report.model_dump(mode="json"), "capacity": vec.model_dump()})
        return
    console.print(
        f"{report.host}: {model} ({report.cores_used} CPUs used), "
        f"probes took {report.duration_s:.1f} s of a {budget:g} s budget"
    )
    show_vector(vec)
    if report.torch:
        grid = table("PyTorch path (not accelerator figures)", ["device", "figure", "measured"])
        for device, figures in report.torch.items():
            for name, value in figures.given().items():
                grid.add_row(device, f"{name} {vector.UNITS[name]}", number(value, 4))
        console.print(grid)
    for note in report.notes:
        errors.print(note, style="dim")


def catalogue_match(
    model: Annotated[str, typer.Argument(help="A model string as nvidia-smi or lscpu prints it.")],
    cpu: Annotated[bool, typer.Option("--cpu", help="Match a CPU (default: accelerator).")] = False,
) -> None:
    """Show which catalogue entry a discovered model string matches, or why none does.

    **Example:** `cpnet measure-match "NVIDIA H100 80GB HBM3"` ·
    `cpnet measure-match --cpu "Intel(R) Xeon(R) Platinum 8480+"`
    """
    m = catalogue.match_cpu(model) if cpu else catalogue.match_accelerator(model)
    if isinstance(m, catalogue.NoMatch):
        errors.print(m.reason, style="red")
        raise typer.Exit(1)
    console.print(f"{model!r} → {m.spec.name} ({m.note})")
