"""Rank the pools for one task: a pure function from (task, snapshot) to an explained Decision.

``rank`` is the whole policy for one task. It is built from steps that ``batch`` reuses while it
places many tasks on one snapshot: ``Board.of`` (per-pool facts), ``screen`` (constraints, per task
signature), ``shortlist`` (feasibility and prices, per task shape) and ``decide`` (the part that
depends on what is free right now).
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from itertools import pairwise

from cpnet.network import NetworkMap
from cpnet.sched import feasibility, score
from cpnet.sched import terms as terms_mod
from cpnet.sched.snapshot import (
    EPSILON,
    RESOURCE_NAMES,
    Decision,
    Placement,
    PoolView,
    Rejection,
    Resources,
    TaskRequest,
    amount_text,
)

AVOIDED_REASON = "avoided: an earlier attempt failed here"


@dataclass(frozen=True, slots=True)
class Board:
    """One snapshot's pools in id order, with the per-pool facts reused for every task.

    Availability changes as a batch reserves capacity; nothing kept here depends on it.
    """

    pools: tuple[PoolView, ...]  # sorted by id, as given in the snapshot
    start_factors: tuple[tuple[float, float], ...]  # score.start_factors per pool
    # Per resource, the smallest total of any pool: a demand that fits in it fits every pool's
    # total, so shortlisting can skip the per-pool size check.
    smallest: Resources

    @classmethod
    def of(cls, pools: Sequence[PoolView]) -> Board:
        """Build the Board for a snapshot; refuse duplicate pool ids."""
        ordered = tuple(sorted(pools, key=lambda p: p.id))
        for before, after in pairwise(ordered):
            if before.id == after.id:
                raise ValueError(f"duplicate pool id {before.id!r} in snapshot")
        totals = [p.total for p in ordered]
        smallest = Resources(
            min((t.cpu_cores for t in totals), default=0.0),
            min((t.ram_gb for t in totals), default=0.0),
            min((t.disk_gb for t in totals), default=0.0),
            min((t.gpus for t in totals), default=0),
        )
        return cls(ordered, tuple(score.start_factors(p) for p in ordered), smallest)


def screen(
    task: TaskRequest, board: Board, network: NetworkMap | None = None
) -> tuple[Rejection | None, ...]:
    """Check the task's size-independent constraints on each pool: a Rejection, or None if met.

    Depends only on ``feasibility.signature(task)`` (and the map), so callers may cache it per
    signature.
    """
    out: list[Rejection | None] = []
    for pool in board.pools:
        reasons = feasibility.constraint_reasons(task, pool, network)
        out.append(Rejection(pool.id, reasons) if reasons else None)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Shortlist:
    """The feasible pools for one task shape (constraints, demand, runtime) on one Board.

    Feasibility, prices and every term of the time/cost model (``terms.Terms``) do not depend on
    availability, so this stays valid while a batch reserves capacity; only ``decide`` looks at
    what is free.
    """

    candidates: tuple[int, ...]  # positions on the Board, ascending (so in pool id order)
    pool_ids: tuple[str, ...]  # per candidate
    hourly: tuple[float, ...]  # per candidate: price of the demand for one hour, pool currency
    sorted_hourly: tuple[float, ...]  # the same prices ascending, to say "2nd cheapest"
    start_if_fits: tuple[float, ...]  # per candidate: expected start in s if it fits now
    start_if_not: tuple[float, ...]  # per candidate: expected start in s if it does not
    rejections: tuple[Rejection, ...]  # in pool id order
    # Per candidate: run time in s, and whether it was predicted from SCUs (else the task's
    # expected_runtime_s). Defaults keep older callers that build a Shortlist working.
    runtimes: tuple[float, ...] = ()
    predicted: tuple[bool, ...] = ()
    terms: tuple[terms_mod.Terms, ...] = ()  # per candidate: the whole time/cost model
    # Per candidate: its tier in the lexical order before the objective (feasibility.tier:
    # latency step, then spillover tier).
    tiers: tuple[int, ...] = ()
    latency: tuple[str, ...] = ()  # per candidate: the latency reason ("" without a bound)


def shortlist_key(task: TaskRequest) -> Hashable:
    """What a task's ``shortlist`` depends on: equal keys share one (batches cache it)."""
    return (
        feasibility.signature(task),
        task.demand,
        task.expected_runtime_s,
        task.profile,
        task.work_scu_h,
        task.inputs,
        task.deadline_s,
        task.budget,
    )


