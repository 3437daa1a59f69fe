"""A real load balancer (HAProxy from Debian) in front of hub replicas, for integration tests.

HAProxy runs as a plain foreground process (``-db``) with its configuration in the test's temp
dir and its port from ``services.free_port``; ``stop`` ends it by its PID. The configuration is
cpnet.api.balancer's, the one docs/operations.md shows, with shorter health-check intervals.
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

from cpnet.api.balancer import haproxy_config
from tests.integration.procs import wait_until

CHECK_MS = 500  # health checks: a dead replica is out within about a second


def haproxy_problem() -> str | None:
    """None if `haproxy` is installed, else what to do."""
    if shutil.which("haproxy") is None:
        sudo = "" if os.geteuid() == 0 else "sudo "
        return f"haproxy is not installed: `{sudo}apt-get install -y haproxy`"
    return None


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
        backends = [f"127.0.0.1:{p}" for p in self.backends]
        cfg.write_text(
            haproxy_config(f"127.0.0.1:{self.port}", backends, check_ms=CHECK_MS, log_stdout=True)
        )
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
