"""Lower bounds on mean job completion time and on cost, from an LP relaxation (HiGHS).

The relaxation: each job j is split into fractions x[j, p] ≥ 0 over the pools whose whole
capacity can hold it, Σ_p x[j, p] = 1. On pool p the job would take t[j, p] = staging of its
input to p + its run time there (trace run time ÷ the pool's speed), and cost c[j, p] = the
pool's hourly price of its demand × that run time. What it relaxes:

- no queueing: a job's completion time is counted as if it started the moment it arrived;
- no packing: capacity is only a volume, per pool and per resource (cores, GPUs):
  Σ_j x[j, p] · demand_j · run[j, p] ≤ capacity_p · (H − τ) over the jobs submitted at or after
  τ, for a few thresholds τ (a job cannot run before it arrives, so all that work lies in
  [τ, H]), where H is a horizon given by the caller;
- fractional jobs, no failures (a failed attempt only adds time and cost).

Why it is a valid lower bound: take any schedule that completes every job by H (each policy's
schedule does, when H ≥ its makespan). Put x[j, p] = 1 on the pool of j's last attempt. Each
job's completion time minus its submit time is at least staging plus run time on that pool, its
cost at least that run's cost, and the work on every pool after τ fits in capacity × (H − τ).
So that x is feasible, and its objective is at most the schedule's mean JCT (or cost); the LP's
optimum is at most that. It says nothing about schedules running past H, and it is compared
only with policies that completed every job.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from cpnet.sched import Resources
from cpnet.sim.network import Network, transfer_s
from cpnet.sim.traces import Job

THRESHOLDS = 4  # submit-time thresholds τ per pool and resource (τ = 0 is always one)
MAX_VARIABLES = 300_000  # above this many (job, pool) pairs the LP is not attempted


@dataclass(frozen=True, slots=True)
class Bound:
    """LP lower bounds for one scenario (NaN when the LP was too large or not solved)."""

    mean_jct_s: float
    cost: float
    horizon_s: float
    variables: int
    status: str  # "optimal", or why there is no bound


def _pairs(jobs: Sequence[Job], net: Network) -> tuple[list[tuple[int, int]], list[float]]:
    """Feasible (job, pool) pairs and their staging + run time."""
    index = net.index()
    pairs: list[tuple[int, int]] = []
    times: list[float] = []
    for j, job in enumerate(jobs):
        d = index.get(job.data_site, -1) if job.data_site else -1
        for p, pool in enumerate(net.pools):
            t = pool.total
            if job.cpu_cores <= t.cpu_cores and job.ram_gb <= t.ram_gb and job.gpus <= t.gpus:
                stage = transfer_s(net, d, p, job.input_bytes) if d >= 0 else 0.0
                pairs.append((j, p))
                times.append(stage + job.runtime_s / net.sites[p].speed)
    return pairs, times


def lower_bound(jobs: Sequence[Job], net: Network, horizon_s: float) -> Bound:
    """Solve the relaxation twice: minimum mean JCT, then minimum cost (see the module doc)."""
    n = len(jobs)
    if n == 0:
        return Bound(math.nan, math.nan, horizon_s, 0, "no jobs")
    if n * len(net.pools) > MAX_VARIABLES:
        return Bound(math.nan, math.nan, horizon_s, n * len(net.pools), "too large for the LP")
    pairs, times = _pairs(jobs, net)
    if len({j for j, _ in pairs}) < n:
        return Bound(math.nan, math.nan, horizon_s, len(pairs), "a job fits no pool")
    runs = [jobs[j].runtime_s / net.sites[p].speed for j, p in pairs]
    cost = [
        net.pools[p].price.hourly(_demand(jobs[j])) * r / 3600.0
        for (j, p), r in zip(pairs, runs, strict=True)
    ]
    submits = sorted(job.submit_s for job in jobs)
    taus = sorted({submits[int(k * (n - 1) / THRESHOLDS)] for k in range(THRESHOLDS)})
    matrix = _matrix(jobs, net, pairs, runs, taus)
    rows_hi = [1.0] * n + [
        net.pools[p].total.cpu_cores * max(0.0, horizon_s - tau)
        if res == 0
        else net.pools[p].total.gpus * max(0.0, horizon_s - tau)
        for p, _, tau, res in matrix[3]
    ]
    rows_lo = [1.0] * n + [0.0] * len(matrix[3])
    jct, status = _solve([t / n for t in times], matrix, rows_lo, rows_hi)
    money, status_cost = _solve(cost, matrix, rows_lo, rows_hi)
    ok = status if status != "optimal" else status_cost
    return Bound(jct, money, horizon_s, len(pairs), ok)


def _demand(job: Job) -> Resources:
    """The job's demand as scheduler Resources (for the pool's price)."""
    return Resources(job.cpu_cores, job.ram_gb, 0.0, job.gpus)


def _matrix(
    jobs: Sequence[Job],
    net: Network,
    pairs: Sequence[tuple[int, int]],
    runs: Sequence[float],
    taus: Sequence[float],
) -> tuple[list[int], list[int], list[float], list[tuple[int, int, float, int]]]:
    """The constraint matrix column by column: (starts, row indices, values, capacity rows).

    Rows 0..n-1 say each job is placed once; then one capacity row per (pool, τ, resource) that
    some job uses.
    """
    n = len(jobs)
    cap_rows: dict[tuple[int, int, int], int] = {}
    meta: list[tuple[int, int, float, int]] = []
    starts, index, value = [0], [], []
    for (j, p), run in zip(pairs, runs, strict=True):
        job = jobs[j]
        index.append(j)
        value.append(1.0)
        for k, tau in enumerate(taus):
            if job.submit_s < tau:
                break
            for res, amount in ((0, job.cpu_cores), (1, float(job.gpus))):
                if amount <= 0:
                    continue
                key = (p, k, res)
                row = cap_rows.get(key)
                if row is None:
                    row = cap_rows[key] = n + len(meta)
                    meta.append((p, k, tau, res))
                index.append(row)
                value.append(amount * run)
        starts.append(len(index))
    return starts, index, value, meta


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence HiGHS's banner, which it prints on the process's stdout (it would spoil --json)."""
    fd = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(fd, 1)
        os.close(fd)


