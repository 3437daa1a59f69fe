"""Task submissions per second through one hub replica and through two, on one PostgreSQL:
direct, and behind HAProxy (``bench/run.py replicas``).

Configurations, each on a fresh database, side by side in one run:

- one replica, direct (the baseline);
- one replica behind HAProxy (what the balancer itself costs);
- two replicas (two ``cpnet hub`` processes on two ports, as on two machines) behind HAProxy;
- two replicas of ``cpnet hub --workers 2`` (one port, one shared accept queue), direct.

In each, ``--replicas-clients`` client processes (SDK ``Client``) submit for
``--replicas-seconds``: first one task per request (``POST /v1/tasks``), then ``BATCH`` per request
(``POST /v1/tasks:batch``, SDK ``submit_many``). A task counts once the hub answered 201 for it
(its transaction committed). No agent: tasks stay QUEUED, and the leader's scheduler, woken by
each submission, finds no pool. CPU per task is the hubs' (and HAProxy's) user + system time
from /proc over the row.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
from common import (
    HOST,
    PY,
    BenchError,
    Hub,
    Procs,
    Section,
    changed_note,
    console,
    cores,
    free_port,
    machine,
    make_world,
    num,
    postgres_server,
    ratio,
    source_digest,
    stop_dev_postgres,
    wait_until,
    write_report,
)

from cpnet.api.balancer import haproxy_config

DEFAULT_SECONDS = 10.0
DEFAULT_CLIENTS = 4
BATCH = 100
TASK = {"executors": [{"command": ["true"]}], "resources": {"cpu_cores": 1, "ram_gb": 0.25}}
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Params:
    seconds: float
    clients: int
    command: str


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--replicas-seconds", type=float, default=None,
        help=f"replicas: seconds per row ({DEFAULT_SECONDS:g})",
    )  # fmt: skip
    ap.add_argument(
        "--replicas-clients", type=int, default=DEFAULT_CLIENTS,
        help=f"replicas: client processes submitting at once ({DEFAULT_CLIENTS})",
    )  # fmt: skip


def params(args: argparse.Namespace, command: str) -> Params:
    seconds = args.replicas_seconds or (2.0 if args.quick else DEFAULT_SECONDS)
    return Params(seconds, max(1, args.replicas_clients), command)


# ---- load ---------------------------------------------------------------------------------------


def _submitter(url: str, token: str, batch: int, seconds: float, ready, out) -> None:  # type: ignore[no-untyped-def]
    """One client process: submit for `seconds` after the start barrier; put (tasks, start,
    end) on `out`."""
    from cpnet.client import Client

    run = uuid.uuid4().hex[:8]
    seq = iter(range(10**12))
    with Client(url, token, timeout=120) as c:
        c.health()  # connected before the clock starts
        ready.wait()
        n, t0 = 0, time.time()
        while time.time() - t0 < seconds:
            if batch == 1:
                c.submit({**TASK, "idempotency_key": f"{run}-{next(seq)}"})
                n += 1
            else:
                items = [{**TASK, "idempotency_key": f"{run}-{next(seq)}"} for _ in range(batch)]
                n += sum(r.status == 201 for r in c.submit_many(items))
        out.put((n, t0, time.time()))


def _tree_cpu(pids: list[int]) -> float:
    """User + system CPU seconds of these processes and their children (replicas of --workers)."""
    want = set(pids)
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry), int(fields[1])
        if pid in want or ppid in want:
            total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def load(
    url: str, tokens: list[str], batch: int, p: Params, pids: list[int]
) -> tuple[int, float, float]:
    """(tasks acknowledged, tasks/s, server CPU ms per task) with one client process per token."""
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Barrier(len(tokens) + 1)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_submitter, args=(url, token, batch, p.seconds, ready, out))
        for token in tokens
    ]
    for proc in procs:
        proc.start()
    try:
        ready.wait(timeout=120)
    except Exception as exc:
        raise BenchError(f"the client processes did not start: {exc}") from exc
    cpu0 = _tree_cpu(pids)
    got = [out.get(timeout=p.seconds + 300) for _ in procs]
    cpu = _tree_cpu(pids) - cpu0
    for proc in procs:
        proc.join(30)
    n = sum(g[0] for g in got)
    wall = max(g[2] for g in got) - min(g[1] for g in got)
    return n, n / wall, 1000 * cpu / max(n, 1)


# ---- set-ups ------------------------------------------------------------------------------------


def _health(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v1/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _balancer(procs: Procs, backends: list[int]) -> tuple[str, int]:
    """HAProxy in front of `backends` (ports on HOST); its URL and pid."""
    if shutil.which("haproxy") is None:
        raise BenchError("haproxy is not installed: apt-get install -y haproxy")
    work = procs.scratch("haproxy")
    port = free_port()
    cfg = work / "haproxy.cfg"
    cfg.write_text(haproxy_config(f"{HOST}:{port}", [f"{HOST}:{b}" for b in backends]))
    proc = procs.start("haproxy", ["haproxy", "-db", "-f", str(cfg)], work / "haproxy.log")
    url = f"http://{HOST}:{port}"
    wait_until(lambda: _health(url), 60, "HAProxy to pass /v1/health through")
    return url, proc.pid


def _front(hub: Hub, url: str) -> Hub:
    """The same hub reached at another address (the balancer's), for make_world."""
    port = int(url.rsplit(":", 1)[1])
    return Hub(hub.data_dir, hub.database_url, port=port, admin_token=hub.admin_token)


def _users(hub: Hub, n: int) -> list[str]:
    """A user token in each of `n` funded organisations: one per client, so that clients do
    not queue on one organisation's balance and quota rows (every submission of an
    organisation locks them until it commits, whichever replica serves it)."""
    tokens = [make_world(hub, []).user_token]
    with hub.client() as admin:
        for i in range(1, n):
            org = admin.create_org(f"bench-{i}")
            admin.topup(org.id, "1000000.00", transfer_id=f"bench-funds-{org.id}")
            tokens.append(admin.create_user(org.id, f"bench-user-{i}", role="user")[1].token)
    return tokens


def _workers(procs: Procs, hub: Hub, n: int) -> int:
    """Start `cpnet hub --workers n` for `hub`'s store; the supervisor's pid."""
    hub.port = free_port()
    argv = [PY, "-m", "cpnet", "hub", *hub._db_args(), "--host", HOST, "--port", str(hub.port)]
    proc = procs.start("hub", [*argv, "--workers", str(n)], hub.data_dir / "hub.log")
    wait_until(lambda: _health(hub.url), 120, f"cpnet hub --workers {n} to answer")
    # Every replica up: both answer health checks sent at once.
    seen: set[str] = set()

    def both() -> bool:
        for _ in range(8):
            r = httpx.get(f"{hub.url}/v1/health", timeout=5).json()
            seen.add(r["replica"])
        return len(seen) >= n

    wait_until(both, 120, f"{n} replicas to answer")
    return proc.pid


def one_setup(
    what: str, replicas: int, balanced: bool, workers: bool, p: Params, procs: Procs, server: str
) -> list[tuple]:
    url = procs.database(server)
    data = procs.scratch("replicas-hub")
    first = Hub(data, url)
    first.init()
    pids: list[int] = []
    if workers:
        pids.append(_workers(procs, first, replicas))
        backends, entry = [first.port], first.url
    else:
        # As on separate machines: each replica its own data dir, with the first one's key.
        hubs = [first]
        first.start(procs)
        for _ in range(replicas - 1):
            other = Hub(procs.scratch("replicas-hub"), url, admin_token=first.admin_token)
            shutil.copy2(data / "secrets.key", other.data_dir / "secrets.key")
            other.start(procs)
            hubs.append(other)
        pids += [h.proc.pid for h in hubs if h.proc is not None]
        backends, entry = [h.port for h in hubs], first.url
    if balanced:
        entry, lb_pid = _balancer(procs, backends)
        pids.append(lb_pid)
    tokens = _users(_front(first, entry), p.clients)
    rows = []
    for batch in (1, BATCH):
        n, rate, cpu_ms = load(entry, tokens, batch, p, pids)
        shape = "POST /v1/tasks" if batch == 1 else f"POST /v1/tasks:batch ({BATCH}/request)"
        console.print(f"{what}, {shape}: {rate:,.0f} tasks/s")
        rows.append((what, shape, n, rate, cpu_ms))
    for _name, proc in reversed(procs.procs):
        procs.stop(proc)
    procs.procs.clear()
    return rows


SETUPS = (
    ("1 replica, direct (baseline)", 1, False, False),
    ("1 replica, behind HAProxy", 1, True, False),
    ("2 replicas (2 processes), behind HAProxy", 2, True, False),
    ("2 replicas (`--workers 2`, one port), direct", 2, False, True),
)


def run(p: Params) -> Path:
    digest = source_digest()
    server, started = postgres_server()
    info = machine(server)  # while the server runs: it names the server's version
    rows = []
    try:
        with Procs() as procs:
            for what, n, balanced, workers in SETUPS:
                rows += one_setup(what, n, balanced, workers, p, procs, server)
    finally:
        if started:
            stop_dev_postgres()
    base = {shape: rate for what, shape, _n, rate, _c in rows if what == SETUPS[0][0]}
    sections = []
    for shape in dict.fromkeys(r[1] for r in rows):
        table = [
            (what, f"{n:,}", num(rate), ratio(rate, base[shape]), f"{cpu_ms:.2f}")
            for what, s, n, rate, cpu_ms in rows
            if s == shape
        ]
        sections.append(
            Section(
                shape,
                ["set-up", "tasks", "per second", "÷ 1 replica direct", "server CPU ms/task"],
                table,
            )
        )
    notes = [
        f"{p.clients} client processes submit at once for {p.seconds:g} s per row (SDK Client, "
        "fresh idempotency keys), each as a user of its own organisation; a task counts when "
        "the hub answered 201 (committed).",
        "Submissions of one organisation queue on its balance and quota rows (locked from the "
        "hold until the commit), whichever replica serves them: replicas add throughput across "
        "organisations, not within one beyond that row's commit rate.",
        "Server CPU: the hub processes (and HAProxy where it is in the path), user + system, "
        "from /proc; the PostgreSQL server and the clients are not in it.",
        f"This machine has {cores()} cores, and runs the database server, every hub replica, "
        "HAProxy and the clients. A second replica cannot add cores, so its gain is bounded by "
        "what the first leaves idle: one hub process waits on the database and on its thread "
        "pool between requests, which is the headroom a second one fills for single "
        "submissions; batches already keep the cores busy, so there two replicas only share "
        "them. The HAProxy rows also pay for a second HTTP hop on the same cores.",
        "On a machine (or machines) with more cores, each replica adds up to about one core's "
        "worth of submissions (the server CPU per task above), until the database bounds it: "
        "every audited transaction locks the audit chain's head row at its commit, so commits "
        "across all replicas are serial, and the ceiling is the database's one-row-per-commit "
        "rate (bench/results/submit.md: bare INSERT + COMMIT), higher on faster WAL storage; "
        "and one organisation's submissions queue on its own rows (above).",
        "The set-ups run one after another, each for a few seconds: on a shared machine (the "
        "load average at start, above, against the cores) two runs of this table have "
        "differed by up to half on one row; read the ratios within one run, not single cells.",
        *changed_note(digest),
    ]
    return write_report(
        "replicas",
        "Submissions per second: one hub replica against two, direct and behind HAProxy "
        "(PostgreSQL)",
        command=p.command,
        sections=sections,
        notes=notes,
        machine_info=info,
    )
