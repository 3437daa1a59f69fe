"""`cpnet network`: the network map — measured and declared links, and transfer-time estimates
(docs/network.md)."""

from __future__ import annotations

import re
from typing import Annotated

import typer

from cpnet.cli.config import connect
from cpnet.cli.output import console, errors, fail, number, print_json, table
from cpnet.cli.tasks import size_text

app = typer.Typer(
    help="The network map: RTT and bandwidth between the hub, sites and data origins, each "
    "figure's source (measured > declared > geo > default), and transfer-time estimates.\n\n"
    "Places: `hub`, `site:<site id>`, `url:<scheme>://<host>`.\n\n"
    "**Example:** `cpnet network estimate hub site:acme-gz-1 10GB`",
    rich_markup_mode="markdown",
    invoke_without_command=True,
)
link_app = typer.Typer(
    help="Declare links (admins): RTT, bandwidth, egress price per GB between two places.\n\n"
    "**Example:** `cpnet network link set hub site:acme-gz-1 --rtt-ms 28 --mbps 500`",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
app.add_typer(link_app, name="link")

_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """Bytes from ``10GB`` (SI, 10⁹), ``1.5GiB`` (2³⁰), ``500MB``, ``123`` (bytes)."""
    m = _SIZE.match(text)
    unit = m.group(2).lower() if m else ""
    if m is None or unit not in _UNITS:
        raise ValueError(f"{text!r} is not a size: write e.g. 123, 500MB, 10GB or 1.5GiB")
    return int(float(m.group(1)) * _UNITS[unit])


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _source(rtt: str, mbps: str) -> str:
    return rtt if rtt == mbps else f"rtt {rtt}, bw {mbps}"


@app.callback()
def network(
    ctx: typer.Context,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print JSON instead of a table.")
    ] = False,
) -> None:
    """Show the network map (same as `cpnet network show`)."""
    if ctx.invoked_subcommand is None:
        show(ctx, json_out)


@app.command("show")
def show(
    ctx: typer.Context,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print JSON instead of a table.")
    ] = False,
) -> None:
    """Every pair the map knows: RTT, bandwidth, where each figure came from, and its age.

    **Example:** `cpnet network show --json`
    """
    with connect(ctx) as hub:
        m = hub.network()
    if json_out:
        print_json(m)
        return
    grid = table(None, ["from", "to", "RTT ms", "Mbit/s", "source", "samples", "age"])
    for p in m.paths:
        grid.add_row(
            p.a,
            p.b,
            number(p.rtt_ms, 1),
            number(p.mbps, 1),
            _source(p.rtt_source, p.mbps_source),
            str(p.samples),
            _age(p.age_s),
        )
    console.print(grid)
    if not m.paths:
        errors.print(
            "no pairs yet: agents report probes once they join; declare links with "
            "`cpnet network link set`",
            style="dim",
        )


@app.command("estimate")
def estimate(
    ctx: typer.Context,
    src: Annotated[str, typer.Argument(help="From: hub, site:<id> or url:<scheme>://<host>.")],
    dst: Annotated[str, typer.Argument(help="To: a place, as SRC.")],
    size: Annotated[str, typer.Argument(metavar="BYTES", help="e.g. 123, 500MB, 10GB, 1.5GiB.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """How long BYTES take from SRC to DST, and which figures (and sources) that rests on.

    **Example:** `cpnet network estimate url:https://data.example.org site:acme-gz-1 10GB`
    """
    try:
        nbytes = parse_size(size)
    except ValueError as exc:
        fail(str(exc), "give the size as a number with an optional unit (KB MB GB TB, KiB ...)")
    with connect(ctx) as hub:
        e = hub.estimate_transfer(src, dst, nbytes)
    if json_out:
        print_json(e)
        return
    p = e.path
    console.print(
        f"{size_text(e.bytes)} {e.src} → {e.dst}: [bold]{e.seconds:.3g} s[/bold] "
        f"(RTT {number(p.rtt_ms, 1)} ms {p.rtt_source}, {number(p.mbps, 1)} Mbit/s "
        f"{p.mbps_source}; egress {e.currency} {number(e.egress, 4)})"
    )
    if p.detail:
        errors.print(p.detail, style="dim")


@link_app.command("set")
def link_set(
    ctx: typer.Context,
    a: Annotated[str, typer.Argument(help="One end: hub, site:<id>, url:<scheme>://<host>, *.")],
    b: Annotated[str, typer.Argument(help="The other end.")],
    rtt_ms: Annotated[
        float | None, typer.Option("--rtt-ms", min=0, metavar="MS", help="Round trip.")
    ] = None,
    mbps: Annotated[
        float | None, typer.Option("--mbps", min=0, metavar="N", help="Bandwidth, Mbit/s.")
    ] = None,
    egress: Annotated[
        float, typer.Option("--egress-per-gb", min=0, metavar="P", help="Price per GB moved.")
    ] = 0.0,
    currency: Annotated[str, typer.Option("--currency", metavar="CUR")] = "CNY",
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Declare (or replace) the link between A and B; measured figures still win over it.

    **Example:** `cpnet network link set hub site:acme-gz-1 --rtt-ms 28 --mbps 500`
    """
    if rtt_ms is None and mbps is None and not egress:
        fail("nothing to declare", "give at least one of --rtt-ms, --mbps, --egress-per-gb")
    with connect(ctx) as hub:
        rec = hub.set_link(a, b, rtt_ms=rtt_ms, mbps=mbps, egress_per_gb=egress, currency=currency)
    if json_out:
        print_json(rec)
        return
    console.print(f"declared {rec.a} ↔ {rec.b}")


@link_app.command("rm")
def link_rm(
    ctx: typer.Context,
    a: Annotated[str, typer.Argument(help="One end.")],
    b: Annotated[str, typer.Argument(help="The other end.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Forget a declared link.

    **Example:** `cpnet network link rm hub site:acme-gz-1`
    """
    with connect(ctx) as hub:
        rec = hub.remove_link(a, b)
    if json_out:
        print_json(rec)
        return
    console.print(f"removed {rec.a} ↔ {rec.b}")
