"""The README's five-minute tour runs verbatim (in a bash with the venv's cpnet on PATH)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
README = Path(__file__).resolve().parents[2] / "README.md"


def tour_script() -> str:
    text = README.read_text()
    section = text.split("## A five-minute tour", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the tour is one bash block"
    return blocks[0]


def test_readme_tour_works_verbatim(tmp_path: Path) -> None:
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", 8470)) == 0:
            pytest.skip("port 8470 is taken; the tour uses the default port")
    venv_bin = Path(sys.executable).parent
    script = tmp_path / "tour.sh"
    # `source .venv/bin/activate` needs the repo as cwd; everything else is the README's text.
    script.write_text("set -euo pipefail\n" + tour_script())
    env = {k: v for k, v in os.environ.items() if not k.startswith("CPNET_")}
    env["PATH"] = f"{venv_bin}:{env['PATH']}"
    env["HOME"] = str(tmp_path)
    try:
        out = subprocess.run(
            ["bash", str(script)],
            cwd=README.parent,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        subprocess.run(["pkill", "-f", "/tmp/cpnet-tour/agent"], check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "hello from tsk_" in out.stdout
    # The placement is an event within QUEUED, shown as such, not as a change QUEUED → QUEUED.
    assert "QUEUED (stays)" in out.stdout and "QUEUED → QUEUED" not in out.stdout
    assert "signature valid" in out.stdout