def shortlist(
    task: TaskRequest,
    board: Board,
    screened: Sequence[Rejection | None],
    network: NetworkMap | None = None,
) -> Shortlist:
    """Split the Board's pools into feasible candidates and rejections for the task.

    ``screened`` must be ``screen(task, board, network)``. Rejection reasons equal
    ``feasibility.check``, then the deadline and budget reasons of ``terms.limit_reasons``.
    """
    demand = task.demand
    pools = board.pools
    if demand.fits_in(board.smallest):
        # Common case: the task is no bigger than the smallest pool, only constraints matter.
        candidates = [i for i, rejected in enumerate(screened) if rejected is None]
        rejections = [rejected for rejected in screened if rejected is not None]
    else:
        candidates, rejections = _split_by_size(demand, pools, screened)
    model = [terms_mod.of(task, pools[i], network) for i in candidates]
    if task.deadline_s is not None or task.budget is not None:
        kept: list[int] = []
        kept_terms: list[terms_mod.Terms] = []
        for i, t in zip(candidates, model, strict=True):
            over = terms_mod.limit_reasons(task, t)
            if over:
                rejections.append(Rejection(pools[i].id, over))
            else:
                kept.append(i)
                kept_terms.append(t)
        candidates, model = kept, kept_terms
        rejections.sort(key=lambda r: r.pool_id)
    hourly = [t.hourly for t in model]
    tiers = [feasibility.tier(task, pools[i], network) for i in candidates]
    return Shortlist(
        candidates=tuple(candidates),
        pool_ids=tuple(pools[i].id for i in candidates),
        hourly=tuple(hourly),
        sorted_hourly=tuple(sorted(hourly)),
        start_if_fits=tuple(t.wait_if_fits_s for t in model),
        start_if_not=tuple(t.wait_if_not_s for t in model),
        rejections=tuple(rejections),
        runtimes=tuple(t.runtime_s for t in model),
        predicted=tuple(t.predicted for t in model),
        terms=tuple(model),
        tiers=tuple(tiers),
        latency=tuple(feasibility.latency_text(task, pools[i], network) for i in candidates)
        if task.latency is not None
        else (),
    )


def _split_by_size(
    demand: Resources, pools: Sequence[PoolView], screened: Sequence[Rejection | None]
) -> tuple[list[int], list[Rejection]]:
    """Sort pools into candidate positions and rejections, checking the demand against totals."""
    dc, dr, dd, dg = demand.cpu_cores, demand.ram_gb, demand.disk_gb, demand.gpus
    candidates: list[int] = []
    rejections: list[Rejection] = []
    # Pools often share a size; phrase each size's shortfall once.
    size_text: dict[Resources, tuple[str, ...]] = {}
    for i, (pool, rejected) in enumerate(zip(pools, screened, strict=True)):
        total = pool.total
        # Inline Resources.fits_in: this loop runs once per task shape and pool.
        if (
            dc <= total.cpu_cores + EPSILON
            and dr <= total.ram_gb + EPSILON
            and dd <= total.disk_gb + EPSILON
            and dg <= total.gpus
        ):
            if rejected is None:
                candidates.append(i)
            else:
                rejections.append(rejected)
            continue
        too_big = size_text.get(total)
        if too_big is None:
            too_big = size_text[total] = feasibility.size_reasons(demand, pool)
        before = () if rejected is None else rejected.reasons
        rejections.append(Rejection(pool.id, before + too_big))
    return candidates, rejections


def decide(
    task: TaskRequest,
    pools: Sequence[PoolView],
    short: Shortlist,
    loads: Sequence[float],
    weights: score.Weights = score.DEFAULT_WEIGHTS,
    keep: int | None = None,
) -> Decision:
    """Rank the shortlisted pools by what is free now and explain each placement.

    ``pools`` is the Board's pools as they are now (same order; availability may have changed)
    and ``loads[i]`` must be ``score.load_fraction(pools[i])``. Pools rank by tier (within the
    latency bound before a fallback beyond it, then spillover tier),
    then by the task's objective over time to result, cost and carbon (``terms``). With ``keep``
    set, the Decision holds only the ``keep`` best placements plus the best one that fits now
    (so ``best`` is the same as without it); ranks still count every candidate.
    """
    count = len(short.candidates)
    if count == 0:
        return Decision(task.id, (), short.rejections)
    demand = task.demand
    dc, dr, dd, dg = demand.cpu_cores, demand.ram_gb, demand.disk_gb, demand.gpus
    free = [pools[i].available for i in short.candidates]
    # Inline Resources.fits_in: this runs once per task and candidate.
    fits = [
        dc <= a.cpu_cores + EPSILON
        and dr <= a.ram_gb + EPSILON
        and dd <= a.disk_gb + EPSILON
        and dg <= a.gpus
        for a in free
    ]
    model = short.terms
    times = [t.time_to_result_s(ok) for t, ok in zip(model, fits, strict=True)]
    costs = [t.cost for t in model]
    cand_loads = [loads[i] for i in short.candidates]
    scored = score.objective_scores(
        task.objective, times, costs, [t.carbon_g for t in model], cand_loads, weights
    )
    avoid = task.avoid_pools
    avoided = [pid in avoid for pid in short.pool_ids] if avoid else [False] * count
    keys = score.rank_keys(short.pool_ids, scored, avoided, short.tiers)
    order, ranks = _order(keys, fits, keep)
    winner = next((j for j in order if fits[j]), order[0] if order else -1)
    placements = []
    for position, j in zip(ranks, order, strict=True):
        pool = pools[short.candidates[j]]
        t = model[j]
        start = t.wait_if_fits_s if fits[j] else t.wait_if_not_s
        reasons = _reasons(task, pool, short, j, start, cand_loads[j], avoided[j], t.runtime_s)
        if winner >= 0 and j != winner:
            reasons += (_lost(task, short.pool_ids[winner], times, costs, model, j, winner),)
        placements.append(
            Placement(
                pool_id=pool.id,
                rank=position,
                score=scored[j],
                expected_start_s=start,
                hourly_price=t.hourly,
                estimated_cost=costs[j],
                fits_now=fits[j],
                reasons=reasons,
                predicted_runtime_s=t.runtime_s if t.predicted else None,
                staging_s=t.staging.seconds,
                runtime_s=t.runtime_s,
                time_to_result_s=times[j],
                egress_cost=t.staging.egress * t.risk,
                carbon_g=t.carbon_g,
                tier=short.tiers[j],
            )
        )
    return Decision(task.id, tuple(placements), short.rejections)


