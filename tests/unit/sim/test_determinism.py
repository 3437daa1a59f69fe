"""Same seed, same simulation; another seed, another one; the LP bound is below every policy."""

from __future__ import annotations

import random

import pytest

from cpnet.sim import network as netmod
from cpnet.sim.bound import gap, lower_bound
from cpnet.sim.engine import simulate
from cpnet.sim.metrics import percentile
from cpnet.sim.policies import POLICIES
from cpnet.sim.run import rng
from cpnet.sim.traces import Job
from cpnet.sim.workload import fit

CITIES = (
    netmod.City("Beijing", "110000", 39.9, 116.4, "demand", 555.4),
    netmod.City("Shanghai", "310000", 31.2, 121.5, "demand", 573.7),
    netmod.City("Chengdu", "510100", 30.7, 104.1, "hub_node;dc_cluster", 156.4),
    netmod.City("Zhongwei", "640500", 37.5, 105.2, "hub_node;dc_cluster", 618.7),
)


def jobs(n: int, seed: int = 7) -> list[Job]:
    """A small synthetic job list (for the engine's properties, not for figures)."""
    r = random.Random(seed)
    t = 0.0
    out = []
    for k in range(n):
        t += r.expovariate(1 / 30)
        gpus = r.choice((0, 0, 0, 1, 2))
        out.append(Job(str(k), t, r.uniform(60, 3600), r.choice((1, 2, 4, 16, 64)), 0.0, gpus))
    return out


def scenario(seed: int, n_jobs: int = 300, n_sites: int = 8):  # type: ignore[no-untyped-def]
    net = netmod.build(n_sites, rng(seed, "network"), CITIES)
    fitted = fit(jobs(n_jobs), net, rng(seed, "workload"), 0.9)
    return fitted.jobs, net


def figures(seed: int, policy: str) -> dict[str, float]:
    work, net = scenario(seed)
    m = simulate(work, net, POLICIES[policy](rng(seed, policy)), seed)
    out = m.as_dict()
    del out["wall_s"], out["events_per_s"]
    return out


@pytest.mark.parametrize("policy", list(POLICIES))
def test_same_seed_same_simulation(policy: str) -> None:
    assert figures(3, policy) == figures(3, policy)


def test_another_seed_another_simulation() -> None:
    assert figures(3, "cpnet") != figures(4, "cpnet")
    assert figures(3, "random") != figures(4, "random")


def test_lp_bound_is_below_every_policy() -> None:
    work, net = scenario(5, n_jobs=150, n_sites=6)
    results = {name: simulate(work, net, make(rng(5, name)), 5) for name, make in POLICIES.items()}
    horizon = max(m.makespan_s for m in results.values())
    bound = lower_bound(work, net, horizon)
    assert bound.status == "optimal"
    for name, m in results.items():
        assert m.completed == m.jobs, name
        assert bound.mean_jct_s <= m.mean_jct_s + 1e-6, name
        assert bound.cost <= m.cost + 1e-6, name
        assert gap(m.mean_jct_s, bound.mean_jct_s) >= -1e-9


def test_percentile_interpolates() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile([1.0, 2.0, 3.0, 4.0], 100) == 4.0
    assert percentile([5.0], 95) == 5.0
