"""`cpnet measure`: run the calibration probes here and show measured against catalogue peak."""

from __future__ import annotations

import socket
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from cpnet.cli.output import console, errors, number, print_json, table
from cpnet.measure import catalogue, probes, scu, vector


def measure(
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
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Measure this machine: FP64/FP32 GEMM, memory bandwidth, and the GPU path if there is one.

    Runs within `--budget` seconds and prints each figure next to the catalogue's peak for the
    detected CPU (and GPU), with measured/peak, and the SCU rate per workload profile. Agents
    run the same probes on each pool when they join (as a job of the pool).

    **Example:** `cpnet measure --budget 20` · `cpnet measure --json`
    """
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
    if vec.cpu.catalogue is None:
        errors.print(f"CPU: {vec.cpu.match}", style="yellow")
    grid = table("measured vs catalogue peak", ["part", "figure", "measured", "peak", "ratio"])
    for part in (vec.cpu, vec.accelerator):
        if part is None:
            continue
        for name, fig in part.figures.items():
            if fig.measured is None and fig.nominal is None:
                continue
            grid.add_row(
                f"{part.kind} ({part.catalogue or 'not in catalogue'})",
                f"{name} {vector.UNITS[name]}",
                number(fig.measured, 4),
                number(fig.nominal, 4),
                "-" if fig.ratio is None else f"{fig.ratio:.0%}",
            )
    for device, figures in report.torch.items():
        for name, value in figures.given().items():
            grid.add_row(f"torch on {device}", f"{name} {vector.UNITS[name]}", number(value, 4))
    console.print(grid)
    rates = table("SCU rate per profile", ["profile", "SCU", "what"])
    for name, p in scu.PROFILES.items():
        rates.add_row(name, number(vec.scu.get(name), 4), p.title)
    console.print(rates)
    for flag in vec.flags:
        errors.print(f"flagged {flag.field}: {flag.reason}", style="yellow")
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
