"""The hub's market shell: publishing price books, showing pools' prices, making quotes, and
binding a submitted task to its quote. The arithmetic is market/ (pure); this reads the store,
calls it once, and writes what it returns."""

from __future__ import annotations

import time

from sqlalchemy.orm import Session

from cpnet.auth.model import Principal
from cpnet.errors import Conflict, Invalid, NotFound
from cpnet.hub import scheduling
from cpnet.hub.service import Hub
from cpnet.market import prices, quotes
from cpnet.market.records import (
    EffectivePrice,
    PoolPrices,
    PriceBookIn,
    QuoteRecord,
    utc,
)
from cpnet.sched import rank
from cpnet.sched.score import load_fraction
from cpnet.store import prices as price_store
from cpnet.store import quotes as quote_store
from cpnet.store import registry
from cpnet.store.tables import Pool, PriceEntry, Quote, Site
from cpnet.tasks import secrets as task_secrets
from cpnet.tasks.model import TaskSpec


def publish(h: Hub, who: Principal, pool_id: str, book: PriceBookIn) -> PoolPrices:
    """Append entries to a pool's price book (its provider's admins only); answer its prices."""
    now = time.time()
    entries = []
    for n, item in enumerate(book.entries):
        try:
            entries.append(item.entry(now))
        except prices.PriceError as exc:
            raise Invalid(exc.message, field=f"entries.{n}.{exc.field}") from None
    with h.store.tx() as s:
        who.must_see(registry.pool_owner_org(s, pool_id), "pool", pool_id, "pool_id")
        price_store.add(s, pool_id.lower(), entries, who.user_id or who.token_id, now)
    with h.store.read() as s:
        return pool_prices(s, pool_id, now)


def _effective(price, factor: float, source: str) -> EffectivePrice:  # type: ignore[no-untyped-def]
    return EffectivePrice(
        currency=price.currency,
        cpu_core_hour=price.cpu_core_hour,
        ram_gb_hour=price.ram_gb_hour,
        gpu_hour=price.gpu_hour,
        scu_hour=dict(price.scu_hour),
        factor=factor,
        source=source,  # type: ignore[arg-type]
    )


def pool_prices(s: Session, pool_id: str, at: float, *, full_history: bool = False) -> PoolPrices:
    """A pool's prices at ``at`` (on-demand and spot, the dynamic rule applied at its utilisation
    now), with the entries in force then, or its whole history."""
    pool = s.get(Pool, pool_id.lower())
    if pool is None or pool.retired_at is not None:
        raise NotFound(f"no pool {pool_id!r}", field="pool_id")
    site = s.get(Site, pool.site_id)
    assert site is not None
    return _prices(pool, site, price_store.history(s, pool.id), at, full_history)


def _prices(
    pool: Pool, site: Site, rows: list[PriceEntry], at: float, full_history: bool = False
) -> PoolPrices:
    """A pool's prices at ``at`` from its entry rows (every one covering ``at``, or more)."""
    book = [price_store.entry(r) for r in rows]
    view = scheduling.pool_view(pool, site)  # the declared price, and utilisation now
    use = load_fraction(view)
    out = {}
    chosen_ids = set()
    for kind in prices.KINDS:
        entry = prices.current(book, at, kind)
        if entry is None:
            out[kind] = _effective(view.price, 1.0, "declared") if kind == "on_demand" else None
            continue
        chosen_ids.add(entry.seq)
        factor = entry.dynamic.factor(use) if entry.dynamic else 1.0
        out[kind] = _effective(prices.effective(entry, use, view.gpu_model), factor, "book")
    shown = rows if full_history else [r for r in rows if r.id in chosen_ids]
    return PoolPrices(
        pool_id=pool.id,
        pool_name=pool.name,
        at=utc(at),
        utilisation=use,
        on_demand=out["on_demand"],
        spot=out["spot"],
        entries=[price_store.record(r, r.id in chosen_ids) for r in shown],
    )


