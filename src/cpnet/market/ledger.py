"""The double-entry ledger's rules, after TigerBeetle's: every transfer moves a positive whole
number of minor units from one account (debit) to another (credit), so the books balance by
construction; a transfer is idempotent by its id (the same id with the same content is a no-op,
with other content it is refused) and immutable once written (a correction is a new transfer);
an account with a floor may never be debited below it. Holds are two-phase transfers: `reserve`
moves the maximum charge from an organisation's account to its escrow, then `settle` pays what
ran out of escrow and releases the rest (`void` releases it all).

Pure: plain values in, the transfers to write out. ``store/ledger.py`` writes them in the
caller's transaction with conditional balance updates; the Hypothesis model drives the same
functions over a dict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum

from cpnet.errors import Conflict, Invalid, NotFound, PaymentRequired
from cpnet.market import money
from cpnet.market.charge import split


class Kind(StrEnum):
    """What an account stands for."""

    ORG = "org"  # an organisation's spendable money (floor: minus its credit limit)
    ESCROW = "escrow"  # an organisation's money held for its running tasks (floor 0)
    PROVIDER = "provider"  # what a provider organisation has earned (floor 0)
    REVENUE = "revenue"  # the platform's fees (floor 0)
    SLA = "sla"  # SLA credits the platform gives (no floor: it is an expense)
    FUNDING = "funding"  # money from outside the books: top-ups (no floor)


FUNDING = "external:funding"
REVENUE = "platform:revenue"
SLA = "platform:sla"


def org_account(org_id: str) -> str:
    return f"org:{org_id}"


def escrow_account(org_id: str) -> str:
    return f"escrow:{org_id}"


def provider_account(org_id: str) -> str:
    return f"provider:{org_id}"


def kind_of(account_id: str) -> Kind:
    """The kind an account id names; Invalid for an id that names none."""
    fixed = {FUNDING: Kind.FUNDING, REVENUE: Kind.REVENUE, SLA: Kind.SLA}
    if account_id in fixed:
        return fixed[account_id]
    prefix, _, rest = account_id.partition(":")
    per_org = {"org": Kind.ORG, "escrow": Kind.ESCROW, "provider": Kind.PROVIDER}
    if prefix in per_org and rest:
        return per_org[prefix]
    raise Invalid(f"{account_id!r} is not a ledger account id", field="account")


def default_floor(kind: Kind) -> int | None:
    """The floor an account of `kind` opens with (None: unbounded, it may go negative)."""
    return None if kind in (Kind.SLA, Kind.FUNDING) else 0


@dataclass(frozen=True, slots=True)
class Account:
    """An account: balance = credits − debits, in minor units; never below `floor` (None: no
    floor). An organisation's floor is minus its credit limit."""

    id: str
    kind: Kind
    balance: int = 0
    floor: int | None = 0

    def room(self) -> int | None:
        """How much may still be debited (None: no bound)."""
        return None if self.floor is None else self.balance - self.floor


class TransferKind(StrEnum):
    TOPUP = "topup"  # funding → org
    RESERVE = "reserve"  # org → escrow: a hold placed
    PAYOUT = "payout"  # escrow → provider: what ran, less the fee
    FEE = "fee"  # escrow → revenue: the platform's fee
    RELEASE = "release"  # escrow → org: the part of a hold not charged
    REFUND = "refund"  # provider or revenue → org: a correction
    CREDIT = "credit"  # sla → org: an SLA credit
    ADJUST = "adjust"  # any other correction an operator posts


@dataclass(frozen=True, slots=True)
class Transfer:
    """One balanced posting: `amount` minor units from `debit` to `credit`. Its content is
    everything but `at` (a retry later is the same transfer)."""

    id: str
    debit: str
    credit: str
    amount: int
    kind: TransferKind
    at: float
    task_id: str | None = None
    hold_id: str | None = None
    attempt_id: str | None = None
    memo: str = ""

    def content(self) -> tuple:
        return (
            self.debit,
            self.credit,
            self.amount,
            str(self.kind),
            self.task_id,
            self.hold_id,
            self.attempt_id,
        )


