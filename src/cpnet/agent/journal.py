"""The agent's journal: one small JSON file per attempt it accepted, so a restart loses none."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(slots=True)
class Entry:
    """What the agent must remember about one attempt across its own restarts."""

    attempt_id: str
    task_id: str
    pool_name: str
    job: dict  # Job.to_dict()
    handle: str | None = None  # set once the backend accepted it
    reported: str | None = None  # last state the hub acknowledged
    done: bool = False  # final state acknowledged: nothing more to do
    pool_id: str = ""  # the hub's id of the pool (named in the signed usage record)
    started_at: float | None = None  # when the agent reported it started (Unix seconds)
    trace_id: str | None = None  # the request that created the task (telemetry/logs.py)


class Journal:
    """Files under `dir`, written atomically (write, fsync, rename)."""

    def __init__(self, dir: Path) -> None:
        self.dir = dir
        dir.mkdir(parents=True, exist_ok=True)

    def _path(self, attempt_id: str) -> Path:
        return self.dir / f"{attempt_id}.json"

    def save(self, e: Entry, durable: bool = True) -> None:
        """Write `e` atomically; `durable=False` skips the fsync (the entry still survives a
        SIGKILL of the agent, not a crash of the machine)."""
        tmp = self._path(e.attempt_id).with_suffix(".tmp")
        with tmp.open("w") as f:
            json.dump(asdict(e), f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, self._path(e.attempt_id))

    def remove(self, attempt_id: str) -> None:
        self._path(attempt_id).unlink(missing_ok=True)

    def load(self) -> list[Entry]:
        out = []
        for p in sorted(self.dir.glob("*.json")):
            try:
                out.append(Entry(**json.loads(p.read_text())))
            except (ValueError, TypeError):
                # A torn write cannot happen (rename is atomic); anything else is foreign.
                continue
        return out
