"""A scheduling pass's placements written together (`store.tasks.place_many`) on SQLite and
PostgreSQL: each lands exactly as `place` would land it alone — a task that changed meanwhile,
or a pool without room for all of them, falls back to one at a time, and what is reserved on
the pool is exactly what the placed attempts hold."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from cpnet.sched import Resources
from cpnet.store import audit
from cpnet.store import tasks as ts
from cpnet.store.db import Store
from cpnet.store.tables import Attempt, AuditRecord, Pool, Task, TaskEvent
from cpnet.tasks.model import TaskSpec
from tests.unit.store.test_ledger_store import _world


@pytest.fixture
def store(database_url: str):
    s = Store(database_url)
    s.migrate()
    yield s
    s.close()


def _queued(store: Store, who, n: int, now: float) -> list[ts.QueuedTask]:  # type: ignore[no-untyped-def]
    spec = TaskSpec(executors=[{"command": ["true"]}], resources={"cpu_cores": 2, "ram_gb": 1})
    with store.tx() as s:
        for _ in range(n):
            ts.create_task(s, who, spec, now)
        return ts.queued_tasks(s, 100)


def _place(store: Store, queued, pool: str, site: str, now: float) -> list[str | None]:  # type: ignore[no-untyped-def]
    batch = [ts.Placement(q, pool, site, Resources(2, 1, 0, 0), "test") for q in queued]
    with store.tx() as s:
        return ts.place_many(s, batch, now)


def _state(store: Store, pool: str) -> tuple[float, int, int, int]:
    with store.read() as s:
        reserved = s.scalar(select(Pool.reserved_cpu).where(Pool.id == pool))
        attempts = s.scalar(select(func.count()).select_from(Attempt))
        placed_events = s.scalar(
            select(func.count()).where(TaskEvent.reason.startswith("placed on "))
        )
        audited = s.scalar(select(func.count()).where(AuditRecord.action == "task.placed"))
        assert audit.verify(s).ok
    return reserved, attempts, placed_events, audited


def test_placements_land_together(store: Store) -> None:
    who, _host, site, pool = _world(store)
    now = time.time()
    got = _place(store, _queued(store, who, 3, now), pool, site, now)
    assert all(got) and len(set(got)) == 3
    assert _state(store, pool) == (6.0, 3, 3, 3)
    with store.read() as s:
        tasks = s.scalars(select(Task)).all()
        assert {t.attempts for t in tasks} == {1} and {t.pool_id for t in tasks} == {pool}
        rows = s.scalars(select(Attempt)).all()
        assert {a.id for a in rows} == set(got) and {a.n for a in rows} == {1}


def test_a_task_cancelled_meanwhile_is_left_and_the_rest_placed(store: Store) -> None:
    who, _host, site, pool = _world(store)
    now = time.time()
    queued = _queued(store, who, 3, now)
    with store.tx() as s:  # a user cancels the second after the pass read the queue
        ts.cancel_task(s, s.scalar(select(Task).where(Task.id == queued[1].id)), now)
    got = _place(store, queued, pool, site, now)
    assert got[0] and got[1] is None and got[2]
    assert _state(store, pool) == (4.0, 2, 2, 2)


def test_a_pool_without_room_for_all_places_what_fits(store: Store) -> None:
    who, _host, site, pool = _world(store)  # 8 cores: four tasks of two
    now = time.time()
    got = _place(store, _queued(store, who, 5, now), pool, site, now)
    assert [x is not None for x in got] == [True, True, True, True, False]
    assert _state(store, pool) == (8.0, 4, 4, 4)
