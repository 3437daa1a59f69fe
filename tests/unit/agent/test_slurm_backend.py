"""The Slurm backend's batch script never carries task text; hostile strings run literally."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import pytest

from cpnet.agent.backends import get_backend
from cpnet.agent.backends.base import BackendConfig, Job
from cpnet.agent.backends.slurm import SCRIPT_FILE, SlurmBackend, batch_script
from cpnet.tasks.model import TaskSpec
from cpnet.tasks.states import State

HOSTILE = ["'; rm -rf / #", "$(touch /tmp/pwned)", "a\nb", "`id`", '"; echo x; "']
HOSTILE_TEXT = "".join(HOSTILE)


def test_registered() -> None:
    assert get_backend("slurm") is SlurmBackend


def test_batch_script_quotes_the_paths_only(tmp_path: Path) -> None:
    work_dir = tmp_path / "it's $(touch /tmp/pwned) `id`" / "a1"
    script = batch_script(work_dir)
    lines = script.splitlines()
    assert lines[0] == "#!/bin/sh" and len(lines) == 2
    assert lines[1].startswith("exec ") and "-m cpnet.agent.runner" in lines[1]
    assert shlex.split(lines[1]) == [
        "exec",
        sys.executable,
        "-m",
        "cpnet.agent.runner",
        str(work_dir),
    ]


@pytest.mark.integration
@pytest.mark.slurm
def test_hostile_task_strings_never_reach_the_script(
    slurm_env: dict[str, str], tmp_path: Path
) -> None:
    pwned = Path("/tmp/pwned")
    pwned.unlink(missing_ok=True)
    root = tmp_path / "root '; $(x) `y` #"
    backend = SlurmBackend(
        BackendConfig(work_root=root, options={"slurm_conf": slurm_env["SLURM_CONF"]})
    )
    spec = TaskSpec.model_validate(
        {
            "name": HOSTILE_TEXT.replace("\n", " "),
            "executors": [
                {"command": ["printf", "%s|", *HOSTILE]},
                {
                    "command": ["sh", "-c", 'printf "%s" "$HOSTILE"'],
                    "env": {"HOSTILE": HOSTILE_TEXT},
                },
            ],
        }
    )
    handle = backend.submit(Job("att-1", "task-1", "cpu", spec, Path("/ignored")))
    assert backend.submit(Job("att-1", "task-1", "cpu", spec, Path("/ignored"))) == handle
    work_dir = Path(handle)
    script = (work_dir / SCRIPT_FILE).read_text()
    assert script == batch_script(work_dir)
    for s in [*HOSTILE, "rm -rf", "pwned", "printf", "HOSTILE"]:
        assert s not in script.replace(str(root).replace("'", "'\"'\"'"), ""), s

    deadline = time.monotonic() + 60
    while not (status := backend.poll(handle)).final:
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    assert status.state is State.COMPLETE, (status.reason, status.system_logs)
    logs = status.executor_logs
    assert logs[0].stdout == "".join(f"{s}|" for s in HOSTILE)
    assert logs[1].stdout == HOSTILE_TEXT
    assert not pwned.exists()
