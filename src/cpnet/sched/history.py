"""A pool's recent record, folded into the figures the time and risk model uses (pure).

From the attempts the hub placed on a pool lately: how long they waited to start (placed →
running, which includes the backend's own queue and dispatch), how long they ran, and what share
ended in a system error (the site's fault, not the task's). Too few attempts say nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from statistics import median

MIN_SAMPLES = 3  # fewer attempts than this say nothing about a pool
SYSTEM_ERROR = "SYSTEM_ERROR"
ENDED = frozenset({"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"})


@dataclass(frozen=True, slots=True)
class PoolHistory:
    """One pool's recent record; None where there were too few attempts to tell."""

    wait_s: float | None
    runtime_s: float | None
    failure_rate: float
    attempts: int
    ended: int = 0  # attempts that have ended (of any kind)


NONE = PoolHistory(None, None, 0.0, 0)


def of(
    rows: Iterable[tuple[str, float, float | None, float | None, str]],
) -> dict[str, PoolHistory]:
    """Fold (pool id, created, started, ended, state) rows into each pool's history."""
    waits: dict[str, list[float]] = {}
    runs: dict[str, list[float]] = {}
    ended: dict[str, int] = {}
    failed: dict[str, int] = {}
    count: dict[str, int] = {}
    for pool_id, created, started, finished, state in rows:
        count[pool_id] = count.get(pool_id, 0) + 1
        if started is not None:
            waits.setdefault(pool_id, []).append(max(0.0, started - created))
            if finished is not None and state == "COMPLETE":
                runs.setdefault(pool_id, []).append(max(0.0, finished - started))
        if state in ENDED:
            ended[pool_id] = ended.get(pool_id, 0) + 1
            if state == SYSTEM_ERROR:
                failed[pool_id] = failed.get(pool_id, 0) + 1
    out = {}
    for pool_id, n in count.items():
        w, r, e = waits.get(pool_id, []), runs.get(pool_id, []), ended.get(pool_id, 0)
        out[pool_id] = PoolHistory(
            wait_s=median(w) if len(w) >= MIN_SAMPLES else None,
            runtime_s=median(r) if len(r) >= MIN_SAMPLES else None,
            failure_rate=failed.get(pool_id, 0) / e if e >= MIN_SAMPLES else 0.0,
            attempts=n,
            ended=e,
        )
    return out
