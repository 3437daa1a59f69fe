"""Reservations by auction: requests for capacity, sealed bids, pools' bid rules, and the
leases awards become (docs/market.md, "Auctions and leases")."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from cpnet.api.deps import caller, hub, person, provider_admin
from cpnet.auth.model import Principal
from cpnet.hub import auctions
from cpnet.hub.service import Hub
from cpnet.market.auction_records import (
    AuctionIn,
    AuctionRecord,
    BidIn,
    BidRecord,
    BidRuleIn,
    BidRuleRecord,
    LeaseRecord,
)

router = APIRouter(prefix="/v1", tags=["auctions"])
Limit = Annotated[int, Query(ge=1, le=auctions.LIST_LIMIT)]


@router.post("/auctions", response_model=AuctionRecord, status_code=201)
def create_auction(
    body: AuctionIn, who: Principal = Depends(person), h: Hub = Depends(hub)
) -> AuctionRecord:
    """Post a request for capacity; providers bid until ``bids_close_at`` (default: the start),
    then the hub awards it by the sealed-bid rule and the winner's capacity becomes a lease."""
    return auctions.create(h.store, who, body)


@router.get("/auctions")
def list_auctions(
    state: Literal["open", "awarded", "failed"] | None = None,
    limit: Limit = 50,
    who: Principal = Depends(caller),
    h: Hub = Depends(hub),
) -> dict[str, list[AuctionRecord]]:
    """Your organisation's requests; for a provider's admin also every open request (with
    only its own bids: bids are sealed) and the closed ones it bid on."""
    return {"auctions": auctions.visible(h.store, who, state, limit)}


@router.get("/auctions/{auction_id}", response_model=AuctionRecord)
def get_auction(
    auction_id: str, who: Principal = Depends(caller), h: Hub = Depends(hub)
) -> AuctionRecord:
    return auctions.get(h.store, who, auction_id)


@router.post("/auctions/{auction_id}/bids", response_model=BidRecord, status_code=201)
def place_bid(
    auction_id: str, body: BidIn, who: Principal = Depends(provider_admin), h: Hub = Depends(hub)
) -> BidRecord:
    """A sealed bid for one of your provider's pools: the price per hour for the whole
    request. A new bid for the same pool replaces the old one until the close."""
    return auctions.bid(h.store, who, auction_id, body)


@router.post("/auctions/{auction_id}/close", response_model=AuctionRecord)
def close_auction(
    auction_id: str, who: Principal = Depends(person), h: Hub = Depends(hub)
) -> AuctionRecord:
    """Close the bids now and award (the request's organisation, or an admin)."""
    return auctions.close(h.store, h.settings, who, auction_id)


@router.put("/pools/{pool_id}/bid-rule", response_model=BidRuleRecord)
def set_bid_rule(
    pool_id: str, body: BidRuleIn, who: Principal = Depends(provider_admin), h: Hub = Depends(hub)
) -> BidRuleRecord:
    """The pool's standing bid on every request it can serve: its on-demand price of the
    request × ``factor``, within ``min_price``..``max_price``, placed at each close."""
    return auctions.set_rule(h.store, who, pool_id, body)


@router.get("/pools/{pool_id}/bid-rule", response_model=BidRuleRecord)
def get_bid_rule(
    pool_id: str, who: Principal = Depends(provider_admin), h: Hub = Depends(hub)
) -> BidRuleRecord:
    return auctions.get_rule(h.store, who, pool_id)


@router.delete("/pools/{pool_id}/bid-rule", status_code=204)
def remove_bid_rule(
    pool_id: str, who: Principal = Depends(provider_admin), h: Hub = Depends(hub)
) -> None:
    auctions.set_rule(h.store, who, pool_id, None)


@router.get("/leases")
def list_leases(
    state: Literal["active", "ended", "cancelled"] | None = None,
    limit: Limit = 50,
    who: Principal = Depends(caller),
    h: Hub = Depends(hub),
) -> dict[str, list[LeaseRecord]]:
    """The leases your organisation holds or provides, newest first."""
    return {"leases": auctions.leases(h.store, who, state, limit)}


@router.delete("/leases/{lease_id}", response_model=LeaseRecord)
def cancel_lease(
    lease_id: str, who: Principal = Depends(person), h: Hub = Depends(hub)
) -> LeaseRecord:
    """End a lease early: you pay what elapsed, the rest of its hold is released, and its
    capacity is free from now."""
    return auctions.cancel_lease(h.store, who, lease_id)
