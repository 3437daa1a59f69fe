"""Prices per SCU-hour in the cost model: the work's price, whatever the pool's speed."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cpnet.sched import PoolView, Price, Resources, TaskRequest, rank, terms

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


def pool(pool_id: str, rate: float, per_scu: float | None, hourly: float = 0.1) -> PoolView:
    scu_prices = () if per_scu is None else (("hpc", per_scu),)
    return replace(
        BASE,
        id=pool_id,
        name=pool_id,
        scu=(("hpc", rate),),
        price=Price("CNY", cpu_core_hour=hourly, scu_hour=scu_prices),
    )


def test_an_scu_priced_pool_charges_the_work_whatever_its_speed() -> None:
    slow, fast = pool("slow", 1.0, 0.3), pool("fast", 8.0, 0.3)
    assert terms.of(TASK, slow).cost == pytest.approx(0.6)
    assert terms.of(TASK, fast).cost == pytest.approx(0.6)
    decision = rank(replace(TASK, objective="fastest"), [slow, fast])
    costs = {p.pool_id: p.estimated_cost for p in decision.placements}
    assert costs == {"slow": pytest.approx(0.6), "fast": pytest.approx(0.6)}
    assert any("run priced per SCU-hour" in r for r in decision.placements[0].reasons)


def test_without_an_scu_price_for_the_profile_the_resource_hour_price_applies() -> None:
    p = pool("p", 2.0, None)
    # 2 SCU-h at 2 SCU = 1 h × 2 cores × 0.1
    assert terms.of(TASK, p).cost == pytest.approx(0.2)
    other = replace(p, price=Price("CNY", cpu_core_hour=0.1, scu_hour=(("ai-train", 9.0),)))
    assert terms.of(TASK, other).cost == pytest.approx(0.2)
    # A task that states no work is never SCU-priced.
    plain = TaskRequest(id="t", demand=Resources(2, 4), expected_runtime_s=3600)
    assert terms.of(plain, pool("q", 2.0, 5.0)).cost == pytest.approx(0.2)


def test_cheapest_prefers_the_lower_price_per_scu_hour() -> None:
    cheap, dear = pool("cheap", 1.0, 0.1), pool("dear", 10.0, 0.5)
    best = rank(replace(TASK, objective="cheapest"), [cheap, dear]).best
    assert best is not None and best.pool_id == "cheap"


@given(
    rate=st.floats(0.1, 100),
    per_scu=st.floats(0, 100),
    work=st.floats(0.01, 1000),
    failure=st.floats(0, 0.9),
)
def test_scu_cost_is_work_times_price_times_risk(rate, per_scu, work, failure) -> None:
    p = replace(pool("p", rate, per_scu), failure_rate=failure)
    task = replace(TASK, work_scu_h=work)
    t = terms.of(task, p)
    assert t.cost == pytest.approx(work * per_scu * terms.risk(p), rel=1e-9, abs=1e-12)
    # Speed changes the run time, never the SCU-priced cost.
    assert terms.of(task, replace(p, scu=(("hpc", rate * 3),))).cost == pytest.approx(t.cost)
