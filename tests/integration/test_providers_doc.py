"""docs/providers.md's single-machine block runs verbatim: discovery, a pool with the machine's
real capacity, and a task that completes on it."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest

from tests.integration.procs import run_doc_block

pytestmark = pytest.mark.integration
DOC = Path(__file__).resolve().parents[2] / "docs" / "providers.md"


def single_machine_script() -> str:
    section = DOC.read_text().split("## A single machine", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the single-machine section has one bash block"
    return blocks[0]


def test_single_machine_block_works_verbatim(tmp_path: Path) -> None:
    out = run_doc_block(
        single_machine_script(),
        DOC.parents[1],
        tmp_path,
        8471,
        ["/tmp/cpnet-prov/agent", "cpnet hub --port 8471"],
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    cores = len(os.sched_getaffinity(0))
    assert re.search(rf"pool \S+ {cores}(\.0)? cores online: \S", out.stdout), out.stdout[-3000:]
    assert f"hello from {socket.gethostname()}" in out.stdout
