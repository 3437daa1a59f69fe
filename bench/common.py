"""Shared plumbing for the benchmarks: processes, the machine, percentiles, tables, progress.

Every process a benchmark starts goes through :class:`Procs`, a context manager that stops them
all when the block ends — normally, on an exception, on Ctrl-C, or on SIGTERM (see
:func:`trap_sigterm`). Hub and agents are real processes started the way an operator starts them
(``python -m cpnet hub init``, ``python -m cpnet hub``, ``python -m cpnet agent --config``), and
all traffic stays on 127.0.0.1. Benchmarks talk to the hub through the SDK (:class:`cpnet.Client`);
the agent protocol is spoken only where an agent would speak it (registration).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import tomli_w
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from cpnet.client import Client

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DEV_PG = ROOT / "scripts" / "dev-postgres.sh"
DEV_PG_URL = ROOT / ".dev" / "postgres" / "url"
PY = sys.executable
HOST = "127.0.0.1"  # every benchmark talks to this address only
START_TIMEOUT_S = 60.0
STOP_GRACE_S = 5.0

console = Console(stderr=True)


# ---- the machine --------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return float("nan")


def cores() -> int:
    """CPUs this process may run on (what the hub, agents and load generators share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def database_version(database_url: str | None) -> str:
    """``SQLite x.y.z`` (the hub's default store), or the PostgreSQL server's version."""
    if not database_url or database_url.startswith("sqlite"):
        return f"SQLite {sqlite3.sqlite_version} (WAL, synchronous=NORMAL); PostgreSQL not used"
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            version = conn.execute(text("SHOW server_version")).scalar()
    finally:
        engine.dispose()
    return f"PostgreSQL {version}"


def source_digest() -> str:
    """A short digest of cpnet's source (every ``*.py`` under the imported package): which code
    the figures belong to, and a way to notice it changing during a run."""
    import hashlib

    import cpnet

    root = Path(cpnet.__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def changed_note(digest_at_start: str) -> list[str]:
    """A warning for the notes when cpnet's source changed while the benchmark ran."""
    now = source_digest()
    if now == digest_at_start:
        return []
    return [
        f"WARNING: cpnet's source changed during this run (digest {digest_at_start} → {now}): "
        "the figures mix two versions of the code; run the benchmark again."
    ]


def machine(database_url: str | None = None) -> dict[str, str]:
    """What the figures were measured on, for the notes under every table."""
    return {
        "CPU": _cpu_model(),
        "cores": str(cores()),
        "memory": f"{_memory_gib():.1f} GiB",
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "database": database_version(database_url),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpnet source digest": source_digest(),
        "load average at start (1/5/15 min)": "/".join(f"{x:.2f}" for x in os.getloadavg()),
    }


# ---- numbers ------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    xs = sorted(values)
    k = (len(xs) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def ms(seconds: float) -> str:
    """Seconds shown as milliseconds (or seconds when large)."""
    if math.isnan(seconds):
        return "–"
    if seconds >= 10:
        return f"{seconds:.1f} s"
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds * 1000:,.0f} ms"


def per_s(n: float, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("nan")


def num(x: float) -> str:
    """A rate or count for a table: thousands separators, sensible precision."""
    if math.isnan(x):
        return "–"
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def ratio(a: float, b: float) -> str:
    """a ÷ b as ``1.23×``, or ``1/4,500×`` when tiny."""
    if b <= 0 or math.isnan(a) or math.isnan(b):
        return "–"
    r = a / b
    if r <= 0:
        return "0×"
    if r < 0.01:
        return f"1/{1 / r:,.0f}×"
    return f"{r:.3f}×" if r < 1 else f"{r:.2f}×"


# ---- tables -------------------------------------------------------------------------------------


@dataclass
class Section:
    """One table of a result file: a heading, column names and rows of cells."""

    heading: str
    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]


def write_report(
    name: str,
    title: str,
    *,
    command: str,
    sections: Sequence[Section],
    notes: Sequence[str],
    machine_info: dict[str, str],
) -> Path:
    """Write ``bench/results/<name>.md`` (overwriting it): tables, notes and the machine."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", "", f"Command: `{command}`", ""]
    lines.append("Machine: " + "; ".join(f"{k} {v}" for k, v in machine_info.items()))
    for sec in sections:
        lines += ["", f"## {sec.heading}", ""]
        lines.append("| " + " | ".join(sec.columns) + " |")
        lines.append(
            "|" + "|".join("---" if i == 0 else "---:" for i in range(len(sec.columns))) + "|"
        )
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in sec.rows]
    lines += ["", "## Notes", ""]
    lines += [f"- {n}" for n in notes]
    path = RESULTS / f"{name}.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def progress() -> Progress:
    """A rich progress display on stderr (one bar per phase)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=False,
    )


# ---- processes ----------------------------------------------------------------------------------


class BenchError(RuntimeError):
    """A benchmark could not run (a process died, a limit was hit); the message says why."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def child_env() -> dict[str, str]:
    """This environment without CPNET_* settings (a benchmark configures its processes itself)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CPNET_")}
    env["PYTHONUNBUFFERED"] = "1"
    # a benchmark measures what the hub can do, not what a rate limit lets one client do
    env.update(CPNET_RATE_LIMIT="off", CPNET_RATE_LIMIT_ANONYMOUS="off")
    return env


def trap_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt so that every ``finally`` (process cleanup) runs."""

    def _raise(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _raise)


def standalone(
    script: str,
    doc: str,
    add_args: Callable[[argparse.ArgumentParser], None],
    params: Callable[[argparse.Namespace, str], Any],
    run: Callable[[Any], Path],
    quick: str,
    argv: list[str] | None,
) -> int:
    """One benchmark run on its own (``python bench/NAME.py …``, beside ``bench/run.py NAME``):
    parse its options and ``--quick`` (``quick`` says what it shrinks to), stop cleanly on
    SIGTERM, run it, print its table."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    add_args(ap)
    ap.add_argument("--quick", action="store_true", help=quick)
    args = ap.parse_args(argv)
    trap_sigterm()
    cmd = " ".join([f"bench/{script}", *(argv if argv is not None else sys.argv[1:])])
    path = run(params(args, cmd))
    print(path.read_text())
    return 0


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(own, reaped children's) user+system CPU seconds of a live process, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan"), float("nan")
    tick = os.sysconf("SC_CLK_TCK")
    # After the ")": state is index 0, so utime/stime/cutime/cstime are 11..14.
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime) / tick, (cutime + cstime) / tick


@dataclass
class Procs:
    """Owns every process and scratch directory a benchmark starts; stops and removes them all."""

    keep_dirs: bool = False
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    dirs: list[Path] = field(default_factory=list)
    runner_roots: list[Path] = field(default_factory=list)
    databases: list[tuple[str, str]] = field(default_factory=list)  # (server URL, name)

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def scratch(self, prefix: str) -> Path:
        """A fresh temporary directory, removed at the end."""
        d = Path(tempfile.mkdtemp(prefix=f"cpnet-bench-{prefix}-"))
        self.dirs.append(d)
        return d

    def database(self, server_url: str | None) -> str | None:
        """A fresh, empty database for one hub: None (SQLite in the hub's data dir) when no
        server is given, else a new PostgreSQL database on that server, dropped at the end."""
        if not server_url or server_url.startswith("sqlite"):
            return None
        import uuid

        import psycopg
        from sqlalchemy.engine import make_url

        url = make_url(server_url)
        name = f"cpnet_bench_{uuid.uuid4().hex[:12]}"
        admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.databases.append((admin, name))
        return url.set(database=name).render_as_string(hide_password=False)

    def start(self, name: str, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        """Start a process in its own session (so one signal reaches all it forks), logging to
        `log`."""
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=child_env(),
                start_new_session=True,
            )
        self.procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM the process's session, SIGKILL it after a grace period."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=STOP_GRACE_S)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything left in its session

    def stop_all(self) -> None:
        """Stop agents before hubs (reverse start order), then any task runners left behind."""
        for _name, proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                self.stop(proc)
        for root in self.runner_roots:
            kill_runners(root)
        self.procs.clear()
        for admin, name in self.databases:
            import psycopg

            with contextlib.suppress(Exception), psycopg.connect(admin, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.databases.clear()
        if not self.keep_dirs:
            for d in self.dirs:
                shutil.rmtree(d, ignore_errors=True)
            self.dirs.clear()


def kill_runners(work_root: Path) -> None:
    """SIGKILL the session of every task runner under an agent's work dir (they outlive their
    agent by design, so stopping the agent does not stop them)."""
    for pidfile in work_root.glob("attempts/*/runner.pid"):
        try:
            pid = int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)


def wait_until(pred, timeout: float, what: str, every: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll `pred` until it returns something truthy; BenchError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(every)
    raise BenchError(f"timed out after {timeout:g} s waiting for {what}")


def _tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


@dataclass
class Hub:
    """A ``cpnet hub`` process on a free port of 127.0.0.1 with its own store."""

    data_dir: Path
    database_url: str | None = None
    port: int = 0
    admin_token: str = ""
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    args: list[str] = field(default_factory=list)  # more ``cpnet hub`` flags (e.g. ``--dns``)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _db_args(self) -> list[str]:
        args = ["--data-dir", str(self.data_dir)]
        if self.database_url:
            args += ["--database-url", self.database_url]
        return args

    def init(self) -> None:
        """``cpnet hub init --json``: create the store and signing key, keep the admin token."""
        out = subprocess.run(
            [PY, "-m", "cpnet", "hub", "init", *self._db_args(), "--json"],
            capture_output=True,
            text=True,
            env=child_env(),
            timeout=START_TIMEOUT_S,
        )
        if out.returncode != 0:
            raise BenchError(f"cpnet hub init failed: {out.stderr.strip()[-2000:]}")
        self.admin_token = json.loads(out.stdout)["admin_token"]

    def start(self, procs: Procs) -> None:
        """Start the hub and wait until /v1/health answers."""
        self.port = self.port or free_port()
        self.log = self.data_dir / "hub.log"
        argv = [PY, "-m", "cpnet", "hub", *self._db_args(), *self.args, "--host", HOST, "--port"]
        self.proc = procs.start("hub", [*argv, str(self.port)], self.log)

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise BenchError(f"the hub exited: {_tail(self.log)}")  # type: ignore[arg-type]
            try:
                return httpx.get(f"{self.url}/v1/health", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(up, START_TIMEOUT_S, "the hub to answer /v1/health", every=0.1)

    def client(self, token: str | None = None, timeout: float = 60.0) -> Client:
        return Client(self.url, token or self.admin_token, timeout=timeout)

    def cpu(self) -> tuple[float, float]:
        return cpu_seconds(self.proc.pid) if self.proc else (float("nan"), float("nan"))


@dataclass
class World:
    """Accounts on a hub: a user who submits, and sites with their agent tokens."""

    user_token: str
    provider_id: str
    site_ids: dict[str, str]
    site_tokens: dict[str, str]


def make_world(hub: Hub, sites: Sequence[str], region: str = "440300") -> World:
    """An organisation, a user, a provider admin, a provider and general sites, via the SDK."""
    with hub.client() as admin:
        org = admin.create_org("bench")
        # every task holds its maximum charge at submission (docs/market.md): fund it generously
        admin.topup(org.id, "1000000.00", transfer_id=f"bench-funds-{org.id}")
        _, padmin = admin.create_user(org.id, "bench-padmin", role="provider-admin")
        _, user = admin.create_user(org.id, "bench-user", role="user")
    ids, tokens = {}, {}
    with hub.client(padmin.token) as c:
        prov = c.create_provider("bench cloud")
        for name in sites:
            site = c.create_site(prov.id, name, type="general", region_code=region)
            ids[name] = site.id
            tokens[name] = c.create_site_token(site.id, "bench").token
    return World(user.token, prov.id, ids, tokens)


def pool_table(name: str, cores: float, memory_gb: float) -> dict[str, Any]:
    """One ``[[pool]]`` table of an agent config (a declared pool, no discovery)."""
    return {
        "name": name,
        "type": "general",
        "hardware": {"cpu_cores": cores, "memory_gb": memory_gb, "cpu_model": "bench cpu"},
        "price": {"cpu_core_hour": 0.1},
    }


@dataclass
class Agent:
    """A ``cpnet agent`` process serving one site: declared pools, or a backend's own."""

    hub: Hub
    token: str
    work_dir: Path
    pools: list[dict[str, Any]]
    heartbeat_s: float = 1.0
    proc: subprocess.Popen[bytes] | None = None
    backend: str = "local"  # e.g. "slurm": its pools are discovered, ``pools`` may be empty
    options: dict[str, Any] = field(default_factory=dict)  # the backend's [options]

    def start(self, procs: Procs) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        cfg = self.work_dir / "agent.toml"
        body = {
            "hub": self.hub.url,
            "token": self.token,
            "work_dir": str(self.work_dir),
            "heartbeat_interval_s": self.heartbeat_s,
            # The calibration probe would take both cores for its 20 s budget while tasks run.
            "measure_on_join": False,
        }
        if self.pools:
            body["pool"] = self.pools
        if self.backend != "local":
            body["backend"] = self.backend
        if self.options:
            body["options"] = self.options
        cfg.write_text(tomli_w.dumps(body))
        procs.runner_roots.append(self.work_dir)
        log = self.work_dir / "agent.log"
        self.proc = procs.start("agent", [PY, "-m", "cpnet", "agent", "--config", str(cfg)], log)

    def check(self) -> None:
        """Raise if the agent process died."""
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(f"the agent exited: {_tail(self.work_dir / 'agent.log')}")

    def cpu(self) -> tuple[float, float]:
        return cpu_seconds(self.proc.pid) if self.proc else (float("nan"), float("nan"))


def own_cpu() -> float:
    """User+system CPU seconds of this process (all its threads) so far."""
    t = os.times()
    return t.user + t.system


@contextlib.contextmanager
def timed() -> Iterator[list[float]]:
    """``with timed() as t: ...`` then ``t[0]`` is the block's wall time in seconds."""
    out: list[float] = []
    t0 = time.perf_counter()
    try:
        yield out
    finally:
        out.append(time.perf_counter() - t0)


# ---- databases ----------------------------------------------------------------------------------


def postgres_server() -> tuple[str, bool]:
    """A PostgreSQL server's URL, and whether this call started it (stop it with
    `stop_dev_postgres`): ``CPNET_BENCH_POSTGRES_URL``, else the dev server
    ``scripts/dev-postgres.sh`` left running, else that script started now."""
    from sqlalchemy import create_engine

    url = os.environ.get("CPNET_BENCH_POSTGRES_URL")
    if url:
        return url, False
    if DEV_PG_URL.exists():
        url = DEV_PG_URL.read_text().strip()
        try:
            create_engine(url).connect().close()
            return url, False
        except Exception:
            pass
    out = subprocess.run(
        ["bash", str(DEV_PG), "start"], capture_output=True, text=True, timeout=180,
        env={**os.environ, "CPNET_PG_INSTALL": "0"},
    )  # fmt: skip
    if out.returncode != 0:
        raise BenchError(f"could not start PostgreSQL: {out.stderr.strip()[-500:]}")
    return out.stdout.strip().splitlines()[-1], True


def stop_dev_postgres() -> None:
    subprocess.run(["bash", str(DEV_PG), "stop"], capture_output=True, timeout=120)


def bare_table(engine: Any) -> Any:
    """The baseline's two-column table (``bench_bare``), created if missing: what a bare
    insert-and-commit writes, next to which the store's own rates are reported."""
    from sqlalchemy import BigInteger, Column, MetaData, String, Table

    table = Table(
        "bench_bare", MetaData(), Column("id", String(64), primary_key=True),
        Column("amount", BigInteger),
    )  # fmt: skip
    table.create(engine, checkfirst=True)
    return table
