"""Progress and per-transfer records in the store (SQLite and a real PostgreSQL): the latest
progress is kept while an attempt runs and dropped when it ends; transfers are recorded once, as
the attempt ends, with credentials stripped; the view shows them only when asked."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from cpnet.hub.scheduling import schedule_once
from cpnet.store import tasks as ts
from cpnet.store.db import Store
from cpnet.store.tables import Attempt, AttemptTransfer, Task
from cpnet.tasks.model import MAX_TRANSFERS, AttemptUpdate, TransferRecord, strip_url
from cpnet.tasks.states import State
from tests.unit.store.test_store import _spec, _world


@pytest.fixture
def store(database_url: str):
    s = Store(database_url)
    s.migrate()
    yield s
    s.close()


def _placed(store: Store) -> tuple[Any, str, Attempt]:
    who, sites = _world(store)
    with store.tx() as s:
        task, _ = ts.create_task(s, who, _spec(), time.time())
    assert schedule_once(store, time.time()).placed == 1
    with store.tx() as s:
        a = s.scalar(select(Attempt))
        assert a is not None
    return task, sites[0], a


def _send(store: Store, site: str, **fields: Any) -> ts.UpdateResult:
    with store.tx() as s:
        u = AttemptUpdate.model_validate({"at": datetime.now(UTC), **fields})
        return ts.apply_update(s, site, u, time.time())


def _rec(path: str, size: int, **kw: Any) -> dict[str, Any]:
    return {"direction": "in", "url": "http://h/x", "path": path, "size_bytes": size} | {
        "seconds": 0.5,
        **kw,
    }


def _view(store: Store, task_id: str, full: bool = False):  # type: ignore[no-untyped-def]
    with store.tx() as s:
        task = s.scalar(select(Task).where(Task.id == task_id))
        return ts.task_view(s, task, full=full).attempts[-1]


def test_progress_is_kept_while_running_and_dropped_at_the_end(store: Store) -> None:
    task, site, a = _placed(store)
    p1 = {"phase": "staging_in", "items_total": 3, "bytes_done": 10, "path": "a", "file_bytes": 10}
    assert _send(store, site, attempt_id=a.id, state="INITIALIZING", progress=p1).status == (
        "applied"
    )
    assert _view(store, task.id).progress.bytes_done == 10
    # A progress-only report (same state) is a duplicate that still updates the progress.
    p2 = {**p1, "items_done": 1, "bytes_done": 4096, "file_total": 8192}
    assert _send(store, site, attempt_id=a.id, state="INITIALIZING", progress=p2).status == (
        "duplicate"
    )
    got = _view(store, task.id).progress
    assert (got.items_done, got.bytes_done, got.file_total) == (1, 4096, 8192)
    # A batch system can say RUNNING before the runner first wrote INITIALIZING: the state
    # report that lags is refused, its progress (the agent's latest) is still taken.
    _send(store, site, attempt_id=a.id, state="RUNNING")
    p3 = {**p2, "items_done": 2, "bytes_done": 8192}
    lagging = _send(store, site, attempt_id=a.id, state="INITIALIZING", progress=p3)
    assert lagging.status == "rejected"
    assert _view(store, task.id).progress.items_done == 2
    assert _view(store, task.id).state is State.RUNNING
    _send(store, site, attempt_id=a.id, state="COMPLETE")
    assert _view(store, task.id).progress is None
    # Once it ended, nothing brings progress back.
    late = _send(store, site, attempt_id=a.id, state="RUNNING", progress=p3)
    assert late.status == "rejected" and _view(store, task.id).progress is None


def test_transfers_are_recorded_once_as_the_attempt_ends(store: Store) -> None:
    task, site, a = _placed(store)
    _send(store, site, attempt_id=a.id, state="RUNNING")
    # Records on a non-final report are not kept (they come with the final one).
    _send(store, site, attempt_id=a.id, state="RUNNING", transfers=[_rec("early", 1)])
    with store.tx() as s:
        assert s.scalar(select(func.count()).select_from(AttemptTransfer)) == 0
    sha = "ab" * 32
    recs = [
        _rec("in.bin", 1000, url="https://bob:pw@data.example:8443/in.bin?X-Amz-Signature=s#f"),
        _rec("out.bin", 2000, direction="out", sha256=sha, sha256_verified=True),
    ]
    res = _send(store, site, attempt_id=a.id, state="COMPLETE", transfers=recs, transfers_omitted=7)
    assert res.status == "applied"
    # A repeat of the final report changes nothing (and cannot rewrite the records).
    again = _send(store, site, attempt_id=a.id, state="COMPLETE", transfers=[_rec("forged", 9)])
    assert again.status == "duplicate"

    assert _view(store, task.id).transfers is None  # the basic view
    full = _view(store, task.id, full=True)
    assert full.transfers_omitted == 7
    assert [(t.path, t.size_bytes, t.direction) for t in full.transfers] == [
        ("in.bin", 1000, "in"),
        ("out.bin", 2000, "out"),
    ]
    assert full.transfers[0].url == "https://data.example:8443/in.bin"  # stripped at the hub
    assert full.transfers[1].sha256 == sha and full.transfers[1].sha256_verified
    with store.tx() as s:
        row = s.scalar(select(AttemptTransfer).where(AttemptTransfer.path == "in.bin"))
        assert row is not None and (row.task_id, row.site_id) == (task.id, site)


def test_transfer_record_limits() -> None:
    with pytest.raises(ValidationError, match="size_bytes"):
        TransferRecord.model_validate(_rec("a", -1))
    with pytest.raises(ValidationError, match="transfers"):
        AttemptUpdate.model_validate(
            {
                "attempt_id": "att_x",
                "state": "COMPLETE",
                "at": datetime.now(UTC),
                "transfers": [_rec("a", 1)] * (MAX_TRANSFERS + 1),
            }
        )
    assert strip_url("s3://AKIA:secret@bucket/key?versionId=3") == "s3://bucket/key"
    assert strip_url("http://[::1]:99999/x") == "(unparseable URL)"  # a port out of range
    assert TransferRecord.model_validate(_rec("a", 1, url="(inline content)")).url == (
        "(inline content)"
    )
