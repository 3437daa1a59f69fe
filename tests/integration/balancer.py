"""A real load balancer (HAProxy from Debian) in front of hub replicas, for integration tests.

HAProxy runs as a plain foreground process (``-db``) with its configuration in the test's temp
dir and its port from ``services.free_port``; ``stop`` ends it by its PID. The configuration is
the one docs/operations.md shows, with shorter health-check intervals.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.integration.procs import wait_until

# Longer than the longest long poll an agent may ask for (api/routers/agents.MAX_WAIT_S = 60).
SERVER_TIMEOUT_S = 90


def haproxy_problem() -> str | None:
    """None if `haproxy` is installed, else what to do."""
    if shutil.which("haproxy") is None:
        sudo = "" if os.geteuid() == 0 else "sudo "
        return f"haproxy is not installed: `{sudo}apt-get install -y haproxy`"
    return None


def haproxy_config(port: int, backends: list[int], check_ms: int = 500) -> str:
    """HAProxy's configuration: round robin over the replicas (least connections: long polls
    hold theirs), health checks on /v1/health, a dead replica skipped after 2 failed checks,
    and a request whose replica failed retried on another one: any request that never reached
    a replica (conn-failure), and GET/HEAD also after an empty answer (the replica died with
    the request; other methods are the client's to retry, with their idempotency keys)."""
    servers = "\n".join(
        f"    server hub{i} 127.0.0.1:{p} check inter {check_ms} fall 2 rise 1"
        for i, p in enumerate(backends)
    )
    return f"""\
global
    maxconn 4096

defaults
    mode http
    option httplog
    timeout connect 2s
    timeout client {SERVER_TIMEOUT_S}s
    timeout server {SERVER_TIMEOUT_S}s
    timeout http-keep-alive 60s
    timeout queue 30s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout 503

frontend hub
    bind 127.0.0.1:{port}
    default_backend replicas

backend replicas
    balance leastconn
    option httpchk GET /v1/health
    http-check expect status 200
    http-request disable-l7-retry unless METH_GET
{servers}
"""


@dataclass
class Balancer:
    """HAProxy on `port`, in front of hub replicas on `backends` (ports on 127.0.0.1)."""

    work_dir: Path
    port: int
    backends: list[int] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        cfg = self.work_dir / "haproxy.cfg"
        cfg.write_text(haproxy_config(self.port, self.backends))
        check = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True)
        assert check.returncode == 0, f"haproxy refused its configuration:\n{check.stderr}"
        self.log = self.work_dir / f"haproxy-{time.time_ns()}.log"
        self.proc = subprocess.Popen(
            ["haproxy", "-db", "-f", str(cfg)],
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def up() -> bool:
            if self.proc and self.proc.poll() is not None:
                raise AssertionError(f"haproxy exited: {self.log.read_text()[-2000:]}")
            try:
                return httpx.get(f"{self.url}/v1/health", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(up, 30, "haproxy to pass /v1/health through", log=self.log)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
