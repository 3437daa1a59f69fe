"""joint.assign(): one assignment for a batch under pool capacities, with a greedy fallback."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cpnet.sched import Price, Resources, assign, check, joint, rank
from tests.unit.sched.test_batch import chosen, pool, snapshots, task, task_lists, weights_st

# --- exact rules ---------------------------------------------------------------------------


def test_joint_places_what_greedy_strands():
    # Greedy puts the small old task on the cheap big pool; then the big task fits nowhere.
    big = pool("big", total=Resources(8, 32, 100, 0), available=Resources(8, 32, 100, 0))
    small = pool(
        "small",
        total=Resources(2, 32, 100, 0),
        available=Resources(2, 32, 100, 0),
        price=Price("CNY", cpu_core_hour=1.0),
    )
    tasks = [task("old-small", 2), task("new-big", 8)]
    assert chosen(assign(tasks, [big, small])) == ["big", None]
    rows, info = joint.assign(tasks, [big, small])
    assert chosen(rows) == ["small", "big"]
    assert info.method == joint.OPTIMAL
    assert "optimal" in info.reason
    assert info.objective_of(rows) < info.objective_of(assign(tasks, [big, small]))


def test_chosen_placement_comes_first_and_says_why():
    rows, _ = joint.assign([task("t", 1)], [pool("a"), pool("b")], keep=2)
    ((_, decision, pool_id),) = rows
    assert decision.best is not None and decision.best.pool_id == pool_id
    assert decision.best.reasons[0] == joint.JOINT_REASON
    assert len({p.pool_id for p in decision.placements}) == len(decision.placements)


def test_waiting_task_has_no_best_and_says_why():
    rows, _ = joint.assign([task("a", 6), task("b", 6)], [pool("a")])
    assert chosen(rows) == ["a", None]
    decision = rows[1][1]
    assert decision.best is None
    assert decision.placements[0].reasons[0] == joint.NO_ROOM_REASON


def test_identical_tasks_form_one_group():
    tasks = [task(f"t{i}", 1) for i in range(100)]
    rows, info = joint.assign(tasks, [pool(f"p{i}") for i in range(20)])
    assert info.groups == 1
    assert sum(p is not None for p in chosen(rows)) == 100


def test_zero_time_limit_falls_back_to_greedy_and_says_so():
    tasks = [task(f"t{i}", 1 + i % 3) for i in range(30)]
    pools = [pool(f"p{i}", queue_length=i % 4, running=i % 5) for i in range(10)]
    rows, info = joint.assign(tasks, pools, time_limit_s=0)
    assert info.method == joint.GREEDY
    assert "greedy" in info.reason and "time limit" in info.reason
    assert chosen(rows) == chosen(assign(tasks, pools))


def test_empty_batch_and_nothing_fitting():
    assert joint.assign([], [pool("a")])[0] == []
    rows, info = joint.assign([task("t", 1, regions=("11",))], [pool("a")])
    assert chosen(rows) == [None]
    assert rows[0][1].rejections[0].pool_id == "a"
    assert info.variables == 0


# --- properties ----------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(pools=snapshots(), tasks=task_lists(), weights=weights_st)
def test_joint_never_oversubscribes_a_pool(pools, tasks, weights):
    rows, _ = joint.assign(tasks, pools, weights)
    used = {p.id: Resources() for p in pools}
    for task_, _, pool_id in rows:
        if pool_id is not None:
            used[pool_id] = used[pool_id] + task_.demand
    for p in pools:
        slack = Resources(1e-6, 1e-6, 1e-6, 0)
        assert used[p.id].fits_in(p.available + slack), (p.id, used[p.id], p.available)


@settings(max_examples=150, deadline=None)
@given(pools=snapshots(), tasks=task_lists(), weights=weights_st)
def test_joint_uses_only_feasible_pools_and_keeps_task_order(pools, tasks, weights):
    by_id = {p.id: p for p in pools}
    rows, _ = joint.assign(tasks, pools, weights)
    assert [t for t, _, _ in rows] == tasks
    for task_, decision, pool_id in rows:
        assert decision.task_id == task_.id
        if pool_id is not None:
            assert check(task_, by_id[pool_id]) == ()
            assert decision.best is not None and decision.best.pool_id == pool_id
        else:
            assert decision.best is None


@settings(max_examples=150, deadline=None)
@given(
    pools=snapshots(),
    tasks=task_lists(),
    weights=weights_st,
    objective=st.sampled_from([joint.SCORE, joint.TIME]),
)
def test_joint_is_never_worse_than_greedy(pools, tasks, weights, objective):
    rows, info = joint.assign(tasks, pools, weights, objective=objective)
    greedy = info.objective_of(assign(tasks, pools, weights))
    assert info.value == info.objective_of(rows)
    # HiGHS proves optimality to a relative gap of 1e-4 of the objective.
    assert info.value <= greedy + 1e-3 * max(1.0, abs(greedy))


@settings(max_examples=50, deadline=None)
@given(pools=snapshots(), tasks=task_lists(), weights=weights_st)
def test_fallback_path_equals_greedy(pools, tasks, weights):
    rows, info = joint.assign(tasks, pools, weights, time_limit_s=0)
    if info.variables:
        assert info.method == joint.GREEDY
        assert chosen(rows) == chosen(assign(tasks, pools, weights))


def test_one_task_goes_where_rank_puts_it():
    # With the score objective a lone task is placed as the policy ranks it: here the dearer
    # pool that starts at once beats the cheap one with a backend queue.
    pools = [pool("cheap", queue_length=5, running=1), pool("dear", price=Price(cpu_core_hour=0.3))]
    best = rank(task("t", 1), pools).best
    assert best is not None
    rows, _ = joint.assign([task("t", 1)], pools)
    assert chosen(rows) == [best.pool_id]


def test_unknown_objective_is_refused():
    with pytest.raises(ValueError, match="unknown objective"):
        joint.assign([task("t", 1)], [pool("a")], objective="cost")


@settings(max_examples=150, deadline=None)
@given(pools=snapshots(), tasks=task_lists(), weights=weights_st)
def test_no_task_waits_while_a_feasible_pool_has_room_left(pools, tasks, weights):
    rows, _ = joint.assign(tasks, pools, weights, width=1)  # narrow: the overflow pass must act
    left = {p.id: p.available for p in pools}
    for task_, _, pool_id in rows:
        if pool_id is not None:
            left[pool_id] = left[pool_id] - task_.demand
    for task_, _, pool_id in rows:
        if pool_id is None:
            for p in pools:
                assert not (check(task_, p) == () and task_.demand.fits_in(left[p.id])), p.id
