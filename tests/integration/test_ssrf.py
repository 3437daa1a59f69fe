"""SSRF guards through a real hub and real agents (docs/security.md, "Limits"): with the secure
defaults a task naming a loopback address is refused at submission (400 naming the input's url),
and one naming a host that resolves to loopback, or redirecting to it, fails staging with the
rule named, while nothing reaches the server; an agent whose operator allows it stages the same
input."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from cpnet.tasks.states import State
from services import free_port
from tests.integration.procs import AgentProc, HubProc, make_world, pool, wait_until

pytestmark = pytest.mark.integration

BODY = b"the provider's intranet\n"


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.seen.append(self.path)  # type: ignore[attr-defined]
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{self.server.server_port}/data")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def intranet() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.seen = []  # type: ignore[attr-defined]
    threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield srv
    finally:
        srv.shutdown()


@pytest.fixture
def strict_hub(tmp_path: Path) -> Iterator[HubProc]:
    h = HubProc(tmp_path / "hub", free_port(), allow_loopback=False)
    h.data_dir.mkdir()
    h.init()
    h.start()
    yield h
    h.kill()


def _task(url: str) -> dict:
    return {
        "inputs": [{"path": "in.txt", "url": url}],
        "executors": [{"command": ["cat", "in.txt"]}],
        "resources": {"cpu_cores": 1},
        "max_attempts": 1,
    }


def test_private_targets_are_refused_unless_the_operator_allows_them(
    strict_hub: HubProc, agents: list, tmp_path: Path, intranet: ThreadingHTTPServer
) -> None:
    port = intranet.server_port
    world = make_world(strict_hub, {"a": ("general", "440100"), "b": ("general", "440100")})
    strict = AgentProc(
        strict_hub,
        world.site_tokens["a"],
        tmp_path / "strict",
        [pool("strict", cores=2)],
        allow_loopback=False,
    )
    allowing = AgentProc(
        strict_hub,
        world.site_tokens["b"],
        tmp_path / "allowing",
        [pool("allowing", cores=2)],
        allow_loopback=False,
        options={"allow_private_urls": "localhost"},
    )
    for a in (strict, allowing):
        a.start()
        agents.append(a)
    user = strict_hub.client(world.user_token)
    wait_until(lambda: len(user.pools()) == 2, 30, "both pools", log=strict.log)

    # A literal loopback address: refused by the hub at submission, naming the field.
    r = httpx.post(
        f"{strict_hub.url}/v1/tasks",
        json=_task(f"http://127.0.0.1:{port}/data"),
        headers={"authorization": f"Bearer {world.user_token}"},
    )
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "url_not_allowed" and err["field"] == "inputs[0].url"
    assert "127.0.0.1, a loopback address" in err["message"]
    assert "CPNET_ALLOW_PRIVATE_URLS" in err["message"]
    # TES too: the same service behind both front doors
    r = httpx.post(
        f"{strict_hub.url}/ga4gh/tes/v1/tasks",
        json={
            "inputs": [{"path": "/in.txt", "url": f"http://[::1]:{port}/data"}],
            "executors": [{"image": "ubuntu", "command": ["true"]}],
        },
        headers={"authorization": f"Bearer {world.user_token}"},
    )
    assert r.status_code == 400 and "loopback" in r.json()["error"]["message"], r.text

    # A name resolving to loopback, and a redirect to it: the strict agent's staging refuses.
    named = user.submit(
        {
            **_task(f"http://localhost:{port}/data"),
            "constraints": {"pools": [_pool(user, "strict")]},
        }
    )
    done = user.wait(named.id, timeout=60)
    assert done.state is State.SYSTEM_ERROR
    assert "localhost resolves to" in (done.reason or "") and "allow_private_urls" in (
        done.reason or ""
    ), done.reason
    assert intranet.seen == []  # nothing reached the server

    # The allowing agent (allow_private_urls = "localhost") stages the same name ...
    ok = user.submit(
        {
            **_task(f"http://localhost:{port}/data"),
            "constraints": {"pools": [_pool(user, "allowing")]},
        }
    )
    finished = user.wait(ok.id, timeout=60)
    assert finished.state is State.COMPLETE, finished.reason
    assert intranet.seen == ["/data"]
    # ... but not a redirect from it to the literal 127.0.0.1, which its list does not name.
    hop = user.submit(
        {
            **_task(f"http://localhost:{port}/redirect"),
            "constraints": {"pools": [_pool(user, "allowing")]},
        }
    )
    failed = user.wait(hop.id, timeout=60)
    assert failed.state is State.SYSTEM_ERROR
    assert "127.0.0.1, a loopback address" in (failed.reason or ""), failed.reason
    assert intranet.seen == ["/data", "/redirect"]  # the redirect's target was never asked


def _pool(user, name: str) -> str:  # type: ignore[no-untyped-def]
    return next(p.id for p in user.pools() if p.name == name)
