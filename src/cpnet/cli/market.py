"""`cpnet account`, `cpnet bill` and `cpnet ledger`: organisations' money, bills, the books."""

from __future__ import annotations

import csv
import html
import io
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from cpnet.cli.config import connect
from cpnet.cli.hub import DatabaseUrl, DataDir
from cpnet.cli.output import console, errors, fail, fields, print_json, table
from cpnet.market import money
from cpnet.market.ledger import period_of
from cpnet.market.wire import AccountSummary, Bill, LedgerCheck

JsonOut = Annotated[bool, typer.Option("--json", help="Print JSON.")]
Org = Annotated[str, typer.Argument(help="Organisation id (org_…).", show_default=False)]
OwnOrg = Annotated[
    str | None,
    typer.Argument(help="Organisation id (org_…); default: your own.", show_default=False),
]


def group(help_text: str) -> typer.Typer:
    return typer.Typer(help=help_text, no_args_is_help=True, rich_markup_mode="markdown")


account_app = group(
    "Organisations' accounts: balance, held money, credit and spending limits.\n\n"
    "**Example:** `cpnet account show org_nexvcydqesbzjtjp`"
)
ledger_app = group(
    "The double-entry ledger.\n\n**Example:** `cpnet ledger check --data-dir ./hub-data`"
)


def _show(acc: AccountSummary, json_out: bool) -> None:
    if json_out:
        print_json(acc)
        return
    m = money.fmt
    rows = [
        ("organisation", acc.org_id),
        ("balance", m(acc.balance)),
        ("held", m(acc.held)),
        ("credit limit", m(acc.credit_limit)),
        ("available", m(acc.available)),
    ]
    if acc.earned:
        rows.append(("earned (provider)", m(acc.earned)))
    for lim in acc.limits:
        who = f"user {lim.user_id}" if lim.user_id else "whole organisation"
        rows.append((f"monthly limit, {who}", f"{m(lim.used)} of {m(lim.monthly)} ({lim.period})"))
    console.print(fields(rows))


@account_app.command("show")
def show(ctx: typer.Context, org: OwnOrg = None, json_out: JsonOut = False) -> None:
    """Show an organisation's balance, held money, available money and limits (your own
    organisation's when none is named).

    **Example:** `cpnet account show org_nexvcydqesbzjtjp --json`
    """
    with connect(ctx) as hub:
        _show(hub.account(org or hub.whoami().org_id), json_out)


@account_app.command("topup")
def topup(
    ctx: typer.Context,
    org: Org,
    amount: Annotated[str, typer.Argument(help="Major units, e.g. 1000.00.", show_default=False)],
    transfer_id: Annotated[
        str | None,
        typer.Option("--id", help="Transfer id: repeating it never funds twice."),
    ] = None,
    memo: Annotated[str, typer.Option("--memo", help="A note kept with the transfer.")] = "",
    json_out: JsonOut = False,
) -> None:
    """Fund an organisation's account (admin).

    **Example:** `cpnet account topup org_nexvcydqesbzjtjp 1000.00 --id invoice-2026-0042`
    """
    with connect(ctx) as hub:
        _show(hub.topup(org, amount, transfer_id=transfer_id, memo=memo), json_out)


@account_app.command("limit")
def limit(
    ctx: typer.Context,
    org: Org,
    credit: Annotated[
        str | None, typer.Option("--credit", help="Credit limit: how far below zero it may go.")
    ] = None,
    monthly: Annotated[
        str | None, typer.Option("--monthly", help="Monthly spending limit (major units).")
    ] = None,
    user: Annotated[
        str | None, typer.Option("--user", help="The monthly limit is this user's (usr_…).")
    ] = None,
    remove: Annotated[bool, typer.Option("--remove-monthly", help="Drop the limit.")] = False,
    json_out: JsonOut = False,
) -> None:
    """Set an organisation's credit limit or a monthly spending limit (admin).

    **Example:** `cpnet account limit org_nexvcydqesbzjtjp --monthly 500 --user usr_4x…`
    """
    with connect(ctx) as hub:
        acc = hub.set_limits(
            org, credit_limit=credit, monthly=monthly, user_id=user, remove_monthly=remove
        )
    _show(acc, json_out)


