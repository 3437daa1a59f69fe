"""Scheduler v2: time to result over the network, objectives, hard limits, tiers, history."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from cpnet.network import Link, NetworkMap, Sample, shipped
from cpnet.sched import PoolView, Price, Resources, TaskRequest, assign, history, rank, terms
from cpnet.sched.feasibility import check

GB = 10**9
BASE = PoolView(
    id="p",
    site_id="s",
    provider_id="prov-a",
    name="pool",
    type="general",
    region_code="440300",
    labels=(),
    total=Resources(64, 256, 1000, 0),
    available=Resources(64, 256, 1000, 0),
    gpu_model=None,
    queue_length=0,
    running=0,
    price=Price("CNY", cpu_core_hour=0.1),
)
TASK = TaskRequest(id="t", demand=Resources(2, 4), expected_runtime_s=600.0)


def pool(pool_id: str, **changes: object) -> PoolView:
    return replace(
        BASE, id=pool_id, name=pool_id, site_id=pool_id, place=f"site:{pool_id}", **changes
    )


def links(**mbps: float) -> NetworkMap:
    """A map where the data at url:https://data sits behind declared links of given rates."""
    return NetworkMap.build(
        links=[Link("url:https://data", f"site:{p}", rtt_ms=10, mbps=m) for p, m in mbps.items()]
    )


def test_the_pool_that_finishes_first_wins_not_the_one_with_most_room():
    big = pool("big", total=Resources(512, 2048), available=Resources(512, 2048))
    small = pool("small", total=Resources(4, 16), available=Resources(4, 16))
    task = replace(TASK, inputs=(("url:https://data", 10 * GB),))
    d = rank(task, [big, small], network=links(big=100, small=10_000))
    assert d.best.pool_id == "small"
    by = {p.pool_id: p for p in d.placements}
    assert by["big"].staging_s > 700  # 80 Gbit at 100 Mbit/s
    assert by["small"].staging_s < 10
    assert by["big"].time_to_result_s > by["small"].time_to_result_s
    lost = by["big"].reasons[-1]
    assert lost.startswith("vs chosen small") and "later" in lost
    # Without the map nothing is known of the paths: the roomier, emptier pool wins as in v1.
    assert rank(task, [big, small]).best.pool_id == "big"


@settings(max_examples=60, deadline=None)
@given(
    nbytes=st.integers(0, 10**12),
    slow=st.floats(0.1, 1e5, allow_nan=False),
    factor=st.floats(1.0, 1e3, allow_nan=False),
    rtt=st.floats(0.0, 500.0, allow_nan=False),
)
def test_more_bandwidth_never_increases_predicted_staging(nbytes, slow, factor, rtt):
    task = replace(TASK, inputs=(("url:https://data", nbytes),))
    p = pool("a")
    before = terms.staging(
        task, p, NetworkMap.build(links=[Link("url:https://data", "site:a", rtt, slow)])
    )
    after = terms.staging(
        task, p, NetworkMap.build(links=[Link("url:https://data", "site:a", rtt, slow * factor)])
    )
    assert after.seconds <= before.seconds + 1e-9


REGIONS = ["110000", "310118", "440300", "440100", "510100", "620100", "130700"]


@settings(max_examples=60, deadline=None)
@given(
    homes=st.lists(st.sampled_from(REGIONS), min_size=1, max_size=7),
    allowed=st.sampled_from(["44", "31", "1", "4403"]),
    bound=st.floats(1.0, 60.0, allow_nan=False),
    to=st.sampled_from(REGIONS),
)
def test_residency_and_latency_bounds_are_never_violated(homes, allowed, bound, to):
    pools = [pool(f"p{i}", region_code=code) for i, code in enumerate(homes)]
    regions = {p.place: p.region_code for p in pools}
    net = NetworkMap.build(regions=regions, geo=shipped())
    task = replace(TASK, regions=(allowed,), latency=(f"region:{to}", bound))
    d = rank(task, pools, network=net)
    for p in d.placements:
        chosen = next(x for x in pools if x.id == p.pool_id)
        assert chosen.region_code.startswith(allowed)
        assert net.path(f"region:{to}", chosen.place).rtt_ms <= bound
    for r in d.rejections:
        assert r.reasons
    # Each rejected pool is rejected by check() for a reason, and each placed one passes.
    for p in pools:
        placed = any(x.pool_id == p.id for x in d.placements)
        assert placed == (check(task, p, net) == ())


def test_an_unknown_distance_never_passes_a_bound_tighter_than_the_default():
    task = replace(TASK, latency=("region:440300", 5.0))
    d = rank(task, [pool("nowhere", region_code="")])
    assert d.placements == ()
    assert "exceeds the bound 5 ms" in d.rejections[0].reasons[0]


