"""Real hub and agent processes for integration tests, started and always stopped by fixtures."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
import pytest
import tomli_w

from cpnet.client import Client, tls_context
from cpnet.config import HubSettings
from cpnet.hub.bootstrap import init_hub, write_dev_cert

HEARTBEAT_S = 1.0  # a lost agent is noticed within ~3 s; a loaded CI machine may delay one by 1 s+


LOOPBACK = "127.0.0.0/8,::1"  # what test hubs and agents allow unless told allow_loopback=False


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CPNET_")}
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wait_until(pred, timeout: float, what: str, every: float = 0.1, log: Path | None = None):  # type: ignore[no-untyped-def]
    """Poll `pred` until it returns something truthy, or fail after `timeout` seconds (quoting
    the end of `log`, when given)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(every)
    tail = f"\n{log.read_text(errors='replace')[-3000:]}" if log is not None else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r}){tail}")


@dataclass
class HubProc:
    """A `cpnet hub` process on a free port with its own store."""

    data_dir: Path
    port: int
    database_url: str | None = None
    admin_token: str = ""
    proc: subprocess.Popen | None = None
    log: Path | None = None
    args: list[str] = field(default_factory=list)  # more `cpnet hub` flags, e.g. --authority
    env: dict[str, str] = field(default_factory=dict)  # CPNET_* settings, e.g. max_blob_bytes
    tls: bool = False  # serve HTTPS with the development certificate (args should have --tls)
    # Take tasks whose http(s) URLs name loopback addresses (CPNET_ALLOW_PRIVATE_URLS): the
    # tests' web servers are on 127.0.0.1. False: the secure default (docs/security.md).
    allow_loopback: bool = True
    authority: str | None = None  # `cpnet hub init --authority` (None: the default, cn.dev)
    # Run the hub under this command, e.g. ["nsenter", "--net=/run/netns/NAME"]; then `address`
    # is where the test reaches it (and args should have --host 0.0.0.0).
    prefix: list[str] = field(default_factory=list)
    address: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.address}:{self.port}"

    @property
    def ca_file(self) -> Path | None:
        """The hub's CA certificate (clients trust it) when it serves HTTPS."""
        return self.data_dir / "tls" / "ca.crt" if self.tls else None

    def _db_args(self) -> list[str]:
        args = ["--data-dir", str(self.data_dir)]
        if self.database_url:
            args += ["--database-url", self.database_url]
        return args

    def init(self) -> None:
        """What `cpnet hub init` does (the same two functions), in this process: a hub process
        imports most of cpnet, so a test's hub costs one start instead of two. The command
        itself is tested in tests/integration/cli."""
        settings = HubSettings(data_dir=self.data_dir, database_url=self.database_url)
        if self.authority:
            settings = replace(settings, authority=self.authority)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        result = init_hub(settings)
        write_dev_cert(settings, result["authority"])
        self.admin_token = result["admin_token"]

    def start(self) -> None:
        self.log = self.data_dir / f"hub-{time.time_ns()}.log"
        loopback = {"CPNET_ALLOW_PRIVATE_URLS": LOOPBACK} if self.allow_loopback else {}
        port = ["--port", str(self.port)]
        self.proc = subprocess.Popen(
            [
                *self.prefix,
                *(sys.executable, "-m", "cpnet", "hub"),
                *self._db_args(),
                *port,
                *self.args,
            ],
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            env=_env(**{**loopback, **self.env}),
            start_new_session=True,
        )

        def up() -> bool:
            if self.proc and self.proc.poll() is not None:
                raise AssertionError(f"hub exited: {self.log.read_text()[-2000:]}")
            try:
                verify = tls_context(self.ca_file)
                r = httpx.get(f"{self.url}/v1/health", timeout=1, verify=verify)
                return r.status_code == 200
            except httpx.TransportError:
                return False

        wait_until(up, 30, "hub to answer /v1/health")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)

    def client(self, token: str | None = None) -> Client:
        return Client(self.url, token or self.admin_token, ca_file=self.ca_file)


@dataclass
class AgentProc:
    """A `cpnet agent` process serving one site with declared pools."""

    hub: HubProc
    token: str
    work_dir: Path
    pools: list[dict] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    heartbeat_s: float = HEARTBEAT_S
    backend: str = "local"
    options: dict[str, str] = field(default_factory=dict)
    # Calibration probes on join: off unless a test is about them (they burn CPU for seconds).
    measure: bool = False
    measure_budget_s: float = 20.0
    rediscover_s: float | None = None  # rediscover_interval_s; None: the agent's default
    args: list[str] = field(default_factory=list)  # more `cpnet agent` flags after --config
    env: dict[str, str] = field(default_factory=dict)  # set in the agent's environment
    config: dict = field(default_factory=dict)  # more agent.toml keys, e.g. network probes
    # Run the agent under this command, e.g. ["nsenter", "--net=/run/netns/NAME"].
    prefix: list[str] = field(default_factory=list)
    log: Path | None = None
    # Stage http(s) URLs on loopback (the option allow_private_urls, unless `options` sets it):
    # the tests' web servers are on 127.0.0.1. False: the secure default (docs/security.md).
    allow_loopback: bool = True

    def start(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        cfg = self.work_dir / "agent.toml"
        body = {
            "hub": self.hub.url,
            "token": self.token,
            "work_dir": str(self.work_dir),
            "heartbeat_interval_s": self.heartbeat_s,
            "measure_on_join": self.measure,
            "measure_budget_s": self.measure_budget_s,
        }
        if self.rediscover_s is not None:
            body["rediscover_interval_s"] = self.rediscover_s
        if self.pools:
            body["pool"] = self.pools
        if self.backend != "local":
            body["backend"] = self.backend
        options = dict(self.options)
        if self.allow_loopback:
            options.setdefault("allow_private_urls", LOOPBACK)
        if options:
            body["options"] = options
        body.update(self.config)
        cfg.write_text(tomli_w.dumps(body))
        log = self.log = self.work_dir / f"agent-{time.time_ns()}.log"
        self.proc = subprocess.Popen(
            [
                *self.prefix,
                sys.executable,
                "-m",
                "cpnet",
                "agent",
                "--config",
                str(cfg),
                *self.args,
            ],
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            env=_env(**self.env),
            start_new_session=False,  # its runners start their own sessions; see kill()
        )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the agent process only (its task runners survive, as on a real crash)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)


