"""The dashboard's task flow, counted by the database: every move in the window, whoever's."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import insert

from cpnet.auth.model import Principal, Role
from cpnet.store import accounts, dashboard
from cpnet.store import tasks as ts
from cpnet.store.db import Store
from cpnet.store.tables import TaskEvent
from cpnet.tasks.model import TaskSpec


@pytest.fixture
def store(database_url: str):
    s = Store(database_url)
    s.migrate()
    yield s
    s.close()


def _task(store: Store, org: str, now: float) -> tuple[str, str]:
    with store.tx() as s:
        o = accounts.create_org(s, org, now)
        u = accounts.create_user(s, o.id, f"{org}-user", Role.USER, now)
        who = Principal(token_id="t", role=Role.USER, org_id=o.id, user_id=u.id)
        t, _ = ts.create_task(s, who, TaskSpec(executors=[{"command": ["true"]}]), now)
        return o.id, t.id


def test_flow_counts_every_move_in_its_window(store: Store, database_url: str) -> None:
    now = 1_800_000_000.0  # a minute's start plus 30 s
    start = (now // 60 - dashboard.FLOW_MINUTES + 1) * 60
    org_a, task_a = _task(store, "alpha", start - 120)  # created (queued) before the window
    org_b, task_b = _task(store, "beta", start - 120)
    # Many moves per minute for one task (the old reading stopped at the newest 200,000 events);
    # fewer on PostgreSQL, where inserting them is the slow part of the test.
    per_minute = 7_000 if database_url.startswith("sqlite") else 200
    rows = []
    for i in range(dashboard.FLOW_MINUTES):
        at = start + 60 * i + 1.5
        rows += [dict(task_id=task_a, at=at, from_state="RUNNING", to_state="COMPLETE")] * (
            per_minute
        )
    rows += [
        dict(task_id=task_b, at=start + 5, from_state=None, to_state="QUEUED"),
        dict(task_id=task_b, at=start + 6, from_state="QUEUED", to_state="QUEUED"),  # a remark
        dict(task_id=task_b, at=now, from_state="RUNNING", to_state="SYSTEM_ERROR"),
        dict(task_id=task_b, at=start - 1, from_state="QUEUED", to_state="RUNNING"),  # too old
        dict(task_id=task_b, at=now + 61, from_state="RUNNING", to_state="CANCELED"),  # later
    ]
    with store.tx() as s:
        s.execute(insert(TaskEvent), rows)

    with store.read() as s:
        every = dashboard.flow(s, None, now)
        a = dashboard.flow(s, org_a, now)
        b = dashboard.flow(s, org_b, now)
    assert [m["minute"] for m in every] == [start + 60 * i for i in range(30)]
    assert all(m["complete"] == per_minute for m in every)
    assert per_minute == 200 or 30 * per_minute > 200_000
    assert every[0]["queued"] == 1 and sum(m["queued"] for m in every) == 1  # remark not counted
    assert every[-1]["failed"] == 1 and sum(m["running"] + m["canceled"] for m in every) == 0
    assert sum(m["complete"] for m in a) == 30 * per_minute and sum(m["queued"] for m in a) == 0
    assert sum(m["complete"] for m in b) == 0
    assert (b[0]["queued"], b[-1]["failed"]) == (1, 1)


def test_flow_of_an_empty_hub_is_thirty_empty_minutes(store: Store) -> None:
    with store.read() as s:
        got = dashboard.flow(s, None, time.time())
    assert len(got) == 30 and all(
        m["queued"] + m["running"] + m["complete"] + m["failed"] + m["canceled"] == 0 for m in got
    )
