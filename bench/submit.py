"""Acknowledged, durable task creations per second through a real hub, on SQLite and
PostgreSQL, next to the same database's bare insert-and-commit rates (``bench/run.py submit``).

Rows, each for ``--submit-seconds`` (one client; a task counts once the hub answered it created,
which it does only after its transaction committed):

- bare INSERT + COMMIT, one row per transaction, and 1,000 rows per transaction: the database's
  own ceilings, measured in the same run before the hub starts;
- ``POST /v1/tasks``: one task per request (SDK ``submit``);
- ``POST /v1/tasks:batch``: 1,000 tasks per request (SDK ``submit_many``): one transaction,
  written with bulk statements for the batch (item by item only when the batch does not pass
  as a whole).

The hub has no agent: tasks stay QUEUED (its scheduler still runs a pass when woken, and finds no
pool). Its CPU per created task is read from /proc before and after each row.
"""

from __future__ import annotations

import argparse
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
from common import (
    Hub,
    Procs,
    Section,
    bare_table,
    changed_note,
    console,
    machine,
    make_world,
    num,
    postgres_server,
    ratio,
    source_digest,
    stop_dev_postgres,
    write_report,
)
from sqlalchemy import insert

from cpnet.store.db import Store

DEFAULT_SECONDS = 10.0
BATCH = 1000
TASK = {"executors": [{"command": ["true"]}], "resources": {"cpu_cores": 1, "ram_gb": 0.25}}
# The same task as a TES client sends it (TES has no idempotency key: each POST makes one).
TES_TASK = {
    "executors": [{"image": "debian:12", "command": ["true"]}],
    "resources": {"cpu_cores": 1, "ram_gb": 0.25},
}


@dataclass(frozen=True, slots=True)
class Params:
    seconds: float
    command: str
    databases: tuple[str, ...]


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--submit-seconds", type=float, default=None,
        help=f"submit: seconds per row ({DEFAULT_SECONDS:g})",
    )  # fmt: skip
    ap.add_argument(
        "--submit-db", choices=["sqlite", "postgres", "both"], default="both",
        help="submit: which databases (both)",
    )  # fmt: skip


def params(args: argparse.Namespace, command: str) -> Params:
    seconds = args.submit_seconds or (2.0 if args.quick else DEFAULT_SECONDS)
    dbs = ("sqlite", "postgres") if args.submit_db == "both" else (args.submit_db,)
    return Params(seconds, command, dbs)


def bare_rates(url: str, seconds: float) -> tuple[float, float]:
    """(rows/s one per commit, rows/s 1,000 per commit) on the database at `url`."""
    store = Store(url)
    table = bare_table(store.engine)
    seq = iter(range(10**12))

    def one() -> int:
        with store.sessions() as s, s.begin():
            s.execute(insert(table).values(id=f"b{next(seq)}", amount=1))
        return 1

    def many() -> int:
        with store.sessions() as s, s.begin():
            s.execute(insert(table), [{"id": f"b{next(seq)}", "amount": 1} for _ in range(BATCH)])
        return BATCH

    out = []
    for fn in (one, many):
        fn()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            n += fn()
        out.append(n / (time.perf_counter() - t0))
    store.close()
    return out[0], out[1]


