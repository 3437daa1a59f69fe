"""Predicted run times from SCU-hours and a pool's SCU rate, used in place of expected_runtime_s."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cpnet.sched import PoolView, Price, Resources, TaskRequest, assign, rank

BASE = PoolView(
    id="p",
    site_id="site-1",
    provider_id="prov-a",
    name="pool",
    type="general",
    region_code="440300",
    labels=(),
    total=Resources(8, 32, 100, 0),
    available=Resources(8, 32, 100, 0),
    gpu_model=None,
    queue_length=0,
    running=0,
    price=Price("CNY", cpu_core_hour=0.1),
)
TASK = TaskRequest(id="t", demand=Resources(2, 4), profile="hpc", work_scu_h=2.0)


def pool(pool_id: str, rate: float | None, **changes: object) -> PoolView:
    scu = () if rate is None else (("general", 1.0), ("hpc", rate))
    return replace(BASE, id=pool_id, name=pool_id, scu=scu, **changes)


def test_each_pool_gets_its_own_predicted_runtime_and_cost() -> None:
    decision = rank(TASK, [pool("slow", 1.0), pool("fast", 4.0)])
    by_id = {p.pool_id: p for p in decision.placements}
    assert by_id["fast"].predicted_runtime_s == pytest.approx(2.0 * 3600 / 4.0)
    assert by_id["slow"].predicted_runtime_s == pytest.approx(2.0 * 3600)
    # Same hourly price, a quarter of the time: a quarter of the cost, and it ranks first.
    assert by_id["fast"].estimated_cost == pytest.approx(by_id["slow"].estimated_cost / 4)
    assert decision.best.pool_id == "fast"
    assert any("2 SCU-h at 4 SCU (hpc)" in r for r in by_id["fast"].reasons)


def test_faster_but_dearer_pool_wins_when_the_job_costs_less_there() -> None:
    # 3x the hourly price, 4x the rate: cheaper per job and sooner done.
    dear = pool("dear", 4.0, price=Price("CNY", cpu_core_hour=0.3))
    decision = rank(TASK, [pool("cheap", 1.0), dear])
    assert decision.best.pool_id == "dear"


def test_pool_without_a_rate_falls_back_to_expected_runtime_and_says_so() -> None:
    decision = rank(replace(TASK, expected_runtime_s=900.0), [pool("unrated", None)])
    only = decision.placements[0]
    assert only.predicted_runtime_s is None
    assert only.estimated_cost == pytest.approx(0.2 * 900 / 3600)
    assert any("no SCU rate for hpc" in r for r in only.reasons)


def test_tasks_without_work_rank_as_before() -> None:
    plain = TaskRequest(id="t", demand=Resources(2, 4))
    decision = rank(plain, [pool("slow", 1.0), pool("fast", 4.0)])
    assert [p.predicted_runtime_s for p in decision.placements] == [None, None]
    assert decision.placements[0].estimated_cost == decision.placements[1].estimated_cost


def test_batch_keeps_shapes_with_different_work_apart() -> None:
    small = replace(TASK, id="small", work_scu_h=1.0)
    big = replace(TASK, id="big", work_scu_h=8.0)
    out = assign([small, big], [pool("a", 2.0)], keep=None)
    runtimes = [d.placements[0].predicted_runtime_s for _, d, _ in out]
    assert runtimes == [pytest.approx(1800.0), pytest.approx(14400.0)]
