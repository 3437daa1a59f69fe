"""The ledger: organisations' accounts, top-ups, limits, bills, corrections and the check."""

from __future__ import annotations

import time
from dataclasses import asdict

from fastapi import APIRouter, Depends, Query

from cpnet.api.deps import admin, caller, hub
from cpnet.auth.model import Principal
from cpnet.errors import NotFound, new_id
from cpnet.hub.service import Hub
from cpnet.market import ledger as L
from cpnet.market import money
from cpnet.market.wire import (
    AccountSummary,
    Bill,
    Correction,
    LedgerCheck,
    LimitsUpdate,
    Posted,
    TopUp,
)
from cpnet.store import accounts, books, ledger

router = APIRouter(prefix="/v1", tags=["market"])


def _summary(h: Hub, org_id: str) -> AccountSummary:
    with h.store.read() as s:
        accounts.get_org(s, org_id)
        return AccountSummary.model_validate(books.summary(s, org_id, time.time()))


@router.get("/accounts/{org_id}", response_model=AccountSummary)
def get_account(
    org_id: str, who: Principal = Depends(caller), h: Hub = Depends(hub)
) -> AccountSummary:
    who.must_see(org_id, "organisation", org_id, "org_id")
    return _summary(h, org_id)


@router.post("/accounts/{org_id}/topups", response_model=AccountSummary)
def top_up(
    org_id: str, body: TopUp, _: Principal = Depends(admin), h: Hub = Depends(hub)
) -> AccountSummary:
    """Fund an organisation (a transfer from outside the books); a repeated transfer_id is a
    no-op, so a retried request never funds twice."""
    amount = money.parse(body.amount, field="amount")
    with h.store.tx() as s:
        ledger.topup(s, org_id, amount, body.transfer_id or new_id("top"), time.time(), body.memo)
    return _summary(h, org_id)


@router.put("/accounts/{org_id}/limits", response_model=AccountSummary)
def set_limits(
    org_id: str, body: LimitsUpdate, _: Principal = Depends(admin), h: Hub = Depends(hub)
) -> AccountSummary:
    now = time.time()
    with h.store.tx() as s:
        if body.user_id is not None:
            user = accounts.get_user(s, body.user_id)
            if user.org_id != org_id:
                raise NotFound(f"no user {body.user_id!r} in {org_id}", field="user_id")
        if body.credit_limit is not None:
            limit = money.parse(body.credit_limit, field="credit_limit")
            ledger.set_credit_limit(s, org_id, limit, now)
        if body.remove_monthly:
            ledger.set_spending_limit(s, org_id, body.user_id, None, now)
        elif body.monthly is not None:
            monthly = money.parse(body.monthly, field="monthly")
            ledger.set_spending_limit(s, org_id, body.user_id, monthly, now)
    return _summary(h, org_id)


@router.get("/accounts/{org_id}/bill", response_model=Bill)
def get_bill(
    org_id: str,
    period: str = Query(
        ..., max_length=7, pattern=r"^[0-9]{4}-[0-9]{2}$", description="a month: 2026-12"
    ),
    who: Principal = Depends(caller),
    h: Hub = Depends(hub),
) -> Bill:
    who.must_see(org_id, "organisation", org_id, "org_id")
    with h.store.read() as s:
        accounts.get_org(s, org_id)
        return Bill.model_validate(asdict(books.bill(s, org_id, period)))


@router.get("/ledger/check", response_model=LedgerCheck)
def check_ledger(_: Principal = Depends(admin), h: Hub = Depends(hub)) -> LedgerCheck:
    with h.store.read() as s:
        c = books.check(s)
    return LedgerCheck(
        ok=c.ok,
        accounts=c.accounts,
        transfers=c.transfers,
        holds=c.holds,
        total=c.total,
        problems=list(c.problems),
    )


@router.post("/ledger/transfers", response_model=Posted, status_code=201)
def post_correction(
    body: Correction, _: Principal = Depends(admin), h: Hub = Depends(hub)
) -> Posted:
    """Post a correction (refund, SLA credit, adjustment): a new transfer, idempotent by its
    id; transfers already written never change."""
    t = L.Transfer(
        body.id,
        body.debit,
        body.credit,
        money.parse(body.amount, field="amount"),
        L.TransferKind(body.kind),
        time.time(),
        task_id=body.task_id,
        memo=body.memo,
    )
    L.check_correction(t)
    with h.store.tx() as s:
        created = ledger.post(s, t)
    return Posted(
        id=t.id, created=created, kind=t.kind.value, debit=t.debit, credit=t.credit, amount=t.amount
    )
