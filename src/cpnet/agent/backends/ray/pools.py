"""Pools from a Ray cluster's nodes (pure): one per node shape, and each one's free capacity from
Ray's own usage."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from cpnet.agent.backends.base import (
    PoolCapacity,
    PoolDecl,
)
from cpnet.agent.backends.runner_job import GIB

log = logging.getLogger(__name__)

STANDARD = {"CPU", "GPU", "memory", "object_store_memory"}
ACCEL_PREFIX = "accelerator_type:"


def _custom(name: str) -> bool:
    return name not in STANDARD and not name.startswith(("node:", ACCEL_PREFIX))


def node_shape(resources: dict[str, float]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(accelerator types, custom resource names) of a node, each sorted: its pool's key."""
    accels = sorted(r[len(ACCEL_PREFIX) :] for r in resources if r.startswith(ACCEL_PREFIX))
    custom = sorted(r for r in resources if _custom(r))
    return tuple(accels), tuple(custom)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def pool_name(shape: tuple[tuple[str, ...], tuple[str, ...]], has_gpus: bool) -> str:
    """``a100``, ``fast``, ``a100-nvme`` ...; ``gpu`` or ``cpu`` for nodes of no special shape."""
    accels, custom = shape
    parts = [_slug(a) for a in accels] + [_slug(c) for c in custom]
    if not parts:
        return "gpu" if has_gpus else "cpu"
    return "-".join(parts)[:128]


@dataclass(frozen=True, slots=True)
class RayPool:
    """A discovered pool: its declaration and the node shape that defines it."""

    decl: PoolDecl
    shape: tuple[tuple[str, ...], tuple[str, ...]]


def alive(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ALIVE nodes of a node list."""
    return [n for n in nodes if str(n.get("state", "")).upper() == "ALIVE"]


def totals(node: dict[str, Any]) -> dict[str, float]:
    """A node's resources (name → amount)."""
    return {str(k): float(v) for k, v in (node.get("resources_total") or {}).items()}


def derive_pools(nodes: list[dict[str, Any]], pool_type: str | None = None) -> list[RayPool]:
    """One pool per distinct shape of the ALIVE nodes (``/api/v0/nodes`` entries), by name.

    Two shapes whose names collide (after lower-casing) get ``-2``, ``-3`` ... suffixes, in the
    order of their sorted shapes, so names are stable while the cluster is.
    """
    groups: dict[tuple[tuple[str, ...], tuple[str, ...]], list[dict[str, float]]] = {}
    for node in alive(nodes):
        res = totals(node)
        groups.setdefault(node_shape(res), []).append(res)
    pools: list[RayPool] = []
    taken: set[str] = set()
    for shape in sorted(groups):
        members = groups[shape]
        gpus = int(sum(r.get("GPU", 0.0) for r in members) + 1e-9)
        name = base = pool_name(shape, gpus > 0)
        n = 1
        while name in taken:
            n += 1
            name = f"{base}-{n}"
        taken.add(name)
        accels, custom = shape
        labels = {"scheduler": "ray", "ray_pool": name}
        if custom:
            labels["ray_resources"] = ",".join(custom)[:128]
        if accels:
            labels["accelerator_type"] = ",".join(accels)[:128]
        pools.append(
            RayPool(
                decl=PoolDecl(
                    name=name,
                    type=pool_type or ("intelligent" if gpus else "general"),
                    total=PoolCapacity(
                        cpu_cores=float(sum(r.get("CPU", 0.0) for r in members)),
                        ram_gb=round(sum(r.get("memory", 0.0) for r in members) / GIB, 3),
                        disk_gb=0.0,
                        gpus=gpus,
                    ),
                    cpu_model="unknown",
                    gpu_model=accels[0] if accels else ("gpu" if gpus else None),
                    gpu_memory_gb=None,
                    labels=labels,
                ),
                shape=shape,
            )
        )
    return pools


def members(pool: RayPool, nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ALIVE nodes of `pool`'s shape."""
    return [n for n in alive(nodes) if node_shape(totals(n)) == pool.shape]


def camel(name: str) -> str:
    """A resource name as the dashboard's cluster status spells it (``ray.dashboard.utils.
    to_camel_case``: ``object_store_memory`` → ``objectStoreMemory``)."""
    head, *rest = name.split("_")
    return head + "".join(x.title() for x in rest)


def free_capacity(
    pool: RayPool, nodes: list[dict[str, Any]], usage: dict[str, dict[str, list[float]]]
) -> PoolCapacity:
    """Total − used of CPU, memory and GPU over the pool's live nodes; `usage` is the dashboard's
    ``usageByNode`` (node id → camel-cased resource → [used, total]); a node it does not list yet
    counts as idle. Never more than the pool's declared total."""
    cpu = mem = gpu = 0.0
    for node in members(pool, nodes):
        res = totals(node)
        used = usage.get(str(node.get("node_id")), {})

        def free(name: str, res: dict[str, float] = res, used: dict = used) -> float:
            pair = used.get(camel(name)) or [0.0, 0.0]
            return max(0.0, res.get(name, 0.0) - float(pair[0]))

        cpu += free("CPU")
        mem += free("memory")
        gpu += free("GPU")
    total = pool.decl.total
    return PoolCapacity(
        cpu_cores=min(total.cpu_cores, round(cpu, 4)),
        ram_gb=min(total.ram_gb, round(mem / GIB, 3)),
        disk_gb=0.0,
        gpus=min(total.gpus, int(gpu + 1e-9)),
    )


__all__ = [
    "RayPool",
    "alive",
    "camel",
    "derive_pools",
    "free_capacity",
    "members",
    "node_shape",
    "pool_name",
    "totals",
]
