"""Ledger postings per second, durable, on SQLite and PostgreSQL, next to the same database's
bare insert-and-commit rate measured in the same run (``bench/run.py ledger``).

Each row is one committed transaction per operation, one writer, for ``--ledger-seconds``:

- bare: INSERT one row into a two-column table and COMMIT (the database's own ceiling);
- top-up: ``store.ledger.topup`` — one transfer from the unbounded funding account;
- debit: ``store.ledger.post`` from an account with a floor (the conditional UPDATE);
- hold + settle: a task's whole money path — reserve, then payout, fee and release (4 transfers
  and the hold's compare-and-set in two transactions), counted as 4 postings;
- replay: posting an existing transfer again (a no-op after one SELECT).

PostgreSQL: ``CPNET_BENCH_POSTGRES_URL``, else the dev server ``scripts/dev-postgres.sh`` left
running, else that script is started for the run and stopped after it; a fresh database is
created and dropped.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

from common import (
    Section,
    bare_table,
    changed_note,
    console,
    machine,
    num,
    postgres_server,
    ratio,
    source_digest,
    stop_dev_postgres,
    write_report,
)
from sqlalchemy import create_engine, insert, text

from cpnet.market import ledger as L
from cpnet.store import accounts, books
from cpnet.store import ledger as store_ledger
from cpnet.store.db import Store

DEFAULT_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Params:
    seconds: float
    command: str
    databases: tuple[str, ...]


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--ledger-seconds", type=float, default=None,
        help=f"ledger: seconds per row ({DEFAULT_SECONDS:g})",
    )  # fmt: skip
    ap.add_argument(
        "--ledger-db", choices=["sqlite", "postgres", "both"], default="both",
        help="ledger: which databases (both)",
    )  # fmt: skip


def params(args: argparse.Namespace, command: str) -> Params:
    seconds = args.ledger_seconds or (2.0 if args.quick else DEFAULT_SECONDS)
    dbs = ("sqlite", "postgres") if args.ledger_db == "both" else (args.ledger_db,)
    return Params(seconds, command, dbs)


def _rate(fn, seconds: float) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    """Call fn() until `seconds` pass; (calls, calls per second)."""
    fn()  # warm: first statements compile and cache
    n, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        fn()
        n += 1
    return n, n / elapsed


def measure(url: str, seconds: float) -> tuple[list[tuple[str, int, float]], str]:
    """Rows (operation, operations, per second) on one database; and the check's verdict."""
    store = Store(url)
    store.migrate()
    bare = bare_table(store.engine)
    now = time.time()
    with store.tx() as s:
        org = accounts.create_org(s, f"bench-{uuid.uuid4().hex[:8]}", now).id
        store_ledger.topup(s, org, 10**15, "bench-seed", now)
        store_ledger.ensure_account(s, L.provider_account(org), now)
    seq = iter(range(10**12))
    rows: list[tuple[str, int, float]] = []

    def bare_insert() -> None:
        with store.sessions() as s, s.begin():
            s.execute(insert(bare).values(id=f"b{next(seq)}", amount=1))

    def topup() -> None:
        with store.tx() as s:
            store_ledger.topup(s, org, 1, f"t{next(seq)}", now)

    def debit() -> None:
        t = L.Transfer(
            f"d{next(seq)}", L.org_account(org), L.provider_account(org), 1,
            L.TransferKind.ADJUST, now,
        )  # fmt: skip
        with store.tx() as s:
            store_ledger.post(s, t)

    def hold_settle() -> None:
        tid = f"task{next(seq)}"
        with store.tx() as s:
            store_ledger.open_hold(s, org, None, tid, 1_000, 500, now)
        line = store_ledger.Metered(f"a{tid}", "pool", org, 60.0, "24", 400)
        with store.tx() as s:
            store_ledger.settle_hold(s, tid, [line], now)

    replay_t = L.Transfer(
        "bench-replay", L.FUNDING, L.org_account(org), 1, L.TransferKind.TOPUP, now
    )
    with store.tx() as s:
        store_ledger.post(s, replay_t)

    def replay() -> None:
        with store.tx() as s:
            store_ledger.post(s, replay_t)

    for name, fn, per in (
        ("bare INSERT + COMMIT (baseline)", bare_insert, 1),
        ("ledger top-up (1 transfer)", topup, 1),
        ("ledger debit with a floor (1 transfer)", debit, 1),
        ("hold + settle (4 transfers, 2 transactions)", hold_settle, 4),
        ("replay of a written transfer (no-op)", replay, 1),
    ):
        console.print(f"{name} …")
        n, rate = _rate(fn, seconds)
        rows.append((name, n * per, rate * per))
    with store.read() as s:
        c = books.check(s)
    store.close()
    verdict = "balance" if c.ok else f"DO NOT balance: {c.problems[:3]}"
    return rows, f"{c.transfers:,} transfers, books {verdict}"