def validate(t: Transfer) -> None:
    """The rules a transfer must meet alone: a positive whole amount, two different accounts."""
    if type(t.amount) is not int or t.amount <= 0:
        raise Invalid(
            f"transfer {t.id}: amount must be a positive whole number of minor units "
            f"(got {t.amount!r})",
            field="amount",
        )
    if t.debit == t.credit:
        raise Invalid(f"transfer {t.id}: debit and credit are one account", field="credit")
    if not t.id or len(t.id) > 160:
        raise Invalid("a transfer id is 1 to 160 characters", field="id")


def is_replay(t: Transfer, existing: Transfer | None) -> bool:
    """True when `existing` (the stored transfer with t's id) is `t` again: a no-op. A different
    transfer under the same id is refused (ids are never reused)."""
    if existing is None:
        return False
    if existing.content() != t.content():
        raise Conflict(
            f"transfer {t.id} exists with other content; transfers are immutable: post a "
            "correction under a new id",
            field="id",
        )
    return True


def shortfall(debit: Account, amount: int) -> int:
    """Minor units missing for debiting `amount` from the account (0: it may)."""
    room = debit.room()
    return 0 if room is None or room >= amount else amount - room


def short_error(account: Account, short: int, what: str) -> PaymentRequired:
    """The 402 for a debit `short` minor units over the account's floor."""
    hint = (
        "; top up with `cpnet account topup` or raise the credit limit"
        if account.kind is Kind.ORG
        else ""
    )
    return PaymentRequired(
        f"{what} needs {money.fmt(short)} more than {account.id} has available: short by "
        f"{money.fmt(short)}{hint}",
        field="amount",
        shortfall=money.major(short),
        shortfall_minor=short,
        currency=money.CURRENCY,
    )


def post(accounts: Mapping[str, Account], t: Transfer) -> dict[str, Account]:
    """The accounts after `t` (for models and simulations; the store does the same with
    conditional UPDATEs). Refuses a debit below a floor with PaymentRequired."""
    validate(t)
    for acc in (t.debit, t.credit):
        if acc not in accounts:
            raise NotFound(f"no ledger account {acc!r}", field="account")
    d, c = accounts[t.debit], accounts[t.credit]
    short = shortfall(d, t.amount)
    if short:
        raise short_error(d, short, f"transfer {t.id} ({t.kind})")
    out = dict(accounts)
    out[t.debit] = replace(d, balance=d.balance - t.amount)
    out[t.credit] = replace(c, balance=c.balance + t.amount)
    return out


CORRECTIONS = (TransferKind.REFUND, TransferKind.CREDIT, TransferKind.ADJUST)


def check_correction(t: Transfer) -> None:
    """The rules an operator's correction must meet (written ones are never changed: a
    correction is a new transfer). A refund gives money back from a provider or the platform's
    revenue to an organisation; a credit is an SLA credit to an organisation; an adjustment moves
    money between any accounts but escrow (only holds move escrow, so it always equals them)."""
    validate(t)
    if t.kind not in CORRECTIONS:
        raise Invalid(
            f"a correction is one of {', '.join(k.value for k in CORRECTIONS)}", field="kind"
        )
    debit, credit = kind_of(t.debit), kind_of(t.credit)
    if Kind.ESCROW in (debit, credit):
        raise Invalid("escrow moves only with holds; correct the org account", field="debit")
    if t.kind is TransferKind.REFUND and (
        debit not in (Kind.PROVIDER, Kind.REVENUE) or credit is not Kind.ORG
    ):
        raise Invalid("a refund goes from provider:… or platform:revenue to org:…", field="debit")
    if t.kind is TransferKind.CREDIT and (debit is not Kind.SLA or credit is not Kind.ORG):
        raise Invalid(f"an SLA credit goes from {SLA} to org:…", field="debit")


