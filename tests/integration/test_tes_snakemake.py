"""A real Snakemake workflow (two rules and a target) run through snakemake-executor-plugin-tes
on a real hub and agent.

What it takes (docs/tes.md): a storage provider shared by the client and the executors (here
the `fs` provider over a directory both see), `python` with the same snakemake on the executor
side (the agent's venv), `rsync` (the fs provider copies with it), pip access to the package
index (each job pip-installs the storage plugin), the TES URL without the trailing `/v1`, and a
private /tmp per task (every job runs `mkdir /tmp/conda`; its job script is staged at /tmp).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.procs import AgentProc, HubProc, kill_runners, make_world, pool, wait_until

pytestmark = pytest.mark.integration

SNAKEFILE = """\
rule all:
    input: "b.txt"

rule a:
    output: "a.txt"
    shell: "echo alpha > {output}"

rule b:
    input: "a.txt"
    output: "b.txt"
    shell: "tr a-z A-Z < {input} > {output}; echo done >> {output}"
"""


@pytest.fixture
def shared() -> Iterator[Path]:
    """Outside /tmp: the executors' /tmp is private, the storage must be seen by both sides."""
    root = Path(tempfile.mkdtemp(prefix="cpnet-smk-", dir="/var/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_snakemake_workflow_through_tes(
    hub: HubProc, agents: list[AgentProc], shared: Path, monkeypatch: pytest.MonkeyPatch
):
    if shutil.which("rsync") is None:
        pytest.fail("rsync is missing: the fs storage plugin copies with it (apt install rsync)")
    venv_bin = str(Path(sys.executable).parent)
    # The executors run `python -m snakemake` and `pip`: the agent passes its PATH on to them.
    monkeypatch.setenv("PATH", f"{venv_bin}{os.pathsep}{os.environ['PATH']}")
    world = make_world(hub, {"wf": ("general", "440100")})
    agent = AgentProc(
        hub,
        world.site_tokens["wf"],
        shared / "agent",
        [
            pool(
                "cpu",
                cores=2,
                memory_gb=8,
                hardware={"cpu_cores": 2, "memory_gb": 8, "disk_gb": 20},
            )
        ],
        options={"allow_host_exec": "true", "container_runtime": "none"},
    )
    agent.start()
    agents.append(agent)
    user = hub.client(world.user_token)
    wait_until(lambda: user.pools(), 30, "the pool")

    workflow, storage = shared / "workflow", shared / "storage"
    workflow.mkdir()
    storage.mkdir()
    (workflow / "Snakefile").write_text(SNAKEFILE)
    cmd = [
        f"{venv_bin}/snakemake",
        "--executor", "tes",
        "--tes-url", f"{hub.url}/ga4gh/tes",  # no trailing /v1: py-tes 0.4 adds it
        "--jobs", "2",
        "--default-storage-provider", "fs",
        "--default-storage-prefix", str(storage),
        # snakemake's default disk_mb (50 GB) is more than this pool has: ask for what it needs
        "--default-resources", "mem_mb=2000", "disk_mb=100",
        "--latency-wait", "10",
    ]  # fmt: skip
    env = {**os.environ, "SNAKEMAKE_TES_TOKEN": world.user_token}
    try:
        done = subprocess.run(
            cmd, cwd=workflow, env=env, capture_output=True, text=True, timeout=280
        )
    finally:
        agent.kill()
        kill_runners(agent.work_dir)
    assert done.returncode == 0, done.stderr[-6000:]
    assert (storage / "b.txt").read_text() == "ALPHA\ndone\n"
    tasks = {t.name: t for t in user.tasks().tasks}
    assert sorted(tasks) == ["snakejob.a.2.sh", "snakejob.b.1.sh"], sorted(tasks)
    for t in tasks.values():
        assert t.state.value == "COMPLETE"
        (attempt,) = t.attempts
        assert any("ran on the host, not in image 'snakemake/snakemake" in x
                   for x in attempt.system_logs)  # fmt: skip
        assert any("/tmp: private" in x for x in attempt.system_logs)
