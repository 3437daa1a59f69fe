"""The market: pools' price books (publish, show, history) and binding quotes."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from cpnet.api.deps import caller, hub, person, provider_admin
from cpnet.auth.model import Principal
from cpnet.errors import Invalid
from cpnet.hub import market
from cpnet.hub.service import Hub
from cpnet.market.quotes import DEFAULT_OPTIONS, MAX_OPTIONS
from cpnet.market.records import PoolPrices, PriceBookIn, QuoteRecord
from cpnet.store import quotes as quote_store
from cpnet.tasks.model import TaskSpec

router = APIRouter(prefix="/v1", tags=["market"])


def _at(at: datetime | None) -> float:
    """A time from the query (with a zone) as epoch seconds; now when not given."""
    if at is None:
        return time.time()
    if at.tzinfo is None:
        raise Invalid("give `at` a time zone, e.g. 2026-12-07T08:00:00Z", field="at")
    return at.timestamp()


@router.get("/prices")
def list_prices(
    at: datetime | None = None, who: Principal = Depends(caller), h: Hub = Depends(hub)
) -> dict[str, list[PoolPrices]]:
    """Every live pool's prices at ``at`` (default now): on-demand and spot, as published in
    its price book (dynamic rule applied at its utilisation now), else as its agent declared."""
    when = _at(at)
    with h.store.read() as s:
        return {"pools": market.all_prices(s, when)}


@router.get("/pools/{pool_id}/prices", response_model=PoolPrices)
def get_prices(
    pool_id: str,
    at: datetime | None = None,
    history: bool = False,
    who: Principal = Depends(caller),
    h: Hub = Depends(hub),
) -> PoolPrices:
    """One pool's prices at ``at``, with the entries in force then, or with ``history=true``
    every entry ever published (the price history, oldest first)."""
    when = _at(at)
    with h.store.read() as s:
        return market.pool_prices(s, pool_id, when, full_history=history)


@router.post("/pools/{pool_id}/prices", response_model=PoolPrices, status_code=201)
def publish_prices(
    pool_id: str,
    book: PriceBookIn,
    who: Principal = Depends(provider_admin),
    h: Hub = Depends(hub),
) -> PoolPrices:
    """Publish price book entries for a pool (its provider's admins). Each entry is kept: the
    newest ``valid_from`` in force wins, so a change is a new entry, never an edit."""
    return market.publish(h, who, pool_id, book)


@router.post("/quotes", response_model=QuoteRecord, status_code=201)
def create_quote(
    spec: TaskSpec,
    options: Annotated[int, Query(ge=1, le=MAX_OPTIONS)] = DEFAULT_OPTIONS,
    who: Principal = Depends(person),
    h: Hub = Depends(hub),
) -> QuoteRecord:
    """A binding quote for a task spec: the feasible pools ranked by its objective, each with
    price, predicted completion and SLA score, valid until ``valid_until``. Submit the same spec
    with ``quote_id`` (and ``quote_option``) to run on that option's pool at most at its price."""
    return market.make_quote(h, who, spec, options)


@router.get("/quotes/{quote_id}", response_model=QuoteRecord)
def get_quote(
    quote_id: str, who: Principal = Depends(caller), h: Hub = Depends(hub)
) -> QuoteRecord:
    """A quote of your organisation, and the task that used it, if any."""
    with h.store.read() as s:
        return quote_store.record(quote_store.get(s, who, quote_id))
