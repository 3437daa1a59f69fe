"""Identifier resolution: ``GET /v1/resolve/{id}`` over HTTP, and ``Resolver`` in process.

What it measures, side by side in one run:

1. **Over HTTP.** A real hub (``python -m cpnet hub``) with one provider whose sites register
   ``--pools`` pools through the agent API (``POST /v1/sites/{id}/register`` with each site's
   token, body ``cpnet.registry.model.Registration``; a site may declare at most
   ``MAX_POOLS_PER_SITE`` pools, so the pools are spread over as many sites as needed). A load
   generator keeps ``--connections`` keep-alive connections busy for ``--seconds`` against
   ``GET /v1/health`` (the baseline: the cheapest route) and then ``GET /v1/resolve/{id}``
   rotating over every pool id, after a warm-up that fills the resolver's cache. Reported:
   requests/s, p50/p99 latency, errors, the hub's CPU per request, and resolve ÷ health.
   The load generator is ``wrk`` when installed (a Lua script rotates the ids), else a Python
   asyncio generator over raw keep-alive sockets in several processes. Client and hub share the
   same cores, so the figures are a floor for a hub with a machine of its own.
2. **In process.** With the hub stopped, the same store is opened in this process
   (``cpnet.hub.service.Hub``) and its ``Resolver`` is called directly: the cached path
   (``resolve_bytes``, and ``cached`` which the route tries first), ``cpnet.ident.parse``, signing
   alone (``sign_record``), and a cold resolve (cache cleared before every call: store read +
   record + Ed25519 signature + JSON). The baseline is a plain ``dict.get`` over the same ids in
   the same loop, so the ratio is the resolver's own overhead. Cached loops run in slices well
   under the cache's lifetime (about 5 s, jittered), re-warming between slices outside the
   timed part.

Run: ``.venv/bin/python bench/resolve.py [--seconds S] [--quick]`` (or via ``bench/run.py``).
Writes ``bench/results/resolve.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from common import (
    HOST,
    PY,
    ROOT,
    BenchError,
    Hub,
    Procs,
    Section,
    changed_note,
    cores,
    cpu_seconds,
    free_port,
    machine,
    make_world,
    ms,
    num,
    percentile,
    progress,
    ratio,
    standalone,
    wait_until,
    write_report,
)

from cpnet import ident
from cpnet.config import HubSettings
from cpnet.registry.model import MAX_POOLS_PER_SITE, Registration

TARGET_HTTP = 15_000.0
TARGET_IN_PROCESS = 1_000_000.0
SLICE_S = 0.25  # cached loops are timed in slices this long (the cache keeps records ~5 s)
MAX_CALLS = 100_000_000  # every in-process loop also stops after this many calls

WRK_SCRIPT = """
-- Rotate over the ids in %(ids)s; print one JSON line with the results at the end.
local ids = {}
for line in io.lines("%(ids)s") do ids[#ids + 1] = line end
local i = 0
local path = "%(path)s"
request = function()
  i = i + 1
  if path == "" then
    return wrk.format("GET", "/v1/resolve/" .. ids[(i %% #ids) + 1])
  end
  return wrk.format("GET", path)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%%d,"duration_us":%%d,"p50_us":%%d,"p99_us":%%d,"mean_us":%%f,' ..
    '"connect":%%d,"read":%%d,"write":%%d,"status":%%d,"timeout":%%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


@dataclass
class Params:
    pools: int = 200
    seconds: float = 10.0
    connections: int = 32
    threads: int = 1
    loadgen: str = "auto"  # auto | wrk | python
    command: str = "bench/resolve.py"


@dataclass
class Load:
    """One HTTP load run."""

    route: str
    requests: int
    seconds: float
    p50_s: float
    p99_s: float
    errors: int
    hub_cpu_s: float = 0.0
    gen_cpu_s: float = 0.0

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class InProcess:
    rows: list[tuple[str, float, int]] = field(default_factory=list)  # what, calls/s, calls


# ---- the hub and its pools ----------------------------------------------------------------------


def layout(n: int) -> tuple[int, int]:
    """(sites, pools per site) for `n` pools, as few sites as the per-site limit allows."""
    sites = max(1, -(-n // MAX_POOLS_PER_SITE))
    return sites, -(-n // sites)


@dataclass
class Server:
    """Something to load: its URL and port, and its process for CPU accounting."""

    name: str
    port: int
    pid: int

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def cpu(self) -> float:
        return cpu_seconds(self.pid)[0]


def register_pools(hub: Hub, n: int) -> list[str]:
    """Create sites and register `n` pools on them through the agent API; return the pool ids."""
    n_sites, per_site = layout(n)
    sites = [f"r{i}" for i in range(n_sites)]
    world = make_world(hub, sites)
    ids: list[str] = []
    for k, site in enumerate(sites):
        names = [f"p{j:03d}" for j in range(k * per_site, min(n, (k + 1) * per_site))]
        body = Registration(
            agent_version="bench",
            heartbeat_interval_s=3600,  # stay online for the whole benchmark without heartbeats
            pools=[
                {
                    "name": name,
                    "hardware": {"cpu_cores": 64, "memory_gb": 256, "cpu_model": "bench cpu"},
                    "labels": {"bench": "resolve"},
                    "price": {"cpu_core_hour": 0.1},
                }
                for name in names
            ],
        ).model_dump(mode="json")
        sid = world.site_ids[site]
        r = httpx.post(
            f"{hub.url}/v1/sites/{sid}/register",
            json=body,
            headers={"Authorization": f"Bearer {world.site_tokens[site]}"},
            timeout=60,
        )
        if r.status_code != 200:
            raise BenchError(f"register {sid}: HTTP {r.status_code}: {r.text[:500]}")
        ids.extend(r.json()["pools"].values())
    with hub.client(world.user_token) as c:
        env = c.resolve(ids[0])
        if env.get("record", {}).get("id") != ids[0]:
            raise BenchError(f"resolve({ids[0]}) answered {str(env)[:300]}")
    return ids


# ---- load generators ----------------------------------------------------------------------------


def run_wrk(url: str, path: str, ids_file: Path, p: Params, seconds: float, work: Path) -> dict:
    """One wrk run; `path` "" means rotate over the ids in `ids_file`."""
    script = work / "rotate.lua"
    script.write_text(WRK_SCRIPT % {"ids": ids_file, "path": path})
    argv = [
        "wrk",
        f"-t{p.threads}",
        f"-c{p.connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode != 0:
        raise BenchError(f"wrk failed: {out.stderr.strip()[-1000:]}")
    line = next((x for x in out.stdout.splitlines() if x.startswith("{")), None)
    if line is None:
        raise BenchError(f"wrk printed no result: {out.stdout[-1000:]}")
    return json.loads(line)


async def _conn_loop(
    paths: list[str], offset: int, until: float, lat: list[float], errors: list[int]
) -> int:
    reader, writer = await asyncio.open_connection(HOST, int(os.environ["BENCH_PORT"]))
    n, i = 0, offset
    reqs = [f"GET {p} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode() for p in paths]
    try:
        while time.perf_counter() < until:
            t = time.perf_counter()
            writer.write(reqs[i % len(reqs)])
            i += 1
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                errors[0] += 1
            lat.append(time.perf_counter() - t)
            n += 1
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        errors[0] += 1  # the server closed the connection or answered garbage: stop this one
    finally:
        writer.close()
    return n


def _loadgen_proc(paths: list[str], conns: int, seconds: float, port: int, q: Any) -> None:
    os.environ["BENCH_PORT"] = str(port)

    async def main() -> tuple[int, list[float], int]:
        until = time.perf_counter() + seconds
        lat: list[float] = []
        errors = [0]
        counts = await asyncio.gather(
            *(_conn_loop(paths, k * 7, until, lat, errors) for k in range(conns))
        )
        return sum(counts), lat, errors[0]

    t0 = time.perf_counter()
    n, lat, errors = asyncio.run(main())
    q.put((n, time.perf_counter() - t0, lat[:: max(1, len(lat) // 20000)], errors))


def run_python(port: int, paths: list[str], p: Params, seconds: float) -> dict:
    """The fallback generator: `procs` processes × asyncio keep-alive connections."""
    nproc = max(1, min(p.threads, cores()))
    per = max(1, p.connections // nproc)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [
        ctx.Process(target=_loadgen_proc, args=(paths, per, seconds, port, q), daemon=True)
        for _ in range(nproc)
    ]
    for pr in procs:
        pr.start()
    try:
        results = [q.get(timeout=seconds + 60) for _ in procs]
    finally:
        for pr in procs:
            pr.join(timeout=10)
            if pr.is_alive():
                pr.kill()
    lat = [x for r in results for x in r[2]]
    return {
        "requests": sum(r[0] for r in results),
        "duration_us": max(r[1] for r in results) * 1e6,
        "p50_us": percentile(lat, 50) * 1e6,
        "p99_us": percentile(lat, 99) * 1e6,
        "status": sum(r[3] for r in results),
        "connect": 0,
        "read": 0,
        "write": 0,
        "timeout": 0,
    }


def children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


def load(
    srv: Server, route: str, path: str, ids: list[str], p: Params, seconds: float, work: Path
) -> Load:
    """One load run against `path` ("" = rotate over `ids`), with the server's and client's
    CPU."""
    srv0, gen0 = srv.cpu(), children_cpu()
    if p.loadgen == "wrk":
        ids_file = work / "ids.txt"
        ids_file.write_text("\n".join(ids) + "\n")
        r = run_wrk(srv.url, path, ids_file, p, seconds, work)
    else:
        paths = [path] if path else [f"/v1/resolve/{i}" for i in ids]
        r = run_python(srv.port, paths, p, seconds)
    errors = sum(int(r[k]) for k in ("connect", "read", "write", "status", "timeout"))
    return Load(
        route,
        int(r["requests"]),
        float(r["duration_us"]) / 1e6,
        float(r["p50_us"]) / 1e6,
        float(r["p99_us"]) / 1e6,
        errors,
        srv.cpu() - srv0,
        children_cpu() - gen0,
    )


# ---- in process ---------------------------------------------------------------------------------


def calls_per_s(
    fn: Callable[[str], object],
    ids: list[str],
    seconds: float,
    warm: Callable[[], None] | None = None,
    slice_s: float = SLICE_S,
) -> tuple[float, int]:
    """Call `fn` over `ids` round-robin for about `seconds`, in slices of at most `slice_s`
    (with `warm()` run untimed before each slice); return (calls/s, calls)."""
    calls, spent, reps = 0, 0.0, 1
    wall_limit = time.monotonic() + seconds * 3 + 5
    while spent < seconds and calls < MAX_CALLS and time.monotonic() < wall_limit:
        if warm is not None:
            warm()
        t0 = time.perf_counter()
        for _ in range(reps):
            for x in ids:
                fn(x)
        dt = time.perf_counter() - t0
        spent += dt
        calls += reps * len(ids)
        if dt < slice_s / 2:
            reps *= 2
    return calls / spent, calls


def in_process(
    data_dir: Path, ids: list[str], seconds: float, bar: Callable[[], None]
) -> InProcess:
    """The resolver of the (stopped) hub's store, called directly in this process."""
    from cpnet.hub.service import Hub as HubService
    from cpnet.ident import sign_record

    h = HubService(HubSettings(data_dir=data_dir))
    try:
        r = h.resolver

        def warm() -> None:
            for x in ids:
                r.resolve_bytes(x)

        warm()
        out = InProcess()
        plain = {x: r.cached(x) for x in ids}
        out.rows.append(
            ("`dict.get` on the same ids (baseline)", *calls_per_s(plain.get, ids, seconds))
        )
        bar()
        out.rows.append(
            (
                "`Resolver.cached(id)` (the route's first try)",
                *calls_per_s(r.cached, ids, seconds, warm),
            )
        )
        bar()
        out.rows.append(
            (
                "`Resolver.resolve_bytes(id)`, cached",
                *calls_per_s(r.resolve_bytes, ids, seconds, warm),
            )
        )
        bar()
        out.rows.append(("`cpnet.ident.parse(id)`", *calls_per_s(ident.parse, ids, seconds)))
        bar()
        record = json.loads(r.resolve_bytes(ids[0]))["record"]
        now = datetime.now(UTC)

        def sign(_: str) -> object:
            return sign_record(record, r.key, issued_at=now, ttl_s=300)

        out.rows.append(
            ("`sign_record` alone (canonical JSON + Ed25519)", *calls_per_s(sign, ids, seconds))
        )
        bar()

        def cold(x: str) -> bytes:
            r._cache.clear()
            return r.resolve_bytes(x)

        out.rows.append(
            (
                "`Resolver.resolve_bytes(id)`, cold (cache cleared: store + record + sign)",
                *calls_per_s(cold, ids, seconds),
            )
        )
        bar()
    finally:
        h.store.close()
    return out


# ---- report -------------------------------------------------------------------------------------


def per_req(x: Load) -> float:
    """Server CPU microseconds per request."""
    return 1e6 * x.hub_cpu_s / max(1, x.requests)


def report(p: Params, ids: list[str], loads: list[Load], inproc: InProcess, info: dict) -> Path:
    bare, health, resolve = loads
    http = Section(
        f"Over HTTP: {p.connections} keep-alive connections, {p.seconds:g} s per row",
        [
            "route",
            "requests",
            "requests/s",
            "p50",
            "p99",
            "errors + non-2xx",
            "server CPU per request",
            "load generator CPU",
            "requests/s ÷ health",
        ],
        [
            [
                x.route,
                f"{x.requests:,}",
                num(x.rate),
                ms(x.p50_s),
                ms(x.p99_s),
                x.errors,
                f"{per_req(x):.0f} µs",
                f"{x.gen_cpu_s:.1f} s",
                ratio(x.rate, health.rate),
            ]
            for x in loads
        ],
    )
    base = inproc.rows[0][1]
    inp = Section(
        f"In process: {len(ids)} pool ids round-robin, about {p.seconds:g} s per row",
        ["operation", "calls", "calls/s", "per call", "calls/s ÷ dict.get"],
        [
            [what, f"{n:,}", num(rate), f"{1e9 / rate:,.0f} ns", ratio(rate, base)]
            for what, rate, n in inproc.rows
        ],
    )
    cached = inproc.rows[2][1]
    gen = (
        f"`wrk` ({p.threads} thread, Lua script rotating the ids)"
        if p.loadgen == "wrk"
        else f"a Python asyncio generator over raw keep-alive sockets "
        f"({max(1, min(p.threads, cores()))} process; used when wrk is not installed)"
    )
    n_sites, per_site = layout(p.pools)
    in_target = cached / TARGET_IN_PROCESS
    notes = [
        f"Targets (reported, not asserted): ≥ {TARGET_HTTP:,.0f} resolves/s over HTTP, measured "
        f"{num(resolve.rate)} ({resolve.rate / TARGET_HTTP:.0%} of it); ≥ "
        f"{TARGET_IN_PROCESS:,.0f}/s in process, measured {num(cached)} cached "
        f"`resolve_bytes` ({in_target:.0%} of it).",
        f"Load generator: {gen}; {p.connections} connections. It shares the same {cores()} "
        "cores with the server (its CPU is in the table), so a hub with a machine of its own "
        "does better.",
        f"{len(ids)} pools registered through the agent API on {n_sites} sites (≤ {per_site} "
        f"per site: a site may declare at most {MAX_POOLS_PER_SITE} pools).",
        "`GET /v1/health` is the baseline of the ratio: the hub's cheapest route (no auth, no "
        "store). The bare uvicorn ASGI app is the floor of the HTTP stack here: the same server "
        "and settings without FastAPI or cpnet; resolve reaches "
        f"{ratio(resolve.rate, bare.rate)} of its rate.",
        f"Where the time goes: the hub spends {per_req(resolve):.0f} µs of CPU per resolve "
        f"and {per_req(health):.0f} µs per health check, against {per_req(bare):.0f} µs for "
        f"the bare ASGI app, while the resolver itself takes {1e6 / cached:.2f} µs in process: "
        "nearly all of a resolve's cost is the web stack around it.",
        "Every row follows an untimed warm-up (1 s; 2 s for resolve, which fills the resolver's "
        "cache). The cache keeps a signed record about 5 s (jittered ±25 %, so records signed "
        "together do not expire together); during the run every id is re-signed about every 5 s: "
        "the cold path is part of the HTTP figure.",
        "In-process rows run with the hub stopped, on its SQLite store; the cold row clears the "
        "whole cache before each call, so every call reads the store and signs.",
        "Latency percentiles are per request as the load generator saw them; errors count "
        "connect/read/write/timeout errors and non-2xx answers.",
    ]
    notes += changed_note(info["cpnet source digest"])
    return write_report(
        "resolve",
        "Identifier resolution: over HTTP and in process",
        command=p.command,
        sections=[http, inp],
        notes=notes,
        machine_info=info,
    )


def start_bare(procs: Procs, work: Path) -> Server:
    """The bare uvicorn ASGI app (bench/bare_asgi.py) on a free port."""
    port = free_port()
    log = work / "bare-asgi.log"
    proc = procs.start("bare-asgi", [PY, str(ROOT / "bench" / "bare_asgi.py"), str(port)], log)

    def up() -> bool:
        if proc.poll() is not None:
            raise BenchError(f"bare_asgi.py exited: {log.read_text()[-2000:]}")
        try:
            return httpx.get(f"http://{HOST}:{port}/", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(up, 60, "bare_asgi.py to answer", every=0.1)
    return Server("bare", port, proc.pid)


def run(p: Params) -> Path:
    """Both halves in one run; returns the result file."""
    if p.loadgen == "auto":
        p.loadgen = "wrk" if shutil.which("wrk") else "python"
    info = machine()
    with Procs() as procs, progress() as prog:
        work = procs.scratch("resolve")
        bare = start_bare(procs, work)
        hub = Hub(work / "hub")
        hub.data_dir.mkdir()
        hub.init()
        hub.start(procs)
        bar = prog.add_task("register pools", total=1, info=f"{p.pools} pools")
        ids = register_pools(hub, p.pools)
        prog.update(bar, completed=1)
        srv = Server("hub", hub.port, hub.proc.pid)  # type: ignore[union-attr]

        runs = [
            (bare, "bare uvicorn ASGI app (`bench/bare_asgi.py`)", "/", 1.0),
            (srv, "`GET /v1/health`", "/v1/health", 1.0),
            (srv, "`GET /v1/resolve/{id}`", "", 2.0),
        ]
        bar = prog.add_task("HTTP load", total=len(runs), info=p.loadgen)
        loads = []
        for target, route, path, warm in runs:
            prog.update(bar, info=f"{p.loadgen}: {route}")
            load(target, "warm-up", path, ids, p, warm, work)
            loads.append(load(target, route, path, ids, p, p.seconds, work))
            prog.advance(bar, 1)
        procs.stop(hub.proc)  # type: ignore[arg-type]

        bar = prog.add_task("in process", total=6, info="")
        inproc = in_process(hub.data_dir, ids, p.seconds / 3, lambda: prog.advance(bar, 1))
    return report(p, ids, loads, inproc, info)


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--pools", type=int, default=200, help="pools to register (default 200)")
    ap.add_argument(
        "--seconds", type=float, default=10.0, help="seconds per HTTP load run (default 10)"
    )
    ap.add_argument(
        "--connections", type=int, default=32, help="keep-alive connections (default 32)"
    )
    ap.add_argument(
        "--loadgen",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="HTTP load generator (default: wrk if installed)",
    )


def params(args: argparse.Namespace, command: str) -> Params:
    p = Params(
        pools=args.pools,
        seconds=args.seconds,
        connections=args.connections,
        loadgen=args.loadgen,
        command=command,
    )
    if getattr(args, "quick", False):
        p.seconds = min(p.seconds, 3.0)
    return p


def main(argv: list[str] | None = None) -> int:
    return standalone("resolve.py", __doc__, add_args, params, run, "3 s per run", argv)


if __name__ == "__main__":
    sys.exit(main())
