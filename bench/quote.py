"""Quote latency: ``POST /v1/quotes`` over HTTP at 10,000 pools, and its parts in process.

What it measures, in one run:

1. **Over HTTP.** A real hub (``python -m cpnet hub``) whose sites register ``--pools`` pools
   through the agent API (as ``bench/resolve.py`` does: at most ``MAX_POOLS_PER_SITE`` per site).
   Every pool then gets a price book, written straight into the hub's store (the API would take
   one request per pool): a plain on-demand entry for half of them, an entry with a dynamic rule
   for a quarter, and an SCU-hour price with a spot entry for the rest. One client then asks for
   ``--quote-calls`` quotes, one after another, for two specs: a plain task (balanced) and a
   task that states its work in SCU-hours (cheapest). Reported: p50/p99/max latency and the
   hub's CPU per quote. The hub's scheduler loop keeps running; with nothing queued it skips
   its snapshot.
2. **In process.** With the hub stopped, the same store is opened here and the parts of a quote
   are timed: the snapshot of every live pool (``hub.scheduling.pool_views_and_records``) before
   and after the price books were written (what books add to every scheduling pass too), the
   ranking (``sched.rank`` over every pool), turning the decision into options
   (``market.quotes.options``), and the whole ``hub.market.make_quote``.

Run: ``.venv/bin/python bench/quote.py [--quote-pools N] [--quote-calls N] [--quick]`` (or via
``bench/run.py quote``). Writes ``bench/results/quote.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from common import (
    BenchError,
    Hub,
    Procs,
    Section,
    changed_note,
    cpu_seconds,
    machine,
    make_world,
    ms,
    percentile,
    progress,
    source_digest,
    standalone,
    write_report,
)

from cpnet.auth.model import Principal, Role
from cpnet.config import HubSettings
from cpnet.hub import market, scheduling
from cpnet.hub.service import Hub as HubService
from cpnet.market import prices, quotes
from cpnet.registry.model import MAX_POOLS_PER_SITE, Registration
from cpnet.sched import rank
from cpnet.store import prices as price_store
from cpnet.store.tables import User
from cpnet.tasks.model import TaskSpec

PLAIN = {"executors": [{"command": ["true"]}], "resources": {"cpu_cores": 4, "ram_gb": 8}}
SCU = {
    **PLAIN,
    "work": {"profile": "general", "scu_hours": 2.0},
    "objective": "cheapest",
}


@dataclass
class Params:
    pools: int
    calls: int
    command: str


def layout(n: int) -> tuple[int, int]:
    sites = max(1, -(-n // MAX_POOLS_PER_SITE))
    return sites, -(-n // sites)


def register_pools(hub: Hub, n: int) -> tuple[list[str], str]:
    """Sites and `n` pools registered through the agent API; (pool ids, the user's token)."""
    n_sites, per_site = layout(n)
    sites = [f"q{i}" for i in range(n_sites)]
    world = make_world(hub, sites)
    ids: list[str] = []
    for k, site in enumerate(sites):
        names = [f"p{j:05d}" for j in range(k * per_site, min(n, (k + 1) * per_site))]
        body = Registration(
            agent_version="bench",
            heartbeat_interval_s=3600,  # online for the whole benchmark without heartbeats
            pools=[
                {
                    "name": name,
                    "hardware": {
                        "cpu_cores": 32 + 32 * (j % 4),
                        "memory_gb": 256,
                        "cpu_model": "bench cpu",
                    },
                    "price": {"cpu_core_hour": 0.05 + 0.01 * (j % 7)},
                }
                for j, name in enumerate(names)
            ],
        ).model_dump(mode="json")
        sid = world.site_ids[site]
        r = httpx.post(
            f"{hub.url}/v1/sites/{sid}/register",
            json=body,
            headers={"Authorization": f"Bearer {world.site_tokens[site]}"},
            timeout=120,
        )
        if r.status_code != 200:
            raise BenchError(f"register {sid}: HTTP {r.status_code}: {r.text[:500]}")
        ids.extend(r.json()["pools"].values())
    return ids, world.user_token


def write_books(data_dir: Path, ids: list[str]) -> None:
    """A price book for every pool, straight into the store (one transaction)."""
    h = HubService(HubSettings(data_dir=data_dir))
    now = time.time()
    rule = prices.DynamicRule(target=0.6, k=1.0, floor=0.8, cap=1.5)
    with h.store.tx() as s:
        for i, pool_id in enumerate(ids):
            base = 0.04 + 0.01 * (i % 9)
            if i % 4 in (0, 1):
                entries = [prices.Entry(cpu_core_hour=base, valid_from=now - 60)]
            elif i % 4 == 2:
                entries = [prices.Entry(cpu_core_hour=base, valid_from=now - 60, dynamic=rule)]
            else:
                entries = [
                    prices.Entry(
                        cpu_core_hour=base,
                        scu_hour=(("general", 0.2 + 0.01 * (i % 5)),),
                        valid_from=now - 60,
                    ),
                    prices.Entry(kind="spot", cpu_core_hour=base / 3, valid_from=now - 60),
                ]
            price_store.add(s, pool_id, entries, "bench", now)
    h.store.close()


@dataclass
class Row:
    name: str
    samples: list[float]
    extra: str = ""


def over_http(hub: Hub, token: str, spec: dict, calls: int) -> tuple[list[float], float, int]:
    """(latencies, hub CPU seconds per quote, options in the last answer)."""
    headers = {"Authorization": f"Bearer {token}"}
    out = []
    n_options = 0
    with httpx.Client(base_url=hub.url, headers=headers, timeout=120) as c:
        r = c.post("/v1/quotes", json=spec)  # warm-up (imports, caches)
        if r.status_code != 201:
            raise BenchError(f"POST /v1/quotes: HTTP {r.status_code}: {r.text[:500]}")
        cpu0 = sum(cpu_seconds(hub.proc.pid))  # type: ignore[union-attr]
        for _ in range(calls):
            t0 = time.perf_counter()
            r = c.post("/v1/quotes", json=spec)
            out.append(time.perf_counter() - t0)
            if r.status_code != 201:
                raise BenchError(f"POST /v1/quotes: HTTP {r.status_code}: {r.text[:500]}")
            n_options = len(r.json()["options"])
        cpu = sum(cpu_seconds(hub.proc.pid)) - cpu0  # type: ignore[union-attr]
    return out, cpu / calls, n_options


def sample(fn: Callable[[], object], calls: int) -> list[float]:
    fn()
    out = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def in_process(data_dir: Path, calls: int, before_books: list[float]) -> list[Row]:
    h = HubService(HubSettings(data_dir=data_dir))
    with h.store.read() as s:
        user = s.query(User).filter(User.name == "bench-user").one()
        who = Principal(token_id="bench", role=Role.USER, org_id=user.org_id, user_id=user.id)
    rows = [Row("snapshot: `pool_views_and_records`, no price books", before_books)]
    now = time.time()

    def snapshot() -> object:
        with h.store.read() as s:
            return scheduling.pool_views_and_records(s, now)

    rows.append(
        Row("snapshot: `pool_views_and_records`, every pool with a book", sample(snapshot, calls))
    )
    views, records = snapshot()  # type: ignore[misc]
    with h.store.read() as s:
        network = scheduling.network_map(s, now)
    for name, spec in (("plain", PLAIN), ("SCU work", SCU)):
        rows += _parts(h, who, name, spec, (views, records, network, now), calls)
    h.store.close()
    return rows


def _parts(h, who, name: str, spec: dict, snap, calls: int) -> list[Row]:  # type: ignore[no-untyped-def]
    """Rank, options and the whole make_quote for one spec on one snapshot."""
    views, _records, network, now = snap
    stored = TaskSpec.model_validate(spec).model_dump(mode="json", exclude_none=True)
    req = scheduling.request_from_dict("bench", stored, (), now)
    decision = rank(req, views, network=network, keep=5)
    by_id = {v.id: v for v in views}
    spec_model = TaskSpec.model_validate(spec)

    def options() -> object:
        return quotes.options(
            decision,
            by_id,
            now=now,
            fee_bps=500,
            work_scu_h=req.work_scu_h,
            profile=req.profile,
        )

    return [
        Row(
            f"`sched.rank` over every pool, every placement explained ({name})",
            sample(lambda: rank(req, views, network=network), calls),
        ),
        Row(
            f"`sched.rank(keep=5)`: the 5 best explained, as a quote does ({name})",
            sample(lambda: rank(req, views, network=network, keep=5), calls),
        ),
        Row(f"`market.quotes.options`, 5 options ({name})", sample(options, calls)),
        Row(
            f"`hub.market.make_quote`, whole ({name})",
            sample(lambda: market.make_quote(h, who, spec_model, 5), calls),
        ),
    ]


def run(p: Params) -> Path:
    info = machine()
    digest = source_digest()
    with Procs() as procs, progress() as prog:
        work = procs.scratch("quote")
        hub = Hub(work / "hub")
        hub.data_dir.mkdir()
        hub.init()
        hub.start(procs)
        bar = prog.add_task("register pools", total=1, info=f"{p.pools} pools")
        ids, token = register_pools(hub, p.pools)
        prog.update(bar, completed=1)
        # The snapshot before any book exists, for comparison.
        h = HubService(HubSettings(data_dir=hub.data_dir))
        now = time.time()

        def snapshot() -> object:
            with h.store.read() as s:
                return scheduling.pool_views_and_records(s, now)

        before = sample(snapshot, p.calls)
        h.store.close()
        bar = prog.add_task("price books", total=1, info="")
        write_books(hub.data_dir, ids)
        prog.update(bar, completed=1)
        http_rows = []
        bar = prog.add_task("quotes over HTTP", total=2, info="")
        for name, spec in (("plain task, balanced", PLAIN), ("SCU work, cheapest", SCU)):
            lat, cpu, n_opt = over_http(hub, token, spec, p.calls)
            http_rows.append((name, lat, cpu, n_opt))
            prog.advance(bar, 1)
        procs.stop(hub.proc)  # type: ignore[arg-type]
        bar = prog.add_task("in process", total=1, info="")
        rows = in_process(hub.data_dir, p.calls, before)
        prog.update(bar, completed=1)
    sections = [
        Section(
            f"Over HTTP: `POST /v1/quotes`, {len(ids):,} pools with price books, "
            f"{p.calls} quotes in a row",
            ["spec", "p50", "p99", "max", "hub CPU per quote", "options"],
            [
                [
                    f"{name}",
                    ms(percentile(lat, 50)),
                    ms(percentile(lat, 99)),
                    ms(max(lat)),
                    ms(cpu),
                    str(n),
                ]
                for name, lat, cpu, n in http_rows
            ],
        ),
        Section(
            f"In process: the parts of a quote, {len(ids):,} pools, {p.calls} calls each",
            ["step", "p50", "p99", "max"],
            [
                [
                    r.name,
                    ms(percentile(r.samples, 50)),
                    ms(percentile(r.samples, 99)),
                    ms(max(r.samples)),
                ]
                for r in rows
            ],
        ),
    ]
    notes = [
        f"{len(ids):,} pools registered through the agent API on {layout(len(ids))[0]} sites; "
        "each pool's price book written straight into the store: half a plain on-demand entry, "
        "a quarter with a dynamic rule (0.8×–1.5×), a quarter an SCU-hour price for `general` "
        "plus a spot entry.",
        "A quote snapshots every live pool with its price book, ranks them all with the "
        "scheduler's own `rank` (the same policy the hub's loop uses; `keep=5` phrases the "
        "reasons of the 5 best only), keeps those as options and writes the quote row; the "
        "snapshot is most of it.",
        "No task is queued during the HTTP rows, so the hub's scheduler loop skips its "
        "snapshot of every pool (with queued tasks, each pass would also snapshot every pool and "
        "compete with quotes for the hub's CPU); client and hub share the same cores, and other "
        "work ran on the machine (see the load average): a hub with a machine of its own does "
        "better.",
        "Quotes are sequential (one client): p99 of a few dozen calls is close to the max.",
        *changed_note(digest),
    ]
    return write_report(
        "quote",
        f"Quote latency at {len(ids):,} pools",
        command=p.command,
        sections=sections,
        notes=notes,
        machine_info=info,
    )


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--quote-pools", type=int, default=10_000, help="quote: pools (default 10000)")
    ap.add_argument(
        "--quote-calls", type=int, default=30, help="quote: quotes per row (default 30)"
    )


def params(args: argparse.Namespace, command: str) -> Params:
    if getattr(args, "quick", False):
        return Params(min(args.quote_pools, 1000), min(args.quote_calls, 5), command)
    return Params(args.quote_pools, args.quote_calls, command)


def main(argv: list[str] | None = None) -> int:
    return standalone(
        "quote.py", __doc__, add_args, params, run, "1000 pools, 5 calls per row", argv
    )


if __name__ == "__main__":
    sys.exit(main())
