"""Put a comparison together: a trace, a seeded network, the policies, and optionally the bound.

Every random draw of a comparison comes from generators seeded from one integer, each with its
own purpose string (network, workload, failures, the random policy), so adding a policy or
changing one's draws never shifts another's.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from cpnet.sim import network as netmod
from cpnet.sim.bound import Bound, gap, lower_bound
from cpnet.sim.engine import simulate
from cpnet.sim.metrics import Metrics
from cpnet.sim.network import Network
from cpnet.sim.policies import POLICIES
from cpnet.sim.traces import Job, Trace, shared_dir
from cpnet.sim.workload import fit

DEFAULT_LOAD = 0.7


@dataclass(frozen=True, slots=True)
class Scenario:
    """One trace fitted to one network: what every policy of a comparison replays."""

    trace: str
    jobs: tuple[Job, ...]
    net: Network
    seed: int
    unplaceable: int
    time_scale: float
    offered_load: float
    skipped: tuple[tuple[str, int], ...] = ()


def rng(seed: int, purpose: str) -> random.Random:
    """A generator for one purpose of one seeded comparison (string seeds are stable)."""
    return random.Random(f"cpnet-sim:{seed}:{purpose}")


def prepare(trace: Trace, n_sites: int, seed: int, load: float | None = DEFAULT_LOAD) -> Scenario:
    """Build the network for ``seed`` and fit the trace's jobs to it at the given offered load."""
    cities = netmod.read_cities(shared_dir() / "data" / "geo")
    net = netmod.build(n_sites, rng(seed, "network"), cities)
    fitted = fit(trace.jobs, net, rng(seed, "workload"), load)
    return Scenario(
        trace.name,
        fitted.jobs,
        net,
        seed,
        fitted.unplaceable,
        fitted.time_scale,
        fitted.offered_load,
        trace.skipped,
    )


def replay(
    scenario: Scenario, policy: str, progress: Callable[[int], None] | None = None
) -> Metrics:
    """Run one named policy over the scenario."""
    chosen = POLICIES[policy](rng(scenario.seed, f"policy:{policy}"))
    return simulate(scenario.jobs, scenario.net, chosen, hash_seed(scenario.seed), progress)


def hash_seed(seed: int) -> int:
    """The failure stream's seed: derived from the comparison's seed, the same for every policy."""
    return rng(seed, "failures").getrandbits(64)


def compare(
    scenario: Scenario,
    policies: Sequence[str],
    progress: Callable[[str, int], None] | None = None,
) -> dict[str, Metrics]:
    """Replay every named policy; ``progress(policy, jobs ended)`` as they go."""
    out = {}
    for name in policies:
        tick = None if progress is None else (lambda n, name=name: progress(name, n))
        out[name] = replay(scenario, name, tick)
    return out


def bound_for(scenario: Scenario, results: Mapping[str, Metrics]) -> Bound:
    """The LP lower bounds, with the horizon at the latest makespan of the policies compared.

    Every compared schedule finishes by that horizon, so the bound holds for each of them (see
    ``bound``); policies that left jobs failed or unfinished are not comparable to it.
    """
    horizon = max((m.makespan_s for m in results.values()), default=0.0)
    return lower_bound(scenario.jobs, scenario.net, horizon)


def summary(
    scenario: Scenario, results: Mapping[str, Metrics], bound: Bound | None
) -> dict[str, Any]:
    """A comparison as plain data (for ``--json`` and the benchmark)."""
    rows = {}
    for name, m in results.items():
        row = m.as_dict()
        complete = m.completed == m.jobs
        if bound is not None and complete:
            row["gap_mean_jct"] = gap(m.mean_jct_s, bound.mean_jct_s)
            row["gap_cost"] = gap(m.cost, bound.cost)
        rows[name] = row
    return {
        "trace": scenario.trace,
        "jobs": len(scenario.jobs),
        "sites": len(scenario.net.sites),
        "seed": scenario.seed,
        "unplaceable": scenario.unplaceable,
        "time_scale": scenario.time_scale,
        "offered_load": scenario.offered_load,
        "skipped": dict(scenario.skipped),
        "bound": None if bound is None else asdict(bound),
        "policies": rows,
    }
