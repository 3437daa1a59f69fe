"""`cpnet pools`: discover live pools across every provider joined to the hub."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from cpnet.cli.config import connect
from cpnet.cli.output import console, errors, number, print_json, split_pairs, table
from cpnet.registry.model import PoolRecord, PoolType


def hardware_summary(pool: PoolRecord) -> str:
    """``64c 256G 8×H100`` for a table cell."""
    hw = pool.hardware
    text = f"{number(hw.cpu_cores)}c {number(hw.memory_gb, 0)}G"
    for acc in hw.accelerators:
        text += f" {acc.count}×{acc.model}"
    return text


def free_summary(pool: PoolRecord) -> str:
    """Free over total cores (and GPUs, where there are any), one per line."""
    lines = [f"{number(pool.free.cpu_cores)}/{number(pool.total.cpu_cores)} cores"]
    if pool.total.gpus:
        lines.append(f"{pool.free.gpus}/{pool.total.gpus} GPUs")
    return "\n".join(lines)


def price_summary(pool: PoolRecord) -> str:
    """The pool's prices per resource-hour, e.g. ``CNY 0.05/core 12/GPU``."""
    p = pool.price
    parts = [
        f"{number(value, 4)}/{unit}"
        for value, unit in ((p.cpu_core_hour, "core"), (p.gpu_hour, "GPU"), (p.ram_gb_hour, "GB"))
        if value
    ]
    return f"{p.currency} {' '.join(parts)}" if parts else "free"


def reputation_summary(pool: PoolRecord) -> str:
    """``0.93 SLA`` for a cell: the pool's reputation score, and whether it declares SLA terms."""
    score = "-" if pool.reputation is None else f"{pool.reputation:.2f}"
    return f"{score} SLA" if pool.sla else score


def scu_summary(pool: PoolRecord) -> str:
    """The SCU rate, and whether it rests on a measurement (``12.3 measured``)."""
    if not pool.scu_rate:
        return "unknown"
    measured = (pool.capacity or {}).get("measured_at") is not None
    return f"{number(pool.scu_rate, 4)} {'measured' if measured else 'nominal'}"


def per_scu_summary(pool: PoolRecord) -> str:
    if pool.price_per_scu_hour is None:
        return "-"
    return f"{pool.price.currency} {number(pool.price_per_scu_hour, 4)}"


def leased_summary(pool: PoolRecord) -> str:
    """What leases hold of the pool now (``2 cores · 1 lease``), ``-`` when none is active;
    the caller's own leases marked."""
    x = pool.leases
    if x is None or not x.active:
        return "-"
    held = f"{number(x.leased.cpu_cores)} cores" if x.live else "from later"
    own = f" ({len(x.own)} yours)" if x.own else ""
    return f"{held} · {x.active} lease{'s' if x.active > 1 else ''}{own}"


def pools(
    ctx: typer.Context,
    pool_type: Annotated[
        PoolType | None,
        typer.Option("--type", "-t", case_sensitive=False, help="Only pools of this type."),
    ] = None,
    region: Annotated[
        str | None, typer.Option("--region", "-r", help="Region code prefix, e.g. 44 or 4403.")
    ] = None,
    accelerator: Annotated[
        str | None, typer.Option("--accelerator", metavar="A", help="Accelerator model contains.")
    ] = None,
    min_gpus: Annotated[
        int | None, typer.Option("--min-gpus", metavar="N", min=0, help="At least N free GPUs.")
    ] = None,
    min_cores: Annotated[
        float | None, typer.Option("--min-cores", metavar="N", min=0, help="At least N free cores.")
    ] = None,
    min_memory_gb: Annotated[
        float | None,
        typer.Option("--min-memory-gb", metavar="G", min=0, help="At least G GB free memory."),
    ] = None,
    labels: Annotated[
        list[str] | None,
        typer.Option("--label", metavar="K=V", help="Only pools with this label (repeatable)."),
    ] = None,
    everything: Annotated[bool, typer.Option("--all", help="Include offline pools.")] = False,
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile",
            "-p",
            metavar="P",
            help="Workload profile (general, ai-train, ai-infer, hpc, edge-realtime): show SCU "
            "rate and price per SCU-hour.",
        ),
    ] = None,
    min_scu: Annotated[
        float | None,
        typer.Option("--min-scu", metavar="N", min=0, help="At least N SCU for --profile."),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print JSON instead of a table.")
    ] = False,
) -> None:
    """Find pools by type, region, accelerator, free capacity and labels.

    Capacity filters apply to *free* capacity; only online pools are shown unless `--all`.
    With `--profile` each pool shows its SCU rate for that kind of work and its price per
    SCU-hour, so offers compare across pool types (docs/compute-unit.md).

    **Example:** `cpnet pools --type intelligent --region 44 --accelerator h100 --min-gpus 4`

    **Example:** `cpnet pools --profile ai-train --min-scu 100`
    """
    if min_scu is not None and profile is None:
        errors.print("--min-scu needs --profile (e.g. --profile ai-train)")
        raise typer.Exit(2)
    with connect(ctx) as hub:
        found = hub.pools(
            type=pool_type.value if pool_type else None,
            region=region,
            accelerator=accelerator,
            min_gpus=min_gpus,
            min_cores=min_cores,
            min_memory_gb=min_memory_gb,
            labels=split_pairs(labels, "--label"),
            online="any" if everything else True,
            profile=profile,
            min_scu=min_scu,
        )
    if json_out:
        print_json({"pools": found})
        return
    columns = [
        "id", "type", "region", "hardware", "free/total", "leased", "queue", "price/h",
        "reputation", "online",
    ]  # fmt: skip
    if profile:
        columns[-1:-1] = [f"SCU ({profile})", "price/SCU-h"]
    grid = table(None, columns)
    for pool in found:
        row: list[str | Text] = [
            pool.id,
            pool.type.value,
            f"{pool.region.code} {pool.region.name}".strip(),
            hardware_summary(pool),
            free_summary(pool),
            leased_summary(pool),
            str(pool.queue_length),
            price_summary(pool),
            reputation_summary(pool),
        ]
        if profile:
            row += [scu_summary(pool), per_scu_summary(pool)]
        row.append(Text("yes", style="green") if pool.online else Text("no", style="red"))
        grid.add_row(*row)
    console.print(grid)
    if not found:
        hint = "" if everything else " (add --all to include offline pools)"
        errors.print(f"no pools match{hint}", style="dim")