def _solve(
    objective: Sequence[float],
    matrix: tuple[list[int], list[int], list[float], list[tuple[int, int, float, int]]],
    rows_lo: Sequence[float],
    rows_hi: Sequence[float],
) -> tuple[float, str]:
    """Minimise objective · x over the matrix's rows with 0 ≤ x ≤ 1; (value, status)."""
    import highspy  # both here, not at import: the CLI loads this module
    import numpy as np

    starts, index, value, _ = matrix
    lp = highspy.HighsLp()
    lp.num_col_ = len(objective)
    lp.num_row_ = len(rows_lo)
    lp.col_cost_ = np.asarray(objective, dtype=float)
    lp.col_lower_ = np.zeros(len(objective))
    lp.col_upper_ = np.ones(len(objective))
    lp.row_lower_ = np.asarray(rows_lo, dtype=float)
    lp.row_upper_ = np.asarray(rows_hi, dtype=float)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.asarray(starts, dtype=np.int32)
    lp.a_matrix_.index_ = np.asarray(index, dtype=np.int32)
    lp.a_matrix_.value_ = np.asarray(value, dtype=float)
    with _quiet():
        h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        h.passModel(lp)
        h.run()
    status = h.modelStatusToString(h.getModelStatus()).lower()
    if status != "optimal":
        return math.nan, status
    return float(h.getInfo().objective_function_value), "optimal"


def gap(value: float, bound: float) -> float:
    """How far above the bound a policy's figure is, as a fraction (0.1 = 10 % above)."""
    if not bound or math.isnan(bound) or math.isnan(value):
        return math.nan
    return value / bound - 1.0
