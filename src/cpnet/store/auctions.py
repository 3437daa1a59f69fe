"""Auctions in the store: requests for capacity, sealed bids, pools' bid rules, and who may see
which. The award rule is market/auction.py's; hub/auctions.py runs it.

Sealed: before the close a request's bids are seen only by the hub and each by its bidder; the
request's owner sees them, as the rule weighed them, once it closed.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from cpnet.auth.model import Principal, Role
from cpnet.errors import Conflict, Invalid, NotFound, new_id
from cpnet.market import auction as A
from cpnet.market.auction_records import (
    AuctionRecord,
    BidRecord,
    BidRuleRecord,
    Unit,
)
from cpnet.market.records import utc
from cpnet.sched.snapshot import Resources
from cpnet.store.tables import AuctionBid, AuctionRow, BidRuleRow

OPEN, AWARDED, FAILED = "open", "awarded", "failed"


def request_of(row: AuctionRow) -> A.Request:
    r = row.request
    u = r["unit"]
    return A.Request(
        id=row.id,
        org_id=row.org_id,
        unit=Resources(u["cpu_cores"], u["ram_gb"], u["disk_gb"], u["gpus"]),
        units=r["units"],
        start=row.start,
        end=row.end,
        max_price=int(row.max_price),
        closes_at=row.closes_at,
        gpu_model=u.get("gpu_model"),
        min_sla=r.get("min_sla"),
        regions=tuple(r.get("regions", ())),
        providers=tuple(r.get("providers", ())),
    )


def create(s: Session, who: Principal, req: A.Request, now: float) -> AuctionRow:
    """Write a new request (checked by ``auction.check_request`` first: 400 naming the field)."""
    A.check_request(req, now)
    u = req.unit
    row = AuctionRow(
        id=req.id,
        org_id=who.org_id,
        user_id=who.user_id,
        request={
            "unit": {
                "cpu_cores": u.cpu_cores,
                "ram_gb": u.ram_gb,
                "disk_gb": u.disk_gb,
                "gpus": u.gpus,
                "gpu_model": req.gpu_model,
            },
            "units": req.units,
            "min_sla": req.min_sla,
            "regions": list(req.regions),
            "providers": list(req.providers),
        },
        start=req.start,
        end=req.end,
        max_price=req.max_price,
        closes_at=req.closes_at,
        state=OPEN,
        created_at=now,
    )
    s.add(row)
    s.flush()
    return row


def _bidder(who: Principal) -> bool:
    return who.role in (Role.PROVIDER_ADMIN, Role.ADMIN)


def get(s: Session, who: Principal, auction_id: str) -> AuctionRow:
    """A request the caller may see: its own organisation's, any open one for a provider's
    admin, or a closed one it bid on; else 404 as if it did not exist."""
    row = s.get(AuctionRow, auction_id)
    if row is None or not _may_see(s, who, row):
        raise NotFound(f"no auction {auction_id!r}", field="auction_id")
    return row


def _may_see(s: Session, who: Principal, row: AuctionRow) -> bool:
    if who.sees(row.org_id):
        return True
    if not _bidder(who):
        return False
    if row.state == OPEN:
        return True
    return (
        s.execute(
            select(AuctionBid.id).where(
                AuctionBid.auction_id == row.id, AuctionBid.provider_org == who.org_id
            )
        ).first()
        is not None
    )


def visible(s: Session, who: Principal, state: str | None, limit: int) -> list[AuctionRow]:
    """The requests the caller may see, newest first."""
    q = select(AuctionRow).order_by(AuctionRow.created_at.desc())
    if state:
        q = q.where(AuctionRow.state == state)
    if who.is_admin:
        return list(s.scalars(q.limit(limit)))
    mine = AuctionRow.org_id == who.org_id
    if _bidder(who):
        bid_on = select(AuctionBid.auction_id).where(AuctionBid.provider_org == who.org_id)
        q = q.where(mine | (AuctionRow.state == OPEN) | AuctionRow.id.in_(bid_on))
    else:
        q = q.where(mine)
    return list(s.scalars(q.limit(limit)))


def bids(s: Session, auction_id: str) -> list[AuctionBid]:
    return list(
        s.scalars(
            select(AuctionBid)
            .where(AuctionBid.auction_id == auction_id)
            .order_by(AuctionBid.placed_at, AuctionBid.pool_id)
        )
    )


def place_bid(
    s: Session,
    who: Principal,
    row: AuctionRow,
    pool_id: str,
    provider_org: str,
    price: int,
    now: float,
    *,
    rule: bool = False,
) -> AuctionBid:
    """A bid on an open request for a pool of the bidder's; a new bid for the same pool
    replaces the old one (and counts as placed now) until the close. A ``rule`` bid is the
    hub's, made at the close from the pool's bid rule."""
    if row.state != OPEN or (now >= row.closes_at and not rule):
        raise Conflict(f"auction {row.id}'s bids are closed", field="auction_id")
    if not 0 < price <= A.MAX_PRICE:
        raise Invalid(f"price must be above 0 and at most {A.MAX_PRICE // 100}", field="price")
    old = s.execute(
        select(AuctionBid).where(AuctionBid.auction_id == row.id, AuctionBid.pool_id == pool_id)
    ).scalar_one_or_none()
    if old is not None:
        old.price, old.placed_at, old.rule = price, now, rule
        old.placed_by = who.user_id or who.token_id
        s.flush()
        return old
    b = AuctionBid(
        id=new_id("bid"),
        auction_id=row.id,
        pool_id=pool_id,
        provider_org=provider_org,
        price=price,
        placed_at=now,
        rule=rule,
        placed_by=who.user_id or who.token_id,
    )
    s.add(b)
    s.flush()
    return b


def bid_of(b: AuctionBid) -> A.Bid:
    return A.Bid(b.id, b.auction_id, b.pool_id, int(b.price), b.placed_at, b.rule)


def set_rule(s: Session, pool_id: str, rule: A.BidRule | None, by: str, now: float) -> None:
    """Set (None: remove) a pool's bid rule."""
    row = s.get(BidRuleRow, pool_id)
    if rule is None:
        if row is not None:
            s.delete(row)
        return
    if row is None:
        row = BidRuleRow(pool_id=pool_id)
        s.add(row)
    row.factor, row.min_price, row.max_price = rule.factor, rule.min_price, rule.max_price
    row.set_by, row.set_at = by, now
    s.flush()


