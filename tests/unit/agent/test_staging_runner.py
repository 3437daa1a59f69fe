"""Staging as the runner does it (through the local backend): the per-file staging log, bytes
in usage, progress in status.json while a download runs, and limits from the agent's options."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from cpnet.agent.backends.local import LocalBackend
from cpnet.agent.runner import read_status
from cpnet.tasks.states import State

from .conftest import job, wait_final, wait_for


def test_staging_log_and_bytes(loopback_backend: LocalBackend, http_store, tmp_path: Path) -> None:
    backend = loopback_backend
    base, files = http_store
    files["/in.bin"] = b"i" * 5000
    out = tmp_path / "out.txt"
    spec = {
        "inputs": [
            {"path": "in.bin", "url": f"{base}/in.bin"},
            {"path": "note.txt", "content": "hello"},
        ],
        "outputs": [
            {"path": "copy.bin", "url": f"{base}/up/copy.bin"},
            {"path": "note.txt", "url": out.as_uri()},
        ],
        "executors": [{"command": ["cp", "in.bin", "copy.bin"]}],
    }
    handle = backend.submit(job(spec))
    status = wait_final(backend, handle)
    assert status.state is State.COMPLETE, status.reason
    assert files["/up/copy.bin"] == b"i" * 5000 and out.read_text() == "hello"
    assert status.usage is not None
    assert (status.usage.bytes_in, status.usage.bytes_out) == (5005, 5005)
    sha = hashlib.sha256(b"i" * 5000).hexdigest()
    assert f"staged in in.bin from {base}/in.bin: 5000 bytes" in "\n".join(status.system_logs)
    assert any(
        line.startswith(f"staged out copy.bin to {base}/up/copy.bin: 5000 bytes")
        and line.endswith(f"sha256 {sha}")
        for line in status.system_logs
    )
    record = read_status(Path(handle))
    assert record is not None
    staged = [(r["direction"], r["path"], r["size_bytes"]) for r in record["staging"]]
    assert staged == [
        ("in", "in.bin", 5000),
        ("in", "note.txt", 5),
        ("out", "copy.bin", 5000),
        ("out", "note.txt", 5),
    ]
    assert {o.path: o.sha256 for o in status.outputs}["copy.bin"] == sha


def test_progress_is_in_status_json_while_downloading(
    loopback_backend: LocalBackend, http_store
) -> None:
    backend = loopback_backend
    base, _files = http_store
    spec = {"inputs": [{"path": "x", "url": f"{base}/slow"}], "executors": [{"command": ["true"]}]}
    handle = backend.submit(job(spec))

    def progress() -> dict | None:
        try:
            record = json.loads((Path(handle) / "status.json").read_text())
        except (OSError, ValueError):
            return None
        p = record.get("staging_progress")
        return p if p and p["bytes"] > 0 else None

    p = wait_for(progress, what="a progress record")
    assert p["path"] == "x" and p["total"] == 500 and 0 < p["bytes"] <= 500
    backend.cancel(handle)
    assert wait_final(backend, handle).state is State.CANCELED


def test_per_file_limit_from_the_agent_options(make_backend, http_store) -> None:
    base, files = http_store
    files["/big"] = b"b" * 2 * 1024 * 1024
    backend = make_backend(max_file_gb=str(1 / 1024), allow_private_urls="127.0.0.1")  # 1 MiB
    spec = {
        "inputs": [{"name": "big", "path": "big", "url": f"{base}/big"}],
        "executors": [{"command": ["true"]}],
    }
    status = wait_final(backend, backend.submit(job(spec)))
    assert status.state is State.SYSTEM_ERROR
    assert status.reason == (
        "stage-in failed: input 'big': big is 2097152 bytes or more, over the per-file limit "
        "of 1048576 bytes"
    )


def test_cancel_after_the_last_executor_stops_stage_out(backend: LocalBackend, tmp_path) -> None:
    """A cancel (or a Slurm fence) that lands after the last executor ended but before stage-out
    began must not upload outputs: the attempt ends CANCELED with nothing staged out."""
    out = tmp_path / "result.txt"
    cancel = backend.work_dir_for("a-late") / "cancel"  # what backend.cancel marks first
    spec = {
        "outputs": [{"path": "result.txt", "url": out.as_uri()}],
        "executors": [{"command": ["sh", "-c", f"echo data > result.txt; touch '{cancel}'"]}],
    }
    status = wait_final(backend, backend.submit(job(spec, attempt_id="a-late")))
    assert status.state is State.CANCELED, (status.state, status.reason)
    assert status.reason == "canceled before stage-out"
    assert status.executor_logs[0].exit_code == 0
    assert not out.exists()
