"""`cpnet usage`: the signed usage records the hub received for a task (or from a site), with
the verdict on each (docs/market.md, "Metering")."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.text import Text

from cpnet.cli.config import connect
from cpnet.cli.output import console, print_json, table
from cpnet.market.wire import UsageList


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _verdict(v: str) -> Text:
    return Text(v, style="green" if v in ("accepted", "duplicate") else "red")


def show(records: UsageList, title: str) -> None:
    """The records as one table: attempt, verdict, wall seconds, key, when, why."""
    grid = table(title, ["attempt", "verdict", "wall s", "site", "key", "received", "reason"])
    for r in records.records:
        rec = r.envelope.get("record") if isinstance(r.envelope, dict) else None
        wall = rec.get("wall_s") if isinstance(rec, dict) else None
        grid.add_row(
            r.attempt_id or "-",
            _verdict(r.verdict),
            "-" if not isinstance(wall, int | float) else f"{wall:.3f}",
            r.site_id,
            r.key_id or "-",
            _when(r.received_at),
            r.reason,
        )
    console.print(grid)
    if not records.records:
        console.print("no usage records received")


def usage(
    ctx: typer.Context,
    task: Annotated[str | None, typer.Argument(help="Task id (tsk_…).", show_default=False)] = None,
    site: Annotated[
        str | None,
        typer.Option(
            "--site", help="A site's records instead (its provider's admins).", show_default=False
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="With --site: at most this many.")] = 100,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON (records as sent).")] = False,
) -> None:
    """Show the signed usage records the hub received for a task's attempts, each with its
    verdict (accepted, or why it was refused) and the wall seconds settlement charges by.

    **Example:** `cpnet usage tsk_5k2xq8v0m3n4p7r9` or `cpnet usage --site dev.acme.site0`
    """
    if (task is None) == (site is None):
        raise typer.BadParameter("give a task id, or --site SITE_ID (not both)")
    with connect(ctx) as hub:
        got = hub.task_usage(task) if task is not None else hub.site_usage(site, limit)  # type: ignore[arg-type]
    if json_out:
        print_json(got)
        return
    show(got, f"usage records of {task or site}")
