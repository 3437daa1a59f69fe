"""The market's wire models: price book entries in and out, pools' prices, quotes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cpnet.market import prices
from cpnet.measure.scu import PROFILES

Money = Annotated[float, Field(ge=0, le=prices.MAX_PRICE, allow_inf_nan=False)]
ModelName = Annotated[str, Field(min_length=1, max_length=128)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DynamicRuleIn(Strict):
    """``price × clamp(1 + k × (utilisation − target), floor, cap)``; bounds in market/prices.py."""

    target: float = Field(default=0.7, ge=0, le=1)
    k: float = Field(default=1.0, ge=0, le=prices.MAX_K)
    floor: float = Field(default=0.8, ge=prices.MIN_FLOOR, le=1)
    cap: float = Field(default=1.5, ge=1, le=prices.MAX_CAP)


class PriceEntryIn(Strict):
    """One price a provider publishes for a pool."""

    kind: Literal["on_demand", "spot"] = "on_demand"
    currency: Annotated[str, Field(max_length=3, pattern=r"^[A-Z]{3}$")] = "CNY"
    cpu_core_hour: Money = 0.0
    ram_gb_hour: Money = 0.0
    gpu_hour: Money = 0.0
    gpu_models: dict[ModelName, Money] = Field(default_factory=dict, max_length=32)
    scu_hour: dict[ModelName, Money] = Field(default_factory=dict, max_length=len(PROFILES))
    valid_from: datetime | None = None  # None: from now
    valid_until: datetime | None = None  # None: until superseded
    dynamic: DynamicRuleIn | None = None

    @field_validator("scu_hour")
    @classmethod
    def _profiles(cls, v: dict[str, float]) -> dict[str, float]:
        for profile in v:
            if profile not in PROFILES:
                raise ValueError(f"unknown workload profile {profile!r}; use {', '.join(PROFILES)}")
        return v

    @field_validator("valid_from", "valid_until")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("give a time zone, e.g. 2026-12-07T08:00:00Z")
        return v

    def entry(self, now: float) -> prices.Entry:
        """The pure entry, ``valid_from`` defaulting to ``now``; PriceError if a rule breaks."""
        start = self.valid_from.timestamp() if self.valid_from else now
        d = self.dynamic
        return prices.check_entry(
            prices.Entry(
                kind=self.kind,
                currency=self.currency,
                cpu_core_hour=self.cpu_core_hour,
                ram_gb_hour=self.ram_gb_hour,
                gpu_hour=self.gpu_hour,
                gpu_models=tuple(self.gpu_models.items()),
                scu_hour=tuple(sorted(self.scu_hour.items())),
                valid_from=start,
                valid_until=self.valid_until.timestamp() if self.valid_until else None,
                dynamic=prices.DynamicRule(d.target, d.k, d.floor, d.cap) if d else None,
            ),
            PROFILES,
        )


class PriceBookIn(Strict):
    """Entries to add to a pool's price book (each a new row of its history)."""

    entries: list[PriceEntryIn] = Field(min_length=1, max_length=16)


class PriceEntryRecord(BaseModel):
    """One published entry as the hub keeps it."""

    id: int
    pool_id: str
    kind: str
    currency: str
    cpu_core_hour: float
    ram_gb_hour: float
    gpu_hour: float
    gpu_models: dict[str, float] = Field(default_factory=dict)
    scu_hour: dict[str, float] = Field(default_factory=dict)
    dynamic: DynamicRuleIn | None = None
    valid_from: datetime
    valid_until: datetime | None = None
    set_by: str = ""
    set_at: datetime | None = None
    in_force: bool = False  # the entry of its kind in force at the asked time


class EffectivePrice(BaseModel):
    """What a pool charges at a time: the entry in force with its dynamic rule applied."""

    currency: str
    cpu_core_hour: float
    ram_gb_hour: float
    gpu_hour: float
    scu_hour: dict[str, float] = Field(default_factory=dict)
    factor: float = 1.0  # the dynamic rule's multiplier at the pool's utilisation
    source: Literal["book", "declared"]  # a published entry, or the agent's declared price


class PoolPrices(BaseModel):
    """A pool's prices at a time, and its book (the entries in force, or all with history)."""

    pool_id: str
    pool_name: str
    at: datetime
    utilisation: float
    on_demand: EffectivePrice
    spot: EffectivePrice | None = None
    entries: list[PriceEntryRecord] = Field(default_factory=list)


class QuoteOption(BaseModel):
    option: int
    pool_id: str
    pool_name: str
    provider_id: str
    currency: str
    price_per_hour: float
    price_per_scu_hour: float | None = None
    cost: float
    fee: float
    max_charge: float
    overrun_rate: float
    overrun_unit: str
    time_to_result_s: float
    completes_at: float
    fits_now: bool
    sla_score: float | None = None


class QuoteRecord(BaseModel):
    """A binding quote as the hub answers it."""

    id: str
    org_id: str
    objective: str
    created_at: datetime
    valid_until: datetime
    fee_bps: int
    options: list[QuoteOption]
    overruns: str  # how running over the stated work is charged
    sla_note: str = (
        "sla_score is the pool's reputation (0..1: recent attempts not lost to the site, "
        "availability, SLA breaches; docs/market.md), the figure the scheduler's risk uses; "
        "none: not scored yet"
    )
    rejected: int = 0  # pools ruled out for this spec
    used_by_task: str | None = None
    used_option: int | None = None


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


# ---- SLAs and reputation (market/sla.py, market/reputation.py; docs/market.md) ---------------


class SlaTermsRecord(BaseModel):
    """A row of a pool's SLA terms (the newest is in force)."""

    id: int
    window_s: float
    credit_percent: float
    availability: float | None
    max_queue_wait_s: float | None
    success_rate: float | None
    source: Literal["admin", "agent"]
    set_by: str
    set_at: datetime


class SlaEvaluationRecord(BaseModel):
    """One window judged against the terms in force, with the evidence and the credits posted
    (organisation id → minor units)."""

    window_start: datetime
    window_end: datetime
    terms_id: int
    breached: bool
    breaches: list[str]
    evidence: dict
    credits: dict[str, int]
    evaluated_at: datetime


class ReputationRecord(BaseModel):
    """A pool's reputation score (0..1), the figures it was made of, and when."""

    pool_id: str
    score: float
    evidence: dict
    at: datetime


class PoolSla(BaseModel):
    """A pool's SLA: terms in force (None: none declared), their history, the newest
    evaluations (newest first), the credits they posted, and its reputation."""

    pool_id: str
    pool_name: str
    terms: SlaTermsRecord | None
    history: list[SlaTermsRecord] = []
    evaluations: list[SlaEvaluationRecord] = []
    credited: int = 0  # minor units, over the evaluations listed
    reputation: ReputationRecord | None = None
