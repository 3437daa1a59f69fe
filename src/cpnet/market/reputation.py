"""A pool's reputation: one score in [0, 1] with its evidence, from what the hub observed (pure;
docs/market.md, "SLAs and reputation").

Every observation weighs ``w(age) = 2^(−age / half_life)``: an event one half-life old counts half.

    success      = (PRIOR + S) / (PRIOR + S + F)
                   S, F: the weighted counts of ended attempts not lost to the site
                   (COMPLETE, EXECUTOR_ERROR) and lost to it (SYSTEM_ERROR); CANCELED is left out.
                   PRIOR pseudo-successes (a Beta(PRIOR, 0) prior): a pool nobody has used yet
                   starts at 1 and loses trust only on evidence, as the scheduler's risk did
                   before (no record: no penalty).
    availability = ∫ w · online dt / ∫ w dt over the observed part of the horizon (1 if none)
    breaches     = 1 / (1 + BREACH_WEIGHT × B),  B the weighted count of breached SLA windows
                   (weighed at each window's end)
    score        = success × availability × breaches

The score is the probability-like figure the scheduler's risk uses: expected failure rate
``1 − score`` (sched/terms.risk), and quotes show it as the pool's SLA score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

PRIOR = 2.0  # pseudo-successes of an unknown pool
BREACH_WEIGHT = 0.5  # one fresh breached window takes a third off the score
HALF_LIFE_S = 6 * 3600.0  # default half-life of an observation
HORIZON_HALF_LIVES = 4  # observations older than this many half-lives are not read (w < 1/16)


@dataclass(frozen=True, slots=True)
class Reputation:
    """One pool's score and the figures it was made of."""

    pool_id: str
    score: float
    success: float
    availability: float
    breach_factor: float
    successes: float  # weighted
    failures: float  # weighted
    breaches: float  # weighted
    attempts: int  # ended attempts read (unweighted)
    lost: int  # of which SYSTEM_ERROR
    breached_windows: int
    at: float
    half_life_s: float

    @property
    def failure_rate(self) -> float:
        """The expected share of tries lost on the pool: what the scheduler's risk uses."""
        return 1.0 - self.score

    def evidence(self) -> dict:
        return {
            "success": round(self.success, 4),
            "availability": round(self.availability, 4),
            "breach_factor": round(self.breach_factor, 4),
            "weighted_successes": round(self.successes, 3),
            "weighted_failures": round(self.failures, 3),
            "weighted_breaches": round(self.breaches, 3),
            "attempts": self.attempts,
            "lost": self.lost,
            "breached_windows": self.breached_windows,
            "half_life_s": self.half_life_s,
            "prior_successes": PRIOR,
            "breach_weight": BREACH_WEIGHT,
        }


def weight(age_s: float, half_life_s: float) -> float:
    """How much an observation ``age_s`` old counts (1 now, ½ one half-life ago)."""
    return 2.0 ** (-max(0.0, age_s) / half_life_s)


def weighted_availability(
    transitions: Sequence[tuple[float, bool]], since: float, now: float, half_life_s: float
) -> float:
    """The decayed share of ``[since, now)`` the pool was online, from its sorted (time, online)
    transitions; 1.0 when none of it was observed."""
    lam = math.log(2) / half_life_s

    def mass(a: float, b: float) -> float:  # ∫_a^b 2^(−(now − t)/h) dt
        return (math.exp(-lam * (now - b)) - math.exp(-lam * (now - a))) / lam

    state: bool | None = None
    t0 = since
    total = up = 0.0
    for at, online in [*transitions, (now, True)]:
        at = min(at, now)
        if at <= since:
            state = online
            continue
        if state is not None and at > t0:
            m = mass(t0, at)
            total += m
            if state:
                up += m
        state, t0 = online, at
    return up / total if total > 0 else 1.0


def of(
    pool_id: str,
    now: float,
    outcomes: Sequence[tuple[float, str]],
    transitions: Sequence[tuple[float, bool]],
    breached_ends: Sequence[float],
    half_life_s: float = HALF_LIFE_S,
) -> Reputation:
    """A pool's reputation at ``now`` from its ended attempts' (end time, state), its sorted
    liveness transitions and the end times of its breached SLA windows."""
    s = f = 0.0
    n = lost = 0
    for ended, state in outcomes:
        if state == "CANCELED":
            continue
        w = weight(now - ended, half_life_s)
        n += 1
        if state == "SYSTEM_ERROR":
            f += w
            lost += 1
        else:
            s += w
    success = (PRIOR + s) / (PRIOR + s + f)
    since = now - HORIZON_HALF_LIVES * half_life_s
    avail = weighted_availability(transitions, since, now, half_life_s)
    b = sum(weight(now - end, half_life_s) for end in breached_ends)
    breach_factor = 1.0 / (1.0 + BREACH_WEIGHT * b)
    score = min(1.0, max(0.0, success * avail * breach_factor))
    return Reputation(
        pool_id=pool_id,
        score=score,
        success=success,
        availability=avail,
        breach_factor=breach_factor,
        successes=s,
        failures=f,
        breaches=b,
        attempts=n,
        lost=lost,
        breached_windows=len(breached_ends),
        at=now,
        half_life_s=half_life_s,
    )
