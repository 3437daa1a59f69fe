"""The README's five-minute tour runs verbatim (in a bash with the venv's cpnet on PATH)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.integration.procs import run_doc_block

pytestmark = pytest.mark.integration
README = Path(__file__).resolve().parents[2] / "README.md"


def tour_script() -> str:
    text = README.read_text()
    section = text.split("## A five-minute tour", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the tour is one bash block"
    return blocks[0]


def test_readme_tour_works_verbatim(tmp_path: Path) -> None:
    # `source .venv/bin/activate` needs the repo as cwd; everything else is the README's text.
    out = run_doc_block(tour_script(), README.parent, tmp_path, 8470, ["/tmp/cpnet-tour/agent"])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "hello from tsk_" in out.stdout
    # The placement is an event within QUEUED, shown as such, not as a change QUEUED → QUEUED.
    assert "QUEUED (stays)" in out.stdout and "QUEUED → QUEUED" not in out.stdout
    assert "signature valid" in out.stdout
