"""The wire models of auctions, bids, pools' bid rules and leases. Prices come in as decimal
text in major units per hour for the whole request ("12.50") and go out as integer minor units
with the currency, as the ledger's amounts do (docs/market.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cpnet.market import auction as A
from cpnet.market import money

PriceText = Annotated[str, Field(min_length=1, max_length=32, examples=["12.50"])]
Name = Annotated[str, Field(min_length=1, max_length=128)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _aware(v: datetime | None) -> datetime | None:
    if v is not None and v.tzinfo is None:
        raise ValueError("give a time zone, e.g. 2026-12-07T08:00:00Z")
    return v


class UnitIn(Strict):
    """The resources of one unit of a request."""

    cpu_cores: float = Field(default=0.0, ge=0, le=4096)
    ram_gb: float = Field(default=0.0, ge=0, le=65536)
    disk_gb: float = Field(default=0.0, ge=0, le=1_000_000)
    gpus: int = Field(default=0, ge=0, le=1024)
    gpu_model: Name | None = None


class AuctionIn(Strict):
    """A request for capacity: ``units`` × ``resources`` from ``start`` to ``end``, at most
    ``max_price`` per hour for the whole of it."""

    resources: UnitIn
    units: int = Field(default=1, ge=1, le=A.MAX_UNITS)
    start: datetime
    end: datetime
    max_price: PriceText  # per hour, whole request, major units
    min_sla: float | None = Field(default=None, ge=0, le=1)
    bids_close_at: datetime | None = None  # default: the window's start
    regions: list[Annotated[str, Field(min_length=1, max_length=16)]] = Field(
        default_factory=list, max_length=32
    )
    providers: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        default_factory=list, max_length=32
    )

    @field_validator("start", "end", "bids_close_at")
    @classmethod
    def _tz(cls, v: datetime | None) -> datetime | None:
        return _aware(v)

    def max_price_minor(self) -> int:
        return money.parse(self.max_price, field="max_price")


class BidIn(Strict):
    """A sealed bid: ``price`` per hour for the whole request on ``pool_id``."""

    pool_id: Name
    price: PriceText

    def price_minor(self) -> int:
        return money.parse(self.price, field="price")


class BidRuleIn(Strict):
    """A pool's standing bid: its on-demand price of each request × ``factor``, within the
    optional bounds (per hour, whole request, major units)."""

    factor: float = Field(default=1.0, gt=0, le=100)
    min_price: PriceText | None = None
    max_price: PriceText | None = None

    def rule(self) -> A.BidRule:
        lo = None if self.min_price is None else money.parse(self.min_price, field="min_price")
        hi = None if self.max_price is None else money.parse(self.max_price, field="max_price")
        r = A.BidRule(self.factor, lo, hi)
        A.check_rule(r)
        return r


class BidRuleRecord(BaseModel):
    pool_id: str
    factor: float
    min_price: int | None
    max_price: int | None
    currency: str = money.CURRENCY


class Unit(BaseModel):
    cpu_cores: float
    ram_gb: float
    disk_gb: float
    gpus: int
    gpu_model: str | None = None


class BidRecord(BaseModel):
    """A bid as its bidder (or, after the close, the request's owner) sees it."""

    id: str
    auction_id: str
    pool_id: str
    price: int  # minor units per hour
    placed_at: datetime
    rule: bool
    score: float | None = None  # after the close: the award rule's score (lower wins)
    dropped: str | None = None  # after the close: why the rule set it aside


class AuctionRecord(BaseModel):
    """A request for capacity. Before the close, its owner sees no bids and a provider only
    its own; after it, the owner sees every bid as the rule weighed it."""

    id: str
    org_id: str
    state: str  # open | awarded | failed
    reason: str | None
    resources: Unit
    units: int
    total: Unit
    start: datetime
    end: datetime
    max_price: int  # minor units per hour, whole request
    currency: str = money.CURRENCY
    min_sla: float | None
    regions: list[str]
    providers: list[str]
    bids_close_at: datetime
    bids_count: int
    bids: list[BidRecord]
    lease_id: str | None
    created_at: datetime
    closed_at: datetime | None


class LeaseRecord(BaseModel):
    """A lease: capacity held on a pool for one organisation's tasks in its window."""

    id: str
    auction_id: str
    pool_id: str
    org_id: str
    provider_org: str
    resources: Unit
    start: datetime
    end: datetime
    price: int  # minor units per hour
    total: int  # the whole window's cost, held at the award
    charged: int  # paid so far
    currency: str = money.CURRENCY
    state: str  # active | ended | cancelled
    paid_to: datetime | None
    live: bool  # holding its capacity now


class PoolLeases(BaseModel):
    """What leases hold of a pool now, as discovery shows it."""

    pool_id: str
    active: int  # leases whose window has not ended
    live: int  # of them, those holding capacity now
    leased: Unit  # the resources the live ones hold
    own: list[str]  # ids of the caller's organisation's leases on the pool
