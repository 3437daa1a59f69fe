"""`cpnet audit`: verify the tamper-evident audit chain, export an organisation's records."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from cpnet.audit.wire import AuditRecordOut, AuditVerify, ProblemOut
from cpnet.cli.config import connect
from cpnet.cli.hub import DatabaseUrl, DataDir
from cpnet.cli.output import console, errors, fail, fields, print_json, table

app = typer.Typer(
    help='The tamper-evident audit chain (docs/security.md, "Audit chain").\n\n'
    "**Example:** `cpnet audit verify --data-dir ./hub-data`",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
JsonOut = Annotated[bool, typer.Option("--json", help="Print JSON.")]
CSV_COLUMNS = (
    "seq", "at", "action", "role", "actor_org", "actor_user", "actor_site", "actor_token",
    "org_id", "object_id", "status", "request_id", "body", "before", "after", "detail",
    "prev_hash", "hash",
)  # fmt: skip


@app.command("verify")
def verify(
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    json_out: JsonOut = False,
) -> None:
    """Verify the audit chain offline, against the hub's store: every record's hash, every link,
    every signed checkpoint (signature, and that the chain still passes through it) and the
    head. Exits 1 listing each problem with the record it concerns: an edited, deleted,
    reordered or inserted record, or a truncated tail.

    **Example:** `cpnet audit verify --data-dir ./hub-data --json`
    """
    from cpnet.config import HubSettings
    from cpnet.store import audit
    from cpnet.store.db import Store

    settings = HubSettings.from_env(data_dir=data_dir, database_url=database_url)
    if settings.database_url is None and not (settings.data_dir / "cpnet.db").exists():
        fail(f"no hub store in {settings.data_dir}", "give --data-dir or --database-url")
    store = Store(settings.url)
    try:
        with store.read() as s:
            v = audit.verify(s)
    finally:
        store.close()
    result = AuditVerify(
        ok=v.ok,
        records=v.records,
        checkpoints=v.checkpoints,
        head_seq=v.head[0],
        head_hash=v.head[1],
        problems=[ProblemOut.of(p) for p in v.problems],
    )
    _print_verdict(result, json_out)
    if not result.ok:
        raise typer.Exit(1)


@app.command("check")
def check(ctx: typer.Context, json_out: JsonOut = False) -> None:
    """Ask the hub to verify its audit chain (admins); exits 1 when it finds a problem.

    **Example:** `cpnet audit check --json`
    """
    with connect(ctx) as hub:
        result = hub.audit_verify()
    _print_verdict(result, json_out)
    if not result.ok:
        raise typer.Exit(1)


def _print_verdict(result: AuditVerify, json_out: bool) -> None:
    if json_out:
        print_json(result)
        return
    console.print(
        fields(
            [
                ("chain", "intact" if result.ok else Text("TAMPERED", style="red")),
                ("records", result.records),
                ("signed checkpoints", result.checkpoints),
                ("head", f"{result.head_seq} {result.head_hash[:16]}…"),
            ]
        )
    )
    if result.problems:
        grid = table("problems", ["record", "kind", "what"])
        for p in result.problems:
            grid.add_row(str(p.seq), p.kind, p.message)
        errors.print(grid)


def _period(text: str) -> tuple[datetime, datetime]:
    try:
        start = datetime.strptime(text, "%Y-%m").replace(tzinfo=UTC)
    except ValueError:
        raise typer.BadParameter(
            "a month as YYYY-MM, e.g. 2026-12", param_hint="--period"
        ) from None
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start, end


@app.command("export")
def export(
    ctx: typer.Context,
    org: Annotated[
        str | None,
        typer.Option("--org", help="Organisation id (org_…); default: your own."),
    ] = None,
    period: Annotated[
        str | None, typer.Option("--period", help="A month (UTC), YYYY-MM; default: all.")
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="jsonl, csv, or table (a Rich table).")
    ] = "jsonl",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write to this file instead of stdout.")
    ] = None,
    json_out: JsonOut = False,
) -> None:
    """Export an organisation's audit records for a month, through the hub's API: admins any
    organisation's, a provider admin their own. Each record carries its seq, prev_hash and
    hash, so an export can be checked against a later `cpnet audit verify`.

    **Example:** `cpnet audit export --org org_nexvcydqesbzjtjp --period 2026-12 --format csv`
    """
    if fmt not in ("jsonl", "csv", "table"):
        raise typer.BadParameter("one of jsonl, csv, table", param_hint="--format")
    since, until = _period(period) if period else (None, None)
    with connect(ctx) as hub:
        records = list(hub.audit_records(org, since=since, until=until))
    if json_out:
        print_json(records)
        return
    if fmt == "table":
        grid = table(
            f"audit records ({len(records)})", ["seq", "at", "action", "who", "object", "status"]
        )
        for r in records:
            who = r.actor.user_id or r.actor.site_id or r.actor.role
            at = datetime.fromtimestamp(r.at, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
            grid.add_row(str(r.seq), at, r.action, who, r.object_id or "-", str(r.status or "-"))
        console.print(grid)
        return
    text = _jsonl(records) if fmt == "jsonl" else _csv(records)
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text)
        errors.print(f"wrote {len(records)} records to {out}")


def _jsonl(records: list[AuditRecordOut]) -> str:
    return "".join(json.dumps(r.model_dump(mode="json"), sort_keys=True) + "\n" for r in records)


def _csv(records: list[AuditRecordOut]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_COLUMNS)
    for r in records:
        a = r.actor
        w.writerow(
            [
                r.seq, r.at, r.action, a.role, a.org_id, a.user_id, a.site_id, a.token_id,
                r.org_id, r.object_id, r.status, r.request_id, r.body, r.before, r.after,
                json.dumps(r.detail, sort_keys=True), r.prev_hash, r.hash,
            ]
        )  # fmt: skip
    return buf.getvalue()