def test_deadline_and_budget_rule_pools_out_and_say_why():
    slow = pool("slow", queue_length=10, running=1)  # 10 x 600 s ahead of it
    pricey = pool("pricey", price=Price("CNY", cpu_core_hour=100.0))
    task = replace(TASK, deadline_s=3600.0, budget=10.0)
    d = rank(task, [slow, pricey, pool("ok")])
    assert [p.pool_id for p in d.placements] == ["ok"]
    why = {r.pool_id: r.reasons for r in d.rejections}
    assert "deadline in 3600 s" in why["slow"][0]
    assert "exceeds the budget 10" in why["pricey"][0]


def test_objectives_pick_by_their_own_figure():
    fast = pool("fast", price=Price("CNY", cpu_core_hour=1.0), carbon_g_per_kwh=600.0)
    cheap = pool(
        "cheap",
        queue_length=3,
        running=1,
        price=Price("CNY", cpu_core_hour=0.01),
        carbon_g_per_kwh=500.0,
    )
    green = pool(
        "green",
        queue_length=1,
        running=1,
        price=Price("CNY", cpu_core_hour=0.5),
        carbon_g_per_kwh=100.0,
    )
    pools = [fast, cheap, green]
    assert rank(replace(TASK, objective="fastest"), pools).best.pool_id == "fast"
    assert rank(replace(TASK, objective="cheapest"), pools).best.pool_id == "cheap"
    greenest = rank(replace(TASK, objective="greenest"), pools)
    assert greenest.best.pool_id == "green"
    assert greenest.best.carbon_g < min(p.carbon_g for p in greenest.placements[1:])


def test_spillover_fills_a_tier_before_the_next():
    local = pool("local", region_code="440300", price=Price("CNY", cpu_core_hour=5.0))
    regional = pool("regional", region_code="440100", price=Price("CNY", cpu_core_hour=0.5))
    national = pool("national", region_code="110000", price=Price("CNY", cpu_core_hour=0.01))
    task = replace(TASK, tiers=(("4403",), ("44",), ("",)))
    pools = [local, regional, national]
    assert rank(task, pools).best.pool_id == "local"  # dearer, but its tier comes first
    full = replace(local, available=Resources(0, 0, 0, 0))
    assert rank(task, [full, regional, national]).best.pool_id == "regional"
    # A batch fills the local pool, then spills: 32 two-core tasks fit there, the rest go on.
    tasks = [replace(task, id=f"t{i}") for i in range(40)]
    placed = [pool_id for _, _, pool_id in assign(tasks, pools)]
    assert placed[:32] == ["local"] * 32 and set(placed[32:]) == {"regional"}
    # Outside every tier is ruled out.
    only_city = replace(TASK, tiers=(("4403",),))
    assert [p.pool_id for p in rank(only_city, pools).placements] == ["local"]


def test_history_feeds_wait_and_risk():
    rows = [("p", 0.0, 30.0, 130.0, "COMPLETE")] * 3 + [("p", 0.0, 10.0, None, "SYSTEM_ERROR")]
    rows += [("q", 0.0, None, None, "QUEUED")]
    past = history.of(rows)
    assert past["p"].wait_s == 30.0 and past["p"].runtime_s == 100.0
    assert past["p"].failure_rate == 0.25
    assert past["q"].wait_s is None and past["q"].failure_rate == 0.0
    shaky = pool("shaky", failure_rate=0.5)
    steady = pool("steady")
    d = rank(TASK, [shaky, steady])
    by = {p.pool_id: p for p in d.placements}
    assert by["shaky"].time_to_result_s == 2 * by["steady"].time_to_result_s
    assert d.best.pool_id == "steady"
    # A recent start delay is a floor on the predicted wait.
    slow_start = pool("slow-start", recent_wait_s=120.0)
    assert rank(TASK, [slow_start]).best.expected_start_s == 120.0


def test_measured_samples_beat_declared_links_in_staging():
    task = replace(TASK, inputs=(("hub", GB),))
    declared = Link("hub", "site:a", rtt_ms=5, mbps=10)
    measured = [Sample("site:a", "hub", at=90.0 + i, rtt_ms=5.0, mbps=1000.0) for i in range(3)]
    slow = NetworkMap.build(links=[declared], now=100.0)
    fast = NetworkMap.build(samples=measured, links=[declared], now=100.0)
    a = pool("a")
    assert terms.staging(task, a, slow).sources == ("declared",)
    assert terms.staging(task, a, fast).sources == ("measured",)
    assert terms.staging(task, a, fast).seconds < terms.staging(task, a, slow).seconds / 50
