"""Token buckets: how many requests a caller may make, and how long to wait when out of them.

A bucket holds up to `burst` tokens and refills at `per_s` tokens a second; a request takes one.
Pure: the caller passes `now` (monotonic seconds). The hub's middleware (api/ratelimit.py) keeps
one bucket per bearer token (per client address for calls without a known token).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

OFF = ("off", "0", "none", "unlimited")


@dataclass(frozen=True, slots=True)
class Rate:
    """`per_s` requests a second on average, up to `burst` at once."""

    per_s: float
    burst: int

    def __str__(self) -> str:
        return f"{self.per_s:g}/s,{self.burst}"


def parse_rate(text: str, name: str) -> Rate | None:
    """`"50/s,200"` (or `"50,200"`; the burst defaults to twice the rate, at least 1) as a Rate;
    `"off"` as None (no limit); ValueError naming the setting `name` otherwise."""
    raw = text.strip().lower()
    if raw in OFF:
        return None
    rate_part, _, burst_part = raw.partition(",")
    rate_part = rate_part.strip().removesuffix("/s").strip()
    try:
        per_s = float(rate_part)
        burst = int(burst_part) if burst_part.strip() else max(1, math.ceil(2 * per_s))
    except (ValueError, OverflowError):
        raise ValueError(
            f"{name} must look like 50/s,200 (requests a second, burst) or off, got {text!r}"
        ) from None
    if not (per_s > 0 and math.isfinite(per_s)) or burst < 1:
        raise ValueError(f"{name} needs a rate above 0 and a burst of at least 1, got {text!r}")
    return Rate(per_s, burst)


@dataclass(slots=True)
class Bucket:
    """One caller's tokens at time `at`."""

    tokens: float
    at: float


def take(bucket: Bucket | None, rate: Rate, now: float) -> tuple[Bucket, float]:
    """Take one token: the bucket after, and 0.0 if the request may go on, else the seconds until
    a token is there (the request is refused and takes nothing). A new caller starts full."""
    if bucket is None:
        bucket = Bucket(float(rate.burst), now)
    tokens = min(float(rate.burst), bucket.tokens + max(0.0, now - bucket.at) * rate.per_s)
    if tokens >= 1.0:
        return Bucket(tokens - 1.0, now), 0.0
    return Bucket(tokens, now), (1.0 - tokens) / rate.per_s


def retry_after(wait_s: float) -> int:
    """The `Retry-After` header's whole seconds for a wait (at least 1, rounded up)."""
    return max(1, math.ceil(wait_s))
