"""The SDK and the CLI against the real hub: one `cpnet hub` process (its own SQLite store) and one
local agent for the whole directory, and a fresh organisation per test.

The shared agent serves two pools at one site, so tasks really run (QUEUED → … → COMPLETE):
``cpu`` (2 cores, no GPU) and ``gpu1`` (declared as 64 cores, 512 GB, 8×H100, labels
rack=a1/zone=b, priced in CNY). The local backend never starts a GPU program here; the GPUs are
only declared, so discovery, placement and explanations have something to show.

The only thing between the SDK and the hub that is not real is :class:`FaultyNetworkTransport`:
it forwards every request to the real hub over the real network, records it, and can raise a
transport error *before* forwarding (the hub never saw the request) or *after* (the hub handled
it and the answer was lost). (test_client.py also points the SDK at a plain static web server,
to see what it says when the URL is not a cpnet hub.)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer

from cpnet.cli.main import app
from cpnet.client import Client
from cpnet.tasks.states import State
from services import free_port
from tests.integration.procs import (
    AgentProc,
    HubProc,
    World,
    kill_runners,
    make_world,
    pool,
    wait_until,
)

# A constraint no pool meets (no pool is in region 99): such a task stays QUEUED until canceled.
STAYS_QUEUED: dict[str, Any] = {"constraints": {"regions": ["99"]}}


def gpu_pool() -> dict[str, Any]:
    """The shared agent's declared GPU pool (see the module docstring)."""
    d = pool(
        "gpu1", cores=64, memory_gb=512, type="intelligent", labels={"rack": "a1", "zone": "b"}
    )
    d["hardware"].update(cpu_model="Xeon", accelerators=[{"model": "H100", "count": 8}])
    d["price"] = {"currency": "CNY", "cpu_core_hour": 0.05, "gpu_hour": 12.0}
    return d


def command_paths(command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and group in the tree, as argument paths from the root."""
    paths = [path]
    if hasattr(command, "list_commands"):  # a group (Typer bundles its own Click)
        ctx = typer.Context(command)
        for name in command.list_commands(ctx):
            paths += command_paths(command.get_command(ctx, name), (*path, name))
    return paths


# Every `cpnet` command and group (the root is `()`), so tests over them cover new ones too.
ALL_COMMANDS = command_paths(typer.main.get_command(app))


@dataclass
class Net:
    """The directory's hub, its provider world and the agent serving pools `cpu` and `gpu1`."""

    hub: HubProc
    provider: World
    agent: AgentProc
    pool_ids: dict[str, str]  # pool name -> id


@pytest.fixture(scope="package")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    root = tmp_path_factory.mktemp("realhub")
    hub = HubProc(root / "hub", free_port())
    hub.data_dir.mkdir()
    hub.init()
    agent = None
    try:
        hub.start()
        provider = make_world(hub, {"sz1": ("intelligent", "440300")}, org="acme")
        agent = AgentProc(
            hub,
            provider.site_tokens["sz1"],
            root / "agent",
            pools=[pool("cpu", cores=2, memory_gb=4), gpu_pool()],
            # Nothing here is about losing an agent: a slow heartbeat keeps the pools online
            # even when a loaded CI machine delays one (tasks still start at once: the hub
            # wakes the agent's assignment poll).
            heartbeat_s=2.0,
        )
        agent.start()
        with hub.client(provider.user_token) as c:

            def both() -> list:
                found = c.pools()
                return found if len(found) == 2 else []

            pools = wait_until(both, 60, "the agent's two pools")
        yield Net(hub, provider, agent, {p.name: p.id for p in pools})
    finally:
        if agent is not None:
            agent.kill()
            kill_runners(agent.work_dir)
        hub.kill()


@dataclass
class Tenant:
    """A fresh organisation on the shared hub with a user (its tasks are its own)."""

    net: Net
    world: World

    @property
    def url(self) -> str:
        return self.net.hub.url

    @property
    def token(self) -> str:
        return self.world.user_token

    def client(self, **kw: Any) -> Client:
        return Client(self.url, self.token, **kw)


@pytest.fixture
def tenant(net: Net) -> Iterator[Tenant]:
    """A fresh organisation; its unfinished tasks are canceled afterwards (they would otherwise
    stay in the shared hub's queue, or keep running on the shared agent)."""
    t = Tenant(net, make_world(net.hub, {}, org=f"org-{uuid.uuid4().hex[:10]}"))
    yield t
    with t.client() as c:
        for task in list(c.iter_tasks()):
            if not task.state.terminal:
                c.cancel(task.id)


class FaultyNetworkTransport(httpx.BaseTransport):
    """A fault injector at the network boundary: forwards each request to the real hub over a real
    HTTP connection and records it; ``faults`` holds ``("before", exc)`` (raise without sending:
    the hub never saw the request), ``("after", exc)`` (send, let the hub handle it, then raise:
    the answer was lost) or ``("status", 503)`` (answer that status without sending: a proxy in
    front of a hub in trouble), used up one per request."""

    def __init__(self, faults: list[tuple[str, Exception | int]] | None = None) -> None:
        self.faults = list(faults or [])
        self.requests: list[httpx.Request] = []
        self._net = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        when, exc = self.faults.pop(0) if self.faults else (None, None)
        if when == "before":
            raise exc  # type: ignore[misc]
        if when == "status":
            return httpx.Response(exc, json={"error": {"code": "unavailable"}}, request=request)  # type: ignore[arg-type]
        response = self._net.handle_request(request)
        if when == "after":
            response.read()
            response.close()
            raise exc  # type: ignore[misc]
        return response

    def close(self) -> None:
        self._net.close()


def gate_command(gate: Path) -> list[str]:
    """A command that runs until the file `gate` exists (so a test decides when it ends)."""
    return ["sh", "-c", 'while [ ! -e "$0" ]; do sleep 0.05; done; echo released', str(gate)]


def wait_for_state(c: Client, task_id: str, state: State, timeout: float = 60) -> None:
    wait_until(lambda: c.task(task_id).state is state, timeout, f"task {task_id} to be {state}")


@pytest.fixture(autouse=True)
def isolated_config(tmp_path, monkeypatch) -> Iterator[Any]:
    """Keep every test away from the real ~/.config and from CPNET_* in the environment."""
    monkeypatch.setenv("CPNET_CONFIG", str(tmp_path / "config.toml"))
    for name in ("CPNET_HUB", "CPNET_TOKEN", "CPNET_RETRY_WINDOW_S"):
        monkeypatch.delenv(name, raising=False)
    yield tmp_path / "config.toml"


@pytest.fixture
def dead_url() -> str:
    """A hub URL where nothing listens (connections are refused for real)."""
    return f"http://127.0.0.1:{free_port()}"
