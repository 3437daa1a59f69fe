"""docs/providers/ray.md's one-machine block runs verbatim: a Ray head, a hub, an agent with
``--backend ray --ray-address``, the cluster as a pool with Ray's real capacity, and a task that
completes as a Ray Job."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cpnet.agent import hostinfo

pytestmark = [pytest.mark.integration, pytest.mark.ray]
DOC = Path(__file__).resolve().parents[2] / "docs" / "providers" / "ray.md"
PORTS = (6391, 8266, 8472, 9011, 52366)


def one_machine_script() -> str:
    section = DOC.read_text().split("## Try it on one machine", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the one-machine section has one bash block"
    return blocks[0]


def _stop_session(sid: int) -> None:
    """SIGTERM what is left of the script's session (the Ray head drains), SIGKILL after 40 s,
    and wait (20 s at most) for the killed to be gone."""
    for pid in hostinfo.session_members(sid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 40
    while hostinfo.session_members(sid) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in hostinfo.session_members(sid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 20  # a SIGKILLed process is gone soon, not at once
    while hostinfo.session_members(sid) and time.monotonic() < deadline:
        time.sleep(0.1)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:300]
    except OSError:
        return f"{pid} (gone)"


def test_one_machine_block_works_verbatim(tmp_path: Path) -> None:
    for port in PORTS:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                pytest.skip(f"port {port} is taken; the block uses it")
    venv_bin = Path(sys.executable).parent
    if not (venv_bin / "ray").exists():
        pytest.skip("no ray in this venv (make venv installs it)")
    script = tmp_path / "ray-provider.sh"
    script.write_text("set -euo pipefail\n" + one_machine_script())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CPNET_", "RAY_"))}
    env["PATH"] = f"{venv_bin}:{env['PATH']}"
    env["HOME"] = str(tmp_path)
    proc = subprocess.Popen(
        ["bash", str(script)],
        cwd=DOC.parents[2],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _stop_session(proc.pid)
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    assert re.search(r"^pool cpu 2(\.0)? cores online: ray$", out, flags=re.M), out[-3000:]
    assert "hello from a Ray job" in out
    assert re.search(r"^cpnet-att\S+$", out, flags=re.M), out[-3000:]
    left = hostinfo.session_members(proc.pid)
    assert not left, [_cmdline(pid) for pid in left]
