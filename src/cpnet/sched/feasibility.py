"""Whether a pool could ever run a task, and every reason it cannot.

Feasibility ignores how much is free right now: a pool that is merely busy is feasible but does
not fit now (see ``Placement.fits_now``). Only facts that waiting cannot change make a pool
infeasible: it is offline, the task is bigger than the whole pool, or the task's constraints
exclude it.
"""

from __future__ import annotations

from collections.abc import Hashable

from cpnet.sched.snapshot import PoolView, Resources, TaskRequest


def signature(task: TaskRequest) -> Hashable:
    """Key the task's demand-independent constraints, for caching ``constraint_reasons``."""
    return (task.gpu_model, task.regions, task.providers, task.pool_types, task.labels, task.image)


def constraint_reasons(task: TaskRequest, pool: PoolView) -> tuple[str, ...]:
    """List why the pool is excluded regardless of the task's size.

    Depends only on ``signature(task)`` and the pool's fixed facts (not its availability), so
    callers may cache it per (signature, pool).
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


def size_reasons(demand: Resources, pool: PoolView) -> tuple[str, ...]:
    """List each resource where the demand exceeds the pool's total, so it can never fit."""
    return tuple(
        f"larger than the whole pool: {text}"
        for text in demand.shortfall(pool.total, have="in total")
    )


def check(task: TaskRequest, pool: PoolView) -> tuple[str, ...]:
    """Return every reason the pool can never run the task; empty when it is feasible.

    Constraint reasons come first (offline leading), then one reason per resource the task
    needs more of than the whole pool has.
    """
    return constraint_reasons(task, pool) + size_reasons(task.demand, pool)