# ---- holds: two-phase transfers ----


class HoldState(StrEnum):
    PENDING = "pending"
    POSTED = "posted"  # settled: charged what ran, released the rest
    VOIDED = "voided"  # released whole


@dataclass(frozen=True, slots=True)
class Hold:
    """Money held in an organisation's escrow for one task's maximum charge."""

    id: str
    org_id: str
    task_id: str
    amount: int  # minor units held
    user_id: str | None = None
    state: HoldState = HoldState.PENDING
    charged: int = 0  # once settled: what the task was charged (≤ amount)
    period: str = ""  # the calendar month the hold counts against (spending limits)


@dataclass(frozen=True, slots=True)
class ChargeLine:
    """What one attempt ran up: `charge` minor units owed to `payee_org`'s provider account."""

    attempt_id: str
    payee_org: str
    charge: int


def hold_id(task_id: str) -> str:
    return f"hold:{task_id}"


def reserve(h: Hold, now: float) -> tuple[Transfer, ...]:
    """The transfer that places a hold: org → escrow (none for a zero hold)."""
    if h.amount == 0:
        return ()
    return (
        Transfer(
            f"{h.id}:reserve",
            org_account(h.org_id),
            escrow_account(h.org_id),
            h.amount,
            TransferKind.RESERVE,
            now,
            task_id=h.task_id,
            hold_id=h.id,
        ),
    )


def settle(
    h: Hold, lines: Sequence[ChargeLine], fee_bps: int, now: float
) -> tuple[Hold, tuple[Transfer, ...]]:
    """Settle a pending hold: each line's charge, capped so the total never passes the hold, is
    paid out of escrow to its provider less the platform's fee (`fee_bps` basis points, rounded
    half-even; payout is the rest, so payout + fee == charge exactly); what is left goes back to
    the organisation. A hold already settled or voided gives nothing (idempotent)."""
    if h.state is not HoldState.PENDING:
        return h, ()
    esc = escrow_account(h.org_id)
    left = h.amount
    out: list[Transfer] = []
    for line in lines:
        c = min(max(line.charge, 0), left)
        if c == 0:
            continue
        left -= c
        payout, fee = split(c, fee_bps)
        common = {"task_id": h.task_id, "hold_id": h.id, "attempt_id": line.attempt_id}
        if payout:
            out.append(
                Transfer(
                    f"{h.id}:pay:{line.attempt_id}",
                    esc,
                    provider_account(line.payee_org),
                    payout,
                    TransferKind.PAYOUT,
                    now,
                    **common,
                )
            )
        if fee:
            out.append(
                Transfer(
                    f"{h.id}:fee:{line.attempt_id}",
                    esc,
                    REVENUE,
                    fee,
                    TransferKind.FEE,
                    now,
                    **common,
                )
            )
    if left:
        out.append(
            Transfer(
                f"{h.id}:release",
                esc,
                org_account(h.org_id),
                left,
                TransferKind.RELEASE,
                now,
                task_id=h.task_id,
                hold_id=h.id,
            )
        )
    charged = h.amount - left
    state = HoldState.POSTED if lines else HoldState.VOIDED
    return replace(h, state=state, charged=charged), tuple(out)


def void(h: Hold, now: float) -> tuple[Hold, tuple[Transfer, ...]]:
    """Release a pending hold whole (nothing ran)."""
    return settle(h, (), 0, now)


# ---- spending limits ----


def period_of(now: float) -> str:
    """The calendar month (UTC) a moment falls in: "2026-12"."""
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m")


def over_limit(limit: int | None, spent: int, amount: int) -> int:
    """Minor units by which a new hold of `amount` would pass a spending limit, given what the
    period has `spent` (pending holds count in full, settled ones at their charge); 0: within."""
    if limit is None:
        return 0
    return max(0, spent + amount - limit)
