"""The market's wire models: what the accounts, bill and ledger-check routes take and give.

Amounts going out are integers in minor units with their currency (``minor_digits`` says how
many digits the minor unit has); amounts coming in are decimal text in major units ("12.34"),
parsed once at the edge by ``money.parse``."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from cpnet.market.money import CURRENCY, DIGITS

Amount = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[0-9]+(\.[0-9]+)?$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SpendLimit(BaseModel):
    user_id: str | None = None  # None: the whole organisation
    monthly: int
    used: int  # held and spent this month
    period: str


class AccountSummary(BaseModel):
    org_id: str
    currency: str = CURRENCY
    minor_digits: int = DIGITS
    balance: int  # spendable money now; held money is not in it
    held: int  # in escrow for running and queued tasks
    credit_limit: int
    available: int  # balance + credit limit: the most a new hold may take
    earned: int  # as a provider: payouts received
    limits: list[SpendLimit] = []


class TopUp(Strict):
    amount: Amount  # major units, e.g. "1000.00"
    transfer_id: Annotated[str, Field(min_length=1, max_length=120)] | None = None  # idempotency
    memo: Annotated[str, Field(max_length=512)] = ""


class LimitsUpdate(Strict):
    credit_limit: Amount | None = None  # how far below zero the account may go
    monthly: Amount | None = None  # monthly spending limit (of user_id, else the organisation)
    user_id: Annotated[str, Field(max_length=64)] | None = None
    remove_monthly: bool = False


class BillLine(BaseModel):
    task_id: str | None
    task_name: str = ""
    attempt_id: str | None
    settled_at: str
    pool_id: str
    provider_org: str
    seconds: float
    hourly: str  # price of the demand per hour, major units
    charge: int
    fee: int
    payout: int


class Bill(BaseModel):
    org_id: str
    period: str
    currency: str = CURRENCY
    minor_digits: int = DIGITS
    lines: list[BillLine]
    charged: int  # = fees + payouts
    fees: int
    payouts: int
    released: int  # holds given back this month
    topups: int
    held_now: int


class LedgerCheck(BaseModel):
    ok: bool
    accounts: int
    transfers: int
    holds: int
    total: int
    problems: list[str]


class Correction(Strict):
    """An operator's correction: a new transfer (refund, SLA credit or adjustment)."""

    id: Annotated[str, Field(min_length=1, max_length=120)]  # idempotency: never reused
    kind: Annotated[str, Field(max_length=16, pattern=r"^(refund|credit|adjust)$")]
    debit: Annotated[str, Field(min_length=3, max_length=160)]
    credit: Annotated[str, Field(min_length=3, max_length=160)]
    amount: Amount
    task_id: Annotated[str, Field(max_length=64)] | None = None
    memo: Annotated[str, Field(max_length=512)] = ""


class Posted(BaseModel):
    id: str
    created: bool  # False: the same transfer was written before (a replay)
    kind: str
    debit: str
    credit: str
    amount: int
    currency: str = CURRENCY


# ---- signed metering (market/metering.py) ----


class UsageVerdict(BaseModel):
    """The hub's answer to a usage record it accepted (a refused one is an error answer)."""

    verdict: str  # accepted | duplicate
    reason: str
    record_id: str | None = None


class UsageEntry(BaseModel):
    """One usage record the hub received, with its verdict: evidence, kept as sent."""

    id: int
    received_at: float
    site_id: str  # the site whose agent sent it
    record_id: str | None = None
    attempt_id: str | None = None
    task_id: str | None = None
    key_id: str | None = None
    verdict: str
    reason: str
    field: str | None = None
    wall_s: float | None = None  # what settlement charges by (accepted records only)
    digest: str  # sha256 of the envelope as received
    envelope: dict  # {"record": …, "signature": …} as sent


class UsageList(BaseModel):
    records: list[UsageEntry]