def hub_rates(hub: Hub, token: str, seconds: float) -> list[tuple[str, int, float, float]]:
    """Rows (what, tasks created, tasks/s, hub CPU ms per task) for single and batch submits."""
    rows = []
    with hub.client(token) as c:
        run = uuid.uuid4().hex[:8]
        seq = iter(range(10**12))

        def single() -> int:
            c.submit({**TASK, "idempotency_key": f"{run}-{next(seq)}"})
            return 1

        def batch() -> int:
            items = [{**TASK, "idempotency_key": f"{run}-{next(seq)}"} for _ in range(BATCH)]
            got = c.submit_many(items)
            return sum(r.status == 201 for r in got)

        tes = httpx.Client(
            base_url=hub.url, headers={"authorization": f"Bearer {token}"}, timeout=30
        )

        def tes_create() -> int:
            r = tes.post("/ga4gh/tes/v1/tasks", json=TES_TASK)
            r.raise_for_status()
            return 1

        for what, fn in (
            ("POST /v1/tasks, 1 task per request", single),
            (f"POST /v1/tasks:batch, {BATCH:,} tasks per request", batch),
            ("POST /ga4gh/tes/v1/tasks (TES create), 1 task per request", tes_create),
        ):
            fn()  # warm
            cpu0 = sum(hub.cpu())
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                n += fn()
            wall = time.perf_counter() - t0
            cpu = sum(hub.cpu()) - cpu0
            rows.append((what, n, n / wall, 1000 * cpu / max(n, 1)))
            console.print(f"{what}: {n / wall:,.0f} tasks/s")
        tes.close()
    return rows


def one_database(db: str, p: Params, procs: Procs, server: str | None) -> tuple[Section, str]:
    data_dir = procs.scratch(f"submit-{db}")
    url = procs.database(server) if db == "postgres" else None
    bare_url = url or f"sqlite:///{data_dir / 'cpnet.db'}"
    hub = Hub(data_dir, url)
    hub.init()  # the store the hub will use, with its settings (SQLite: WAL, NORMAL)
    one, many = bare_rates(bare_url, p.seconds)
    hub.start(procs)
    world = make_world(hub, [])
    rows = hub_rates(hub, world.user_token, p.seconds)
    label = (
        "SQLite (WAL, synchronous=NORMAL, the hub's settings)"
        if db == "sqlite"
        else f"{machine(url)['database']} (synchronous_commit on)"
    )
    table = [
        ("bare INSERT + COMMIT, 1 row per commit (baseline)", "—", num(one), "1.00×", "—"),
        (f"bare INSERT + COMMIT, {BATCH:,} rows per commit", "—", num(many), ratio(many, one), "—"),
    ]
    for what, n, rate, cpu_ms in rows:
        table.append((what, f"{n:,}", num(rate), ratio(rate, one), f"{cpu_ms:.2f}"))
    section = Section(
        label, ["operation", "tasks", "per second", "÷ bare 1 row/commit", "hub CPU ms/task"], table
    )
    return section, f"{db}: batch ÷ bare {BATCH:,} rows/commit = {ratio(rows[1][2], many)}."


def run(p: Params) -> Path:
    digest = source_digest()
    sections, notes = [], []
    with Procs() as procs:
        for db in p.databases:
            server, started = (None, False) if db == "sqlite" else postgres_server()
            try:
                section, note = one_database(db, p, procs, server)
            finally:
                if started:
                    procs.stop_all()  # its hub and database first
                    stop_dev_postgres()
            sections.append(section)
            notes.append(note)
    notes += [
        f"One client, {p.seconds:g} s per row. A task counts when the hub answered 201 for it: "
        "its transaction (the task, its first event, its hold on the organisation's balance, the "
        "quota check, the audit record of the call) has committed.",
        "The batch endpoint writes its 1,000 tasks in one transaction, with bulk statements for "
        "the whole batch (one idempotency look-up, multi-row inserts of tasks, events and holds, "
        "one quota check, one balance change) when it passes as a whole, as here; item by item "
        "with a savepoint each otherwise. The bare 1,000-rows row is the ceiling for that shape.",
        "No agent: every task stays QUEUED, and the scheduler's passes over them (no pool to "
        "place on) are part of the hub's CPU.",
        "The 2-core VM runs the database server, the hub and this client: compare ratios, not "
        "absolute figures, across machines.",
        *changed_note(digest),
    ]
    return write_report(
        "submit",
        "Durable task creations per second: single and batch submissions, SQLite and PostgreSQL",
        command=p.command,
        sections=sections,
        notes=notes,
        machine_info={**machine(None), "database": "see each table"},
    )
