"""docs/providers.md's single-machine block runs verbatim: discovery, a pool with the machine's
real capacity, and a task that completes on it."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
DOC = Path(__file__).resolve().parents[2] / "docs" / "providers.md"


def single_machine_script() -> str:
    section = DOC.read_text().split("## A single machine", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the single-machine section has one bash block"
    return blocks[0]


def test_single_machine_block_works_verbatim(tmp_path: Path) -> None:
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", 8471)) == 0:
            pytest.skip("port 8471 is taken; the block uses it")
    venv_bin = Path(sys.executable).parent
    script = tmp_path / "providers.sh"
    script.write_text("set -euo pipefail\n" + single_machine_script())
    env = {k: v for k, v in os.environ.items() if not k.startswith("CPNET_")}
    env["PATH"] = f"{venv_bin}:{env['PATH']}"
    env["HOME"] = str(tmp_path)
    try:
        out = subprocess.run(
            ["bash", str(script)],
            cwd=DOC.parents[1],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        subprocess.run(["pkill", "-f", "/tmp/cpnet-prov/agent"], check=False)
        subprocess.run(["pkill", "-f", "cpnet hub --port 8471"], check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    cores = len(os.sched_getaffinity(0))
    assert re.search(rf"pool \S+ {cores}(\.0)? cores online: \S", out.stdout), out.stdout[-3000:]
    assert f"hello from {socket.gethostname()}" in out.stdout
