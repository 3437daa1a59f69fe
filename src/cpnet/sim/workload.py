"""Fit a trace to a simulated network: drop what fits nowhere, set the load, add what it lacks.

Traces record arrivals, run times and sizes, but not where a job's input lives, how big it is,
or when it is due. ``annotate`` draws those from a seeded generator (documented distributions),
so every policy sees the same synthetic additions for the same seed. ``scale_load`` compresses
(or stretches) inter-arrival times so the offered load is a chosen fraction of the network's
capacity: a 100-processor machine's log would otherwise barely touch a national network.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

from cpnet.sim.network import Network, capacity
from cpnet.sim.traces import Job

# Input data per job: log-normal bytes with this median and sigma (of the log); GPU jobs carry
# GPU_INPUT_FACTOR times more (datasets, checkpoints). Assumed, since no trace records inputs.
INPUT_MEDIAN_BYTES = 2e9
INPUT_SIGMA = 1.5
GPU_INPUT_FACTOR = 10.0
# Deadline = submit + slack × expected run time + DEADLINE_GRACE_S, slack uniform in this range.
DEADLINE_SLACK = (1.5, 4.0)
DEADLINE_GRACE_S = 600.0


@dataclass(frozen=True, slots=True)
class Fitted:
    """Jobs ready to simulate on one network, and what was changed to get there."""

    jobs: tuple[Job, ...]
    unplaceable: int  # jobs larger than every pool, left out
    time_scale: float  # submit times were multiplied by this (1.0: as recorded; < 1 compresses)
    offered_load: float  # the resulting offered load of the bottleneck resource (0..)


def fits_somewhere(job: Job, net: Network) -> bool:
    """Whether some pool's whole capacity can hold the job."""
    return any(
        job.cpu_cores <= p.total.cpu_cores
        and job.ram_gb <= p.total.ram_gb
        and job.gpus <= p.total.gpus
        for p in net.pools
    )


def offered_load(jobs: Sequence[Job], net: Network) -> float:
    """The larger of CPU and GPU offered load: demanded resource-seconds ÷ (capacity × span)."""
    if len(jobs) < 2:
        return 0.0
    span = max(j.submit_s for j in jobs) - min(j.submit_s for j in jobs)
    if span <= 0:
        return math.inf
    cores, gpus = capacity(net)
    cpu = math.fsum(j.cpu_cores * j.runtime_s for j in jobs) / (cores * span)
    gpu = math.fsum(j.gpus * j.runtime_s for j in jobs) / (gpus * span) if gpus else 0.0
    return max(cpu, gpu)


def fit(jobs: Sequence[Job], net: Network, rng: random.Random, load: float | None) -> Fitted:
    """Drop unplaceable jobs, scale arrivals to ``load`` (None: as recorded), then annotate."""
    kept = [j for j in jobs if fits_somewhere(j, net)]
    scale = 1.0
    now = offered_load(kept, net)
    if load and 0 < now < math.inf:
        scale = now / load
        kept = [_scaled(j, scale) for j in kept]
    return Fitted(annotate(kept, net, rng), len(jobs) - len(kept), scale, offered_load(kept, net))


def _scaled(job: Job, scale: float) -> Job:
    """The job with its submit time multiplied by ``scale`` (a given deadline keeps its slack)."""
    submit = job.submit_s * scale
    deadline = None if job.deadline_s is None else job.deadline_s - job.submit_s + submit
    return replace(job, submit_s=submit, deadline_s=deadline)


def annotate(jobs: Sequence[Job], net: Network, rng: random.Random) -> tuple[Job, ...]:
    """Give each job an input location and size and a deadline, unless the trace had them."""
    n = len(net.sites)
    mu = math.log(INPUT_MEDIAN_BYTES)
    out = []
    for job in jobs:
        size = job.input_bytes
        drawn = rng.lognormvariate(mu, INPUT_SIGMA) * (GPU_INPUT_FACTOR if job.gpus else 1.0)
        site = net.sites[rng.randrange(n)].id
        slack = rng.uniform(*DEADLINE_SLACK)
        expected = job.estimate_s or job.runtime_s
        out.append(
            replace(
                job,
                input_bytes=size if size > 0 else round(drawn),
                data_site=job.data_site or site,
                deadline_s=job.deadline_s
                if job.deadline_s is not None
                else job.submit_s + slack * expected + DEADLINE_GRACE_S,
            )
        )
    return tuple(out)
