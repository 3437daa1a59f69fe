"""Reputation (market/reputation.py): a score in [0, 1], monotone in successes and failures,
decaying with age, pulled down by offline time and SLA breaches."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cpnet.market import reputation as R

NOW = 1_000_000.0
H = 3600.0


def rep(ok: int = 0, lost: int = 0, age: float = 0.0, moves=(), breaches=()):  # type: ignore[no-untyped-def]
    outcomes = [(NOW - age, "COMPLETE")] * ok + [(NOW - age, "SYSTEM_ERROR")] * lost
    return R.of("p", NOW, outcomes, list(moves), list(breaches), H)


def test_an_unknown_pool_scores_1_and_carries_no_risk() -> None:
    r = rep()
    assert r.score == 1.0 and r.failure_rate == 0.0 and r.availability == 1.0


def test_failures_lower_the_score_by_the_beta_posterior() -> None:
    r = rep(ok=6, lost=2)
    assert r.success == pytest.approx((R.PRIOR + 6) / (R.PRIOR + 8))
    assert r.score == pytest.approx(r.success)
    assert r.evidence()["lost"] == 2


def test_old_failures_weigh_less() -> None:
    assert rep(lost=3, age=4 * H).score > rep(lost=3).score
    assert R.weight(H, H) == pytest.approx(0.5)


def test_offline_time_and_breaches_lower_the_score() -> None:
    half = rep(moves=[(NOW - 2 * H, True), (NOW - H, False)])  # offline the last hour
    assert 0.0 < half.availability < 1.0 and half.score == pytest.approx(half.availability)
    # the last hour counts more than the one before it: more than half lost
    assert half.availability < 0.5
    breached = rep(breaches=[NOW])
    assert breached.breach_factor == pytest.approx(1 / (1 + R.BREACH_WEIGHT))
    assert breached.score < 1.0


def test_cancelled_attempts_say_nothing() -> None:
    r = R.of("p", NOW, [(NOW, "CANCELED")] * 5, [], [], H)
    assert r.score == 1.0 and r.attempts == 0


counts = st.integers(0, 200)
ages = st.floats(0, 10 * H, allow_nan=False)


@given(counts, counts, ages, st.lists(st.floats(0, 10 * H), max_size=5))
def test_the_score_is_within_0_and_1(ok: int, lost: int, age: float, breach_ages) -> None:  # type: ignore[no-untyped-def]
    r = rep(ok, lost, age, breaches=[NOW - a for a in breach_ages])
    assert 0.0 <= r.score <= 1.0


@given(counts, counts, ages)
def test_the_score_rises_with_successes_and_falls_with_failures(
    ok: int, lost: int, age: float
) -> None:
    base = rep(ok, lost, age).score
    assert rep(ok + 1, lost, age).score >= base
    assert rep(ok, lost + 1, age).score <= base
    if lost:
        assert rep(ok + 1, lost, age).score > base


@given(
    st.lists(st.tuples(st.floats(NOW - 8 * H, NOW, allow_nan=False), st.booleans()), max_size=12)
)
def test_availability_is_a_share(ts) -> None:  # type: ignore[no-untyped-def]
    a = R.weighted_availability(sorted(ts), NOW - 4 * H, NOW, H)
    assert 0.0 <= a <= 1.0 + 1e-12
