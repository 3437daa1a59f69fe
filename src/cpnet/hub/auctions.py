"""The hub's auction shell: posting requests, taking sealed bids, the award at the close (by
the caller or by the sweep at ``bids_close_at``), the lease it becomes, and the leases' settlement
as their windows run. The rule is market/auction.py's and the money market/lease.py's; this
reads the store, calls them once, and writes what they return in one transaction."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from cpnet.auth.model import Principal, Role
from cpnet.config import HubSettings
from cpnet.errors import Conflict, NotFound, PaymentRequired, new_id
from cpnet.hub import scheduling
from cpnet.market import auction as A
from cpnet.market import lease as M
from cpnet.market import money, quotes
from cpnet.market.auction_records import (
    AuctionIn,
    AuctionRecord,
    BidIn,
    BidRecord,
    BidRuleIn,
    BidRuleRecord,
    LeaseRecord,
    PoolLeases,
    Unit,
)
from cpnet.market.records import utc
from cpnet.sched.snapshot import PoolView, Resources
from cpnet.store import auctions as store
from cpnet.store import leases as lease_store
from cpnet.store import registry
from cpnet.store.db import Store
from cpnet.store.tables import AuctionRow, LeaseRow, Pool

log = logging.getLogger("cpnet.hub.auctions")
LIST_LIMIT = 200


def create(st: Store, who: Principal, body: AuctionIn) -> AuctionRecord:
    """Post a request for capacity; its bids close at ``bids_close_at`` (default: the start)."""
    now = time.time()
    start, end = body.start.timestamp(), body.end.timestamp()
    closes = start if body.bids_close_at is None else body.bids_close_at.timestamp()
    u = body.resources
    req = A.Request(
        id=new_id("auc"),
        org_id=who.org_id,
        unit=Resources(u.cpu_cores, u.ram_gb, u.disk_gb, u.gpus),
        units=body.units,
        start=start,
        end=end,
        max_price=body.max_price_minor(),
        closes_at=closes,
        gpu_model=u.gpu_model,
        min_sla=body.min_sla,
        regions=tuple(body.regions),
        providers=tuple(p.lower() for p in body.providers),
    )
    with st.tx() as s:
        row = store.create(s, who, req, now)
        return store.record(s, who, row)


def bid(st: Store, who: Principal, auction_id: str, body: BidIn) -> BidRecord:
    """A sealed bid for a pool of the bidder's own provider organisation."""
    now = time.time()
    price = body.price_minor()
    with st.tx() as s:
        row = store.get(s, who, auction_id)
        owner = registry.pool_owner_org(s, body.pool_id)
        if not who.sees(owner):
            raise NotFound(f"no pool {body.pool_id!r}", field="pool_id")
        b = store.place_bid(s, who, row, body.pool_id.lower(), owner, price, now)
        return store.bid_record(b)


def set_rule(st: Store, who: Principal, pool_id: str, body: BidRuleIn | None) -> BidRuleRecord:
    """Set a pool's bid rule (its provider's admins); ``None`` removes it."""
    rule = None if body is None else body.rule()
    now = time.time()
    with st.tx() as s:
        owner = registry.pool_owner_org(s, pool_id)
        who.must_see(owner, "pool", pool_id, "pool_id")
        store.set_rule(s, pool_id.lower(), rule, who.user_id or who.token_id, now)
    return store.rule_record(pool_id.lower(), rule or A.BidRule(0.0))


def get_rule(st: Store, who: Principal, pool_id: str) -> BidRuleRecord:
    with st.read() as s:
        owner = registry.pool_owner_org(s, pool_id)
        who.must_see(owner, "pool", pool_id, "pool_id")
        rule = store.rules(s).get(pool_id.lower())
    if rule is None:
        raise NotFound(f"pool {pool_id} has no bid rule", field="pool_id")
    return store.rule_record(pool_id.lower(), rule)


def get(st: Store, who: Principal, auction_id: str) -> AuctionRecord:
    with st.read() as s:
        return store.record(s, who, store.get(s, who, auction_id))


