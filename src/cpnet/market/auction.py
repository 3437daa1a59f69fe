"""Reservations by auction: a capacity request, sealed bids, and the award rule (pure).

A user asks for capacity — ``units`` × resources per unit, for a time window, at most
``max_price`` minor units per hour for the whole request, optionally a minimum SLA score and
the regions or providers it may come from. Providers bid a price per hour for the whole request,
on one of their pools; the bids are sealed (only the hub and each bidder see a bid before the
close). At the close the hub awards by this rule, deterministic and documented
(docs/market.md, "Auctions and leases"):

1. A bid is **dropped** when its price is over the request's ``max_price``; when its pool is
   offline, outside the request's regions or providers, or of another GPU model; when its pool
   cannot hold the capacity for the whole window beside the leases it already has (at every
   moment of the window: ``free_in_window``); or when its pool's SLA score is below the
   request's ``min_sla``.
2. Each remaining bid gets a **score** (lower is better)::

       score = W_PRICE · price / max_price + W_SLA · (1 − sla) + W_REPUTATION · (1 − reputation)

   where ``sla`` is the pool's SLA score (``quotes.sla_score``: the pool's reputation score,
   market/reputation.py) and ``reputation`` its provider's reputation, both in [0, 1]; an unknown
   one (a pool not scored yet; providers have no reputation of their own yet) counts as
   ``NEUTRAL``.
3. The lowest score wins; ties go to the earlier bid, then the lower pool id.
4. **First price**: the winner is paid what it bid (not the second-best bid), so a bid is the
   price a provider is content to be paid; the request's ``max_price`` is the user's cap.

Money is integer minor units (``market/money.py``); times are epoch seconds, passed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from cpnet.errors import Invalid
from cpnet.market.money import round_minor
from cpnet.sched.snapshot import Resources

W_PRICE = 0.6
W_SLA = 0.25
W_REPUTATION = 0.15
NEUTRAL = 0.5  # the SLA score or reputation of a pool we know too little about

MAX_UNITS = 1_000
MAX_PRICE = 10**12  # minor units per hour: 10 billion CNY an hour is a typo, not a bid
MAX_WINDOW_S = 31 * 86_400  # a lease is at most a month long
MIN_WINDOW_S = 60


@dataclass(frozen=True, slots=True)
class Request:
    """What a user asks for: ``units`` × ``unit`` resources from ``start`` to ``end``."""

    id: str
    org_id: str
    unit: Resources  # per unit
    units: int
    start: float
    end: float
    max_price: int  # minor units per hour, for the whole request
    closes_at: float  # bids close (the hub awards then at the latest)
    gpu_model: str | None = None
    min_sla: float | None = None
    regions: tuple[str, ...] = ()  # region codes (prefixes: "44" is Guangdong)
    providers: tuple[str, ...] = ()  # provider ids

    @property
    def total(self) -> Resources:
        """The whole request's resources (what a lease holds on its pool)."""
        u, n = self.unit, self.units
        return Resources(u.cpu_cores * n, u.ram_gb * n, u.disk_gb * n, u.gpus * n)

    @property
    def seconds(self) -> float:
        return self.end - self.start


def check_request(r: Request, now: float) -> None:
    """Refuse a request that cannot be auctioned, naming the field and the reason."""
    if not 1 <= r.units <= MAX_UNITS:
        raise Invalid(f"units must be 1 to {MAX_UNITS} (got {r.units})", field="units")
    u = r.unit
    if min(u.cpu_cores, u.ram_gb, u.disk_gb, u.gpus) < 0:
        raise Invalid("resources per unit may not be negative", field="resources")
    if u.cpu_cores <= 0 and u.gpus <= 0:
        raise Invalid("ask for some cpu_cores or gpus per unit", field="resources.cpu_cores")
    if not 0 < r.max_price <= MAX_PRICE:
        raise Invalid(
            f"max_price must be above 0 and at most {MAX_PRICE // 100} (per hour, whole request)",
            field="max_price",
        )
    if r.end - r.start < MIN_WINDOW_S:
        raise Invalid(f"the window must last at least {MIN_WINDOW_S} s", field="end")
    if r.end - r.start > MAX_WINDOW_S:
        raise Invalid("the window may last at most 31 days", field="end")
    if r.start < now - 60:
        raise Invalid("the window may not start in the past", field="start")
    if r.closes_at > r.start:
        raise Invalid("bids must close no later than the window starts", field="closes_at")
    if r.closes_at < now - 60:
        raise Invalid("bids may not close in the past", field="closes_at")
    if r.min_sla is not None and not 0 <= r.min_sla <= 1:
        raise Invalid("min_sla is a score from 0 to 1", field="min_sla")


def window_cost(price_per_hour: int, seconds: float) -> int:
    """Minor units owed for ``seconds`` at ``price_per_hour``, rounded half-even once."""
    if seconds <= 0:
        return 0
    return round_minor(Decimal(price_per_hour) * Decimal(str(seconds)) / 3600)


@dataclass(frozen=True, slots=True)
class Bid:
    """A provider's sealed offer: ``price`` minor units per hour for the whole request on
    ``pool_id``. ``rule`` is True for a bid the hub made from the pool's bid rule."""

    id: str
    request_id: str
    pool_id: str
    price: int
    placed_at: float
    rule: bool = False


@dataclass(frozen=True, slots=True)
class Held:
    """A lease (or a request being weighed) occupying ``resources`` of a pool in [start, end)."""

    start: float
    end: float
    resources: Resources


