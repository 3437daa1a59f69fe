"""Fixtures that start a real hub (and agents) as processes and always stop them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services import free_port
from tests.integration.procs import AgentProc, HubProc, kill_runners

pytestmark = pytest.mark.integration


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubProc]:
    h = HubProc(tmp_path / "hub", free_port())
    h.data_dir.mkdir()
    h.init()
    h.start()
    yield h
    h.kill()


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[list[AgentProc]]:
    """A list the test appends started agents to; all are stopped (runners too) at the end."""
    started: list[AgentProc] = []
    yield started
    for a in started:
        a.kill()
        kill_runners(a.work_dir)
