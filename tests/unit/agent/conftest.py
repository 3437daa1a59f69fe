"""Fixtures for the agent tests: local backends over a temp work root, a tiny HTTP server."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from cpnet.agent import hostinfo
from cpnet.agent.backends.base import (
    Backend,
    BackendConfig,
    Handle,
    Job,
    JobStatus,
    PoolCapacity,
    PoolDecl,
)
from cpnet.agent.backends.local import LocalBackend
from cpnet.tasks.model import TaskSpec

FINAL_TIMEOUT_S = 20.0  # generous: a runner starts a Python interpreter (~0.3 s here)


def wait_for(predicate: Callable[[], Any], timeout: float = FINAL_TIMEOUT_S, what: str = "") -> Any:
    """Poll `predicate` until it returns something truthy, failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(0.02)


def wait_final(backend: Backend, handle: Handle, timeout: float = FINAL_TIMEOUT_S) -> JobStatus:
    """Poll until the attempt is final and return its status."""

    def final() -> JobStatus | None:
        status = backend.poll(handle)
        return status if status.final else None

    return wait_for(final, timeout, f"{handle} to end")


def job(spec: dict[str, Any], attempt_id: str = "a1", pool: str = "local") -> Job:
    """A Job for `spec` (a TaskSpec as a dict); the backend picks the work dir."""
    return Job(attempt_id, f"task-{attempt_id}", pool, TaskSpec.model_validate(spec), Path("."))


def gate_command(gate: Path) -> list[str]:
    """An executor that waits (at most 30 s) until the file `gate` exists."""
    code = (
        "import os, sys, time\n"
        "deadline = time.time() + 30\n"
        "while not os.path.exists(sys.argv[1]) and time.time() < deadline:\n"
        "    time.sleep(0.02)\n"
    )
    return [sys.executable, "-c", code, str(gate)]


def small_pool(name: str = "p2", cores: float = 2.0) -> PoolDecl:
    return PoolDecl(
        name=name,
        type="general",
        total=PoolCapacity(cpu_cores=cores, ram_gb=8.0, disk_gb=10.0, gpus=0),
        cpu_model="test cpu",
        gpu_model=None,
        gpu_memory_gb=None,
        labels={},
    )


def kill_runners(work_root: Path) -> None:
    """SIGKILL the runners of every attempt under `work_root`, and everything they started."""
    for pid_file in work_root.glob("*/runner.pid"):
        fields = pid_file.read_text().split()
        if len(fields) >= 2 and fields[0].isdigit():
            for pid in hostinfo.session_members(int(fields[0])):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture
def work_root(tmp_path: Path) -> Iterator[Path]:
    """A work root whose runners (and everything they started) are killed after the test."""
    root = tmp_path / "work"
    root.mkdir()
    yield root
    kill_runners(root)


LOOPBACK = "127.0.0.1/32"


@pytest.fixture
def make_backend(work_root: Path) -> Callable[..., LocalBackend]:
    """Build LocalBackends over the shared work root (several = an agent restart)."""

    def make(pools: list[PoolDecl] | None = None, **options: str) -> LocalBackend:
        return LocalBackend(BackendConfig(work_root=work_root, pools=pools, options=options))

    return make


@pytest.fixture
def loopback_backend(make_backend: Callable[..., LocalBackend]) -> LocalBackend:
    """A local backend whose operator allows staging from 127.0.0.1 (the test servers'
    address; the SSRF guard refuses loopback by default)."""
    return make_backend(allow_private_urls=LOOPBACK)


@pytest.fixture
def outside_tmp() -> Iterator[Path]:
    """A root that is not under /tmp, whose runners are killed and which is removed after the
    test (a work root there gets a private /tmp that hides the whole host /tmp)."""
    root = Path(tempfile.mkdtemp(prefix="cpnet-test-", dir="/var/tmp"))
    yield root
    kill_runners(root / "work")
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def outside_tmp_backend(outside_tmp: Path) -> LocalBackend:
    """A local backend whose work root is outside /tmp."""
    return LocalBackend(BackendConfig(work_root=outside_tmp / "work", pools=None, options={}))


@pytest.fixture
def backend(make_backend: Callable[..., LocalBackend]) -> LocalBackend:
    return make_backend()


class _Store(BaseHTTPRequestHandler):
    """Serves GETs from, and takes PUTs into, the server's `files` dict."""

    def do_GET(self) -> None:
        if self.path == "/slow":
            self._trickle()
            return
        body = self.server.files.get(self.path)  # type: ignore[attr-defined]
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _trickle(self) -> None:
        """Send a byte every 20 ms for at most 10 s: a download that is still going on."""
        self.send_response(200)
        self.send_header("Content-Length", "500")
        self.end_headers()
        try:
            for _ in range(500):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.02)
        except (BrokenPipeError, ConnectionResetError):
            return  # the client went away (canceled): that is what the test wants

    def do_PUT(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.server.files[self.path] = self.rfile.read(length)  # type: ignore[attr-defined]
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests assert on what was stored, not on access logs."""


@pytest.fixture
def http_store() -> Iterator[tuple[str, dict[str, bytes]]]:
    """(base URL, files dict) of an HTTP server on 127.0.0.1 in a thread."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Store)
    server.files = {}  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", server.files  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
