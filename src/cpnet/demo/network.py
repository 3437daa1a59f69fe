"""A whole cpnet network on this machine: one hub and any number of agents, as real processes.

The demo uses it, and so can benchmarks and scripts that need a live network without a test
framework::

    with LocalNetwork(Path("/tmp/net")) as net:
        admin_token = net.start_hub()
        ...  # create a provider, a site and a site token through the SDK
        net.start_agent("gz", site_token, pools=[{...}])
    # leaving the block stops the agents, their task runners and the hub

Every process runs in its own session with its output in a log file under the network's
directory, so it can outlive this Python process (``detach``) and a Ctrl-C in the terminal
reaches only the caller, who then stops the network in order: agents, task runners, hub.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import tomli_w

from cpnet.agent import hostinfo
from cpnet.client import Client, CpnetError

HEALTH_TIMEOUT_S = 60.0  # a cold start on a small machine imports a lot before it binds
STOP_GRACE_S = 5.0  # from SIGTERM to SIGKILL
PORT_TRIES = 3  # a free port can be taken between finding it and binding it


class NetworkError(RuntimeError):
    """A process of the local network could not be started, with the tail of its log."""


@dataclass
class Member:
    """One process of the network: the hub or an agent."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    work_dir: Path | None = None  # an agent's work dir, where its task runners live

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def child_env() -> dict[str, str]:
    """The environment for hub and agent processes: ours without CPNET_* settings.

    A CPNET_TOKEN or CPNET_HUB meant for the caller's own hub must not leak into these
    processes (the agent CLI would prefer CPNET_TOKEN over the site token in its config).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("CPNET_")}
    env["PYTHONUNBUFFERED"] = "1"  # logs appear as they happen
    return env


def log_tail(path: Path, chars: int = 2000) -> str:
    """The end of a log file, for error messages."""
    try:
        return path.read_text(errors="replace")[-chars:].strip()
    except OSError:
        return ""


@dataclass
class LocalNetwork:
    """A hub on SQLite and agents, each a ``python -m cpnet`` process, under one directory.

    Layout of ``root``: ``hub/`` (the store and signing key), ``hub.log``,
    ``sites/<name>/agent.toml``, ``sites/<name>/agent.log``, ``sites/<name>/work/`` (the
    agent's task work dirs), and ``pids`` (the PIDs of the live processes, one per line, agents
    first) while any of them runs.
    """

    root: Path
    heartbeat_s: float = 1.0
    python: str = sys.executable  # the agents' task runners use this interpreter too
    host: str = "127.0.0.1"
    hub: Member | None = None
    url: str = ""
    agents: dict[str, Member] = field(default_factory=dict)
    detached: bool = False

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()

    # -- context manager ---------------------------------------------------------------------

    def __enter__(self) -> LocalNetwork:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.detached:
            self.stop()

    # -- paths -------------------------------------------------------------------------------

    @property
    def hub_dir(self) -> Path:
        return self.root / "hub"

    @property
    def pids_file(self) -> Path:
        return self.root / "pids"

    def site_dir(self, name: str) -> Path:
        return self.root / "sites" / name

    # -- starting ----------------------------------------------------------------------------

    def _cpnet(self, *args: str) -> list[str]:
        return [self.python, "-m", "cpnet", *args]

    def _spawn(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=child_env(),
                cwd=self.root,
                # Its own session: a terminal's Ctrl-C goes to the caller only, who stops the
                # network in order; and the process can outlive the caller (detach).
                start_new_session=True,
            )

    def init_hub(self, authority: str | None = None) -> str:
        """Create the hub's store and signing key (``cpnet hub init``); return the admin token."""
        self.hub_dir.mkdir(parents=True, exist_ok=True)
        argv = self._cpnet("hub", "init", "--data-dir", str(self.hub_dir), "--json")
        if authority:
            argv += ["--authority", authority]
        out = subprocess.run(
            argv, capture_output=True, text=True, env=child_env(), timeout=120, check=False
        )
        if out.returncode != 0:
            raise NetworkError(f"`cpnet hub init` failed: {(out.stderr or out.stdout).strip()}")
        return str(json.loads(out.stdout)["admin_token"])

    def start_hub(self, port: int | None = None, authority: str | None = None) -> str:
        """Initialise and start a hub, wait until it answers; return the admin token.

        Without ``port`` a free one is picked (and another tried if it is taken meanwhile).
        """
        if self.hub is not None:
            raise NetworkError("this network already has a hub")
        token = self.init_hub(authority)
        tries = 1 if port else PORT_TRIES
        for attempt in range(1, tries + 1):
            chosen = port or free_port(self.host)
            log = self.root / "hub.log"
            argv = self._cpnet(
                "hub", "--data-dir", str(self.hub_dir), "--host", self.host, "--port", str(chosen)
            )
            member = Member("hub", self._spawn(argv, log), log)
            self.hub, self.url = member, f"http://{self.host}:{chosen}"
            self._write_pids()
            try:
                self.wait_healthy(token)
                return token
            except NetworkError:
                self._stop_members([member])
                self.hub, self.url = None, ""
                self._write_pids()
                in_use = "address already in use" in log_tail(log).lower()
                if not in_use or attempt == tries:
                    raise
        raise AssertionError("unreachable")  # the loop returns or raises

    def wait_healthy(self, token: str, timeout: float = HEALTH_TIMEOUT_S) -> None:
        """Wait until the hub answers ``/v1/health``; raise NetworkError if it exits or hangs.

        ``token`` is any token of this hub: given explicitly, the SDK never looks for one in the
        caller's environment or config file, which belong to some other hub.
        """
        assert self.hub is not None
        deadline = time.monotonic() + timeout
        # No retry window: this loop does its own retrying, and must notice an exited hub at once.
        with Client(self.url, token, timeout=2.0, retry_window_s=0) as hub:
            while time.monotonic() < deadline:
                if not self.hub.running():
                    raise NetworkError(f"the hub exited at start:\n{log_tail(self.hub.log)}")
                try:
                    if hub.health().get("status") == "ok":
                        return
                except CpnetError:
                    pass  # not listening yet
                time.sleep(0.1)
        raise NetworkError(
            f"the hub did not answer at {self.url} within {timeout:g}s:\n{log_tail(self.hub.log)}"
        )

    def agent_config(
        self,
        name: str,
        token: str,
        pools: list[dict[str, Any]],
        options: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Path:
        """Write ``sites/<name>/agent.toml`` for a site's agent (readable by its owner only).

        ``extra`` adds or replaces top-level settings (e.g. ``hub``: the address the agent
        reaches the hub at from its own network namespace; ``probe_listen``).
        """
        site = self.site_dir(name)
        site.mkdir(parents=True, exist_ok=True)
        body: dict[str, Any] = {
            "hub": self.url,
            "token": token,
            "work_dir": str(site / "work"),
            "heartbeat_interval_s": self.heartbeat_s,
            # Several agents share this one machine: calibrating each would only measure the
            # same CPUs several times over while the demo runs.
            "measure_on_join": False,
        }
        if options:
            body["options"] = dict(options)
        if pools:
            body["pool"] = pools
        body.update(extra or {})
        path = site / "agent.toml"
        # The file holds the site's credential: create it private rather than chmod afterwards.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(tomli_w.dumps(body))
        return path

    def start_agent(
        self,
        name: str,
        token: str,
        pools: list[dict[str, Any]],
        options: dict[str, str] | None = None,
        *,
        extra: dict[str, Any] | None = None,
        prefix: list[str] | None = None,
    ) -> Member:
        """Write the agent's config and start ``cpnet agent --config`` for one site.

        ``pools`` are ``[[pool]]`` tables (see cpnet.agent.settings); empty lets the agent
        discover this machine. ``extra``: more agent settings (see ``agent_config``);
        ``prefix``: a command the agent runs under, e.g. ``["nsenter", "--net=/run/netns/NS"]``
        for an agent in its own network namespace. Returns at once: the agent joins the hub in
        the background.
        """
        if not self.url:
            raise NetworkError("start the hub before its agents")
        if name in self.agents and self.agents[name].running():
            raise NetworkError(f"agent {name!r} is already running")
        config = self.agent_config(name, token, pools, options, extra)
        log = self.site_dir(name) / "agent.log"
        proc = self._spawn([*(prefix or []), *self._cpnet("agent", "--config", str(config))], log)
        member = Member(name, proc, log, work_dir=self.site_dir(name) / "work")
        self.agents[name] = member
        self._write_pids()
        return member

    def check_alive(self) -> None:
        """Raise NetworkError naming the first process that exited, with its log's tail."""
        for member in [*self.agents.values(), *([self.hub] if self.hub else [])]:
            if not member.running():
                code = member.proc.returncode
                raise NetworkError(
                    f"{member.name} (pid {member.pid}) exited with code {code}:\n"
                    f"{log_tail(member.log)}"
                )

    # -- stopping ----------------------------------------------------------------------------

    def members(self) -> list[Member]:
        """Every process started, agents first (the order they are stopped in)."""
        return [*self.agents.values(), *([self.hub] if self.hub else [])]

    def detach(self) -> None:
        """Leave every process running after this object is gone (``pids`` says which)."""
        self.detached = True

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop everything: agents, then the task runners they leave behind, then the hub.

        Each gets SIGTERM, then SIGKILL after ``grace_s``. Agents go first so that none of them
        reports to (or retries against) a hub that is going away; runners are stopped after the
        agents because agents deliberately leave them running across a restart.
        """
        self._stop_members(list(self.agents.values()), grace_s)
        for member in self.agents.values():
            if member.work_dir is not None:
                kill_runners(member.work_dir)
        if self.hub is not None:
            self._stop_members([self.hub], grace_s)
        with contextlib.suppress(FileNotFoundError):
            self.pids_file.unlink()

    def _stop_members(self, members: list[Member], grace_s: float = STOP_GRACE_S) -> None:
        live = [m for m in members if m.running()]
        for m in live:
            m.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for m in live:
            try:
                m.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                # The whole session, while the unreaped leader still pins its PID (no reuse).
                _signal_session(m.pid, signal.SIGKILL)
                m.proc.wait(timeout=10)

    def _write_pids(self) -> None:
        live = [m.pid for m in self.members() if m.running()]
        if live:
            self.root.mkdir(parents=True, exist_ok=True)
            self.pids_file.write_text("".join(f"{pid}\n" for pid in live))
        else:
            with contextlib.suppress(FileNotFoundError):
                self.pids_file.unlink()


def _signal_session(sid: int, sig: int) -> None:
    """Send ``sig`` to every live process in session ``sid`` (the leader first)."""
    members = hostinfo.session_members(sid)
    for pid in sorted(members, key=lambda p: p != sid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def kill_runners(work_dir: Path) -> int:
    """SIGKILL every task runner (and the executors in its session) an agent left behind.

    Agents leave runners running on purpose, so that a restarted agent re-attaches to them; a
    network that is going away must stop them itself. ``runner.pid`` holds "pid start_ticks", so
    a PID the system has since reused for another process is left alone. Returns how many
    runners were still alive.
    """
    killed = 0
    for pidfile in Path(work_dir).glob("attempts/*/runner.pid"):
        try:
            fields = pidfile.read_text().split()
            pid, ticks = int(fields[0]), int(fields[1]) or None
        except (OSError, ValueError, IndexError):
            continue
        if not hostinfo.alive(pid, ticks):
            continue
        killed += 1
        # The runner leads its own session; its executors sit in process groups of their own
        # inside that session, so a killpg of the runner's group would miss them.
        _signal_session(pid, signal.SIGKILL)
    return killed
