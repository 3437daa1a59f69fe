"""An attempt's work dir as the backends read it: the runner's records and the backend's markers.

Every backend keeps an attempt's files in ``work_root/<attempt_id>/``: ``status.json`` (what the
runner, or the backend on its behalf, last recorded), ``cancel`` (a cancel was asked for), and
for backends that hand the attempt to a scheduler a file naming the scheduler's job (``"none"``
when the scheduler refused it). This module turns those files into what the agent reports.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from cpnet.agent.backends.base import JobStatus
from cpnet.agent.runner import CANCEL_FILE, read_status, write_atomic
from cpnet.tasks.model import AttemptProgress, ExecutorLog, OutputFileLog, TransferRecord, Usage
from cpnet.tasks.states import State

MAX_SYSTEM_LOGS = 64  # what the hub accepts per attempt
MAX_LOG_LINE = 4096


def begin_cancel(work_dir: Path) -> bool:
    """Leave the runner's cancel marker unless the attempt already ended (then False): the first
    step of cancelling on every backend whose runner runs under another scheduler."""
    record = read_status(work_dir)
    if record is not None and State(record["state"]).terminal:
        return False
    with contextlib.suppress(OSError):
        write_atomic(work_dir / CANCEL_FILE, "")
    return True


def read_id_file(work_dir: Path, name: str) -> str | None:
    """The scheduler's job id a backend recorded at submit ("none" when it refused), else None."""
    try:
        text = (work_dir / name).read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return text or None


def read_record(path: Path) -> dict[str, Any] | None:
    """A JSON record another process wrote (atomically); None when absent or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def mtime(path: Path) -> float:
    """When `path` last changed (seconds since the epoch); 0.0 when it is not there."""
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def add_log(record: dict[str, Any], line: str) -> None:
    """Append a system-log line to a status record, within what the hub accepts."""
    logs = record.setdefault("system_logs", [])
    if len(logs) < MAX_SYSTEM_LOGS:
        logs.append(line[:MAX_LOG_LINE])


def status_from_record(record: dict[str, Any]) -> JobStatus:
    """The JobStatus a runner's status.json describes."""
    usage = record.get("usage")
    return JobStatus(
        state=State(record["state"]),
        reason=record.get("reason"),
        executor_logs=[ExecutorLog.model_validate(x) for x in record.get("executor_logs", [])],
        outputs=[OutputFileLog.model_validate(x) for x in record.get("outputs", [])],
        usage=Usage.model_validate(usage) if usage else None,
        system_logs=list(record.get("system_logs", [])),
        progress=progress_from_record(record),
        # only the final report carries them: not parsed on every poll of a running attempt
        transfers=transfers_from_record(record) if State(record["state"]).terminal else [],
    )


def progress_from_record(record: dict[str, Any]) -> AttemptProgress | None:
    """The phase and bytes so far in a status record (the runner's `progress`, with the file
    under way from `staging_progress`); None when there is none or it does not make sense (an
    executor can write the file it runs next to: it is read, never trusted)."""
    base = record.get("progress")
    if not isinstance(base, dict) or State(record["state"]).terminal:
        return None
    now_moving = record.get("staging_progress")
    extra: dict[str, Any] = {}
    if isinstance(now_moving, dict) and base.get("phase") != "running":
        moved = now_moving.get("bytes") or 0
        extra = {
            "path": now_moving.get("path"),
            "file_bytes": moved,
            "file_total": now_moving.get("total"),
            "bytes_done": (base.get("bytes_done") or 0) + (moved if isinstance(moved, int) else 0),
        }
    try:
        return AttemptProgress.model_validate({**base, **extra})
    except ValueError:
        return None


def transfers_from_record(record: dict[str, Any]) -> list[TransferRecord]:
    """The per-transfer records in a status record (`staging`), those that make sense."""
    out = []
    for raw in record.get("staging") or []:
        with contextlib.suppress(ValueError, TypeError):
            out.append(TransferRecord.model_validate(raw))
    return out


__all__ = [
    "add_log",
    "begin_cancel",
    "mtime",
    "progress_from_record",
    "read_id_file",
    "read_record",
    "status_from_record",
    "transfers_from_record",
]