def _order(
    keys: list[tuple[bool, int, float, str, int]], fits: Sequence[bool], keep: int | None
) -> tuple[list[int], Sequence[int]]:
    """Candidate positions in rank order, and their ranks (all, or ``keep`` + the best fit)."""
    if keep is None:
        return [key[4] for key in sorted(keys)], range(1, len(keys) + 1)
    # Pop from a heap to get the true order lazily: usually the best pool that fits now is
    # near the top, so most candidates are never fully sorted or explained.
    heapq.heapify(keys)
    order, ranks = [], []
    seen_fit = not any(fits)  # nothing to look for past ``keep`` when nothing fits
    position = 0
    while keys and (position < keep or not seen_fit):
        j = heapq.heappop(keys)[4]
        position += 1
        if position <= keep or (fits[j] and not seen_fit):
            order.append(j)
            ranks.append(position)
        seen_fit = seen_fit or fits[j]
    return order, ranks


def rank(
    task: TaskRequest,
    pools: Sequence[PoolView],
    weights: score.Weights = score.DEFAULT_WEIGHTS,
    network: NetworkMap | None = None,
    keep: int | None = None,
) -> Decision:
    """Rank every pool for the task: all feasible ones as placements, the rest as rejections.

    Pure and deterministic: the same task, pools (in any order) and map give the same Decision.
    ``Decision.best`` is the pool to reserve, or None when nothing fits now. Without a map,
    inputs cost no staging time and latency bounds are judged on the map's default RTT. With
    ``keep``, only the ``keep`` best placements (and the best that fits now) are explained and
    kept, as ``decide`` does: a quote's top options without phrasing every pool's reasons.
    """
    board = Board.of(pools)
    short = shortlist(task, board, screen(task, board, network), network)
    loads = [score.load_fraction(p) for p in board.pools]
    return decide(task, board.pools, short, loads, weights, keep)


def _lost(
    task: TaskRequest,
    winner_id: str,
    times: Sequence[float],
    costs: Sequence[float],
    model: Sequence[terms_mod.Terms],
    j: int,
    w: int,
) -> str:
    """Say why candidate ``j`` lost to the chosen one, in the terms of the objective."""
    dt = times[j] - times[w]
    parts = [f"finishes ~{_signed(dt)} s {'later' if dt >= 0 else 'sooner'}"]
    dc = costs[j] - costs[w]
    parts.append(f"costs {_money(abs(dc))} {'more' if dc >= 0 else 'less'}")
    cj, cw = model[j].carbon_g, model[w].carbon_g
    if cj is not None and cw is not None and (task.objective == "greenest" or cj != cw):
        dg = cj - cw
        parts.append(f"{abs(dg):.3g} g CO2 {'more' if dg >= 0 else 'less'}")
    return f"vs chosen {winner_id} ({task.objective}): " + ", ".join(parts)


def _signed(value: float) -> str:
    return str(round(abs(value)))


