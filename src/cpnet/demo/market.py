"""The market in the demo: the providers' price books, a binding quote before a submission,
the holds placed at submission, the bill at the end and a check of the books (docs/market.md).

Everything goes through the SDK as the providers and the user would; the final check opens the
hub's store with ``cpnet ledger check --data-dir``, as an operator would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from cpnet.cli.output import table
from cpnet.client import Client, CpnetError
from cpnet.market import ledger as L
from cpnet.market import money
from cpnet.market.auction_records import AuctionRecord, LeaseRecord
from cpnet.market.records import QuoteRecord
from cpnet.market.wire import AccountSummary, Bill

# The demo's tasks run for seconds, and real prices (a few fen per core-hour) would bill them
# nothing: the providers' books are "demo rates", about 900× a public cloud's, so that a
# seconds-long task costs whole fen. Guiyang's 36 CNY per core-hour is one fen per core-second.
# Their order (Guiyang cheapest, Ulanqab dearest) is the one the agents declared.
BOOKS: dict[str, dict[str, Any]] = {
    "guiyang": {"cpu_core_hour": 36.0, "ram_gb_hour": 3.6},
    "tianjin": {
        "cpu_core_hour": 54.0,
        "ram_gb_hour": 4.5,
        # Dearer when busy, cheaper when idle: 0.8×–1.5× the list price around 50 % in use.
        "dynamic": {"target": 0.5, "k": 1.0, "floor": 0.8, "cap": 1.5},
    },
    "ulanqab": {
        "cpu_core_hour": 72.0,
        "ram_gb_hour": 5.4,
        "gpu_hour": 0.0,
        "gpu_models": {"A800": 540.0},
    },
}
RATES_NOTE = (
    "Demo rates: the tasks run for seconds, so the books are about 900× a public cloud's price "
    "(36 CNY per core-hour is one fen per core-second) to show whole fen on the bill."
)
QUOTED = "stencil-hpc"  # the task submitted with a binding quote (else the first one)
# The reservation alice asks for by auction: 8 cores and 16 GB for ten minutes, starting in a
# few seconds (a window may not start in the past, and the bids must come in before it).
RESERVE = {"cpu_cores": 8, "ram_gb": 16}
RESERVE_MAX_PRICE = "600.00"  # CNY per hour for the whole request, at most
RESERVE_LEAD_S = 4.0
RESERVE_WINDOW_S = 600.0
API_BIDDER = "guiyang"  # bids through the API; Tianjin bids by its standing rule
API_BID = "330.00"
RULE_BIDDER, RULE_FACTOR = "tianjin", 0.9
CHECK_TIMEOUT_S = 60.0


def publish(net_url: str, tokens: dict[str, str], pools: dict[str, str]) -> list[str]:
    """Each provider admin publishes its pool's price book; the lines to show. `tokens` and
    `pools` map a site key to its provider admin's token and to its pool id."""
    lines = []
    for key, entry in BOOKS.items():
        if key not in tokens or key not in pools:
            continue
        with Client(net_url, tokens[key]) as padmin:
            padmin.set_prices(pools[key], [entry])
        rule = " with a utilisation rule (0.8×–1.5×)" if "dynamic" in entry else ""
        lines.append(f"{key}: {entry['cpu_core_hour']:g} CNY per core-hour{rule}")
    return lines


def quoted_task(names: Sequence[str]) -> str | None:
    """The name of the task the demo quotes before submitting: QUOTED if present, else the
    first."""
    if QUOTED in names:
        return QUOTED
    return names[0] if names else None


def quote_table(q: QuoteRecord, labels: dict[str, str]) -> Table:
    """A quote's options: where, price per hour, max charge with the fee inside, completion."""
    grid = table(
        f"quote {q.id} ({q.objective}), valid until {q.valid_until.strftime('%H:%M:%SZ')}",
        ["#", "pool", "price/h", "max charge", "of which fee", "finishes in", "fits now"],
    )
    now = time.time()
    for o in q.options:
        grid.add_row(
            str(o.option),
            labels.get(o.pool_id, o.pool_id),
            f"{o.price_per_hour:.4g} {o.currency}",
            f"{o.max_charge:.4f} {o.currency}",
            f"{o.fee:.4f}",
            f"{max(0.0, o.completes_at - now):.0f}s",
            "yes" if o.fits_now else "no",
        )
    return grid


def account_line(acc: AccountSummary) -> str:
    """Balance, held and available, in one line."""
    return (
        f"balance {money.fmt(acc.balance)}, held for queued and running tasks "
        f"{money.fmt(acc.held)}, available {money.fmt(acc.available)}"
    )


def bill_table(bill: Bill, names: dict[str, str], labels: dict[str, str]) -> Table:
    """One line per charged attempt, then the totals: charged = payouts + fees."""
    grid = table(
        f"bill {bill.org_id} {bill.period}",
        ["task", "pool", "seconds", "price/h", "charge", "fee", "provider gets"],
    )
    for line in bill.lines:
        grid.add_row(
            names.get(line.task_id or "", line.task_name or line.task_id or "-"),
            labels.get(line.pool_id, line.pool_id),
            f"{line.seconds:.1f}",
            f"{float(line.hourly):.4g}",
            money.major(line.charge),
            money.major(line.fee),
            money.major(line.payout),
        )
    grid.add_row(
        Text("total", style="bold"),
        "",
        "",
        "",
        Text(money.major(bill.charged), style="bold"),
        Text(money.major(bill.fees), style="bold"),
        Text(money.major(bill.payouts), style="bold"),
    )
    return grid


