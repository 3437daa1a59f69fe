"""`cpnet sla`: a pool's SLA terms, evaluations and credits, declaring terms (providers); and
`cpnet reputation [POOL]`: pools' reputation scores with their evidence."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from cpnet.cli.config import connect
from cpnet.cli.output import console, errors, fields, number, print_json, seconds, table
from cpnet.market import money
from cpnet.market.records import PoolSla, ReputationRecord, SlaTermsRecord

app = typer.Typer(
    help="Pools' SLAs: the terms a pool promises, each window's evaluation with its evidence, "
    "and the credits breaches paid.\n\n"
    "**Example:** `cpnet sla show POOL` · "
    "`cpnet sla set POOL --availability 0.99 --max-queue-wait 300 --credit 10`",
    rich_markup_mode="markdown",
    no_args_is_help=True,
)


def _time(t: datetime | None) -> str:
    return "-" if t is None else t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def terms_text(t: SlaTermsRecord | None) -> str:
    """``availability ≥ 99% · queue wait ≤ 300 s (p95) · success ≥ 95%`` for a cell."""
    if t is None:
        return "none declared"
    parts = []
    if t.availability is not None:
        parts.append(f"availability ≥ {t.availability * 100:g}%")
    if t.max_queue_wait_s is not None:
        parts.append(f"queue wait ≤ {t.max_queue_wait_s:g} s (p95)")
    if t.success_rate is not None:
        parts.append(f"success ≥ {t.success_rate * 100:g}%")
    return " · ".join(parts)


@app.command("show")
def show(
    ctx: typer.Context,
    pool: Annotated[str, typer.Argument(help="A pool id.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """A pool's SLA: its terms in force (and who declared them), its newest evaluated windows
    with what was measured, the breaches and the credits paid, and its reputation.

    **Example:** `cpnet sla show cn.dev.acme.sz1.cpu.x3`
    """
    with connect(ctx) as hub:
        got = hub.sla(pool)
    if json_out:
        print_json(got)
        return
    _show(got)


def _show(got: PoolSla) -> None:
    t = got.terms
    rep = got.reputation
    console.print(
        fields(
            [
                ("pool", f"{got.pool_id} ({got.pool_name})"),
                ("terms", terms_text(t)),
                (
                    "window, credit",
                    "-"
                    if t is None
                    else f"{seconds(t.window_s)}, {number(t.credit_percent)}% of what "
                    "affected users paid",
                ),
                (
                    "declared",
                    "-" if t is None else f"by {t.source} {t.set_by} at {_time(t.set_at)}",
                ),
                ("credited", money.fmt(got.credited) + " (over the windows below)"),
                ("reputation", "-" if rep is None else f"{rep.score:.3f} at {_time(rep.at)}"),
            ]
        )
    )
    if not got.evaluations:
        errors.print("no window evaluated yet", style="dim")
        return
    grid = table(
        None, ["window", "availability", "queue wait p95", "success", "breached", "credits"]
    )
    for e in got.evaluations:
        a = e.evidence.get("availability", {})
        q = e.evidence.get("queue_wait", {})
        sr = e.evidence.get("success_rate", {})
        grid.add_row(
            f"{_time(e.window_start)} → {_time(e.window_end)}",
            _share(a.get("measured")),
            "-" if q.get("p95_s") is None else f"{q['p95_s']:g} s ({q.get('attempts', 0)})",
            "-"
            if sr.get("measured") is None
            else f"{_share(sr['measured'])} ({sr.get('lost', 0)} of {sr.get('ended', 0)} lost)",
            ", ".join(e.breaches) or "no",
            ", ".join(f"{org} {money.fmt(v)}" for org, v in e.credits.items()) or "-",
        )
    console.print(grid)


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}%"


@app.command("set")
def set_terms(
    ctx: typer.Context,
    pool: Annotated[str, typer.Argument(help="A pool id of your provider.")],
    availability: Annotated[
        float | None,
        typer.Option("--availability", help="Least share of each window online, e.g. 0.99."),
    ] = None,
    max_queue_wait: Annotated[
        float | None,
        typer.Option(
            "--max-queue-wait", metavar="SECONDS", help="Most seconds placed → started (p95)."
        ),
    ] = None,
    success_rate: Annotated[
        float | None,
        typer.Option(
            "--success-rate", help="Least share of ended attempts not lost to the site, e.g. 0.95."
        ),
    ] = None,
    window: Annotated[
        float | None,
        typer.Option("--window", metavar="SECONDS", help="Window length (default 86400: a day)."),
    ] = None,
    credit: Annotated[
        float | None,
        typer.Option(
            "--credit", metavar="PERCENT", help="Credit on a breach, % of what users paid (10)."
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Declare a pool's SLA terms (its provider's admins). They judge every whole window that
    begins after now; a breach credits each affected organisation CREDIT % of what it paid for
    its attempts on the pool in that window. Earlier terms are kept as history.

    **Example:** `cpnet sla set cn.dev.acme.sz1.cpu.x3 --availability 0.99 --max-queue-wait 300
    --success-rate 0.95 --window 86400 --credit 10`
    """
    with connect(ctx) as hub:
        got = hub.set_sla(
            pool,
            availability=availability,
            max_queue_wait_s=max_queue_wait,
            success_rate=success_rate,
            window_s=window,
            credit_percent=credit,
        )
    if json_out:
        print_json(got)
        return
    _show(got)


def reputation(
    ctx: typer.Context,
    pool: Annotated[str | None, typer.Argument(help="A pool id; every pool if omitted.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Pools' reputation scores (0..1) with their evidence: recent attempts not lost to the site
    (a Beta posterior), availability and SLA breaches, each weighed down by age. The scheduler's
    risk term is 1 − the score; quotes show it as the SLA score.

    **Example:** `cpnet reputation` · `cpnet reputation cn.dev.acme.sz1.cpu.x3 --json`
    """
    with connect(ctx) as hub:
        found = [hub.reputation(pool)] if pool else hub.reputations()
    if json_out:
        print_json(found[0] if pool else {"pools": found})
        return
    _reputations(found)


def _reputations(found: list[ReputationRecord]) -> None:
    grid = table(
        None,
        ["pool", "score", "success", "availability", "breaches", "attempts (lost)", "at"],
    )
    for r in found:
        e = r.evidence
        grid.add_row(
            r.pool_id,
            f"{r.score:.3f}",
            f"{e.get('success', 1.0):.3f}",
            f"{e.get('availability', 1.0):.3f}",
            f"{e.get('breached_windows', 0)} (×{e.get('breach_factor', 1.0):.2f})",
            f"{e.get('attempts', 0)} ({e.get('lost', 0)})",
            _time(r.at),
        )
    console.print(grid)
    if not found:
        errors.print("no pool scored yet: the hub scores pools on its SLA sweep", style="dim")
