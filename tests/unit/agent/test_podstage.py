"""`python -m cpnet.agent.podstage`: the Kubernetes backend's stage containers, run for real as a
subprocess on a work dir and a staging dir laid out as the pod mounts them."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from cpnet.agent.podstage import FAILED_EXIT, parse_result


def _stage(direction: str, staging: Path, work: Path) -> tuple[int, str]:
    env = {
        "PATH": os.environ["PATH"],
        "CPNET_STAGING_DIR": str(staging),
        "CPNET_WORK_DIR": str(work),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "cpnet.agent.podstage", direction],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.returncode, proc.stdout


def _layout(tmp_path: Path, spec: dict, env: dict | None = None) -> tuple[Path, Path]:
    staging, work = tmp_path / "staging", tmp_path / "work"
    staging.mkdir()
    work.mkdir()
    doc = {"attempt_id": "att-1", "spec": spec, "runner": {"max_stage_bytes": 1 << 20}}
    (staging / "job.json").write_text(json.dumps(doc))
    (staging / "env.json").write_text(json.dumps(env or {}))
    return staging, work


def test_stage_in_then_out_records_sizes_and_checksums(tmp_path: Path) -> None:
    src = tmp_path / "src.txt"
    src.write_bytes(b"hello\n")
    dest = tmp_path / "results" / "out.txt"
    staging, work = _layout(
        tmp_path,
        {
            "inputs": [
                {"path": "/data/src.txt", "url": src.as_uri()},
                {"path": "note.txt", "content": "inline"},
            ],
            "outputs": [{"path": "out.txt", "url": dest.as_uri()}],
        },
    )
    code, out = _stage("in", staging, work)
    assert code == 0, out
    assert (work / "data" / "src.txt").read_bytes() == b"hello\n"
    assert (work / "note.txt").read_text() == "inline"
    result = parse_result(out)
    assert result is not None and result["bytes"] == 12 and "error" not in result
    assert f"staged in /data/src.txt from {src.as_uri()}: 6 bytes" in out

    (work / "out.txt").write_bytes(b"result!")
    code, out = _stage("out", staging, work)
    assert code == 0, out
    assert dest.read_bytes() == b"result!"
    result = parse_result(out)
    assert result is not None and result["bytes"] == 7
    [o] = result["outputs"]
    assert (o["path"], o["size_bytes"]) == ("out.txt", 7)
    assert o["sha256"] == hashlib.sha256(b"result!").hexdigest()


def test_a_staging_error_is_reported_with_exit_code_3(tmp_path: Path) -> None:
    src = tmp_path / "src.txt"
    src.write_bytes(b"hello\n")
    staging, work = _layout(
        tmp_path, {"inputs": [{"path": "a", "url": src.as_uri(), "sha256": "0" * 64}]}
    )
    code, out = _stage("in", staging, work)
    assert code == FAILED_EXIT
    result = parse_result(out)
    assert result is not None
    assert result["error"].startswith("stage-in failed: input 'a': sha256 mismatch")
    assert not (work / "a").exists()


def test_a_missing_staging_dir_is_reported(tmp_path: Path) -> None:
    code, out = _stage("out", tmp_path / "nowhere", tmp_path)
    assert code == FAILED_EXIT
    assert (parse_result(out) or {})["error"].startswith("stage-out could not start")
    assert parse_result("no result here\n") is None
