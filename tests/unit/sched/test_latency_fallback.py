"""The latency bound's two policies: fail closed (the default) and fall back to a farther pool.

A pool beyond ``max_rtt_ms`` but within ``latency_fallback_ms`` is a later tier: it is used only
when no pool within the bound fits, and its placement says the RTT and that it is a fallback.
The single-task ranking, the greedy batch, the joint assignment and the vectorised snapshot
must agree on it.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cpnet.network import Link, NetworkMap
from cpnet.sched import Resources, assign, joint, rank
from cpnet.sched.feasibility import check
from cpnet.sched.vector import Snapshot
from cpnet.tasks.model import LatencyBound
from tests.unit.sched.test_v2 import TASK, pool

FACTORY = "region:441900"


def rtts(**ms: float) -> NetworkMap:
    """A map with a declared RTT from the factory to each named pool's site."""
    return NetworkMap.build(links=[Link(FACTORY, f"site:{p}", rtt_ms=v) for p, v in ms.items()])


EDGE = pool("edge")
CLOUD = pool("cloud")
FAR = pool("far")
NET = rtts(edge=3, cloud=38, far=90)
CLOSED = replace(TASK, latency=(FACTORY, 10.0))
FALLBACK = replace(CLOSED, latency_fallback_ms=60.0)


def full(p):
    return replace(p, available=Resources(0, 0, 0, 0))


def test_fail_closed_rejects_every_pool_beyond_the_bound():
    d = rank(CLOSED, [full(EDGE), CLOUD, FAR], network=NET)
    assert [p.pool_id for p in d.placements] == ["edge"]
    assert d.best is None  # the edge pool is full: the task waits, never served from beyond
    why = {r.pool_id: r.reasons for r in d.rejections}
    assert "exceeds the bound 10 ms" in why["cloud"][0]


def test_fallback_ranks_after_every_pool_within_the_bound():
    # The cloud pool is emptier and cheaper in nothing; the edge pool is within the bound.
    d = rank(FALLBACK, [EDGE, CLOUD, FAR], network=NET)
    assert [p.pool_id for p in d.placements] == ["edge", "cloud"]
    assert d.best.pool_id == "edge"
    by = {p.pool_id: p for p in d.placements}
    assert by["edge"].tier == 0 and by["cloud"].tier == 1
    assert "latency 3 ms to region:441900 (declared): within the 10 ms bound" in by["edge"].reasons
    # Beyond the fallback bound too: rejected, naming both bounds.
    why = {r.pool_id: r.reasons for r in d.rejections}
    assert "exceeds the bound 10 ms and the fallback bound 60 ms" in why["far"][0]


def test_fallback_is_used_only_when_nothing_within_the_bound_fits():
    d = rank(FALLBACK, [full(EDGE), CLOUD, FAR], network=NET)
    assert d.best.pool_id == "cloud"
    assert (
        "latency 38 ms to region:441900 (declared): fallback, beyond the 10 ms bound "
        "(within 60 ms)" in d.best.reasons
    )
    # Without any pool within the bound at all (the edge site is gone), the same.
    assert rank(FALLBACK, [CLOUD, FAR], network=NET).best.pool_id == "cloud"
    # Fail closed: nothing.
    assert rank(CLOSED, [CLOUD, FAR], network=NET).best is None


def test_fallback_tiers_come_before_spillover_tiers():
    near_far_region = replace(pool("near"), region_code="110000")
    net = rtts(near=3, cloud=38)
    task = replace(FALLBACK, tiers=(("440300",), ("",)))
    d = rank(task, [near_far_region, CLOUD], network=net)
    by = {p.pool_id: p for p in d.placements}
    # near: within the bound, spillover tier 2 → tier 1; cloud: fallback, spillover tier 1 → 2.
    assert by["near"].tier == 1 and by["cloud"].tier == 2
    assert d.best.pool_id == "near"
    assert "spillover tier 2 of 2" in by["near"].reasons
    assert "spillover tier 1 of 2" in by["cloud"].reasons


def test_a_fallback_not_above_the_bound_is_refused_naming_the_field():
    with pytest.raises(ValidationError, match="fallback_max_rtt_ms"):
        LatencyBound(to=FACTORY, max_rtt_ms=10, fallback_max_rtt_ms=10)
    assert LatencyBound(to=FACTORY, max_rtt_ms=10, fallback_max_rtt_ms=60).fallback_max_rtt_ms == 60
    assert LatencyBound(to=FACTORY, max_rtt_ms=10).fallback_max_rtt_ms is None


@settings(max_examples=60, deadline=None)
@given(
    dist=st.lists(st.floats(0.5, 120.0), min_size=1, max_size=6),
    free=st.lists(st.booleans(), min_size=6, max_size=6),
    bound=st.floats(1.0, 50.0),
    extra=st.one_of(st.none(), st.floats(1.0, 80.0)),
    copies=st.integers(1, 4),
)
def test_every_path_agrees_and_never_breaks_the_bounds(dist, free, bound, extra, copies):
    pools = [pool(f"p{i}") if free[i] else full(pool(f"p{i}")) for i in range(len(dist))]
    net = rtts(**{f"p{i}": d for i, d in enumerate(dist)})
    task = replace(TASK, latency=(FACTORY, bound))
    if extra is not None:
        task = replace(task, latency_fallback_ms=bound + extra)
    outer = task.latency_fallback_ms or bound
    d = rank(task, pools, network=net)
    within = [p for p, x in zip(pools, dist, strict=False) if x <= bound]
    for p in pools:
        placed = any(x.pool_id == p.id for x in d.placements)
        assert placed == (check(task, p, net) == ())
    for p in d.placements:
        assert net.path(FACTORY, f"site:{p.pool_id}").rtt_ms <= outer
    if d.best is not None:
        rtt = net.path(FACTORY, f"site:{d.best.pool_id}").rtt_ms
        if any(p.available.cpu_cores > 0 for p in within):
            assert rtt <= bound  # the fallback only when nothing within fits
    # The vectorised snapshot, the greedy batch and the joint assignment agree with rank.
    best = d.best.pool_id if d.best else None
    assert Snapshot.of(pools).best(task, network=net) == best
    tasks = [replace(task, id=f"t{k}") for k in range(copies)]
    greedy = assign(tasks, pools, network=net)
    assert greedy[0][2] == best
    rows, _ = joint.assign(tasks, pools, network=net)
    placed = {p.pool_id for p in d.placements}
    # Joint may choose other pools, but only feasible ones, and places at least as many tasks.
    assert sum(r[2] is not None for r in rows) >= sum(r[2] is not None for r in greedy)
    for _, _, j in rows:
        assert j is None or j in placed
