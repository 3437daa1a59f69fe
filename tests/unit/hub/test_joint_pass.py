"""The hub's scheduling pass with joint assignment: same outcomes as greedy where both place all."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from cpnet.config import HubSettings
from cpnet.hub.scheduling import schedule_once
from cpnet.store import tasks as ts
from cpnet.store.db import Store
from cpnet.store.tables import Attempt, Pool
from tests.unit.store.test_store import _spec, _world


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'cpnet.db'}")
    s.migrate()
    yield s
    s.close()


def test_joint_pass_places_and_reserves(store: Store) -> None:
    who, _ = _world(store, cores=4, n_sites=2)
    with store.tx() as s:
        for _ in range(10):
            ts.create_task(s, who, _spec(resources={"cpu_cores": 1}), time.time())
    result = schedule_once(store, time.time(), joint_time_limit_s=1.0)
    assert result.placed == 8 and result.waiting == 2
    with store.tx() as s:
        assert s.scalar(select(func.count()).select_from(Attempt)) == 8
        assert s.scalar(select(func.sum(Pool.reserved_cpu))) == pytest.approx(8.0)


def test_joint_pass_with_zero_limit_falls_back_and_still_places(store: Store, caplog) -> None:
    who, _ = _world(store, cores=2)
    with store.tx() as s:
        ts.create_task(s, who, _spec(), time.time())
    assert schedule_once(store, time.time(), joint_time_limit_s=0).placed == 1
    assert "fell back" in caplog.text


def test_settings_read_the_joint_switch(monkeypatch) -> None:
    assert HubSettings().sched_joint is True
    monkeypatch.setenv("CPNET_SCHED_JOINT", "0")
    monkeypatch.setenv("CPNET_SCHED_JOINT_TIME_LIMIT", "0.25")
    s = HubSettings.from_env()
    assert (s.sched_joint, s.sched_joint_time_limit_s) == (False, 0.25)