@dataclass(frozen=True, slots=True)
class Candidate:
    """What the award rule needs to know of a bid's pool."""

    pool_id: str
    provider_id: str
    region_code: str
    total: Resources
    online: bool = True
    gpu_model: str | None = None
    sla: float | None = None  # None: unknown → NEUTRAL
    reputation: float | None = None  # None: unknown → NEUTRAL
    leases: tuple[Held, ...] = ()  # the pool's leases that are not cancelled or over


def peak(leases: Iterable[Held], start: float, end: float) -> list[Resources]:
    """What the leases hold at each moment the sum can change within [start, end): at the
    start and at every lease start inside. The most held is at one of these moments."""
    inside = [x for x in leases if x.start < end and x.end > start]
    moments = sorted({start} | {x.start for x in inside if start < x.start < end})
    out = []
    for t in moments:
        held = Resources()
        for x in inside:
            if x.start <= t < x.end:
                held = held + x.resources
        out.append(held)
    return out


def free_in_window(total: Resources, leases: Iterable[Held], start: float, end: float) -> bool:
    """Whether ``total`` has room for nothing more: used by ``fits``."""
    return all(h.fits_in(total) for h in peak(leases, start, end))


def fits(c: Candidate, demand: Resources, start: float, end: float) -> bool:
    """Whether the pool can hold ``demand`` during all of [start, end) beside its leases."""
    return free_in_window(c.total, (*c.leases, Held(start, end, demand)), start, end)


def score(price: int, max_price: int, sla: float | None, reputation: float | None) -> float:
    """The award score of a bid (lower wins); see the module's doc."""
    s = NEUTRAL if sla is None else sla
    r = NEUTRAL if reputation is None else reputation
    return W_PRICE * price / max_price + W_SLA * (1 - s) + W_REPUTATION * (1 - r)


def dropped(r: Request, b: Bid, c: Candidate | None) -> str | None:
    """Why a bid cannot win (None: it may)."""
    if c is None:
        return f"pool {b.pool_id} is gone"
    if b.price > r.max_price:
        return f"price {b.price}/h is over the request's max_price {r.max_price}/h"
    if b.price <= 0:
        return "price must be above 0"
    if not c.online:
        return f"pool {c.pool_id} is offline"
    if r.regions and not any(c.region_code.startswith(x) for x in r.regions):
        return f"pool {c.pool_id} is in region {c.region_code}, not in {', '.join(r.regions)}"
    if r.providers and c.provider_id.lower() not in r.providers:
        return f"pool {c.pool_id}'s provider is not one the request allows"
    if r.gpu_model and r.unit.gpus > 0 and (c.gpu_model or "").lower() != r.gpu_model.lower():
        return f"pool {c.pool_id} has GPU {c.gpu_model or 'none'}, not {r.gpu_model}"
    if not fits(c, r.total, r.start, r.end):
        return f"pool {c.pool_id} cannot hold the request in the window beside its leases"
    sla = NEUTRAL if c.sla is None else c.sla
    if r.min_sla is not None and sla < r.min_sla:
        return f"pool {c.pool_id}'s SLA score {sla:.2f} is below min_sla {r.min_sla:.2f}"
    return None


@dataclass(frozen=True, slots=True)
class Weighed:
    """One bid as the rule saw it: its score, or why it was dropped."""

    bid: Bid
    score: float | None
    dropped: str | None


@dataclass(frozen=True, slots=True)
class Award:
    """The rule's verdict: the winning bid (None: no bid may win) and every bid weighed, the
    winner first, then the rest by score, then the dropped ones."""

    winner: Bid | None
    weighed: tuple[Weighed, ...]


def award(r: Request, bids: Sequence[Bid], candidates: dict[str, Candidate]) -> Award:
    """Award a request by the documented sealed-bid, first-price rule."""
    kept: list[Weighed] = []
    out: list[Weighed] = []
    for b in bids:
        c = candidates.get(b.pool_id)
        why = dropped(r, b, c)
        if why is not None:
            out.append(Weighed(b, None, why))
            continue
        assert c is not None
        kept.append(Weighed(b, score(b.price, r.max_price, c.sla, c.reputation), None))
    # Rounded so that two equal scores computed through different float paths tie exactly.
    kept.sort(key=lambda w: (round(w.score or 0.0, 12), w.bid.placed_at, w.bid.pool_id, w.bid.id))
    winner = kept[0].bid if kept else None
    return Award(winner, tuple(kept) + tuple(sorted(out, key=lambda w: w.bid.pool_id)))


@dataclass(frozen=True, slots=True)
class BidRule:
    """A provider's standing bid for one pool: its on-demand price of the request × ``factor``,
    kept within [``min_price``, ``max_price``] (minor units per hour; None: no bound). A rule
    bids only where that price is within the request's max_price."""

    factor: float = 1.0
    min_price: int | None = None
    max_price: int | None = None


def check_rule(rule: BidRule) -> None:
    if not 0 < rule.factor <= 100:
        raise Invalid("factor must be above 0 and at most 100", field="factor")
    for name in ("min_price", "max_price"):
        v = getattr(rule, name)
        if v is not None and not 0 < v <= MAX_PRICE:
            raise Invalid(f"{name} must be above 0 and at most {MAX_PRICE // 100}", field=name)
    if rule.min_price and rule.max_price and rule.min_price > rule.max_price:
        raise Invalid("min_price is above max_price", field="min_price")


def rule_price(rule: BidRule, book_hourly: int) -> int:
    """The hourly price a rule bids, given the pool's on-demand price of the whole request per
    hour (minor units)."""
    p = round_minor(Decimal(book_hourly) * Decimal(str(rule.factor)))
    if rule.min_price is not None:
        p = max(p, rule.min_price)
    if rule.max_price is not None:
        p = min(p, rule.max_price)
    return max(p, 1)
