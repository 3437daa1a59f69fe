"""examples/ai-training as a user runs it: one command, a real hub and two agents, a PyTorch task
that checkpoints to S3, its site killed mid-run, resumed on the other site with the same result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cpnet.demo.checks import processes_under
from cpnet.sim.traces import shared_dir
from services import need_service

pytestmark = [pytest.mark.integration, pytest.mark.s3]

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "examples" / "ai-training" / "run.py"
TRACE = "data/traces/alibaba-gpu-v2023-openb/openb_pod_list_default.csv"
DEADLINE_S = 240  # the command's own deadline is --timeout; this one catches a hang
COMPARED = ("steps", "final_train_loss", "test_mse", "test_mae", "test_accuracy", "weights_sha256")


def test_training_survives_losing_its_site(s3_endpoint: str, tmp_path: Path) -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        need_service("torch", "the example trains with torch (the dev extra: make venv)")
    if not (shared_dir() / TRACE).is_file():
        need_service("shared-data", f"{shared_dir() / TRACE} is missing (set CPNET_SHARED)")
    work = tmp_path / "work"
    steps, every = 400, 50
    argv = [sys.executable, str(RUN), "--json", "--work-dir", str(work)]
    argv += ["--s3-endpoint", s3_endpoint, "--steps", str(steps), "--ckpt-every", str(every)]
    argv += ["--timeout", "180"]
    env = {k: v for k, v in os.environ.items() if k != "CPNET_TEST_S3_ENDPOINT"}
    t0 = time.monotonic()
    done = subprocess.run(
        argv, capture_output=True, text=True, env=env, timeout=DEADLINE_S, check=False
    )
    wall = time.monotonic() - t0
    assert done.stdout.strip(), f"no JSON on stdout; stderr:\n{done.stderr[-4000:]}"
    doc = json.loads(done.stdout)
    failed = [c for c in doc["checks"] if not c["ok"]]
    assert done.returncode == 0 and doc["passed"], (
        f"exit {done.returncode}, error {doc['error']!r}, failed checks {failed}\n"
        f"{done.stderr[-4000:]}"
    )
    names = {c["name"] for c in doc["checks"]}
    assert any("bitwise equal" in n for n in names) and any("resumed" in n for n in names)

    f = doc["figures"]
    base, task = f["baseline"], f["task"]
    # The reference never resumed; the task's second attempt resumed from the checkpoint that
    # was the last one in S3 when its site was killed, a multiple of the interval, not 0.
    assert base["resumed_from"] == 0 and base["steps"] == steps
    k = task["resumed_from"]
    assert k == f["resumed_from"] == f["checkpoint_at_kill"] and k > 0 and k % every == 0
    assert f["step_at_kill"] is None or f["step_at_kill"] >= k
    assert k < steps and task["steps"] == steps
    # Training went on from there: the second attempt wrote the later checkpoints only.
    assert task["checkpoints_written"] == list(range(k + every, steps, every))
    # Bitwise the same result as the uninterrupted run.
    for m in COMPARED:
        assert task[m] == base[m], (m, task[m], base[m])
    assert 0 < task["test_mse"] < task["test_mse_mean_predictor"]  # it learned something
    # The hub noticed the lost site by its heartbeats and failed the attempt over.
    assert "lost" in (f["attempt1_reason"] or ""), f["attempt1_reason"]
    assert f["first_site"] == "site-a"  # the cheaper site, taken first (objective "cheapest")
    assert 0 < f["lost_after_s"] <= f["failover_s"] < 60
    assert not processes_under(work), "processes of the example are still running"
    print(f"example wall {wall:.1f}s, failover {f['failover_s']}s, resumed from step {k}")
