"""vector.Snapshot.best(): the same pool rank() would reserve, over NumPy arrays."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cpnet.sched import Weights, rank, vector
from cpnet.sched.snapshot import OBJECTIVES
from tests.unit.sched.test_batch import snapshots, task_lists, weights_st

PROFILES = ["general", "hpc"]


def best_of(task, pools, weights):
    best = rank(task, pools, weights).best
    return best.pool_id if best else None


@settings(max_examples=200, deadline=None)
@given(pools=snapshots(), tasks=task_lists(), weights=weights_st)
def test_vector_picks_the_pool_rank_picks(pools, tasks, weights):
    snap = vector.Snapshot.of(pools)
    for task in tasks:
        assert snap.best(task, weights) == best_of(task, pools, weights), task


@settings(max_examples=150, deadline=None)
@given(
    pools=snapshots(),
    tasks=task_lists(),
    weights=weights_st,
    rates=st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.5, 8.0]), min_size=12, max_size=12),
    work=st.sampled_from([0.1, 1.0, 3.0]),
    images=st.lists(st.booleans(), min_size=6, max_size=6),
)
def test_vector_agrees_with_scu_runtimes_and_images(pools, tasks, weights, rates, work, images):
    pools = [
        replace(
            p,
            scu=tuple(sorted(zip(PROFILES, rates[2 * i : 2 * i + 2], strict=True))),
            can_run_images=images[i],
        )
        for i, p in enumerate(pools)
    ]
    tasks = [
        replace(t, profile=PROFILES[i % 2], work_scu_h=work, image="img" if i % 3 == 0 else None)
        for i, t in enumerate(tasks)
    ]
    snap = vector.Snapshot.of(pools)
    for task in tasks:
        assert snap.best(task, weights) == best_of(task, pools, weights), task


def test_duplicate_pool_ids_are_refused():
    from tests.unit.sched.test_joint import pool

    with pytest.raises(ValueError, match="duplicate pool id"):
        vector.Snapshot.of([pool("a"), pool("a")])


@settings(max_examples=200, deadline=None)
@given(
    pools=snapshots(),
    tasks=task_lists(),
    weights=st.builds(
        Weights,
        start=st.sampled_from([0.0, 0.6]),
        price=st.sampled_from([0.0, 0.4]),
        spread=st.sampled_from([0.0, 0.05]),
        carbon=st.sampled_from([0.0, 0.3]),
    ),
    history=st.lists(
        st.tuples(
            st.sampled_from([None, 0.0, 30.0, 900.0]),  # recent wait s
            st.sampled_from([None, 60.0, 3600.0]),  # recent run time s
            st.sampled_from([0.0, 0.1, 0.5, 0.95]),  # failure rate
            st.sampled_from([None, 200.0, 600.0]),  # grid g/kWh
        ),
        min_size=6,
        max_size=6,
    ),
    objective=st.sampled_from(OBJECTIVES),
    limits=st.tuples(
        st.sampled_from([None, 100.0, 5000.0]),  # deadline s
        st.sampled_from([None, 0.01, 1.0]),  # budget
        st.sampled_from([(), (("44",), ("",)), (("11",),)]),  # spillover tiers
        st.sampled_from([(), ("prov-a",)]),  # denied providers
    ),
)
def test_vector_agrees_under_scheduler_v2_terms(pools, tasks, weights, history, objective, limits):
    deadline, budget, tiers, deny = limits
    pools = [
        replace(p, recent_wait_s=w, recent_runtime_s=r, failure_rate=f, carbon_g_per_kwh=c)
        for p, (w, r, f, c) in zip(pools, history, strict=False)
    ]
    tasks = [
        replace(
            t,
            objective=objective,
            deadline_s=deadline,
            budget=budget,
            tiers=tiers,
            deny_providers=deny,
            inputs=(("site:x", 10**9),) if i % 2 else (),
        )
        for i, t in enumerate(tasks)
    ]
    snap = vector.Snapshot.of(pools)
    for task in tasks:
        assert snap.best(task, weights) == best_of(task, pools, weights), task
