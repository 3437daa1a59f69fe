"""The dev Slurm cluster (scripts/dev-slurm.sh) does what a future Slurm backend will rely on.

No cpnet code here: these tests drive the real Slurm clients (sinfo, sbatch, scontrol, scancel,
sacct) against the throw-away cluster that ``slurm_env`` provides: nodes n1..n4, partition ``cpu``
(n1, n2; the default) and ``big`` (n3, n4).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

FINAL_STATES = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
    "PREEMPTED",
}


def run(env: dict[str, str], *args: str, timeout: float = 30) -> str:
    proc = subprocess.run(
        list(args),
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"{args} exit {proc.returncode}: {proc.stderr.strip()}"
    return proc.stdout


def sbatch(env: dict[str, str], cwd: Path, *args: str) -> str:
    out = run(env, "sbatch", "--parsable", "-D", str(cwd), *args)
    return out.strip().split(";")[0]


def job_fields(env: dict[str, str], job_id: str) -> dict[str, str]:
    """``scontrol show job`` as a dict (the job must still be known: MinJobAge is 600 s)."""
    out = run(env, "scontrol", "-o", "show", "job", job_id)
    return dict(re.findall(r"(\w+)=(\S*)", out))


def wait_state(
    env: dict[str, str], job_id: str, states: set[str], timeout: float = 30
) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        fields = job_fields(env, job_id)
        if fields.get("JobState") in states:
            return fields
        assert time.monotonic() < deadline, (
            f"job {job_id} not in {states} after {timeout}s: {fields}"
        )
        time.sleep(0.1)


def test_sinfo_lists_partitions_and_nodes(slurm_env: dict[str, str]) -> None:
    data = json.loads(run(slurm_env, "sinfo", "--json"))
    nodes = {n["name"]: n for n in data["nodes"]}
    assert sorted(nodes) == ["n1", "n2", "n3", "n4"]
    assert {p for n in nodes.values() for p in n["partitions"]} == {"cpu", "big"}
    assert {n for n, v in nodes.items() if "cpu" in v["partitions"]} == {"n1", "n2"}
    assert {n for n, v in nodes.items() if "big" in v["partitions"]} == {"n3", "n4"}
    assert run(slurm_env, "sinfo", "-h", "-o", "%P", "-p", "cpu").strip() == "cpu*"


def test_batch_job_completes_with_output(slurm_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "hi.out"
    job_id = sbatch(slurm_env, tmp_path, "-p", "cpu", "-o", str(out), "--wrap", "echo hi")
    fields = wait_state(slurm_env, job_id, FINAL_STATES)
    assert fields["JobState"] == "COMPLETED", fields
    assert fields["ExitCode"] == "0:0"
    assert fields["NodeList"] in {"n1", "n2"}
    assert out.read_text() == "hi\n"


def test_two_node_job_runs_on_big_nodes(slurm_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "nodes.out"
    job_id = sbatch(
        slurm_env,
        tmp_path,
        "-N",
        "2",
        "-p",
        "big",
        "-o",
        str(out),
        "--wrap",
        "echo nodelist=$SLURM_JOB_NODELIST nnodes=$SLURM_JOB_NUM_NODES",
    )
    fields = wait_state(slurm_env, job_id, FINAL_STATES)
    assert fields["JobState"] == "COMPLETED", fields
    assert fields["NodeList"] == "n[3-4]"
    assert fields["NumNodes"] == "2"
    assert out.read_text() == "nodelist=n[3-4] nnodes=2\n"


def test_scancel_ends_job_cancelled(slurm_env: dict[str, str], tmp_path: Path) -> None:
    job_id = sbatch(slurm_env, tmp_path, "-o", "/dev/null", "--wrap", "sleep 60")
    wait_state(slurm_env, job_id, {"RUNNING"})
    t0 = time.monotonic()
    run(slurm_env, "scancel", job_id)
    fields = wait_state(slurm_env, job_id, FINAL_STATES)
    assert fields["JobState"] == "CANCELLED", fields
    assert time.monotonic() - t0 < 20
    # The jobcomp file (JobCompType=jobcomp/filetxt) records it too; sacct -c reads it.
    deadline = time.monotonic() + 10
    while True:
        out = run(slurm_env, "sacct", "-c", "-n", "-P", "-j", job_id, "-o", "jobid,state")
        if "CANCELLED" in out:
            break
        assert time.monotonic() < deadline, f"sacct -c: {out!r}"
        time.sleep(0.2)
