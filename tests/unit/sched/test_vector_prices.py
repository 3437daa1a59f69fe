"""vector.Snapshot.best() with prices per SCU-hour and allowed pools: still rank()'s pool."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from cpnet.sched import Price, rank, vector
from tests.unit.sched.test_batch import snapshots, task_lists, weights_st

PROFILES = ["general", "hpc"]
SCU_PRICES = [None, 0.0, 0.05, 0.3, 2.0]


def best_of(task, pools, weights):
    best = rank(task, pools, weights).best
    return best.pool_id if best else None


@settings(max_examples=200, deadline=None)
@given(
    pools=snapshots(),
    tasks=task_lists(),
    weights=weights_st,
    rates=st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.5, 8.0]), min_size=12, max_size=12),
    per_scu=st.lists(st.sampled_from(SCU_PRICES), min_size=12, max_size=12),
    work=st.sampled_from([0.1, 1.0, 3.0]),
    allowed=st.lists(st.sampled_from([f"pool-{i}" for i in range(6)]), max_size=3),
)
def test_vector_agrees_with_scu_prices_and_allowed_pools(
    pools, tasks, weights, rates, per_scu, work, allowed
):
    priced = []
    for i, p in enumerate(pools):
        scu_hour = tuple(
            (name, price)
            for name, price in zip(PROFILES, per_scu[2 * i : 2 * i + 2], strict=True)
            if price is not None
        )
        priced.append(
            replace(
                p,
                scu=tuple(sorted(zip(PROFILES, rates[2 * i : 2 * i + 2], strict=True))),
                price=Price(
                    p.price.currency,
                    p.price.cpu_core_hour,
                    p.price.ram_gb_hour,
                    p.price.gpu_hour,
                    scu_hour,
                ),
            )
        )
    tasks = [
        replace(
            t,
            profile=PROFILES[i % 2],
            work_scu_h=work if i % 4 else None,
            pools=tuple(sorted(set(allowed))) if i % 3 == 0 else (),
        )
        for i, t in enumerate(tasks)
    ]
    snap = vector.Snapshot.of(priced)
    for task in tasks:
        assert snap.best(task, weights) == best_of(task, priced, weights), task