def visible(st: Store, who: Principal, state: str | None, limit: int) -> list[AuctionRecord]:
    with st.read() as s:
        return [store.record(s, who, r) for r in store.visible(s, who, state, limit)]


def close(st: Store, settings: HubSettings, who: Principal, auction_id: str) -> AuctionRecord:
    """Close a request's bids now and award it (its organisation's members, or an admin)."""
    now = time.time()
    with st.tx() as s:
        row = store.get(s, who, auction_id)
        if not who.sees(row.org_id):
            raise NotFound(f"no auction {auction_id!r}", field="auction_id")
        if row.state != store.OPEN:
            raise Conflict(f"auction {auction_id} is {row.state} already", field="auction_id")
        award(s, row, settings.platform_fee_bps, now)
        return store.record(s, who, row)


def _book_hourly(view: PoolView, demand: Resources) -> int:
    """The pool's on-demand price of ``demand`` per hour, minor units."""
    return money.round_minor(Decimal(str(view.price.hourly(demand))) * money.SCALE)


def award(s: Session, row: AuctionRow, fee_bps: int, now: float) -> None:
    """Award an open request in the caller's transaction: add the bid rules' bids, weigh every
    bid by the rule, and turn the winner into a lease with its hold; a hold that cannot be
    placed fails the award, and the request says why."""
    req = store.request_of(row)
    views = scheduling.pool_views(s, now, online_only=False)
    by_id = {v.id: v for v in views}
    # Lock the pools weighed, so two awards cannot both count the same free capacity.
    s.execute(select(Pool.id).where(Pool.id.in_(list(by_id))).with_for_update()).all()
    held = lease_store.held(s, list(by_id))
    owners = {v.id: v.provider_id for v in views}
    candidates = {
        v.id: A.Candidate(
            pool_id=v.id,
            provider_id=v.provider_id,
            region_code=v.region_code,
            total=v.total,
            online=v.online,
            gpu_model=v.gpu_model,
            sla=quotes.sla_score(v),  # the pool's reputation (market/reputation.py)
            reputation=None,  # no reputation model yet: NEUTRAL
            leases=held.get(v.id, ()),
        )
        for v in views
    }
    have = {b.pool_id for b in store.bids(s, row.id)}
    hub_principal = Principal("hub", Role.ADMIN, row.org_id)  # the rule bids for the pool
    for pool_id, rule in sorted(store.rules(s).items()):
        view = by_id.get(pool_id)
        if view is None or pool_id in have:
            continue  # a pool's own bid wins over its rule
        price = A.rule_price(rule, _book_hourly(view, req.total))
        probe = A.Bid("rule", row.id, pool_id, price, now, True)
        if A.dropped(req, probe, candidates[pool_id]) is not None:
            continue  # a rule bids only where it could win
        owner = registry.pool_owner_org(s, pool_id)
        store.place_bid(s, hub_principal, row, pool_id, owner, price, now, rule=True)
    placed = store.bids(s, row.id)
    result = A.award(req, [store.bid_of(b) for b in placed], candidates)
    row.award = [
        {
            "bid_id": w.bid.id,
            "pool_id": w.bid.pool_id,
            "price": w.bid.price,
            "score": None if w.score is None else round(w.score, 6),
            "dropped": w.dropped,
        }
        for w in result.weighed
    ]
    row.closed_at = now
    if result.winner is None:
        row.state = store.FAILED
        row.reason = (
            "no bids"
            if not placed
            else "no bid could win: " + "; ".join(w.dropped or "" for w in result.weighed)
        )[:2000]
        return
    win = result.winner
    provider_org = next(b.provider_org for b in placed if b.id == win.id)
    lease = M.Lease(
        id=new_id("lse"),
        request_id=row.id,
        pool_id=win.pool_id,
        org_id=row.org_id,
        provider_org=provider_org,
        resources=req.total,
        start=req.start,
        end=req.end,
        price=win.price,
    )
    try:
        with s.begin_nested():
            lease_store.create(s, lease, row.user_id, fee_bps, now)
    except PaymentRequired as exc:
        row.state = store.FAILED
        row.reason = f"awarded to pool {win.pool_id} at {money.fmt(win.price)}/h, but {exc.message}"
        return
    row.state, row.lease_id = store.AWARDED, lease.id
    row.reason = (
        f"awarded to pool {win.pool_id} of provider {owners.get(win.pool_id, '?')} at "
        f"{money.fmt(win.price)}/h (first price); {money.fmt(lease.total)} held for the window"
    )


