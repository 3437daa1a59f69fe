"""A private local Ray head for one agent (``ray_local``): ``ray start --head --block`` on loopback
with free ports, in a session of its own."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path

from cpnet.agent.backends.base import (
    BackendError,
)
from cpnet.agent.backends.ray.api import RayApi
from cpnet.agent.backends.ray.pools import alive

log = logging.getLogger(__name__)

LOG_TAIL = 2048  # characters of Ray's job log quoted when a job fails without a runner verdict


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """The local head's ``ray start`` gets SIGTERM when the agent dies, even by SIGKILL."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class LocalHead:
    """``ray start --head --block`` on loopback with free ports, in a session of its own."""

    def __init__(self, cpus: int | None = None, timeout_s: float = 120.0) -> None:
        self.cpus = cpus
        ray_bin = Path(sys.executable).with_name("ray")
        if not ray_bin.exists():
            raise BackendError(f"--ray-local needs the ray command ({ray_bin} is missing)")
        self.temp_dir = tempfile.mkdtemp(prefix="cpnet-ray-")
        gcs, dash, client, nm, om, a1, a2, rt, mx = _free_ports(9)
        self.address = f"http://127.0.0.1:{dash}"
        argv = [
            str(ray_bin),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={gcs}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            f"--ray-client-server-port={client}",
            f"--node-manager-port={nm}",
            f"--object-manager-port={om}",
            f"--dashboard-agent-listen-port={a1}",
            f"--dashboard-agent-grpc-port={a2}",
            f"--runtime-env-agent-port={rt}",
            f"--metrics-export-port={mx}",
            f"--temp-dir={self.temp_dir}",
            "--disable-usage-stats",
        ]
        if cpus is not None:
            argv.append(f"--num-cpus={cpus}")
        env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0")
        self.log_path = Path(self.temp_dir) / "ray-start.log"
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self._finalizer = weakref.finalize(self, LocalHead._stop, self.proc, self.temp_dir)
        log.info("starting a local Ray head (pid %d, Jobs API %s)", self.proc.pid, self.address)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                self.close()
                raise BackendError(f"the local Ray head exited: {self.log_tail()}")
            try:
                nodes = RayApi(self.address, 5.0).nodes()
                if alive(nodes):
                    break
            except BackendError:
                pass
            if time.monotonic() > deadline:
                self.close()
                raise BackendError(f"the local Ray head did not answer in {timeout_s:g} s")
            time.sleep(0.3)

    def log_tail(self) -> str:
        """Why the head stopped: Ray's record of the processes that exited unexpectedly, or
        else the end of ``ray start``'s output (colour codes removed)."""
        exits = Path(self.temp_dir) / "session_latest" / "logs" / "ray_process_exit.log"
        for path in (exits, self.log_path):
            with contextlib.suppress(OSError):
                text = _ANSI.sub("", path.read_text(errors="replace")).strip()
                if text:
                    return text[-LOG_TAIL:]
        return ""

    def close(self) -> None:
        self._finalizer()

    @staticmethod
    def _stop(proc: subprocess.Popen[bytes], temp_dir: str) -> None:
        """SIGTERM ``ray start`` (it drains and stops its processes); SIGKILL what is left of its
        session after 30 s; remove the temp dir."""
        sid = proc.pid
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while _session_members(sid) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in _session_members(sid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _session_members(sid: int) -> list[int]:
    from cpnet.agent import hostinfo

    return list(hostinfo.session_members(sid))


__all__ = ["LocalHead"]
