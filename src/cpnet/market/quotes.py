"""Binding quotes: a scheduler Decision turned into priced, time-limited options (pure).

A quote lists the feasible pools for a task spec in the order of the task's objective, each with
its price, predicted completion and SLA score, valid until ``now + ttl``. A task submitted with a
quote id and option is placed only on that option's pool and charged at most its ``max_charge``
while it stays within the work it stated; past that, the extra is charged at the option's
overrun rate (see ``OVERRUN``).

Figures per option (the pool's currency; ``fee_bps`` is the operator's platform fee). A pool's
price is what its users pay; the platform's fee is taken out of it (market/charge.split), so the
provider is paid the charge less the fee:

    cost       = the scheduler's expected cost of the task on the pool (docs/scheduling.md)
    max_charge = cost: the most the task is charged while it runs as stated
    fee        = max_charge × fee_bps / 10 000, the platform's part of it (shown, included)
    overrun    = price per hour of the demand, per extra hour the pool is held, or,
                 SCU-priced: price per SCU-hour, per extra SCU-hour of work
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from cpnet.sched.snapshot import Decision, PoolView

DEFAULT_OPTIONS = 5  # options a quote lists unless asked for more
MAX_OPTIONS = 20
# Keys of a task spec that do not change where it may run or what it costs: a task submitted
# with a quote may differ from the quoted spec only in these.
UNPRICED_KEYS = ("name", "description", "tags", "idempotency_key", "quote_id", "quote_option")

OVERRUN = (
    "The charge is capped at the option's max_charge while the task stays within the work it "
    "stated (expected_runtime_s, or work.scu_hours); a task that runs over pays for the extra at "
    "the option's overrun rate ({rate}) on top of the cap. The platform fee is included in both."
)


@dataclass(frozen=True, slots=True)
class Option:
    """One quoted placement."""

    option: int  # 1 is the best under the task's objective
    pool_id: str
    pool_name: str
    provider_id: str
    currency: str
    price_per_hour: float  # of the task's demand, before the fee
    price_per_scu_hour: float | None  # set when the run is priced per SCU-hour
    cost: float  # the scheduler's expected cost: what the user pays, fee included
    fee: float  # the platform's part of max_charge
    max_charge: float  # the most the task is charged if it runs as stated (= cost)
    overrun_rate: float  # per extra hour held (or per extra SCU-hour)
    overrun_unit: str  # "hour" or "SCU-hour"
    time_to_result_s: float  # predicted, from now
    completes_at: float  # epoch seconds: now + time_to_result_s
    fits_now: bool
    sla_score: float | None  # the pool's reputation score (0..1); None: not scored yet


def sla_score(pool: PoolView) -> float | None:
    """The pool's SLA score: its reputation (market/reputation.py), the same figure the
    scheduler's risk term uses (failure rate = 1 − score); None before the hub first scored it."""
    return pool.reputation


def spec_hash(spec: Mapping) -> str:
    """SHA-256 of a task spec's canonical JSON without the keys that change neither placement
    nor price (``UNPRICED_KEYS``): equal for the quoted spec and the task submitted with it."""
    kept = {k: v for k, v in spec.items() if k not in UNPRICED_KEYS}
    text = json.dumps(kept, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def options(
    decision: Decision,
    pools: Mapping[str, PoolView],
    *,
    now: float,
    fee_bps: int,
    work_scu_h: float | None = None,
    profile: str | None = None,
    limit: int = DEFAULT_OPTIONS,
) -> tuple[Option, ...]:
    """The decision's best ``limit`` placements as priced options, in rank order."""
    out = []
    for placement in decision.placements[: max(0, limit)]:
        pool = pools[placement.pool_id]
        per_scu = pool.price.per_scu_hour(profile) if work_scu_h is not None else None
        cost = placement.estimated_cost
        fee = cost * fee_bps / 10_000.0
        out.append(
            Option(
                option=len(out) + 1,
                pool_id=pool.id,
                pool_name=pool.name,
                provider_id=pool.provider_id,
                currency=pool.price.currency,
                price_per_hour=placement.hourly_price,
                price_per_scu_hour=per_scu,
                cost=cost,
                fee=fee,
                max_charge=cost,
                overrun_rate=per_scu if per_scu is not None else placement.hourly_price,
                overrun_unit="SCU-hour" if per_scu is not None else "hour",
                time_to_result_s=placement.time_to_result_s,
                completes_at=now + placement.time_to_result_s,
                fits_now=placement.fits_now,
                sla_score=sla_score(pool),
            )
        )
    return tuple(out)


def overrun_text(option: Option) -> str:
    """The sentence a quote gives on how running over the stated work is charged."""
    rate = f"{option.overrun_rate:.6g} {option.currency} per extra {option.overrun_unit}"
    return OVERRUN.format(rate=rate)


def as_dict(option: Option) -> dict:
    """An option as plain JSON-ready data (what the store keeps and the API answers)."""
    return asdict(option)


@dataclass(frozen=True, slots=True)
class Use:
    """What a submission with a quote may do: the pool to run on and the charge to record."""

    pool_id: str
    max_charge: float
    overrun_rate: float
    overrun_unit: str
    currency: str


def check_use(
    *,
    quote_org: str,
    caller_org: str,
    valid_until: float,
    used_by_task: str | None,
    quoted_hash: str,
    spec_hash_now: str,
    options_json: list[dict],
    option: int,
    now: float,
) -> Use:
    """Judge a submission against its quote; raise QuoteRefused (field ``quote_id`` or
    ``quote_option``) with what to do, else say where it runs and what it may be charged."""
    if quote_org != caller_org:
        raise QuoteRefused("not_found", "quote_id", "no such quote; ask for one: POST /v1/quotes")
    if used_by_task is not None:
        raise QuoteRefused(
            "used",
            "quote_id",
            f"the quote was already used by task {used_by_task}; a quote binds one task: ask "
            "for a new quote (POST /v1/quotes, `cpnet quote FILE`)",
        )
    if now >= valid_until:
        raise QuoteRefused(
            "expired",
            "quote_id",
            f"the quote expired {round(now - valid_until)} s ago; ask for a new quote "
            "(POST /v1/quotes, `cpnet quote FILE`)",
        )
    if quoted_hash != spec_hash_now:
        raise QuoteRefused(
            "mismatch",
            "quote_id",
            "the task differs from the quoted spec (only name, description, tags and "
            "idempotency_key may change); submit the quoted spec or ask for a new quote",
        )
    if not 1 <= option <= len(options_json):
        raise QuoteRefused(
            "bad_option",
            "quote_option",
            f"the quote has options 1..{len(options_json)}, got {option}",
        )
    chosen = options_json[option - 1]
    return Use(
        pool_id=chosen["pool_id"],
        max_charge=chosen["max_charge"],
        overrun_rate=chosen["overrun_rate"],
        overrun_unit=chosen["overrun_unit"],
        currency=chosen["currency"],
    )


class QuoteRefused(ValueError):
    """A submission its quote does not allow: ``reason`` (not_found, used, expired, mismatch,
    bad_option), the field to blame, and a message that says what to do."""

    def __init__(self, reason: str, field: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field
        self.message = message
