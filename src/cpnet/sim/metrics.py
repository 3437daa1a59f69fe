"""What one simulated run achieved: completion times, makespan, cost, use, data moved, carbon.

Job completion time (JCT) is completion − submit, over the jobs that completed; a job that ended
SYSTEM_ERROR (out of attempts) or never ran counts as a deadline miss and is counted apart, never
averaged in. Utilisation is busy resource-seconds ÷ (capacity × makespan), with the time of
failed attempts counted as busy (the pool was held).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from cpnet.sim.network import Network, capacity

if TYPE_CHECKING:
    from cpnet.sim.engine import Ledger
    from cpnet.sim.state import Task


@dataclass(frozen=True, slots=True)
class Metrics:
    """The figures of one run (times in s, cost in CNY, bytes, carbon in kg CO2)."""

    jobs: int
    completed: int
    failed: int  # ended SYSTEM_ERROR after MAX_ATTEMPTS
    unfinished: int  # still queued when the events ran out (never fitted anywhere free)
    mean_jct_s: float
    p95_jct_s: float
    p99_jct_s: float
    mean_wait_s: float  # submit → start of the last attempt (queueing plus staging and retries)
    makespan_s: float  # first submit (0) → last completion
    cost: float
    cpu_utilisation: float
    gpu_utilisation: float
    cross_region_bytes: float
    deadline_misses: int
    carbon_kg: float
    events: int
    wall_s: float

    @property
    def events_per_s(self) -> float:
        """Simulated events per second of wall-clock time."""
        return self.events / self.wall_s if self.wall_s > 0 else math.nan

    def as_dict(self) -> dict[str, Any]:
        """Plain values for JSON, with events per second added."""
        return {**asdict(self), "events_per_s": self.events_per_s}


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of sorted values, linear interpolation; NaN when empty."""
    if not values:
        return math.nan
    k = (len(values) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def summarise(
    tasks: Sequence[Task],
    net: Network,
    ledger: Ledger,
    events: int,
    wall_s: float,
    unfinished: int,
) -> Metrics:
    """Fold the tasks' outcomes and the run's ledger into Metrics."""
    done = [t for t in tasks if t.done_s >= 0]
    jct = sorted(t.done_s - t.job.submit_s for t in done)
    waits = [t.start_s - t.job.submit_s for t in done]
    makespan = max((t.done_s for t in done), default=0.0)
    misses = sum(
        1
        for t in tasks
        if t.done_s < 0 or (t.job.deadline_s is not None and t.done_s > t.job.deadline_s)
    )
    cores, gpus = capacity(net)
    return Metrics(
        jobs=len(tasks),
        completed=len(done),
        failed=sum(1 for t in tasks if t.failed),
        unfinished=unfinished,
        mean_jct_s=math.fsum(jct) / len(jct) if jct else math.nan,
        p95_jct_s=percentile(jct, 95),
        p99_jct_s=percentile(jct, 99),
        mean_wait_s=math.fsum(waits) / len(waits) if waits else math.nan,
        makespan_s=makespan,
        cost=ledger.cost,
        cpu_utilisation=ledger.busy_core_s / (cores * makespan) if makespan and cores else 0.0,
        gpu_utilisation=ledger.busy_gpu_s / (gpus * makespan) if makespan and gpus else 0.0,
        cross_region_bytes=ledger.cross_region_bytes,
        deadline_misses=misses,
        carbon_kg=ledger.carbon_g / 1000.0,
        events=events,
        wall_s=wall_s,
    )
