"""rank(): ordering rules, explanations and determinism."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from cpnet.sched import DEFAULT_WEIGHTS, PoolView, Price, Resources, TaskRequest, Weights, rank
from cpnet.sched.place import AVOIDED_REASON

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
    price=Price("CNY", cpu_core_hour=0.1, ram_gb_hour=0.0),
)
TASK = TaskRequest(id="t1", demand=Resources(2, 4), expected_runtime_s=600.0)


def pool(pool_id: str, **changes: object) -> PoolView:
    return replace(BASE, id=pool_id, name=pool_id, **changes)


def cheap(cpu_core_hour: float) -> Price:
    return Price("CNY", cpu_core_hour=cpu_core_hour)


def order(decision) -> list[str]:
    return [p.pool_id for p in decision.placements]


def test_cheaper_pool_ranks_first():
    pools = [pool("a", price=cheap(0.3)), pool("b", price=cheap(0.1)), pool("c", price=cheap(0.2))]
    decision = rank(TASK, pools)
    assert order(decision) == ["b", "c", "a"]
    assert [p.rank for p in decision.placements] == [1, 2, 3]
    assert decision.best is not None and decision.best.pool_id == "b"
    assert decision.best.hourly_price == pytest.approx(0.2)
    assert decision.best.estimated_cost == pytest.approx(0.2 * 600 / 3600)


def test_shorter_backend_queue_ranks_first():
    pools = [pool("a", queue_length=8), pool("b", queue_length=0), pool("c", queue_length=3)]
    assert order(rank(TASK, pools)) == ["b", "c", "a"]


def test_start_outweighs_price_by_default_weights():
    # a: cheapest but a long queue; b: dearest but starts now. 0.6 * 1 > 0.4 * 1.
    pools = [pool("a", price=cheap(0.1), queue_length=10), pool("b", price=cheap(0.2))]
    assert order(rank(TASK, pools)) == ["b", "a"]
    assert order(rank(TASK, pools, Weights(start=0.3, price=0.7))) == ["a", "b"]


def test_pool_that_fits_now_is_best_even_if_a_busy_one_ranks_above():
    busy = pool("a", price=cheap(0.01), available=Resources(1, 32, 100, 0), running=1)
    free = pool("b", price=cheap(1.0))
    decision = rank(TASK, [busy, free], Weights(start=0.1, price=0.9))
    assert order(decision) == ["a", "b"]
    assert [p.fits_now for p in decision.placements] == [False, True]
    assert decision.best is not None and decision.best.pool_id == "b"


def test_nothing_fits_now_gives_no_best_but_still_ranks():
    full = Resources(0, 0, 0, 0)
    decision = rank(TASK, [pool("a", available=full), pool("b", available=full)])
    assert order(decision) == ["a", "b"]
    assert decision.best is None
    assert decision.placements[0].expected_start_s > 0


def test_avoided_pools_rank_after_all_others():
    pools = [pool("a", price=cheap(0.01)), pool("b", price=cheap(0.5)), pool("c", queue_length=9)]
    task = replace(TASK, avoid_pools=("a",))
    decision = rank(task, pools)
    assert order(decision) == ["b", "c", "a"]
    assert AVOIDED_REASON in decision.placements[-1].reasons
    assert all(AVOIDED_REASON not in p.reasons for p in decision.placements[:-1])


def test_avoided_pool_is_still_used_when_it_is_the_only_one_that_fits():
    pools = [pool("a"), pool("b", available=Resources(0, 0, 0, 0))]
    decision = rank(replace(TASK, avoid_pools=("a",)), pools)
    assert order(decision) == ["b", "a"]
    assert decision.best is not None and decision.best.pool_id == "a"


def test_equal_pools_tie_break_by_id():
    pools = [pool("c"), pool("a"), pool("b")]
    assert order(rank(TASK, pools)) == ["a", "b", "c"]


def test_less_loaded_equal_pool_ranks_first():
    pools = [pool("a", available=Resources(4, 32, 100, 0)), pool("b")]
    decision = rank(TASK, pools)
    assert order(decision) == ["b", "a"]
    assert decision.placements[1].score == pytest.approx(DEFAULT_WEIGHTS.spread * 0.5)


def test_infeasible_pools_are_rejections_with_every_reason():
    pools = [pool("a"), pool("b", online=False), pool("c", total=Resources(1, 1, 1, 0))]
    decision = rank(TASK, pools)
    assert order(decision) == ["a"]
    assert [(r.pool_id, r.reasons) for r in decision.rejections] == [
        ("b", ("pool is offline",)),
        (
            "c",
            (
                "larger than the whole pool: needs 2 cpu_cores, 1 in total",
                "larger than the whole pool: needs 4 ram_gb, 1 in total",
            ),
        ),
    ]


def test_no_pools():
    decision = rank(TASK, [])
    assert decision.placements == () and decision.rejections == () and decision.best is None


def test_duplicate_pool_ids_are_refused():
    with pytest.raises(ValueError, match="duplicate pool id"):
        rank(TASK, [pool("a"), pool("a")])


def test_reasons_explain_fit_price_queue_and_load():
    pools = [
        pool(
            "a", price=cheap(0.12), available=Resources(6, 32, 100, 0), queue_length=4, running=20
        ),
        pool("b", price=cheap(0.2)),
        pool("c", price=cheap(0.3)),
    ]
    decision = rank(TASK, pools, Weights(start=0.0, price=1.0))
    first = decision.placements[0]
    assert first.pool_id == "a"
    assert first.reasons == (
        "fits now: 6 of 8 cpu_cores free, 32 of 32 ram_gb free",
        "backend queue 4 → expected start ~120 s",
        "price 0.24 CNY/h (cheapest of 3)",
        "estimated cost 0.04 CNY for ~600 s",
        "25% of pool in use",
    )
    assert decision.placements[1].reasons[1] == "backend queue empty → can start now"
    assert decision.placements[1].reasons[2] == "price 0.40 CNY/h (2nd cheapest of 3)"
    assert decision.placements[2].reasons[2] == "price 0.60 CNY/h (3rd cheapest of 3)"


def test_reasons_explain_why_it_does_not_fit_now():
    busy = pool("a", available=Resources(1, 32, 100, 0), running=3, queue_length=2)
    (placement,) = rank(TASK, [busy]).placements
    assert placement.reasons[0] == "does not fit now: needs 2 cpu_cores, 1 free"
    assert placement.reasons[1] == "backend queue 2, 3 running, no room now → expected start ~850 s"
    assert placement.reasons[2] == "price 0.20 CNY/h (only candidate)"


def test_rank_is_deterministic_and_ignores_input_order():
    rng = random.Random(7)
    pools = [
        pool(
            f"p{i}",
            price=cheap(rng.choice([0.1, 0.2, 0.3])),
            queue_length=rng.randint(0, 3),
            running=rng.randint(0, 3),
            available=Resources(rng.choice([0, 2, 8]), 32, 100, 0),
        )
        for i in range(30)
    ]
    expected = rank(TASK, pools)
    for _ in range(5):
        rng.shuffle(pools)
        assert rank(TASK, pools) == expected