def rules(s: Session) -> dict[str, A.BidRule]:
    return {
        r.pool_id: A.BidRule(r.factor, r.min_price, r.max_price)
        for r in s.scalars(select(BidRuleRow))
    }


def rule_record(pool_id: str, rule: A.BidRule) -> BidRuleRecord:
    return BidRuleRecord(
        pool_id=pool_id, factor=rule.factor, min_price=rule.min_price, max_price=rule.max_price
    )


def bid_record(b: AuctionBid, weighed: dict | None = None) -> BidRecord:
    w = weighed or {}
    return BidRecord(
        id=b.id,
        auction_id=b.auction_id,
        pool_id=b.pool_id,
        price=int(b.price),
        placed_at=utc(b.placed_at),
        rule=b.rule,
        score=w.get("score"),
        dropped=w.get("dropped"),
    )


def record(s: Session, who: Principal, row: AuctionRow) -> AuctionRecord:
    """The request as the caller may see it (sealed bids stay sealed)."""
    req = request_of(row)
    all_bids = bids(s, row.id)
    weighed = {w["bid_id"]: w for w in (row.award or [])}
    if who.is_admin or (who.sees(row.org_id) and row.state != OPEN):
        shown = all_bids
    elif row.state == OPEN and who.sees(row.org_id):
        shown = []
    else:
        shown = [b for b in all_bids if b.provider_org == who.org_id]
    order = {bid_id: n for n, bid_id in enumerate(weighed)}
    shown = sorted(shown, key=lambda b: (order.get(b.id, len(order)), b.placed_at))
    u, t = req.unit, req.total
    return AuctionRecord(
        id=row.id,
        org_id=row.org_id,
        state=row.state,
        reason=row.reason,
        resources=Unit(
            cpu_cores=u.cpu_cores,
            ram_gb=u.ram_gb,
            disk_gb=u.disk_gb,
            gpus=u.gpus,
            gpu_model=req.gpu_model,
        ),
        units=req.units,
        total=Unit(
            cpu_cores=t.cpu_cores,
            ram_gb=t.ram_gb,
            disk_gb=t.disk_gb,
            gpus=t.gpus,
            gpu_model=req.gpu_model,
        ),
        start=utc(row.start),
        end=utc(row.end),
        max_price=int(row.max_price),
        min_sla=req.min_sla,
        regions=list(req.regions),
        providers=list(req.providers),
        bids_close_at=utc(row.closes_at),
        bids_count=len(all_bids),
        bids=[bid_record(b, weighed.get(b.id)) for b in shown],
        lease_id=row.lease_id,
        created_at=utc(row.created_at),
        closed_at=None if row.closed_at is None else utc(row.closed_at),
    )


def due(s: Session, now: float) -> list[str]:
    """Open requests whose bids have closed: the sweep awards them."""
    return list(
        s.scalars(
            select(AuctionRow.id).where(AuctionRow.state == OPEN, AuctionRow.closes_at <= now)
        )
    )
