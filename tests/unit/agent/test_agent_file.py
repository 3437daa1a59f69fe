"""The agent's TOML config file (agent/settings.py): keys that take true/false."""

from __future__ import annotations

from pathlib import Path

import pytest

from cpnet.agent.settings import AgentConfigError, read_agent_file


@pytest.mark.parametrize("key", ["keep_work_dirs", "measure_on_join"])
def test_flags_take_true_or_false_only(tmp_path: Path, key: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(f"{key} = true\n")
    assert read_agent_file(path)[key] is True
    path.write_text(f'{key} = "yes"\n')
    with pytest.raises(AgentConfigError, match=f"{key} must be true or false"):
        read_agent_file(path)
