"""The default placement policy: expected start, price and load, folded into one rank order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cpnet.sched.snapshot import PoolView, Resources, TaskRequest


@dataclass(frozen=True, slots=True)
class Weights:
    """How much each normalised term counts in a pool's score (lower score is better)."""

    start: float = 0.6  # expected start, normalised to 0..1 across the candidates
    price: float = 0.4  # hourly price, normalised to 0..1 across the candidates
    # Fraction of the pool in use (0..1). Small, so it only separates pools that are otherwise
    # close, and equal pools take turns instead of one filling up first.
    spread: float = 0.05
    carbon: float = 0.0  # grams of CO2 of the run, normalised; 0 leaves carbon out of "balanced"


DEFAULT_WEIGHTS = Weights()

# Under a single-figure objective the other figures only break ties between equal pools.
TIE_BREAK = 1e-6


def start_factors(pool: PoolView) -> tuple[float, float]:
    """Give (queue, busy) multipliers of the task's runtime that ``expected_start_s`` adds up.

    Split out so a batch can compute them once per pool instead of once per task and pool.
    """
    slots = max(1, pool.running)
    return pool.queue_length / slots, slots / (slots + 1)


def expected_start_s(task: TaskRequest, pool: PoolView, fits_now: bool | None = None) -> float:
    """Estimate seconds until the task would start on the pool.

    Model: we know nothing about the other tasks, so each is assumed to take the task's own
    ``expected_runtime_s`` (T). The backend runs ``max(1, running)`` tasks side by side (s), so
    its queue of q tasks drains in ``q * T / s``. If the task does not fit now it also waits for
    running tasks to release capacity; with remaining runtimes spread evenly over 0..T, the last
    of s tasks ends after ``T * s / (s + 1)`` on average (at least T/2). Hence:

        fits now:        q * T / s             (0 when the backend queue is empty)
        does not fit:    q * T / s + T * s / (s + 1)

    It grows with the queue, and when the task does not fit now, with the tasks running.
    ``fits_now`` defaults to whether the demand fits the pool's available capacity.
    """
    if fits_now is None:
        fits_now = task.demand.fits_in(pool.available)
    queue, busy = start_factors(pool)
    runtime_s = max(0.0, task.expected_runtime_s)
    return runtime_s * (queue if fits_now else queue + busy)


def load_fraction(pool: PoolView) -> float:
    """Give the fraction of the pool in use (0..1): the largest used share of any resource it has.

    The dominant share, so a pool whose GPUs are all taken counts as full even with idle CPUs.
    """
    return used_share(pool.total, pool.available)


def used_share(total: Resources, free: Resources) -> float:
    """``load_fraction`` of a pool with this total and this much free (0..1)."""
    used = 0.0
    for have, left in (
        (total.cpu_cores, free.cpu_cores),
        (total.ram_gb, free.ram_gb),
        (total.disk_gb, free.disk_gb),
        (total.gpus, free.gpus),
    ):
        if have > 0:
            used = max(used, 1.0 - left / have)
    return min(1.0, max(0.0, used))


def normalise(values: Sequence[float]) -> list[float]:
    """Map values linearly onto 0..1 across the set (min to 0, max to 1); all 0 when equal."""
    if not values:
        return []
    low = min(values)
    span = max(values) - low
    if span <= 0:
        return [0.0] * len(values)
    return [(v - low) / span for v in values]


def scores(
    starts: Sequence[float],
    prices: Sequence[float],
    loads: Sequence[float],
    weights: Weights = DEFAULT_WEIGHTS,
) -> list[float]:
    """Score each candidate (lower is better) from aligned lists of start s, price/h and load.

    Starts and prices are normalised across the candidate set, so the weights trade relative
    positions, not seconds against money.
    """
    w_start, w_price, w_spread = weights.start, weights.price, weights.spread
    return [
        w_start * s + w_price * p + w_spread * load
        for s, p, load in zip(normalise(starts), normalise(prices), loads, strict=True)
    ]


def objective_scores(
    objective: str,
    times: Sequence[float],
    costs: Sequence[float],
    carbon: Sequence[float | None],
    loads: Sequence[float],
    weights: Weights = DEFAULT_WEIGHTS,
) -> list[float]:
    """Score candidates under a task's objective (lower is better), from aligned lists.

    ``balanced`` weighs normalised time to result, cost and (when its weight is set) carbon;
    ``fastest``, ``cheapest`` and ``greenest`` rank by that one figure, the others breaking ties.
    Unknown carbon counts as the worst known.
    """
    known = [c for c in carbon if c is not None]
    worst = max(known, default=0.0)
    grams = [worst if c is None else c for c in carbon]
    if objective == "balanced":
        base = scores(times, costs, loads, weights)
        if weights.carbon:
            base = [b + weights.carbon * g for b, g in zip(base, normalise(grams), strict=True)]
        return base
    first, second = {
        "fastest": (times, costs),
        "cheapest": (costs, times),
        "greenest": (grams, times),
    }[objective]
    return [
        a + TIE_BREAK * b + TIE_BREAK * weights.spread * load
        for a, b, load in zip(normalise(first), normalise(second), loads, strict=True)
    ]


def rank_key(pool_id: str, score: float, avoided: bool) -> tuple[bool, float, str]:
    """Order candidates: avoided pools after all others, then by score, ties by pool id."""
    return (avoided, score, pool_id)


def rank_keys(
    pool_ids: Sequence[str],
    scores: Sequence[float],
    avoided: Sequence[bool],
    tiers: Sequence[int] = (),
) -> list[tuple[bool, int, float, str, int]]:
    """Order keys for aligned lists: avoided last, then spillover tier, score, pool id.

    Each key ends with its list position. Pool ids are unique, so the position never decides
    the order; it only lets the caller map a sorted key back to its candidate.
    """
    tiers = tiers or [0] * len(pool_ids)
    return list(zip(avoided, tiers, scores, pool_ids, range(len(pool_ids)), strict=True))
