"""Token buckets: never more than the burst plus the refill, and the wait is exact."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cpnet.limits.rate import Rate, parse_rate, retry_after, take


def test_parse_rate_forms() -> None:
    assert parse_rate("50/s,200", "X") == Rate(50.0, 200)
    assert parse_rate(" 2.5 , 4 ", "X") == Rate(2.5, 4)
    assert parse_rate("10", "X") == Rate(10.0, 20)
    assert parse_rate("off", "X") is None


@pytest.mark.parametrize("bad", ["", "fast", "0/s,5", "5/s,0", "-1", "inf", "5/s,x"])
def test_parse_rate_refuses_nonsense_naming_the_setting(bad: str) -> None:
    with pytest.raises(ValueError, match="CPNET_RATE_LIMIT"):
        parse_rate(bad, "CPNET_RATE_LIMIT")


def test_burst_then_refusal_with_the_wait_until_a_token() -> None:
    rate = Rate(per_s=2.0, burst=3)
    bucket = None
    for _ in range(3):
        bucket, wait = take(bucket, rate, 100.0)
        assert wait == 0.0
    bucket, wait = take(bucket, rate, 100.0)
    assert wait == pytest.approx(0.5)
    assert retry_after(wait) == 1
    bucket, wait = take(bucket, rate, 100.5)  # one token refilled in half a second
    assert wait == 0.0
    _, wait = take(bucket, rate, 100.5)
    assert wait > 0


@given(
    per_s=st.floats(0.1, 1000),
    burst=st.integers(1, 1000),
    gaps=st.lists(st.floats(0, 2), min_size=1, max_size=300),
)
def test_never_grants_more_than_burst_plus_refill(
    per_s: float, burst: int, gaps: list[float]
) -> None:
    rate = Rate(per_s, burst)
    bucket, now, granted = None, 0.0, 0
    for gap in gaps:
        now += gap
        bucket, wait = take(bucket, rate, now)
        if wait == 0.0:
            granted += 1
        else:
            # a refused request is told a wait after which a token is there
            _, again = take(bucket, rate, now + wait + 1e-9)
            assert again == 0.0
    assert granted <= burst + now * per_s + 1e-6
