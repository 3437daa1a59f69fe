"""Pools from Slurm's own records (pure): one pool per partition, its total from its nodes'
CPUs, memory and GRES GPUs (the GPU model is the GRES type: ``gpu:a100:2``), its free capacity
from its usable nodes while the partition is UP, and its queue (every user's jobs)."""

from __future__ import annotations

import re
from typing import Any

from cpnet.agent.backends.base import PoolCapacity, PoolDecl
from cpnet.agent.backends.slurm.states import PENDING_STATES, RUNNING_STATES, job_state

# Node states (sinfo's lower-case first word) whose CPUs cannot take jobs.
UNUSABLE = {"down", "drain", "drained", "draining", "fail", "failing", "future", "unknown"}


def parse_gres(gres: str) -> dict[str | None, int]:
    """GPUs by model from a GRES string: ``gpu:a100:2(S:0-1),gpu:v100:1,mps:100`` →
    ``{"a100": 2, "v100": 1}``; ``gpu:4`` → ``{None: 4}``; ``(null)`` / ``""`` → ``{}``.
    Also reads ``gres_used`` strings (``gpu:a100:1(IDX:0),mps:0``)."""
    result: dict[str | None, int] = {}
    for item in re.split(r",(?![^(]*\))", gres or ""):
        parts = item.split("(")[0].strip().split(":")
        if parts[0] != "gpu" or len(parts) < 2:
            continue
        count_text = parts[-1]
        m = re.fullmatch(r"(\d+)([KMGT]?)", count_text)
        if not m:
            if len(parts) == 2:  # "gpu:a100" means one of that type
                result[parts[1]] = result.get(parts[1], 0) + 1
            continue
        count = (
            int(m.group(1))
            * {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}[m.group(2)]
        )
        model = parts[1] if len(parts) >= 3 and parts[1] else None
        result[model] = result.get(model, 0) + count
    return result


def gres_gpus(gres: str) -> int:
    """GPU count from a node's GRES string such as ``gpu:a100:2(S:0-1),other:1``."""
    return sum(parse_gres(gres).values())


def usable(node: dict[str, Any]) -> bool:
    """Whether a node can take jobs (not down, drained, failing, ...)."""
    state = str(node.get("state") or "").lower()
    flags = {str(f).lower() for f in node.get("state_flags") or []}
    return state.split("+")[0] not in UNUSABLE and not flags & UNUSABLE


def queue_of(jobs: dict[str, dict[str, Any]], partition: str) -> tuple[int, int]:
    """(pending, running) jobs of every user in `partition`."""
    mine = [job_state(j) for j in jobs.values() if partition in job_partitions(j)]
    return (
        sum(1 for s in mine if s in PENDING_STATES),
        sum(1 for s in mine if s in RUNNING_STATES),
    )


def job_partitions(job: dict[str, Any]) -> set[str]:
    """A job may be submitted to several partitions (``cpu,big``) until it starts."""
    return {p for p in str(job.get("partition") or "").split(",") if p}


def nodes_by_partition(nodes: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The nodes of each partition (a node may be in several)."""
    parts: dict[str, list[dict[str, Any]]] = {}
    for node in nodes:
        for p in node.get("partitions") or []:
            parts.setdefault(str(p), []).append(node)
    return parts


def partition_pool(
    name: str, nodes: list[dict[str, Any]], partition: dict[str, Any], pool_type: str
) -> PoolDecl:
    """The pool a partition offers: its nodes' CPUs, memory, temporary disk and GPUs summed;
    `partition` is what `SlurmTransport.partitions` says of it (empty when not known)."""
    gpus: dict[str | None, int] = {}
    for n in nodes:
        for model, count in parse_gres(str(n.get("gres") or "")).items():
            gpus[model] = gpus.get(model, 0) + count
    named = sorted((c, m) for m, c in gpus.items() if m)
    archs = sorted({str(n.get("architecture") or "") for n in nodes} - {""})
    labels = {"scheduler": "slurm", "partition": name}
    if len(named) > 1:
        labels["gpu_models"] = ",".join(sorted(m for _, m in named))
    max_time = partition.get("max_time_min")
    if max_time is not None:
        labels["max_time_min"] = str(max_time)
    total_gpus = sum(gpus.values())
    return PoolDecl(
        name=name,
        type=pool_type,
        total=PoolCapacity(
            cpu_cores=float(sum(int(n.get("cpus") or 0) for n in nodes)),
            ram_gb=round(sum(int(n.get("real_memory") or 0) for n in nodes) / 1024, 3),
            disk_gb=round(sum(int(n.get("temporary_disk") or 0) for n in nodes) / 1024, 3),
            gpus=total_gpus,
        ),
        cpu_model=archs[0] if archs else "unknown",
        # The GRES type names the model (gpu:a100:2); untyped GPUs stay "gpu".
        gpu_model=(named[-1][1] if named else "gpu") if total_gpus else None,
        gpu_memory_gb=None,
        labels=labels,
    )


def partition_free(
    pool: PoolDecl, nodes: list[dict[str, Any]], partition: dict[str, Any]
) -> PoolCapacity:
    """Free CPUs, memory and GPUs of the pool's usable nodes (none while its partition is not
    UP); its declared total when no node is in it (a declared pool Slurm does not know)."""
    members = [n for n in nodes if pool.name in (n.get("partitions") or [])]
    if not members:
        return pool.total
    up = partition.get("state", "UP") == "UP"
    live = [n for n in members if usable(n)] if up else []
    cpus = sum(int(n.get("idle_cpus") or 0) for n in live)
    mem_mib = sum(
        max(0, int(n.get("real_memory") or 0) - int(n.get("alloc_memory") or 0)) for n in live
    )
    gpus = sum(
        max(0, gres_gpus(str(n.get("gres") or "")) - gres_gpus(str(n.get("gres_used") or "")))
        for n in live
        if int(n.get("idle_cpus") or 0) > 0
    )
    return PoolCapacity(
        cpu_cores=float(cpus),
        ram_gb=round(mem_mib / 1024, 3),
        disk_gb=pool.total.disk_gb if live else 0.0,
        gpus=gpus,
    )


__all__ = [
    "gres_gpus",
    "job_partitions",
    "nodes_by_partition",
    "parse_gres",
    "partition_free",
    "partition_pool",
    "queue_of",
    "usable",
]
