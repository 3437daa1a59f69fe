"""Pools from Kubernetes nodes (pure): quantities, what a pod holds, which nodes can take cpnet's
pods, and one pool per node-pool label."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from cpnet.agent.backends.base import (
    BackendError,
    PoolCapacity,
    PoolDecl,
)
from cpnet.agent.backends.runner_job import GIB

DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"
POOL_LABELS = (
    "cpnet.io/pool",
    "cloud.google.com/gke-nodepool",
    "eks.amazonaws.com/nodegroup",
    "kubernetes.azure.com/agentpool",
    "karpenter.sh/nodepool",
)
ZONE_LABEL = "topology.kubernetes.io/zone"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"  # MiB, from GPU feature discovery
DEFAULT_POOL = "default"


def quantity(value: Any) -> Decimal:
    """A Kubernetes quantity (``500m``, ``2Gi``, ``1e3``, ``4``) as a Decimal; 0 when absent.
    BackendError on a malformed one."""
    if value is None or value == "":
        return Decimal(0)
    from kubernetes.utils.quantity import parse_quantity

    try:
        return Decimal(parse_quantity(value))
    except (ValueError, TypeError, InvalidOperation) as exc:
        raise BackendError(f"bad Kubernetes quantity {value!r}: {exc}") from exc


def capacity_of(resources: dict[str, Any], gpu_resource: str) -> PoolCapacity:
    """CPU cores, GiB of memory and ephemeral storage, and GPUs of a resource list."""
    return PoolCapacity(
        cpu_cores=float(quantity(resources.get("cpu"))),
        ram_gb=float(quantity(resources.get("memory")) / GIB),
        disk_gb=float(quantity(resources.get("ephemeral-storage")) / GIB),
        gpus=int(quantity(resources.get(gpu_resource))),
    )


def pod_request(pod: dict[str, Any], gpu_resource: str = DEFAULT_GPU_RESOURCE) -> PoolCapacity:
    """What a pod holds on its node, as the scheduler counts it: per resource, the larger of the
    largest init container request and the sum of the containers' requests (plus overhead)."""
    spec = pod.get("spec") or {}

    def req(c: dict[str, Any]) -> PoolCapacity:
        r = c.get("resources") or {}
        # a limit without a request counts as the request
        return capacity_of({**(r.get("limits") or {}), **(r.get("requests") or {})}, gpu_resource)

    main = PoolCapacity()
    for c in spec.get("containers") or []:
        main = main.plus(req(c))
    for c in spec.get("initContainers") or []:
        i = req(c)
        main = PoolCapacity(
            max(main.cpu_cores, i.cpu_cores),
            max(main.ram_gb, i.ram_gb),
            max(main.disk_gb, i.disk_gb),
            max(main.gpus, i.gpus),
        )
    return main.plus(capacity_of(spec.get("overhead") or {}, gpu_resource))


def node_ready(node: dict[str, Any]) -> bool:
    """Ready, not cordoned."""
    if (node.get("spec") or {}).get("unschedulable"):
        return False
    conds = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


def node_usable(node: dict[str, Any], gpu_resource: str = DEFAULT_GPU_RESOURCE) -> bool:
    """Whether a cpnet pod can be placed there at all: no taint it does not tolerate."""
    for t in (node.get("spec") or {}).get("taints") or []:
        if t.get("effect") in ("NoSchedule", "NoExecute") and t.get("key") != gpu_resource:
            return False
    return True


def node_pool(node: dict[str, Any], pool_label: str | None) -> tuple[str, str | None]:
    """(pool name, label key selecting it or None) of one node."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    for key in (pool_label,) if pool_label else POOL_LABELS:
        if labels.get(key):
            return str(labels[key]), key
    return DEFAULT_POOL, None


@dataclass(frozen=True, slots=True)
class KubePool:
    """A discovered pool and how to place pods on it."""

    decl: PoolDecl
    selector: dict[str, str]  # nodeSelector (empty for the default pool)
    nodes: tuple[str, ...]


def group_nodes(
    nodes: Iterable[dict[str, Any]],
    *,
    pool_label: str | None = None,
    pool_type: str | None = None,
    gpu_resource: str = DEFAULT_GPU_RESOURCE,
) -> list[KubePool]:
    """Pools from a node list (see the module doc), sorted by name."""
    groups: dict[str, list[dict[str, Any]]] = {}
    keys: dict[str, str | None] = {}
    for node in nodes:
        if not node_usable(node, gpu_resource):
            continue
        name, key = node_pool(node, pool_label)
        groups.setdefault(name, []).append(node)
        keys[name] = key
    pools = []
    for name in sorted(groups):
        members = groups[name]
        total = PoolCapacity()
        for n in members:
            total = total.plus(
                capacity_of((n.get("status") or {}).get("allocatable") or {}, gpu_resource)
            )
        labels_of = [(n.get("metadata") or {}).get("labels") or {} for n in members]
        gpu_models = sorted(
            {str(lb[GPU_PRODUCT_LABEL]) for lb in labels_of if lb.get(GPU_PRODUCT_LABEL)}
        )
        gpu_mem = [
            float(lb[GPU_MEMORY_LABEL]) for lb in labels_of if _is_number(lb.get(GPU_MEMORY_LABEL))
        ]
        zones = sorted({str(lb[ZONE_LABEL]) for lb in labels_of if lb.get(ZONE_LABEL)})
        archs = sorted(
            {
                str(((n.get("status") or {}).get("nodeInfo") or {}).get("architecture") or "")
                for n in members
            }
            - {""}
        )
        labels = {"scheduler": "kubernetes", "node_pool": name}
        if zones:
            labels["zone"] = ",".join(zones)[:128]
        key = keys[name]
        pools.append(
            KubePool(
                decl=PoolDecl(
                    name=name,
                    type=pool_type or ("intelligent" if total.gpus else "general"),
                    total=PoolCapacity(
                        round(total.cpu_cores, 3),
                        round(total.ram_gb, 3),
                        round(total.disk_gb, 3),
                        total.gpus,
                    ),
                    cpu_model=archs[0] if archs else "unknown",
                    gpu_model=(gpu_models[0] if gpu_models else "gpu") if total.gpus else None,
                    gpu_memory_gb=round(min(gpu_mem) / 1024, 3) if gpu_mem and total.gpus else None,
                    labels=labels,
                    can_run_images=True,
                ),
                selector={key: name} if key else {},
                nodes=tuple(str((n.get("metadata") or {}).get("name")) for n in members),
            )
        )
    return pools


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


__all__ = [
    "DEFAULT_GPU_RESOURCE",
    "KubePool",
    "capacity_of",
    "group_nodes",
    "node_pool",
    "node_ready",
    "node_usable",
    "pod_request",
    "quantity",
]
