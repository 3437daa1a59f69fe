"""`cpnet auction` (requests for capacity, sealed bids, pools' bid rules) and `cpnet lease`
(the leases awards became): docs/market.md, "Auctions and leases"."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from cpnet.cli.config import connect
from cpnet.cli.output import console, created, errors, fields, number, print_json, show_records
from cpnet.cli.output import when as at
from cpnet.cli.prices import parse_time
from cpnet.market import money
from cpnet.market.auction_records import AuctionRecord, LeaseRecord, Unit

app = typer.Typer(
    help="Reserve capacity by auction: post a request, providers bid (sealed), the hub awards "
    "it by price, SLA score and reputation, and the award becomes a lease.\n\n"
    "**Example:** `cpnet auction create --cores 2 --start 2026-12-08T08:00:00Z --hours 4 "
    "--max-price 30.00` · `cpnet auction list --state open` · `cpnet auction bid AUC POOL 24.00`",
    rich_markup_mode="markdown",
    no_args_is_help=True,
)
lease_app = typer.Typer(
    help="Leases: capacity held on a pool for your organisation's tasks in a window, paid as it "
    "runs.\n\n**Example:** `cpnet lease list` · `cpnet lease cancel lse_…`",
    rich_markup_mode="markdown",
    no_args_is_help=True,
)

JsonOut = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _fen(minor: int | None) -> str:
    return "-" if minor is None else money.fmt(minor)


def _unit(u: Unit) -> str:
    parts = [f"{number(u.cpu_cores)} cores"] if u.cpu_cores else []
    if u.ram_gb:
        parts.append(f"{number(u.ram_gb)} GB")
    if u.gpus:
        parts.append(f"{u.gpus} GPU" + (f" {u.gpu_model}" if u.gpu_model else ""))
    return ", ".join(parts) or "-"


@app.command("create")
def create(
    ctx: typer.Context,
    start: Annotated[str, typer.Option(help="Window start, ISO time (UTC if no zone).")],
    max_price: Annotated[
        str, typer.Option("--max-price", help="Most you pay per hour, whole request: 30.00.")
    ],
    hours: Annotated[float | None, typer.Option(help="Window length in hours.")] = None,
    end: Annotated[str | None, typer.Option(help="Window end (instead of --hours).")] = None,
    cores: Annotated[float, typer.Option(help="CPU cores per unit.")] = 0.0,
    ram_gb: Annotated[float, typer.Option("--ram-gb", help="RAM per unit, GB.")] = 0.0,
    gpus: Annotated[int, typer.Option(help="GPUs per unit.")] = 0,
    gpu_model: Annotated[str | None, typer.Option("--gpu-model")] = None,
    units: Annotated[int, typer.Option(min=1, help="How many units.")] = 1,
    close_at: Annotated[
        str | None, typer.Option("--close-at", help="When bids close (default: the start).")
    ] = None,
    min_sla: Annotated[float | None, typer.Option("--min-sla", min=0, max=1)] = None,
    region: Annotated[list[str] | None, typer.Option(help="Allowed region code (prefix).")] = None,
    provider: Annotated[list[str] | None, typer.Option(help="Allowed provider id.")] = None,
    json_out: JsonOut = False,
) -> None:
    """Post a request for capacity: UNITS × (cores, RAM, GPUs) from --start for --hours (or to
    --end), at most --max-price per hour for all of it. Providers bid until --close-at.

    **Example:** `cpnet auction create --cores 2 --ram-gb 4 --start 2026-12-08T08:00:00Z
    --hours 4 --max-price 30.00`
    """
    t0 = parse_time(start, "--start")
    assert t0 is not None
    if (hours is None) == (end is None):
        raise typer.BadParameter("give one of --hours and --end", param_hint="--hours")
    t1 = parse_time(end, "--end") if end else t0 + timedelta(hours=hours or 0)
    resources = {"cpu_cores": cores, "ram_gb": ram_gb, "gpus": gpus, "gpu_model": gpu_model}
    with connect(ctx) as hub:
        a = hub.create_auction(
            start=t0,
            end=t1,  # type: ignore[arg-type]
            max_price=max_price,
            resources=resources,
            units=units,
            bids_close_at=parse_time(close_at, "--close-at"),
            min_sla=min_sla,
            regions=region or (),
            providers=provider or (),
        )
    if json_out:
        print_json(a)
        return
    created(a.id, f"request posted; bids close {at(a.bids_close_at)}")


def _rows(a: AuctionRecord) -> list[str]:
    return [
        a.id,
        a.state,
        f"{a.units} × {_unit(a.resources)}",
        f"{at(a.start)} → {at(a.end)}",
        f"{_fen(a.max_price)}/h",
        at(a.bids_close_at),
        str(a.bids_count),
        a.lease_id or "-",
    ]


@app.command("list")
def list_auctions(
    ctx: typer.Context,
    state: Annotated[str | None, typer.Option(help="open, awarded or failed.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 50,
    json_out: JsonOut = False,
) -> None:
    """Your requests; for a provider's admin also the open ones, to bid on.

    **Example:** `cpnet auction list --state open`
    """
    with connect(ctx) as hub:
        rows = hub.auctions(state=state, limit=limit)
    cols = ["id", "state", "asks", "window", "max price", "bids close", "bids", "lease"]
    show_records(rows, cols, _rows, "auctions", json_out)


@app.command("show")
def show(ctx: typer.Context, auction_id: str, json_out: JsonOut = False) -> None:
    """A request, and after the close every bid as the award rule weighed it (providers see
    only their own bids: bids are sealed).

    **Example:** `cpnet auction show auc_…`
    """
    with connect(ctx) as hub:
        a = hub.auction(auction_id)
    if json_out:
        print_json(a)
        return
    console.print(
        fields(
            [
                ("id", a.id),
                ("state", a.state),
                ("asks", f"{a.units} × {_unit(a.resources)} = {_unit(a.total)}"),
                ("window", f"{at(a.start)} → {at(a.end)}"),
                ("max price", f"{_fen(a.max_price)}/h"),
                ("bids close", at(a.bids_close_at)),
                ("lease", a.lease_id or "-"),
                ("reason", a.reason or "-"),
            ]
        )
    )
    cols = ["bid", "pool", "price/h", "by", "score", "dropped"]
    show_records(
        a.bids,
        cols,
        lambda b: [
            b.id,
            b.pool_id,
            _fen(b.price),
            "rule" if b.rule else "bid",
            "-" if b.score is None else f"{b.score:.3f}",
            b.dropped or "",
        ],
        "bids",
        False,
    )


@app.command("bid")
def bid(
    ctx: typer.Context,
    auction_id: str,
    pool_id: str,
    price: Annotated[str, typer.Argument(help="Per hour for the whole request: 24.00.")],
    json_out: JsonOut = False,
) -> None:
    """A sealed bid for one of your pools (a new bid for the pool replaces the old one).

    **Example:** `cpnet auction bid auc_… cn.dev.acme.sz1.cpu1.i0 24.00`
    """
    with connect(ctx) as hub:
        b = hub.bid(auction_id, pool_id, price)
    if json_out:
        print_json(b)
        return
    created(b.id, f"bid {_fen(b.price)}/h on {b.pool_id}")


@app.command("close")
def close(ctx: typer.Context, auction_id: str, json_out: JsonOut = False) -> None:
    """Close the bids now and award the request (else the hub does at its close time).

    **Example:** `cpnet auction close auc_…`
    """
    with connect(ctx) as hub:
        a = hub.close_auction(auction_id)
    if json_out:
        print_json(a)
        return
    errors.print(f"{a.id}: {a.state}: {a.reason or ''}")
    if a.lease_id:
        console.print(a.lease_id, soft_wrap=True)


@app.command("rule")
def rule(
    ctx: typer.Context,
    pool_id: str,
    factor: Annotated[float, typer.Option(help="× the pool's on-demand price of a request.")],
    min_price: Annotated[str | None, typer.Option("--min-price")] = None,
    max_price: Annotated[str | None, typer.Option("--max-price")] = None,
    json_out: JsonOut = False,
) -> None:
    """Let the hub bid for your pool at every close it could win: its on-demand price of the
    request × --factor, within --min-price..--max-price per hour.

    **Example:** `cpnet auction rule cn.dev.acme.sz1.cpu1.i0 --factor 0.8 --min-price 5.00`
    """
    with connect(ctx) as hub:
        r = hub.set_bid_rule(pool_id, factor, min_price=min_price, max_price=max_price)
    if json_out:
        print_json(r)
        return
    bounds = f"{_fen(r.min_price)}..{_fen(r.max_price)}"
    console.print(fields([("pool", r.pool_id), ("factor", number(r.factor)), ("bounds", bounds)]))


def _lease_row(x: LeaseRecord) -> list[str]:
    return [
        x.id,
        x.state + (" (live)" if x.live else ""),
        x.pool_id,
        _unit(x.resources),
        f"{at(x.start)} → {at(x.end)}",
        f"{_fen(x.price)}/h",
        f"{_fen(x.charged)} of {_fen(x.total)}",
    ]


@lease_app.command("list")
def list_leases(
    ctx: typer.Context,
    state: Annotated[str | None, typer.Option(help="active, ended or cancelled.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 50,
    json_out: JsonOut = False,
) -> None:
    """The leases your organisation holds or provides, newest first.

    **Example:** `cpnet lease list --state active`
    """
    with connect(ctx) as hub:
        rows = hub.leases(state=state, limit=limit)
    cols = ["id", "state", "pool", "holds", "window", "price", "paid"]
    show_records(rows, cols, _lease_row, "leases", json_out)


@lease_app.command("cancel")
def cancel(ctx: typer.Context, lease_id: str, json_out: JsonOut = False) -> None:
    """End a lease early: you pay what elapsed; the rest of its hold is released.

    **Example:** `cpnet lease cancel lse_…`
    """
    with connect(ctx) as hub:
        x = hub.cancel_lease(lease_id)
    if json_out:
        print_json(x)
        return
    now = datetime.now(UTC)
    errors.print(f"{x.id} {x.state} at {at(now)}: paid {_fen(x.charged)} of {_fen(x.total)}")