def bill_lines(bill: Bill) -> list[str]:
    """The sentences under the bill: the sums reconcile, what went back, what is still held."""
    ok = bill.charged == bill.payouts + bill.fees
    return [
        f"charged {money.fmt(bill.charged)} = providers' payouts {money.fmt(bill.payouts)} + "
        f"platform fees {money.fmt(bill.fees)} ({'reconciles' if ok else 'DOES NOT reconcile'} "
        "to the fen); "
        f"released from holds {money.fmt(bill.released)}; still held {money.fmt(bill.held_now)}",
    ]


@dataclass(frozen=True, slots=True)
class BooksCheck:
    ok: bool
    text: str
    command: str


def check_books(data_dir: Path) -> BooksCheck:
    """`cpnet ledger check --data-dir DIR` on the demo's data dir, as an operator runs it."""
    argv = [sys.executable, "-m", "cpnet", "ledger", "check", "--data-dir", str(data_dir)]
    command = f"cpnet ledger check --data-dir {data_dir}"
    try:
        out = subprocess.run(
            [*argv, "--json"], capture_output=True, text=True, timeout=CHECK_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        return BooksCheck(False, f"timed out after {CHECK_TIMEOUT_S:g}s", command)
    try:
        data = json.loads(out.stdout)
    except json.JSONDecodeError:
        return BooksCheck(False, (out.stderr or out.stdout).strip()[-300:], command)
    if out.returncode == 0 and data.get("ok"):
        text = (
            f"the books balance: {data['accounts']} accounts, {data['transfers']} transfers, "
            f"{data['holds']} holds, Σ balances = {data['total']}"
        )
        return BooksCheck(True, text, command)
    return BooksCheck(False, "; ".join(data.get("problems", []))[:500] or "failed", command)


def period_now() -> str:
    """The month the demo's bill covers (UTC)."""
    return L.period_of(time.time())


@dataclass(frozen=True, slots=True)
class Reservation:
    auction: AuctionRecord
    lease: LeaseRecord | None


def reserve(
    net_url: str, user_token: str, tokens: dict[str, str], pools: dict[str, str]
) -> Reservation:
    """alice posts a request for capacity; Guiyang bids through the API, Tianjin by its rule;
    alice closes the bids and the hub awards a lease (docs/market.md, "Auctions and leases")."""
    now = datetime.now(UTC)
    start = now + timedelta(seconds=RESERVE_LEAD_S)
    with Client(net_url, tokens[RULE_BIDDER]) as tianjin:
        tianjin.set_bid_rule(pools[RULE_BIDDER], RULE_FACTOR)
    with Client(net_url, user_token) as user:
        auction = user.create_auction(
            start=start,
            end=start + timedelta(seconds=RESERVE_WINDOW_S),
            max_price=RESERVE_MAX_PRICE,
            resources=RESERVE,
        )
        with Client(net_url, tokens[API_BIDDER]) as guiyang:
            guiyang.bid(auction.id, pools[API_BIDDER], API_BID)
        try:
            auction = user.close_auction(auction.id)
        except CpnetError:  # the hub's sweep closed it at its start meanwhile
            auction = user.auction(auction.id)
        lease = next((x for x in user.leases() if x.id == auction.lease_id), None)
    return Reservation(auction, lease)


def wait_live(net_url: str, user_token: str, lease_id: str, timeout_s: float = 15.0) -> bool:
    """Wait (bounded) until the lease's window has begun, so the workload can use it."""
    deadline = time.monotonic() + timeout_s
    with Client(net_url, user_token) as user:
        while time.monotonic() < deadline:
            if any(x.id == lease_id and x.live for x in user.leases()):
                return True
            time.sleep(0.2)
    return False


def end_lease(net_url: str, user_token: str, lease_id: str) -> LeaseRecord:
    """alice ends her lease when her work is done: she pays what elapsed, the rest goes back."""
    with Client(net_url, user_token) as user:
        return user.cancel_lease(lease_id)


def bids_table(auction: AuctionRecord, labels: dict[str, str], pool_of: dict[str, str]) -> Table:
    """The sealed bids as the owner sees them after the close: price, score or why dropped."""
    grid = table(
        f"auction {auction.id}: {auction.state}",
        ["pool", "how", "price/h", "score (lower wins)"],
    )
    for b in sorted(auction.bids, key=lambda b: (b.score is None, b.score or 0.0)):
        grid.add_row(
            labels.get(b.pool_id, b.pool_id),
            "rule" if b.rule else "API",
            money.fmt(b.price),
            f"{b.score:.3f}" if b.score is not None else f"dropped: {b.dropped}",
        )
    return grid


def lease_line(lease: LeaseRecord, labels: dict[str, str]) -> str:
    return (
        f"lease {lease.id} on {labels.get(lease.pool_id, lease.pool_id)}: "
        f"{lease.resources.cpu_cores:g} cores, {lease.resources.ram_gb:g} GB, "
        f"{lease.start.strftime('%H:%M:%S')}–{lease.end.strftime('%H:%M:%S')}Z at "
        f"{money.fmt(lease.price)}/h; its whole window ({money.fmt(lease.total)}) is held now "
        "and paid as it runs; alice's tasks that fit go on it first"
    )