def all_prices(s: Session, at: float) -> list[PoolPrices]:
    """Every live pool's prices at ``at`` (one query for every pool's entries)."""
    rows = price_store.rows_in_force(s, at)
    return [
        _prices(p, site, rows.get(p.id, []), at)
        for p, site in registry.live_pools(s, online_only=False)
    ]


def make_quote(h: Hub, who: Principal, spec: TaskSpec, limit: int) -> QuoteRecord:
    """Rank every live pool for the spec as the scheduler would now and keep the best ``limit``
    as a quote, valid for the hub's quote TTL."""
    from cpnet.hub.tasks import check_new, with_input_sizes, with_scu_hours

    if spec.quote_id is not None or spec.quote_option is not None:
        raise Invalid(
            "a quote request is the task spec alone: drop quote_id and quote_option",
            field="quote_id",
        )
    check_new(spec, h.settings.allow_private_urls)
    # A quote keeps the spec it priced: never with secret values (docs/security.md).
    quoted = task_secrets.split(spec.model_dump(mode="json", exclude_none=True))[0]
    placing = with_input_sizes(h, with_scu_hours(h, spec)).model_dump(
        mode="json", exclude_none=True
    )
    now = time.time()
    settings = h.settings
    with h.store.read() as s:
        views = scheduling.pool_views(s, now)
        network = scheduling.network_map(s, now) if views else None
        req = scheduling.request_from_dict("quote", placing, (), now)
        decision = rank(req, views, network=network, keep=limit)
    if not decision.placements:
        why = (
            "; ".join(f"{r.pool_id}: {', '.join(r.reasons)}" for r in decision.rejections[:3])
            or "no live pools"
        )
        raise Conflict(
            f"no pool can run this spec now ({why}); relax its constraints or try later",
            field="spec",
            code="no_feasible_pool",
        )
    options = quotes.options(
        decision,
        {v.id: v for v in views},
        now=now,
        fee_bps=settings.platform_fee_bps,
        work_scu_h=req.work_scu_h,
        profile=req.profile,
        limit=limit,
    )
    with h.store.tx() as s:
        row = quote_store.create(
            s,
            who,
            spec=quoted,
            objective=spec.objective,
            options=options,
            fee_bps=settings.platform_fee_bps,
            now=now,
            ttl_s=settings.quote_ttl_s,
        )
        rec = quote_store.record(row, rejected=len(decision.rejections))
    rec.overruns = quotes.overrun_text(options[0])
    return rec


_REFUSALS = {
    "used": ("quote_used", Conflict),
    "expired": ("quote_expired", Conflict),
    "mismatch": ("quote_mismatch", Invalid),
    "bad_option": ("invalid", Invalid),
    "not_found": ("not_found", NotFound),
}


def bind(
    s: Session, who: Principal, spec: TaskSpec, spec_hash: str, now: float
) -> tuple[Quote, TaskSpec, quotes.Use]:
    """For a spec submitted with a quote (``spec_hash``: of the spec as the caller sent it): the
    quote row, the spec to store (placement constrained to the quoted pool) and what the quote
    allows; a 4xx naming ``quote_id`` or ``quote_option`` that says what to do when the quote
    does not allow it."""
    assert spec.quote_id is not None
    row = quote_store.get(s, who, spec.quote_id)
    option = spec.quote_option or 1
    try:
        use = quotes.check_use(
            quote_org=row.org_id,
            caller_org=row.org_id if who.is_admin else (who.org_id or ""),
            valid_until=row.valid_until,
            used_by_task=row.used_by_task,
            quoted_hash=row.spec_hash,
            spec_hash_now=spec_hash,
            options_json=row.options,
            option=option,
            now=now,
        )
    except quotes.QuoteRefused as exc:
        code, error = _REFUSALS[exc.reason]
        raise error(exc.message, field=exc.field, code=code) from None
    constraints = spec.constraints.model_copy(update={"pools": [use.pool_id]})
    bound = spec.model_copy(update={"constraints": constraints, "quote_option": option})
    return row, bound, use
