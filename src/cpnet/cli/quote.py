"""`cpnet quote FILE`: a binding quote for a task spec — the options, their price, predicted
completion and SLA score, and how long the quote holds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from cpnet.cli.config import connect
from cpnet.cli.output import console, errors, number, print_json, seconds, table
from cpnet.cli.submit import build_spec, read_spec_file
from cpnet.market.records import QuoteRecord


def quote(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(help="A task spec (.json/.toml, `-` for JSON on stdin).")],
    options: Annotated[
        int | None, typer.Option("--options", "-n", min=1, max=20, help="Options to list (5).")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the quote as JSON.")] = False,
) -> None:
    """Ask for a binding quote: the pools that can run FILE, best first by its objective, each
    with its price, the most you pay if the task runs as stated, when it should finish, and the
    pool's SLA score. Submit with `cpnet submit FILE --quote ID --option N` before it expires.

    **Example:** `cpnet quote job.json` then `cpnet submit job.json --quote quo_… --option 1`
    """
    spec = build_spec(None, read_spec_file(file))
    with connect(ctx) as hub:
        q = hub.quote(spec, options=options)
    if json_out:
        print_json(q)
        return
    show(q, file)


def show(q: QuoteRecord, file: str = "FILE") -> None:
    now = datetime.now(UTC).timestamp()
    grid = table(
        f"quote {q.id} ({q.objective})",
        ["#", "pool", "price/h", "max charge", "fee", "finishes in", "SLA", "fits now"],
    )
    for o in q.options:
        per = f"{number(o.price_per_hour, 4)}"
        if o.price_per_scu_hour is not None:
            per += f" ({number(o.price_per_scu_hour, 4)}/SCU-h)"
        grid.add_row(
            str(o.option),
            f"{o.pool_id}\n{o.pool_name}",
            f"{o.currency} {per}",
            f"{o.currency} {number(o.max_charge, 4)}",
            number(o.fee, 4),
            seconds(max(0.0, o.completes_at - now)),
            "-" if o.sla_score is None else f"{o.sla_score * 100:.0f}%",
            "yes" if o.fits_now else "no",
        )
    console.print(grid)
    left = q.valid_until.timestamp() - now
    errors.print(
        f"valid until {q.valid_until.strftime('%Y-%m-%d %H:%M:%SZ')} ({seconds(max(0, left))}); "
        f"the platform's fee ({q.fee_bps / 100:g}%) is part of the charge, not added to it",
    )
    errors.print(q.overruns, style="dim")
    if q.rejected:
        errors.print(f"{q.rejected} pools cannot run it (`cpnet explain` shows why)", style="dim")
    errors.print(f"submit: cpnet submit {file} --quote {q.id} --option 1")
