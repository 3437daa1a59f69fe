"""What SLAs and reputation cost the hub, in process on SQLite (docs/market.md).

A store with ``--pools`` pools (registered in process, 64 per site), two liveness transitions
each, ``--attempts`` attempts that ended over the last day spread over the pools (a tenth of
them SYSTEM_ERROR), and SLA terms on ``--sla-pools`` of them whose first window has just ended.
Timed:

1. ``store/sla.scores``: what every scheduling pass, quote and discovery list now reads more
   (each pool's stored reputation), next to ``hub.scheduling.pool_views`` (the whole snapshot).
2. ``hub/sla.refresh_reputations``: the sweep's reputation part (every pool, one transaction).
3. ``hub/sla.evaluate_due``: evaluating the windows that ended (one transaction each).

Run: ``.venv/bin/python bench/sla.py [--pools N] [--attempts N] [--sla-pools N]``. Prints a
Markdown table; ``--out FILE`` writes it too.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert, select

from cpnet.auth.model import Principal, Role
from cpnet.hub import scheduling
from cpnet.hub import sla as hub_sla
from cpnet.market import sla
from cpnet.registry.model import MAX_POOLS_PER_SITE, Region, Registration
from cpnet.store import accounts, registry
from cpnet.store import sla as sla_store
from cpnet.store import tasks as ts
from cpnet.store.db import Store
from cpnet.store.tables import Attempt
from cpnet.tasks.model import TaskSpec

DAY = 86400.0
WINDOW = 3600.0


def build(store: Store, pools: int, attempts: int, sla_pools: int, now: float) -> list[str]:
    """The store described in the module's doc; the pool ids."""
    t0 = (now // WINDOW - 1) * WINDOW - 1  # terms declared just before the window that ended
    ids: list[str] = []
    with store.tx() as s:
        org = accounts.create_org(s, "bench", t0)
        user = accounts.create_user(s, org.id, "u", Role.USER, t0)
        prov = registry.create_provider(s, org.id, "Bench", "cn.dev", t0)
        sites = -(-pools // MAX_POOLS_PER_SITE)
        for k in range(sites):
            site = registry.create_site(
                s, prov, name=f"s{k}", type="general", region=Region(code="440300"), now=t0
            )
            names = range(k * MAX_POOLS_PER_SITE, min(pools, (k + 1) * MAX_POOLS_PER_SITE))
            reg = Registration(
                heartbeat_interval_s=3600,
                pools=[
                    {"name": f"p{j}", "hardware": {"cpu_cores": 32, "memory_gb": 128}}
                    for j in names
                ],
            )
            ids += registry.register(s, site.id, reg, t0).pools.values()
        who = Principal("t", Role.USER, org.id, user.id)
        task, _ = ts.create_task(s, who, TaskSpec(executors=[{"command": ["true"]}]), t0)
        sla_store.mark(s, ids, False, now - DAY / 2)
        sla_store.mark(s, ids, True, now - DAY / 2 + 600)
        rows = []
        for n in range(attempts):
            end = now - DAY * (n % 1000) / 1000
            rows.append(
                {
                    "id": f"att_{n}",
                    "task_id": task.id,
                    "n": n + 1,
                    "pool_id": ids[n % len(ids)],
                    "site_id": "bench",
                    "state": "SYSTEM_ERROR" if n % 10 == 0 else "COMPLETE",
                    "demand": {"cpu_cores": 1},
                    "created_at": end - 60,
                    "start_time": end - 50,
                    "end_time": end,
                }
            )
        for i in range(0, len(rows), 5000):
            s.execute(insert(Attempt), rows[i : i + 5000])
        terms = sla.Terms(window_s=WINDOW, credit_bps=1000, availability=0.999)
        for pid in ids[:sla_pools]:
            sla_store.add_terms(s, pid, terms, sla_store.ADMIN, "bench", t0)
    return ids


def timed(fn, calls: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pools", type=int, default=10_000)
    ap.add_argument("--attempts", type=int, default=100_000)
    ap.add_argument("--sla-pools", type=int, default=1_000)
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    now = time.time()
    with tempfile.TemporaryDirectory() as d:
        store = Store(f"sqlite:///{d}/bench.db")
        store.migrate()
        started = time.perf_counter()
        build(store, args.pools, args.attempts, args.sla_pools, now)
        print(f"built in {time.perf_counter() - started:.1f} s", file=sys.stderr)

        def scores() -> None:
            with store.read() as s:
                sla_store.scores(s)

        def views() -> None:
            with store.read() as s:
                scheduling.pool_views(s, now)

        # Reputations first: the reads below then find every pool scored.
        rows = [
            (
                "`hub/sla.refresh_reputations` (every pool)",
                timed(lambda: hub_sla.refresh_reputations(store, now, 6 * 3600.0), args.calls),
            ),
            ("`store/sla.scores` (read by every pass)", timed(scores, args.calls)),
            ("`hub.scheduling.pool_views` (the whole snapshot)", timed(views, args.calls)),
        ]
        evaluated: list[int] = []
        start = time.perf_counter()
        evaluated.append(hub_sla.evaluate_due(store, now)[0])
        rows.append(
            (f"`hub/sla.evaluate_due` ({evaluated[0]} windows)", [time.perf_counter() - start])
        )
        with store.read() as s:
            scored = len(s.execute(select(sla_store.PoolReputation.pool_id)).all())
        store.close()
    lines = [
        f"SQLite, {args.pools:,} pools ({scored:,} scored), {args.attempts:,} attempts ended in "
        f"the last day, {args.sla_pools:,} pools with terms; {args.calls} calls each.",
        "",
        "| what | median | max |",
        "|---|---:|---:|",
    ]
    for name, ts_ in rows:
        lines.append(
            f"| {name} | {statistics.median(ts_) * 1000:,.0f} ms | {max(ts_) * 1000:,.0f} ms |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
