"""The agent's journal: what it must remember about each attempt it accepted, so that a restart
loses none.

Files under its directory:

- ``<attempt_id>.json``: one attempt's entry, rewritten as it changes (its handle once started);
- ``batch-<attempt_id>.json``: the entries of a batch of attempts accepted together (named after
  its first), written with one durable write for the whole batch (`save_batch`) rather than one
  per attempt; an attempt's own file, once written, supersedes its entry there;
- ``<attempt_id>.done``: an attempt that ended and was removed while its batch file still holds
  its entry (so that a restart does not take it up again); gone with the batch file.

Every file is replaced atomically (written aside, then renamed), so a reader sees an old or a
new version whole, never a mix; all of them survive a SIGKILL of the agent (the page cache
outlives it), and what `durable` writes also a crash of the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from dataclasses import dataclass, fields
from pathlib import Path

BATCH_PREFIX = "batch-"
DONE_SUFFIX = ".done"


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


_FIELDS = tuple(f.name for f in fields(Entry))


def _record(e: Entry) -> dict:
    # Not dataclasses.asdict: that deep-copies the job's whole spec on every save.
    return {name: getattr(e, name) for name in _FIELDS}


def _write(path: Path, text: str, durable: bool) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, text.encode("utf-8"))  # small: one write
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class Journal:
    """Files under `dir` (see the module doc); safe to call from several threads."""

    def __init__(self, dir: Path) -> None:
        self.dir = dir
        dir.mkdir(parents=True, exist_ok=True)
        # Batch files still on disk: name -> the attempts in it not yet removed; and each such
        # attempt's batch file.
        self._batches: dict[str, set[str]] = {}
        self._batch_of: dict[str, str] = {}
        self._members: dict[str, list[str]] = {}  # every attempt of each batch (its markers)
        self._lock = threading.Lock()  # over the two maps

    def _path(self, attempt_id: str) -> Path:
        return self.dir / f"{attempt_id}.json"

    def save(self, e: Entry, durable: bool = True) -> None:
        """Write `e` atomically; `durable=False` skips the fsync (the entry still survives a
        SIGKILL of the agent, not a crash of the machine)."""
        _write(self._path(e.attempt_id), json.dumps(_record(e)), durable)

    def save_batch(self, entries: list[Entry]) -> None:
        """Write the entries of attempts accepted together with one durable write: one file of
        them all, fsynced with its directory (an attempt alone gets its own file, as `save`)."""
        if len(entries) == 1:
            self.save(entries[0])
            return
        if not entries:
            return
        name = f"{BATCH_PREFIX}{entries[0].attempt_id}.json"
        _write(self.dir / name, json.dumps([_record(e) for e in entries]), durable=True)
        dir_fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)  # the rename too: the batch is the only record of these attempts
        finally:
            os.close(dir_fd)
        ids = {e.attempt_id for e in entries}
        with self._lock:
            self._batches[name] = ids
            self._members[name] = list(ids)
            self._batch_of.update(dict.fromkeys(ids, name))

    def remove(self, attempt_id: str) -> None:
        """Forget an attempt: its file goes; while its batch file still holds it, a ``.done``
        marker says it is over, until the batch file goes with its last attempt."""
        with self._lock:
            name = self._batch_of.pop(attempt_id, None)
            last = False
            if name is not None:
                members = self._batches[name]
                members.discard(attempt_id)
                if members:
                    (self.dir / f"{attempt_id}{DONE_SUFFIX}").touch()
                else:
                    del self._batches[name]
                    last = True
        if last and name is not None:
            self._drop_batch(name, self._members.pop(name, []))
        self._path(attempt_id).unlink(missing_ok=True)

    def _drop_batch(self, name: str, ids: list[str]) -> None:
        """Remove a batch file whose attempts were all removed, then their markers."""
        (self.dir / name).unlink(missing_ok=True)
        for aid in ids:
            (self.dir / f"{aid}{DONE_SUFFIX}").unlink(missing_ok=True)

    def load(self) -> list[Entry]:
        """Every entry on disk, in attempt id order: an attempt's own file over its batch's
        entry; an attempt marked done comes back done (for the caller to `remove`)."""
        with self._lock:
            return self._load()

    def _load(self) -> list[Entry]:
        own: dict[str, Entry] = {}
        batched: dict[str, Entry] = {}
        done: set[str] = set()
        self._batches.clear()
        self._batch_of.clear()
        self._members.clear()
        for p in sorted(self.dir.iterdir()):
            name = p.name
            if name.endswith(DONE_SUFFIX):
                done.add(name[: -len(DONE_SUFFIX)])
            elif name.endswith(".json") and name.startswith(BATCH_PREFIX):
                with contextlib.suppress(OSError, ValueError, TypeError):
                    members = [Entry(**r) for r in json.loads(p.read_text())]
                    self._batches[name] = {e.attempt_id for e in members}
                    self._members[name] = [e.attempt_id for e in members]
                    for e in members:
                        self._batch_of[e.attempt_id] = name
                        batched[e.attempt_id] = e
            elif name.endswith(".json"):
                try:
                    e = Entry(**json.loads(p.read_text()))
                except (ValueError, TypeError):
                    # A torn write cannot happen (rename is atomic); anything else is foreign.
                    continue
                own[e.attempt_id] = e
        out = batched | own
        for aid in done:
            if aid in out:
                out[aid].done = True
            else:  # its batch file went, the marker did not yet
                (self.dir / f"{aid}{DONE_SUFFIX}").unlink(missing_ok=True)
        return [out[aid] for aid in sorted(out)]
