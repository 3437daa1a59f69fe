"""The engine: a hand-computed schedule, staging and data moved, failures through the lifecycle."""

from __future__ import annotations

import math

import pytest

from cpnet.sim.engine import MAX_ATTEMPTS, simulate
from cpnet.sim.policies import POLICIES, Cpnet, Ordered
from cpnet.sim.traces import Job

from .conftest import make_network


def hand_jobs() -> list[Job]:
    return [
        Job("j0", 0, 100, 4),
        Job("j1", 10, 50, 2),
        Job("j2", 20, 30, 2),
        Job("j3", 30, 40, 4),
    ]


@pytest.mark.parametrize("policy", [Ordered(), Cpnet()], ids=["ordered", "cpnet"])
def test_hand_computed_schedule(policy) -> None:  # type: ignore[no-untyped-def]
    # Pool A: 4 cores at 1 CNY/core-h; pool B: 2 cores at 2 CNY/core-h. By hand:
    # j0 (4 cores) → A at 0, ends 100. j1 → B (A full) at 10, ends 60. j2 waits (both full),
    # → B at 60, ends 90. j3 (4 cores) fits only A: waits until 100, ends 140.
    net = make_network([(4, 0, 1.0), (2, 0, 2.0)])
    m = simulate(hand_jobs(), net, policy, seed=0)
    assert (m.completed, m.failed, m.unfinished) == (4, 0, 0)
    jct = [100 - 0, 60 - 10, 90 - 20, 140 - 30]
    assert m.mean_jct_s == pytest.approx(sum(jct) / 4)  # 82.5
    assert m.makespan_s == pytest.approx(140)
    assert m.mean_wait_s == pytest.approx((0 + 0 + 40 + 70) / 4)
    assert m.cost == pytest.approx((4 * 100 * 1 + 2 * 50 * 2 + 2 * 30 * 2 + 4 * 40 * 1) / 3600)
    busy = 4 * 100 + 2 * 50 + 2 * 30 + 4 * 40
    assert m.cpu_utilisation == pytest.approx(busy / (6 * 140))
    assert m.events == 4 * 3  # arrive, staged, finish per job


def test_speed_divides_run_time_and_staging_adds_to_it() -> None:
    # One 2-core pool twice as fast, data 1 GB away over 8 Gbit/s with 0.5 s RTT: 0.5 + 1 s.
    net = make_network([(2, 0, 1.0), (2, 0, 1.0)], speeds=[2.0, 1.0], rtt_s=0.5,
                       provinces=["11", "31"])  # fmt: skip
    job = Job("j", 0, 100, 2, input_bytes=1e9, data_site="s1")
    m = simulate([job], net, POLICIES["cheapest"](None), seed=0)  # type: ignore[arg-type]
    assert m.mean_jct_s == pytest.approx(0.5 + 1.0 + 50.0)
    assert m.cross_region_bytes == 1e9
    m = simulate([job], net, POLICIES["data-nearest"](None), seed=0)  # type: ignore[arg-type]
    # On the data's own site, speed 1: only the map's same-place copy (0.1 ms, 10 Gbit/s).
    assert m.mean_jct_s == pytest.approx(100.0 + 0.0001 + 0.8)
    assert m.mean_jct_s - 100 == pytest.approx(net.map.transfer_s("site:s1", "site:s1", 10**9))
    assert m.cross_region_bytes == 0


def test_failures_retry_elsewhere_then_give_up() -> None:
    # Every attempt fails at once: the lifecycle requeues it MAX_ATTEMPTS - 1 times, then fails it.
    net = make_network([(4, 0, 1.0), (4, 0, 1.0)], failure_per_h=1e9)
    m = simulate([Job("j", 0, 100, 1, deadline_s=1e6)], net, Cpnet(), seed=0)
    assert (m.completed, m.failed) == (0, 1)
    assert math.isnan(m.mean_jct_s)
    assert m.deadline_misses == 1
    assert m.events == 1 + 2 * MAX_ATTEMPTS  # arrival, then staged + fail per attempt


def test_a_failed_attempt_avoids_its_pool() -> None:
    # Pool 0 always fails, pool 1 never: after the first failure cpnet avoids pool 0.
    from cpnet.sim.network import Site

    net = make_network([(4, 0, 1.0), (4, 0, 5.0)])
    sites = list(net.sites)
    sites[0] = Site(*[getattr(sites[0], f) for f in Site.__slots__[:-1]], 1e9)
    net = type(net)(tuple(sites), net.pools, net.map, net.rtt_s, net.gbps)
    m = simulate([Job("j", 0, 100, 1)], net, Cpnet(), seed=0)
    assert (m.completed, m.failed) == (1, 0)
    assert m.mean_jct_s == pytest.approx(100)  # failed at once on pool 0, then 100 s on pool 1