# ---- leases ----


def lease_record(r: LeaseRow, now: float) -> LeaseRecord:
    lease = lease_store.lease_of(r)
    return LeaseRecord(
        id=r.id,
        auction_id=r.auction_id,
        pool_id=r.pool_id,
        org_id=r.org_id,
        provider_org=r.provider_org,
        resources=Unit(cpu_cores=r.cpu_cores, ram_gb=r.ram_gb, disk_gb=r.disk_gb, gpus=r.gpus),
        start=utc(r.start),
        end=utc(r.end),
        price=int(r.price),
        total=lease.total,
        charged=int(r.charged),
        state=r.state,
        paid_to=None if r.paid_to is None else utc(r.paid_to),
        live=lease.live(now),
    )


def leases(st: Store, who: Principal, state: str | None, limit: int) -> list[LeaseRecord]:
    now = time.time()
    with st.read() as s:
        return [lease_record(r, now) for r in lease_store.visible(s, who, state, limit)]


def cancel_lease(st: Store, who: Principal, lease_id: str) -> LeaseRecord:
    """End a lease early: it pays what elapsed, the rest of its hold is released."""
    now = time.time()
    with st.tx() as s:
        row = lease_store.cancel(s, who, lease_id, now)
        return lease_record(row, now)


def pool_leases(s: Session, who: Principal, pool_ids: list[str], now: float) -> dict:
    """What leases hold of each pool, for discovery: active and live counts, the resources the
    live ones hold, and the caller's own leases' ids."""
    out: dict[str, PoolLeases] = {}
    by_pool = lease_store.on_pools(s, now)
    for pid in pool_ids:
        rows = by_pool.get(pid, [])
        live = [r for r in rows if r.start <= now < r.end]
        total = Resources()
        for r in live:
            total = total + Resources(r.cpu_cores, r.ram_gb, r.disk_gb, r.gpus)
        out[pid] = PoolLeases(
            pool_id=pid,
            active=len(rows),
            live=len(live),
            leased=Unit(
                cpu_cores=total.cpu_cores,
                ram_gb=total.ram_gb,
                disk_gb=total.disk_gb,
                gpus=total.gpus,
            ),
            own=[r.id for r in rows if who.sees(r.org_id) and not who.is_admin]
            + ([r.id for r in rows] if who.is_admin else []),
        )
    return out


# ---- the sweep ----


@dataclass(frozen=True, slots=True)
class Swept:
    awarded: int
    failed: int
    settled: int  # lease settlements that moved money or ended a lease


def sweep(st: Store, fee_bps: int, now: float, period_s: float = M.PERIOD_S) -> Swept:
    """Award the requests whose bids have closed, and settle what the leases owe now. Each
    request and each lease in its own transaction, so one failure holds back no other."""
    awarded = failed = settled = 0
    with st.read() as s:
        ids = store.due(s, now)
        lease_ids = [r.id for r in lease_store.due(s, now, period_s)]
    for aid in ids:
        try:
            with st.tx() as s:
                row = s.get(AuctionRow, aid)
                if row is None or row.state != store.OPEN:
                    continue
                award(s, row, fee_bps, now)
                if row.state == store.AWARDED:
                    awarded += 1
                else:
                    failed += 1
        except Exception:
            log.exception("awarding auction %s failed", aid)
    for lid in lease_ids:
        try:
            with st.tx() as s:
                row = s.get(LeaseRow, lid)
                if row is None:
                    continue
                before = int(row.charged), row.state
                lease_store.settle(s, row, now, period_s=period_s)
                if (int(row.charged), row.state) != before:
                    settled += 1
        except Exception:
            log.exception("settling lease %s failed", lid)
    return Swept(awarded, failed, settled)
