"""`cpnet prices`: pools' prices now or at a time, their history, and publishing a price book."""

from __future__ import annotations

import json
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from cpnet.cli.config import connect
from cpnet.cli.output import console, errors, fail, fields, number, print_json, table
from cpnet.market.records import EffectivePrice, PoolPrices, PriceEntryRecord


class DefaultShow(TyperGroup):
    """`cpnet prices [POOL]` shows; `cpnet prices set POOL ...` publishes: a first argument that
    is not a subcommand is the POOL of `show`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("-h", "--help")):
            args = ["show", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=DefaultShow,
    help="Pools' prices: what each charges now (or at a time), its price history, and "
    "publishing a price book (providers).\n\n"
    "**Example:** `cpnet prices` · `cpnet prices POOL --history` · "
    "`cpnet prices set POOL --cpu-core-hour 0.05 --valid-until 2027-01-01T00:00:00Z`",
    rich_markup_mode="markdown",
)


def parse_time(text: str | None, what: str) -> datetime | None:
    """An ISO time from a flag (UTC when it names no zone), or a one-line error."""
    if text is None:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        fail(f"{what} {text!r} is not a time", "write e.g. 2026-12-07T08:00:00Z")
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def price_text(p: EffectivePrice | PriceEntryRecord | None) -> str:
    """``CNY 0.05/core 0.01/GB 12/GPU 0.3/SCU-h(hpc)`` for a cell."""
    if p is None:
        return "-"
    parts = [
        f"{number(v, 4)}/{unit}"
        for v, unit in ((p.cpu_core_hour, "core"), (p.ram_gb_hour, "GB"), (p.gpu_hour, "GPU"))
        if v
    ]
    parts += [f"{number(v, 4)}/GPU({m})" for m, v in getattr(p, "gpu_models", {}).items()]
    parts += [f"{number(v, 4)}/SCU-h({k})" for k, v in p.scu_hour.items()]
    return f"{p.currency} {' '.join(parts) if parts else 'free'}"


def _effective(p: EffectivePrice | None) -> str:
    if p is None:
        return "-"
    note = f" ×{number(p.factor, 3)}" if p.factor != 1.0 else ""
    return f"{price_text(p)}{note} ({p.source})"


def _time(t: datetime | None) -> str:
    return "-" if t is None else t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _entries(entries: list[PriceEntryRecord]) -> None:
    grid = table(None, ["id", "kind", "prices", "valid from", "valid until", "dynamic", "in force"])
    for e in entries:
        d = e.dynamic
        rule = "-" if d is None else f"t={d.target:g} k={d.k:g} {d.floor:g}×–{d.cap:g}×"
        grid.add_row(
            str(e.id),
            e.kind,
            price_text(e),
            _time(e.valid_from),
            _time(e.valid_until),
            rule,
            "yes" if e.in_force else "",
        )
    console.print(grid)


@app.command("show")
def show(
    ctx: typer.Context,
    pool: Annotated[
        str | None, typer.Argument(help="A pool id; all live pools if omitted.")
    ] = None,
    history: Annotated[
        bool, typer.Option("--history", help="Every entry ever published for POOL.")
    ] = False,
    at: Annotated[
        str | None, typer.Option("--at", metavar="TIME", help="Prices in force then (ISO time).")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Pools' prices now (or `--at TIME`): on-demand and spot, from each pool's price book with
    its dynamic rule applied, else as its agent declared.

    **Example:** `cpnet prices cn.dev.acme.sz1.cpu.x3 --history`
    """
    when = parse_time(at, "--at")
    if history and pool is None:
        fail("--history needs a POOL", "e.g. cpnet prices POOL --history")
    with connect(ctx) as hub:
        if pool is None:
            found = hub.prices(at=when)
            if json_out:
                print_json({"pools": found})
                return
            _table(found)
            return
        one = hub.pool_prices(pool, at=when, history=history)
    if json_out:
        print_json(one)
        return
    console.print(
        fields(
            [
                ("pool", f"{one.pool_id} ({one.pool_name})"),
                ("at", _time(one.at)),
                ("utilisation", f"{one.utilisation * 100:.0f}%"),
                ("on demand", _effective(one.on_demand)),
                ("spot", _effective(one.spot)),
            ]
        )
    )
    if one.entries:
        _entries(one.entries)
    else:
        errors.print("no price book: the pool's declared price applies", style="dim")


def _table(found: list[PoolPrices]) -> None:
    grid = table(None, ["pool", "name", "on demand", "spot", "in use"])
    for p in found:
        grid.add_row(
            p.pool_id,
            p.pool_name,
            _effective(p.on_demand),
            _effective(p.spot),
            f"{p.utilisation * 100:.0f}%",
        )
    console.print(grid)
    if not found:
        errors.print("no pools", style="dim")


def _pairs(items: list[str] | None, flag: str) -> dict[str, float]:
    out = {}
    for item in items or []:
        key, sep, value = item.rpartition("=")
        try:
            if not sep or not key:
                raise ValueError
            out[key] = float(value)
        except ValueError:
            fail(f"{flag} wants NAME=PRICE, got {item!r}", f"e.g. {flag} hpc=0.3")
    return out