def _reasons(
    task: TaskRequest,
    pool: PoolView,
    short: Shortlist,
    j: int,
    start_s: float,
    load: float,
    avoided: bool,
    runtime_s: float | None = None,
) -> tuple[str, ...]:
    """Explain one placement in sentences: room, start, price and cost, the v2 terms, load."""
    demand = task.demand
    reasons = []
    missing = demand.shortfall(pool.available)
    if missing:
        reasons.append("does not fit now: " + "; ".join(missing))
    else:
        parts = [
            f"{amount_text(getattr(pool.available, name))} of "
            f"{amount_text(getattr(pool.total, name))} {name} free"
            for name in RESOURCE_NAMES
            if getattr(demand, name) > 0
        ]
        reasons.append("fits now: " + ", ".join(parts) if parts else "fits now")

    queue = pool.queue_length
    wait = f"expected start ~{round(start_s)} s"
    if missing:
        reasons.append(f"backend queue {queue}, {pool.running} running, no room now → {wait}")
    elif start_s > 0:
        reasons.append(f"backend queue {queue} → {wait}")
    else:
        reasons.append("backend queue empty → can start now" if queue == 0 else "can start now")

    currency = pool.price.currency
    hourly = short.hourly[j]
    count = len(short.candidates)
    if count == 1:
        standing = "only candidate"
    else:
        cheaper = bisect_left(short.sorted_hourly, hourly)
        standing = f"{_ordinal(cheaper + 1)}cheapest of {count}"
    reasons.append(f"price {_money(hourly)} {currency}/h ({standing})")
    if runtime_s is None:
        runtime_s = max(0.0, task.expected_runtime_s)
    t = short.terms[j]
    cost = _money(t.cost)
    reasons.append(f"estimated cost {cost} {currency} for ~{round(runtime_s)} s")
    if t.work_cost is not None:
        per = pool.price.per_scu_hour(task.profile)
        reasons.append(
            f"run priced per SCU-hour: {task.work_scu_h:g} SCU-h × {per:g} {currency} "
            f"({task.profile}) = {_money(t.work_cost)}, whatever the pool's speed"
        )
    if task.profile is not None and task.work_scu_h is not None:
        rate = pool.scu_rate(task.profile)
        if rate > 0:
            reasons.append(
                f"predicted run time ~{round(runtime_s)} s: {task.work_scu_h:g} SCU-h "
                f"at {rate:g} SCU ({task.profile})"
            )
        else:
            reasons.append(
                f"no SCU rate for {task.profile} known here: run time from expected_runtime_s"
            )
    if short.latency:
        reasons.append(short.latency[j])
    reasons.extend(_v2_reasons(task, pool, t, start_s, short.tiers[j]))
    reasons.append(f"{round(load * 100)}% of pool in use")
    if avoided:
        reasons.append(AVOIDED_REASON)
    return tuple(reasons)


def _v2_reasons(
    task: TaskRequest, pool: PoolView, t: terms_mod.Terms, start_s: float, tier: int
) -> list[str]:
    """The time-to-result terms, risk, carbon and tier, said only where they matter."""
    out = []
    if task.inputs:
        st = t.staging
        where = ", ".join(sorted(set(st.sources))) or "no map"
        egress = f", egress {_money(st.egress)}" if st.egress else ""
        out.append(f"staging {_size(st.bytes)} in ~{st.seconds:.3g} s ({where}){egress}")
    if task.inputs or t.risk > 1 or task.deadline_s is not None:
        total = (t.staging.seconds + start_s + t.runtime_s) * t.risk
        out.append(
            f"time to result ~{round(total)} s = staging {round(t.staging.seconds)} + wait "
            f"{round(start_s)} + run {round(t.runtime_s)}"
            + (f", × {t.risk:.2f} for risk" if t.risk > 1 else "")
        )
    if t.risk > 1:
        if pool.reputation is not None:
            out.append(
                f"risk: reputation {pool.reputation:.2f}, so ~{pool.failure_rate:.0%} of tries "
                "expected lost"
            )
        else:
            out.append(f"risk: {pool.failure_rate:.0%} of recent attempts failed")
    if t.carbon_g is not None and task.objective == "greenest":
        out.append(f"carbon ~{t.carbon_g:.3g} g CO2 at {pool.carbon_g_per_kwh:g} g/kWh")
    if task.tiers:
        out.append(f"spillover tier {tier % task.spill_tiers() + 1} of {len(task.tiers)}")
    return out


def _size(nbytes: int) -> str:
    value = float(nbytes)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.3g} {unit}"
        value /= 1000
    return f"{nbytes} B"


def _ordinal(n: int) -> str:
    """Give "" for 1, else "2nd ", "3rd ", "11th " ..., to put in front of "cheapest"."""
    if n == 1:
        return ""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix} "


def _money(value: float) -> str:
    """Render a display price: two decimals, or two significant digits below 0.01."""
    if value == 0 or abs(value) >= 0.01:
        return f"{value:.2f}"
    return f"{value:.2g}"
