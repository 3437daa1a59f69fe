"""assign(): greedy batch placement, and properties of rank and assign on random snapshots."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cpnet.sched import (
    PoolView,
    Price,
    Resources,
    TaskRequest,
    Weights,
    assign,
    check,
    rank,
)

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


def pool(pool_id: str, **changes: object) -> PoolView:
    return replace(BASE, id=pool_id, name=pool_id, **changes)


def task(task_id: str, cpu: float, **changes: object) -> TaskRequest:
    return TaskRequest(id=task_id, demand=Resources(cpu, 1), **changes)


def chosen(result) -> list[str | None]:
    return [pool_id for _, _, pool_id in result]


# --- exact rules ---------------------------------------------------------------------------


def test_each_task_takes_capacity_from_the_next():
    result = assign([task(f"t{i}", 4) for i in range(3)], [pool("a")])
    assert chosen(result) == ["a", "a", None]
    _, decision, _ = result[2]
    assert decision.best is None
    assert decision.placements[0].reasons[0] == "does not fit now: needs 4 cpu_cores, 0 free"


def test_tasks_are_placed_in_the_given_order():
    result = assign([task("old", 6), task("new", 4)], [pool("a")])
    assert chosen(result) == ["a", None]
    result = assign([task("new", 4), task("old", 6)], [pool("a")])
    assert chosen(result) == ["a", None]


def test_equal_pools_share_the_work():
    result = assign([task(f"t{i}", 2) for i in range(4)], [pool("a"), pool("b")])
    assert chosen(result) == ["a", "b", "a", "b"]


def test_infeasible_task_stays_queued_with_rejections():
    result = assign([task("t", 1, regions=("11",))], [pool("a")])
    (_, decision, pool_id) = result[0]
    assert pool_id is None
    assert decision.placements == ()
    assert decision.rejections[0].reasons == ("region 440300 not allowed (allowed: 11)",)


def test_input_pools_are_not_modified():
    pools = [pool("a")]
    assign([task("t", 8)], pools)
    assert pools == [pool("a")]


def test_keep_limits_placements_but_always_holds_the_chosen_one():
    # Ten cheap pools that are full, then one dear pool with room.
    full = Resources(0, 0, 0, 0)
    pools = [pool(f"p{i}", price=Price(cpu_core_hour=0.01), available=full) for i in range(10)]
    pools.append(pool("z", price=Price(cpu_core_hour=9.0)))
    weights = Weights(start=0.01, price=0.99)
    ((_, decision, pool_id),) = assign([task("t", 1)], pools, weights, keep=2)
    assert pool_id == "z"
    assert [(p.pool_id, p.rank) for p in decision.placements] == [("p0", 1), ("p1", 2), ("z", 11)]
    ((_, decision, _),) = assign([task("t", 1)], pools, weights, keep=0)
    assert [p.pool_id for p in decision.placements] == ["z"]
    ((_, decision, _),) = assign([task("t", 1)], pools, weights, keep=None)
    assert len(decision.placements) == 11


def test_same_shape_tasks_with_different_avoidance():
    pools = [pool("a"), pool("b")]
    tasks = [task("t1", 1, avoid_pools=("a",)), task("t2", 1, avoid_pools=("b",))]
    assert chosen(assign(tasks, pools)) == ["b", "a"]


def test_five_thousand_tasks_on_two_hundred_pools_never_oversubscribe():
    rng = random.Random(3)
    pools = [
        pool(
            f"p{i:03d}",
            provider_id=f"prov-{i % 10}",
            region_code=rng.choice(["440300", "110000", "310000"]),
            total=Resources(64, 256, 1000, 8 if i % 4 == 0 else 0),
            available=Resources(64, 256, 1000, 8 if i % 4 == 0 else 0),
            gpu_model="NVIDIA H100 80GB" if i % 4 == 0 else None,
            queue_length=rng.randint(0, 10),
            running=rng.randint(0, 20),
            price=Price("CNY", rng.uniform(0.05, 0.3), rng.uniform(0.01, 0.05), 12.0),
        )
        for i in range(200)
    ]
    tasks = [
        TaskRequest(
            id=f"t{i}",
            # All different, so nothing is shared between tasks: the slow case.
            demand=Resources(rng.uniform(0.5, 16), rng.uniform(1, 64), 0, rng.choice([0, 0, 1])),
            regions=rng.choice([(), ("44",)]),
            expected_runtime_s=rng.uniform(60, 7200),
        )
        for i in range(5000)
    ]
    # How fast is bench/run.py sched's business (performance lives in benchmarks, not tests).
    result = assign(tasks, pools)
    assert len(result) == 5000
    by_pool = {p.id: p for p in pools}
    used: dict[str, Resources] = {}
    for req, _decision, pool_id in result:
        if pool_id is None:
            continue
        used[pool_id] = used.get(pool_id, Resources(0, 0, 0, 0)) + req.demand
    assert used, "nothing was placed"
    for pool_id, demand in used.items():
        assert demand.fits_in(by_pool[pool_id].available), pool_id


# --- properties ----------------------------------------------------------------------------

REGIONS = ["440300", "440100", "110000", "310000"]
PROVIDERS = ["prov-a", "prov-b", "prov-c"]
TYPES = ["general", "intelligent", "supercomputing", "edge"]
GPU_MODELS = ["NVIDIA H100 80GB", "NVIDIA A100 40GB"]
LABELS = [("zone", "a"), ("zone", "b"), ("disk", "ssd")]

# Half units keep pool sizes readable in failure reports; tasks ask for tenths of a core, which
# binary floats cannot hold exactly, so the accounting meets real rounding.
amounts = st.integers(2, 32).map(lambda n: n / 2)
tenths = st.integers(0, 40).map(lambda n: n / 10)


@st.composite
def snapshots(draw) -> list[PoolView]:
    count = draw(st.integers(0, 6))
    pools = []
    for i in range(count):
        gpus = draw(st.sampled_from([0, 0, 2, 4]))
        total = Resources(draw(amounts), draw(amounts), draw(amounts), gpus)
        free = Resources(
            draw(st.integers(0, 4)) / 4 * total.cpu_cores,
            draw(st.integers(0, 4)) / 4 * total.ram_gb,
            draw(st.integers(0, 4)) / 4 * total.disk_gb,
            draw(st.integers(0, gpus)),
        )
        labels = draw(st.sets(st.sampled_from(LABELS), max_size=2))
        by_key = dict(sorted(labels))
        pools.append(
            PoolView(
                id=f"pool-{i}",
                site_id=f"site-{i % 2}",
                provider_id=draw(st.sampled_from(PROVIDERS)),
                name=f"pool {i}",
                type=draw(st.sampled_from(TYPES)),
                region_code=draw(st.sampled_from(REGIONS)),
                labels=tuple(sorted(by_key.items())),
                total=total,
                available=free,
                gpu_model=draw(st.sampled_from(GPU_MODELS)) if gpus else None,
                queue_length=draw(st.integers(0, 5)),
                running=draw(st.integers(0, 5)),
                price=Price(
                    "CNY",
                    draw(st.sampled_from([0.0, 0.1, 0.2])),
                    draw(st.sampled_from([0.0, 0.01])),
                    draw(st.sampled_from([0.0, 5.0])),
                ),
                online=draw(st.sampled_from([True, True, True, False])),
            )
        )
    return pools


def sometimes(values: list) -> st.SearchStrategy[tuple]:
    """A constraint tuple that is empty three times in four, so most tasks have somewhere to go."""
    return st.one_of(
        st.just(()),
        st.just(()),
        st.just(()),
        st.sets(st.sampled_from(values), min_size=1, max_size=2).map(
            lambda chosen: tuple(sorted(chosen))
        ),
    )


@st.composite
def task_lists(draw) -> list[TaskRequest]:
    count = draw(st.integers(0, 15))
    halves = st.integers(0, 8).map(lambda n: n / 2)
    tasks = []
    for i in range(count):
        gpus = draw(st.sampled_from([0, 0, 0, 1, 2]))
        tasks.append(
            TaskRequest(
                id=f"task-{i}",
                demand=Resources(draw(tenths), draw(halves), draw(halves), gpus),
                gpu_model=draw(st.sampled_from([None, "h100", "A100"])) if gpus else None,
                regions=draw(sometimes(["44", "4403", "11"])),
                providers=draw(sometimes(PROVIDERS)),
                pool_types=draw(sometimes(TYPES)),
                labels=draw(sometimes(LABELS[:1] + LABELS[2:])),
                avoid_pools=draw(sometimes([f"pool-{j}" for j in range(6)])),
                expected_runtime_s=draw(st.sampled_from([60.0, 600.0, 3600.0])),
            )
        )
    return tasks


weights_st = st.builds(
    Weights,
    start=st.sampled_from([0.0, 0.6, 1.0]),
    price=st.sampled_from([0.0, 0.4, 1.0]),
    spread=st.sampled_from([0.0, 0.05]),
)


def replay(tasks, pools, result):
    """Yield (task, pool id, availability per pool before the task) as assign saw them."""
    free = {p.id: p.available for p in pools}
    for task_, (seen, _, pool_id) in zip(tasks, result, strict=True):
        assert seen is task_
        yield task_, pool_id, dict(free)
        if pool_id is not None:
            free[pool_id] = free[pool_id] - task_.demand


@settings(max_examples=100, deadline=None)
@given(pools=snapshots(), tasks=task_lists(), weights=weights_st)
def test_assign_never_oversubscribes_a_pool(pools, tasks, weights):
    result = assign(tasks, pools, weights)
    used = {p.id: Resources() for p in pools}
    for task_, _, pool_id in result:
        if pool_id is not None:
            used[pool_id] = used[pool_id] + task_.demand
    for p in pools:
        # Float sums in another order may differ from assign's subtraction by rounding only.
        slack = Resources(1e-6, 1e-6, 1e-6, 0)
        assert used[p.id].fits_in(p.available + slack), (p.id, used[p.id], p.available)


@settings(max_examples=100, deadline=None)
@given(pools=snapshots(), tasks=task_lists(), weights=weights_st)
def test_assigned_pools_were_feasible_and_had_room(pools, tasks, weights):
    by_id = {p.id: p for p in pools}
    result = assign(tasks, pools, weights)
    for task_, pool_id, free in replay(tasks, pools, result):
        if pool_id is not None:
            assert check(task_, by_id[pool_id]) == ()
            assert task_.demand.fits_in(free[pool_id])


@settings(max_examples=100, deadline=None)
@given(pools=snapshots(), tasks=task_lists(), weights=weights_st)
def test_no_task_waits_while_a_feasible_pool_has_room(pools, tasks, weights):
    result = assign(tasks, pools, weights)
    for task_, pool_id, free in replay(tasks, pools, result):
        if pool_id is None:
            for p in pools:
                assert not (check(task_, p) == () and task_.demand.fits_in(free[p.id])), p.id


@settings(max_examples=100, deadline=None)
@given(pools=snapshots(), tasks=task_lists(), weights=weights_st)
def test_assign_decides_as_rank_would_at_each_turn(pools, tasks, weights):
    result = assign(tasks, pools, weights, keep=None)
    for (task_, pool_id, free), (_, decision, _) in zip(
        replay(tasks, pools, result), result, strict=True
    ):
        now = [replace(p, available=free[p.id]) for p in pools]
        assert decision == rank(task_, now, weights)
        assert pool_id == (decision.best.pool_id if decision.best else None)


@settings(max_examples=100, deadline=None)
@given(pools=snapshots(), tasks=task_lists(), keep=st.integers(0, 3))
def test_kept_placements_are_the_top_of_the_full_ranking(pools, tasks, keep):
    full = assign(tasks, pools, keep=None)
    short = assign(tasks, pools, keep=keep)
    assert chosen(full) == chosen(short)
    for (_, whole, _), (_, part, _) in zip(full, short, strict=True):
        assert part.placements[:keep] == whole.placements[:keep]
        assert set(part.placements) <= set(whole.placements)
        assert part.best == whole.best
        assert part.rejections == whole.rejections


@settings(max_examples=100, deadline=None)
@given(pools=snapshots(), tasks=task_lists(), weights=weights_st, seed=st.integers(0, 2**16))
def test_rank_is_deterministic_and_covers_every_pool_once(pools, tasks, weights, seed):
    shuffled = list(pools)
    random.Random(seed).shuffle(shuffled)
    for task_ in tasks:
        decision = rank(task_, pools, weights)
        assert rank(task_, pools, weights) == decision
        assert rank(task_, shuffled, weights) == decision
        placed = [p.pool_id for p in decision.placements]
        rejected = [r.pool_id for r in decision.rejections]
        assert sorted(placed + rejected) == sorted(p.id for p in pools)
        by_id = {p.id: p for p in pools}
        for rejection in decision.rejections:
            assert rejection.reasons == check(task_, by_id[rejection.pool_id]) != ()
        for p in placed:
            assert check(task_, by_id[p]) == ()
        assert [p.rank for p in decision.placements] == list(range(1, len(placed) + 1))
        fitting = [p for p in decision.placements if p.fits_now]
        assert decision.best == (fitting[0] if fitting else None)
        for p in decision.placements:
            assert p.fits_now == task_.demand.fits_in(by_id[p.pool_id].available)
        avoided = [p.pool_id in task_.avoid_pools for p in decision.placements]
        assert avoided == sorted(avoided)


@pytest.mark.parametrize("count", [0, 1])
def test_assign_with_no_pools(count):
    result = assign([task(f"t{i}", 1) for i in range(count)], [])
    assert chosen(result) == [None] * count