def _rule(text: str | None) -> dict[str, float] | None:
    if text is None:
        return None
    rule = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        try:
            if key.strip() not in ("target", "k", "floor", "cap"):
                raise ValueError
            rule[key.strip()] = float(value)
        except ValueError:
            fail(
                f"--dynamic wants target=U,k=K,floor=F,cap=C, got {text!r}",
                "e.g. --dynamic target=0.7,k=1,floor=0.8,cap=1.5",
            )
    return rule


def _file_entries(path: str) -> list[dict[str, Any]]:
    try:
        text = Path(path).read_text()
        data = tomllib.loads(text) if path.lower().endswith(".toml") else json.loads(text)
    except FileNotFoundError:
        fail(f"no such file: {path}", "check the path (.json or .toml)")
    except (OSError, ValueError) as err:
        fail(f"cannot read {path}: {err}", "fix the file and try again")
    if isinstance(data, dict) and "entries" in data:
        data = data["entries"]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        fail(f"{path} holds no entries", 'write {"entries": [{"cpu_core_hour": 0.05}]}')
    return data


@app.command("set")
def set_prices(
    ctx: typer.Context,
    pool: Annotated[str, typer.Argument(help="The pool to price.")],
    cpu_core_hour: Annotated[
        float | None, typer.Option("--cpu-core-hour", metavar="P", min=0, help="Per core-hour.")
    ] = None,
    ram_gb_hour: Annotated[
        float | None, typer.Option("--ram-gb-hour", metavar="P", min=0, help="Per GB-hour.")
    ] = None,
    gpu_hour: Annotated[
        float | None, typer.Option("--gpu-hour", metavar="P", min=0, help="Per GPU-hour.")
    ] = None,
    gpu_model: Annotated[
        list[str] | None,
        typer.Option("--gpu-model", metavar="MODEL=P", help="Per GPU-hour of a model (repeat)."),
    ] = None,
    scu_hour: Annotated[
        list[str] | None,
        typer.Option("--scu-hour", metavar="PROFILE=P", help="Per SCU-hour of a profile (repeat)."),
    ] = None,
    spot: Annotated[bool, typer.Option("--spot", help="A spot price (default on-demand).")] = False,
    currency: Annotated[str, typer.Option("--currency", metavar="CUR")] = "CNY",
    valid_from: Annotated[
        str | None, typer.Option("--valid-from", metavar="TIME", help="Default: now.")
    ] = None,
    valid_until: Annotated[
        str | None, typer.Option("--valid-until", metavar="TIME", help="Default: until replaced.")
    ] = None,
    dynamic: Annotated[
        str | None,
        typer.Option(
            "--dynamic",
            metavar="RULE",
            help="target=U,k=K,floor=F,cap=C: price × clamp(1 + k(use − U), F, C); "
            "0.5 ≤ F ≤ 1 ≤ C ≤ 2.",
        ),
    ] = None,
    file: Annotated[
        str | None,
        typer.Option("--file", "-f", metavar="FILE", help="Entries from JSON/TOML instead."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Publish a price for POOL (its provider's admins). Every entry is kept as history; the
    newest one in force wins.

    **Example:** `cpnet prices set POOL --cpu-core-hour 0.05 --scu-hour hpc=0.3
    --valid-until 2027-01-01T00:00:00Z --dynamic target=0.7,k=1,floor=0.8,cap=1.5`

    **Example:** `cpnet prices set POOL --file book.json`
    """
    if file is not None:
        entries = _file_entries(file)
    else:
        entry: dict[str, Any] = {"kind": "spot" if spot else "on_demand", "currency": currency}
        for key, value in (
            ("cpu_core_hour", cpu_core_hour),
            ("ram_gb_hour", ram_gb_hour),
            ("gpu_hour", gpu_hour),
        ):
            if value is not None:
                entry[key] = value
        if gpu_model:
            entry["gpu_models"] = _pairs(gpu_model, "--gpu-model")
        if scu_hour:
            entry["scu_hour"] = _pairs(scu_hour, "--scu-hour")
        for key, text in (("valid_from", valid_from), ("valid_until", valid_until)):
            t = parse_time(text, f"--{key.replace('_', '-')}")
            if t is not None:
                entry[key] = t.isoformat()
        rule = _rule(dynamic)
        if rule is not None:
            entry["dynamic"] = rule
        if len(entry) == 2:
            fail("no price given", "give --cpu-core-hour, --gpu-hour, --scu-hour ... or --file")
        entries = [entry]
    with connect(ctx) as hub:
        shown = hub.set_prices(pool, entries)
    if json_out:
        print_json(shown)
        return
    console.print(f"published {len(entries)} price entr{'y' if len(entries) == 1 else 'ies'}")
    console.print(
        fields(
            [("on demand now", _effective(shown.on_demand)), ("spot now", _effective(shown.spot))]
        )
    )