@account_app.command("quota")
def quota(
    ctx: typer.Context,
    org: Org,
    queued: Annotated[
        int | None, typer.Option("--queued", help="Most tasks waiting to be placed.", min=0)
    ] = None,
    cores: Annotated[
        float | None,
        typer.Option("--cores", help="Most CPU cores of queued and running tasks.", min=0),
    ] = None,
    gpus: Annotated[
        int | None, typer.Option("--gpus", help="Most GPUs of queued and running tasks.", min=0)
    ] = None,
    remove: Annotated[bool, typer.Option("--remove", help="Drop every quota.")] = False,
    json_out: JsonOut = False,
) -> None:
    """Show an organisation's quotas and use, or set them (admin; the ones not given stay).
    A submission that would pass one is refused with 429 `quota_exceeded`.

    **Example:** `cpnet account quota org_nexvcydqesbzjtjp --queued 1000 --cores 512 --gpus 16`
    """
    with connect(ctx) as hub:
        if remove:
            view = hub.set_quota(org)
        elif queued is None and cores is None and gpus is None:
            view = hub.quota(org)
        else:
            now = hub.quota(org)
            view = hub.set_quota(
                org,
                queued=now.queued if queued is None else queued,
                cores=now.cores if cores is None else cores,
                gpus=now.gpus if gpus is None else gpus,
            )
    if json_out:
        print_json(view)
        return

    def limit(x: float | None) -> str:
        return "no limit" if x is None else f"{x:g}"

    console.print(
        fields(
            [
                ("organisation", view.org_id),
                ("queued tasks", f"{view.used_queued} of {limit(view.queued)}"),
                ("CPU cores (queued + running)", f"{view.used_cores:g} of {limit(view.cores)}"),
                ("GPUs (queued + running)", f"{view.used_gpus} of {limit(view.gpus)}"),
            ]
        )
    )


BILL_COLUMNS = (
    "task_id", "task_name", "attempt_id", "settled_at", "pool_id", "provider_org", "seconds",
    "hourly", "charge", "fee", "payout",
)  # fmt: skip


def bill_csv(b: Bill) -> str:
    """The bill as CSV: one row per charged attempt (amounts in major units), then a total."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow([*BILL_COLUMNS, "currency"])
    for line in b.lines:
        d = line.model_dump()
        w.writerow(
            [
                *(
                    money.major(d[c]) if c in ("charge", "fee", "payout") else d[c]
                    for c in BILL_COLUMNS
                ),
                b.currency,
            ]
        )
    total = ["TOTAL", "", "", "", "", "", "", ""]
    w.writerow(
        [*total, money.major(b.charged), money.major(b.fees), money.major(b.payouts), b.currency]
    )
    return out.getvalue()


def bill_html(b: Bill) -> str:
    """The bill as a printable HTML page."""
    e = html.escape
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{e(str(v))}</td>"
            for v in (
                line.task_name or line.task_id,
                line.pool_id,
                line.provider_org,
                f"{line.seconds:.1f}",
                line.hourly,
                money.major(line.charge),
                money.major(line.fee),
                money.major(line.payout),
            )
        )
        + "</tr>"
        for line in b.lines
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>cpnet bill {e(b.org_id)} {e(b.period)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #999;padding:4px 8px;text-align:right}}
@media print{{body{{margin:0}}}}</style></head><body>
<h1>Bill — {e(b.org_id)} — {e(b.period)}</h1>
<p>Currency: {e(b.currency)}. Every charge = provider payout + platform fee.</p>
<table><tr><th>task</th><th>pool</th><th>provider</th><th>seconds</th><th>price/h</th>
<th>charge</th><th>fee</th><th>payout</th></tr>{rows}
<tr><th colspan="5">total</th><th>{money.major(b.charged)}</th><th>{money.major(b.fees)}</th>
<th>{money.major(b.payouts)}</th></tr></table>
<p>Top-ups this month: {money.fmt(b.topups)}. Holds released: {money.fmt(b.released)}.
Held now: {money.fmt(b.held_now)}.</p></body></html>
"""


