"""Whether a pool could ever run a task, and every reason it cannot.

Feasibility ignores how much is free right now: a pool that is merely busy is feasible but does
not fit now (see ``Placement.fits_now``). Only facts that waiting cannot change make a pool
infeasible: it is offline, the task is bigger than the whole pool, or the task's constraints
exclude it.
"""

from __future__ import annotations

from collections.abc import Hashable

from cpnet.network import NetworkMap
from cpnet.sched.snapshot import PoolView, Resources, TaskRequest

NO_MAP = NetworkMap()  # no measurements or links: every path takes the stated defaults


def signature(task: TaskRequest) -> Hashable:
    """Key the task's demand-independent constraints, for caching ``constraint_reasons``."""
    return (
        task.gpu_model,
        task.regions,
        task.providers,
        task.pool_types,
        task.labels,
        task.image,
        task.deny_providers,
        task.tiers,
        task.latency,
        task.latency_fallback_ms,
        task.pools,
    )


def constraint_reasons(
    task: TaskRequest, pool: PoolView, network: NetworkMap | None = None
) -> tuple[str, ...]:
    """List why the pool is excluded regardless of the task's size.

    Depends only on ``signature(task)``, the pool's fixed facts (not its availability) and the
    network map, so callers may cache it per (signature, pool) for one map.
    """
    reasons: list[str] = []
    if not pool.online:
        reasons.append("pool is offline")
    if task.gpu_model is not None:
        if not pool.gpu_model:
            reasons.append(f"needs GPU model {task.gpu_model!r}, pool has no GPUs")
        elif task.gpu_model.lower() not in pool.gpu_model.lower():
            reasons.append(f"needs GPU model {task.gpu_model!r}, pool has {pool.gpu_model!r}")
    if task.regions and not any(pool.region_code.startswith(r) for r in task.regions):
        allowed = ", ".join(task.regions)
        reasons.append(f"region {pool.region_code} not allowed (allowed: {allowed})")
    if task.providers and pool.provider_id not in task.providers:
        allowed = ", ".join(task.providers)
        reasons.append(f"provider {pool.provider_id} not allowed (allowed: {allowed})")
    if task.pools and pool.id not in task.pools:
        reasons.append(f"pool {pool.id} not allowed (allowed: {', '.join(task.pools)})")
    if pool.provider_id in task.deny_providers:
        reasons.append(f"provider {pool.provider_id} is denied")
    if task.tier_of(pool) is None:
        reasons.append(f"region {pool.region_code} is in no spillover tier")
    if task.latency is not None:
        reasons.extend(
            latency_reasons(task.latency, pool, network or NO_MAP, task.latency_fallback_ms)
        )
    if task.pool_types and pool.type not in task.pool_types:
        allowed = ", ".join(task.pool_types)
        reasons.append(f"pool type {pool.type} not allowed (allowed: {allowed})")
    if task.image is not None and not pool.can_run_images:
        reasons.append(
            f"needs container image {task.image!r}, pool runs no images "
            "(no container runtime, host execution not allowed)"
        )
    if task.labels:
        have = dict(pool.labels)
        for key, want in task.labels:
            if key not in have:
                reasons.append(f"missing label {key}={want}")
            elif have[key] != want:
                reasons.append(f"label {key}={have[key]}, needs {key}={want}")
    return tuple(reasons)


def latency_reasons(
    bound: tuple[str, float],
    pool: PoolView,
    network: NetworkMap,
    fallback_ms: float | None = None,
) -> tuple[str, ...]:
    """Why the pool is too far from the named place, judged on the map's RTT estimate.

    A pool whose place is unknown gets the map's default RTT, so an unknown distance never
    passes a bound tighter than that default. With ``fallback_ms`` (the fall-back policy) a
    pool beyond the bound but within the fallback is not rejected: ``latency_step`` ranks it
    after the pools within the bound.
    """
    place, most_ms = bound
    path = network.path(place, pool.place)
    if path.rtt_ms <= most_ms:
        return ()
    if fallback_ms is not None:
        if path.rtt_ms <= fallback_ms:
            return ()
        return (
            f"RTT to {place} ~{path.rtt_ms:.3g} ms ({path.rtt_source}) exceeds the bound "
            f"{most_ms:g} ms and the fallback bound {fallback_ms:g} ms",
        )
    return (
        f"RTT to {place} ~{path.rtt_ms:.3g} ms ({path.rtt_source}) exceeds the bound "
        f"{most_ms:g} ms",
    )


def latency_step(task: TaskRequest, pool: PoolView, network: NetworkMap | None) -> int:
    """0 for a pool within the task's latency bound (or a task without one); 1 for a pool
    beyond the bound but within its fallback bound (used only when no pool within fits)."""
    if task.latency is None or task.latency_fallback_ms is None:
        return 0
    place, most_ms = task.latency
    return 0 if (network or NO_MAP).path(place, pool.place).rtt_ms <= most_ms else 1


def latency_text(task: TaskRequest, pool: PoolView, network: NetworkMap | None) -> str:
    """The placement's latency reason, e.g. "latency 38 ms to region:441900 (declared):
    fallback, beyond the 10 ms bound (within 60 ms)"."""
    if task.latency is None:
        return ""
    place, most_ms = task.latency
    path = (network or NO_MAP).path(place, pool.place)
    head = f"latency {path.rtt_ms:.3g} ms to {place} ({path.rtt_source})"
    if path.rtt_ms <= most_ms:
        return f"{head}: within the {most_ms:g} ms bound"
    within = task.latency_fallback_ms
    return f"{head}: fallback, beyond the {most_ms:g} ms bound (within {within:g} ms)"


def tier(task: TaskRequest, pool: PoolView, network: NetworkMap | None) -> int:
    """The pool's place in the policy's lexical order before the objective (0 first): the
    latency step first (pools within the bound before fallback ones), then the spillover tier.
    Only for feasible pools (``tier_of`` is not None)."""
    return latency_step(task, pool, network) * task.spill_tiers() + (task.tier_of(pool) or 0)


def size_reasons(demand: Resources, pool: PoolView) -> tuple[str, ...]:
    """List each resource where the demand exceeds the pool's total, so it can never fit."""
    return tuple(
        f"larger than the whole pool: {text}"
        for text in demand.shortfall(pool.total, have="in total")
    )


def check(task: TaskRequest, pool: PoolView, network: NetworkMap | None = None) -> tuple[str, ...]:
    """Return every reason the pool can never run the task; empty when it is feasible.

    Constraint reasons come first (offline leading), then one reason per resource the task
    needs more of than the whole pool has.
    """
    return constraint_reasons(task, pool, network) + size_reasons(task.demand, pool)