def run(p: Params) -> Path:
    digest = source_digest()
    sections, notes = [], []
    info = None
    for db in p.databases:
        if db == "sqlite":
            with TemporaryDirectory(prefix="cpnet-bench-ledger-") as d:
                url = f"sqlite:///{Path(d) / 'cpnet.db'}"
                rows, checked = measure(url, p.seconds)
                info = info or machine(None)
            label = "SQLite (WAL, synchronous=NORMAL, the hub's settings)"
        else:
            server, stop = postgres_server()
            name = f"cpnet_bench_ledger_{os.getpid()}"
            admin = create_engine(server, isolation_level="AUTOCOMMIT")
            with admin.connect() as c:
                c.execute(text(f'CREATE DATABASE "{name}"'))
            from sqlalchemy.engine import make_url

            url = make_url(server).set(database=name).render_as_string(hide_password=False)
            try:
                rows, checked = measure(url, p.seconds)
                pg = machine(url)["database"]
            finally:
                with admin.connect() as c:
                    c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                admin.dispose()
                if stop:
                    stop_dev_postgres()
            label = f"{pg} (synchronous_commit on: every COMMIT is flushed to disk)"
        base = rows[0][2]
        sections.append(
            Section(
                label,
                ["operation", "postings", "postings/s", "÷ bare INSERT + COMMIT"],
                [(n, f"{k:,}", num(r), ratio(r, base)) for n, k, r in rows],
            )
        )
        notes.append(f"{db}: after the run {checked} (`books.check`).")
    notes += [
        f"One writer, one transaction per operation, {p.seconds:g} s per row; each row's rate "
        "is postings (transfers) per second, and the last column divides it by the bare "
        "INSERT + COMMIT rate of the same database in the same run.",
        "A ledger posting is three statements in the caller's transaction: INSERT … ON "
        "CONFLICT (id) DO NOTHING RETURNING (a replayed id inserts nothing), the conditional "
        "debit UPDATE (balance − amount ≥ floor) and the credit UPDATE; a top-up also checks "
        "that the organisation exists; hold + settle adds the hold row, its spending-limit "
        "look-up and its compare-and-set, and posts the settlement's 3 transfers as one batch "
        "(one multi-row INSERT, one UPDATE per account).",
        "Durable: SQLite in WAL mode with synchronous=NORMAL survives a process crash (SIGKILL) "
        "but may lose the last commits on power loss; PostgreSQL flushes every COMMIT.",
        "The 2-core Xeon VM is shared with the database server and other work: compare ratios, "
        "not absolute figures, across machines.",
        *changed_note(digest),
    ]
    return write_report(
        "ledger",
        "Ledger postings per second: SQLite and PostgreSQL, against bare insert-and-commit",
        command=p.command,
        sections=sections,
        notes=notes,
        machine_info={**(info or machine(None)), "database": "see each table"},
    )