def bill(
    ctx: typer.Context,
    org: OwnOrg = None,
    period: Annotated[
        str | None,
        typer.Option(
            "--period", help="A month: 2026-12 (default: this month, UTC).", show_default=False
        ),
    ] = None,
    csv_file: Annotated[Path | None, typer.Option("--csv", help="Write the bill as CSV.")] = None,
    html_file: Annotated[
        Path | None, typer.Option("--html", help="Write the bill as printable HTML.")
    ] = None,
    json_out: JsonOut = False,
) -> None:
    """Show an organisation's bill for a month (your own organisation's when none is named),
    itemised per task: pool, provider, seconds, price, charge, fee.

    **Example:** `cpnet bill org_nexvcydqesbzjtjp --period 2026-12 --csv bill.csv --html bill.html`
    """
    with connect(ctx) as hub:
        b = hub.bill(org or hub.whoami().org_id, period or period_of(time.time()))
    if csv_file is not None:
        csv_file.write_text(bill_csv(b))
    if html_file is not None:
        html_file.write_text(bill_html(b))
    if json_out:
        print_json(b)
        return
    t = table(f"bill {b.org_id} {b.period}", ["task", "pool", "provider", "seconds", "price/h",
                                               "charge", "fee"])  # fmt: skip
    for line in b.lines:
        t.add_row(
            line.task_name or str(line.task_id), line.pool_id, line.provider_org,
            f"{line.seconds:.1f}", line.hourly, money.fmt(line.charge), money.fmt(line.fee),
        )  # fmt: skip
    t.add_row("total", "", "", "", "", money.fmt(b.charged), money.fmt(b.fees))
    console.print(t)
    console.print(
        f"payouts {money.fmt(b.payouts)} + fees {money.fmt(b.fees)} = {money.fmt(b.charged)}; "
        f"top-ups {money.fmt(b.topups)}; held now {money.fmt(b.held_now)}"
    )


@ledger_app.command("post")
def post(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(help="refund, credit or adjust.", show_default=False)],
    amount: Annotated[str, typer.Argument(help="Major units, e.g. 12.34.", show_default=False)],
    debit: Annotated[str, typer.Option("--from", help="Debited account, e.g. provider:org_…")],
    credit: Annotated[str, typer.Option("--to", help="Credited account, e.g. org:org_…")],
    transfer_id: Annotated[
        str, typer.Option("--id", help="Transfer id: repeating it never posts twice.")
    ],
    task: Annotated[str | None, typer.Option("--task", help="The task it corrects.")] = None,
    memo: Annotated[str, typer.Option("--memo", help="Why: kept with the transfer.")] = "",
    json_out: JsonOut = False,
) -> None:
    """Post a correction (admin): a refund (provider:… or platform:revenue → org:…), an SLA
    credit (platform:sla → org:…) or an adjustment. Written transfers never change; a
    correction is a new one.

    **Example:** `cpnet ledger post refund 12.00 --from provider:org_p… --to org:org_u… --id rf-7`
    """
    with connect(ctx) as hub:
        done = hub.post_correction(
            kind, debit, credit, amount, transfer_id=transfer_id, task_id=task, memo=memo
        )
    if json_out:
        print_json(done)
        return
    what = "posted" if done.created else "already posted (a replay: nothing changed)"
    console.print(
        f"{what}: {done.id} {done.kind} {money.fmt(done.amount)} {done.debit} → {done.credit}"
    )


@ledger_app.command("check")
def check(
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    json_out: JsonOut = False,
) -> None:
    """Check the books offline, against the hub's store: they balance, every account equals the
    sum of its postings and is not below its floor, every hold was settled to the minor unit.
    Exits 1 when a problem is found. `--data-dir` may also be a `cpnet demo --data-dir`
    directory (its hub's store is in `hub/`).

    **Example:** `cpnet ledger check --data-dir ./hub-data`
    """
    from cpnet.config import HubSettings
    from cpnet.store import books
    from cpnet.store.db import Store

    if data_dir is not None and database_url is None:
        demo_hub = Path(data_dir) / "hub"
        if not (Path(data_dir) / "cpnet.db").exists() and (demo_hub / "cpnet.db").exists():
            data_dir = demo_hub  # a demo's data dir: its hub's store
    settings = HubSettings.from_env(data_dir=data_dir, database_url=database_url)
    if settings.database_url is None and not (settings.data_dir / "cpnet.db").exists():
        fail(f"no hub store in {settings.data_dir}", "give --data-dir or --database-url")
    store = Store(settings.url)
    try:
        with store.read() as s:
            c = books.check(s)
    finally:
        store.close()
    result = LedgerCheck(
        ok=c.ok, accounts=c.accounts, transfers=c.transfers, holds=c.holds, total=c.total,
        problems=list(c.problems),
    )  # fmt: skip
    if json_out:
        print_json(result)
    else:
        console.print(
            fields(
                [
                    ("books", "balance" if c.ok else Text("DO NOT balance", style="red")),
                    ("accounts", c.accounts),
                    ("transfers", c.transfers),
                    ("holds", c.holds),
                    ("Σ balances", c.total),
                ]
            )
        )
        for p in c.problems:
            errors.print(f"problem: {p}", style="red")
    if not c.ok:
        raise typer.Exit(1)