def pool(name: str, cores: float = 4, memory_gb: float = 8, type: str = "general", **kw) -> dict:
    """A [[pool]] table for an agent config."""
    d = {
        "name": name,
        "type": type,
        "hardware": {"cpu_cores": cores, "memory_gb": memory_gb, "cpu_model": "test cpu"},
        "price": {"cpu_core_hour": kw.pop("price", 0.1)},
    }
    d.update(kw)
    return d


WORLD_FUNDS = "1000000.00"  # CNY each make_world organisation starts with


@dataclass
class World:
    """A hub with one org: a provider admin, a user, a provider, and sites with agent tokens."""

    hub: HubProc
    org_id: str
    user_token: str
    padmin_token: str
    provider_id: str
    site_tokens: dict[str, str]
    site_ids: dict[str, str]


def make_world(hub: HubProc, sites: dict[str, tuple[str, str]], org: str = "acme") -> World:
    """Create accounts and sites {name: (type, region_code)} through the real API."""
    with hub.client() as admin:
        o = admin.create_org(org)
        # Generous funds, so tests not about money never meet a 402 (docs/market.md).
        admin.topup(o.id, WORLD_FUNDS, transfer_id=f"world-funds-{o.id}")
        _, pa = admin.create_user(o.id, "padmin", role="provider-admin")
        _, user = admin.create_user(o.id, "alice", role="user")
    with hub.client(pa.token) as c:
        prov = c.create_provider(f"{org} cloud")
        tokens, ids = {}, {}
        for name, (typ, region) in sites.items():
            site = c.create_site(prov.id, name, type=typ, region_code=region)
            ids[name] = site.id
            tokens[name] = c.create_site_token(site.id).token
    return World(hub, o.id, user.token, pa.token, prov.id, tokens, ids)


def kill_runners(work_dir: Path) -> None:
    """Stop task runners an agent left behind (they outlive a SIGKILLed agent by design)."""
    from cpnet.demo.network import kill_runners as kill_sessions

    kill_sessions(work_dir)


def run_doc_block(
    script: str, cwd: Path, tmp_path: Path, port: int, leftovers: list[str]
) -> subprocess.CompletedProcess[str]:
    """Run a documentation bash block verbatim: the venv's cpnet on PATH, a fresh HOME, no
    CPNET_* from the caller. Skips when the block's fixed `port` is taken; afterwards kills the
    processes whose command lines match `leftovers` (the block's backgrounded hub and agent)."""
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:
            pytest.skip(f"port {port} is taken; the block uses it")
    file = tmp_path / "block.sh"
    file.write_text("set -euo pipefail\n" + script)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CPNET_")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    env["HOME"] = str(tmp_path)
    try:
        return subprocess.run(
            ["bash", str(file)], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
        )
    finally:
        for pattern in leftovers:
            subprocess.run(["pkill", "-f", pattern], check=False)


def agent_settings(hub: HubProc, world: World, name: str, work_dir: Path, cores: float = 2):
    """Settings of site `name`'s agent run in this process (``Agent(settings)``): one pool
    `cpu` of `cores`, a 0.5 s heartbeat, no measurement on join."""
    from cpnet.agent.settings import AgentSettings
    from cpnet.registry.model import PoolDescriptor

    return AgentSettings(
        hub_url=hub.url,
        token=world.site_tokens[name],
        work_dir=work_dir,
        pools=[PoolDescriptor.model_validate(pool("cpu", cores=cores))],
        heartbeat_interval_s=0.5,
        measure_on_join=False,
    )


def start_agent(hub: HubProc, agents: list, tmp_path: Path, world: World, name: str, pools: list):
    """Start the agent of site `name` of `world` with `pools`; `agents` stops it afterwards."""
    a = AgentProc(hub, world.site_tokens[name], tmp_path / f"agent-{name}", pools)
    a.start()
    agents.append(a)
    return a


def app_routes() -> list[tuple[str, str]]:
    """(method, path template) of every route of the hub's app, sorted; building the app
    starts nothing (the authorisation matrix and the unknown-parameter table walk it)."""
    from fastapi import routing
    from fastapi.routing import APIRoute

    from cpnet.api.app import create_app
    from cpnet.config import HubSettings

    app = create_app(HubSettings(data_dir=Path("/nonexistent")))
    if hasattr(routing, "iter_route_contexts"):  # FastAPI that includes routers lazily
        found = [
            (c.path, c.methods)
            for c in routing.iter_route_contexts(app.routes)
            if isinstance(c.original_route, APIRoute)
        ]
    else:
        found = [(r.path, r.methods) for r in app.routes if isinstance(r, APIRoute)]
    return sorted((m, path) for path, methods in found for m in methods)
