"""The hub's scheduling pass: snapshot the store, call the pure scheduler, persist placements."""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from cpnet.market import charge, prices
from cpnet.network import HUB, NetworkMap, shipped, site_place, url_place
from cpnet.sched import (
    Decision,
    PoolView,
    Price,
    Resources,
    TaskRequest,
    assign,
    history,
    joint,
    rank,
)
from cpnet.sched.score import used_share
from cpnet.store import leases as lease_store
from cpnet.store import network as network_store
from cpnet.store import prices as price_store
from cpnet.store import registry as reg
from cpnet.store import sla as sla_store
from cpnet.store import tasks as tasks_store
from cpnet.store.db import Store
from cpnet.store.tables import Pool, Site, Task
from cpnet.tasks.model import BLOB_URL_PREFIX
from cpnet.tasks.model import Resources as TaskResources

BATCH = 500  # queued tasks considered per pass
# A greedy pass reads the queue this many tasks first, doubling while every task read is placed:
# a pass woken by one finished task (room for one more) then converts a few queued specs, not
# BATCH of them (that made a long queue cost O(queue) per completion: docs/benchmarks.md).
FIRST_READ = 32
HISTORY_S = 900.0  # a pool's record: the attempts placed on it in the last 15 minutes
# A scheduling pass reuses the pools' record for this long: reading and folding 15 minutes of
# attempts (up to 5,000 rows) on every pass was a cost per pass that grew with the throughput.
HISTORY_REFRESH_S = 5.0
_HISTORY: weakref.WeakKeyDictionary[Any, tuple[float, dict[str, history.PoolHistory]]] = (
    weakref.WeakKeyDictionary()
)

log = logging.getLogger(__name__)


def pool_view(
    p: Pool,
    site: Site,
    past: history.PoolHistory = history.NONE,
    book: Sequence[prices.Entry] = (),
    now: float = 0.0,
    reputation: float | None = None,
) -> PoolView:
    """A store row, and the pool's recent record, as the scheduler's plain-data view.

    Its failure rate (the risk term) is 1 − its ``reputation`` score once the hub's SLA sweep
    has scored it (market/reputation.py), so the scheduler, quotes and explain see one figure;
    until then its recent record's share of system errors stands in.

    Its price is the on-demand entry of the pool's price ``book`` in force at ``now``, with the
    entry's dynamic rule applied at the pool's utilisation (``score.load_fraction``); without
    one, the price its agent declared.
    """
    desc = p.descriptor
    declared = desc.get("price", {})
    carbon, _ = shipped().carbon(site.region_code)
    total = Resources(p.total_cpu, p.total_ram, p.total_disk, p.total_gpus)
    available = Resources(
        max(0.0, p.total_cpu - p.reserved_cpu),
        max(0.0, p.total_ram - p.reserved_ram),
        max(0.0, p.total_disk - p.reserved_disk),
        max(0, p.total_gpus - p.reserved_gpus),
    )
    price = Price(
        currency=declared.get("currency", "CNY"),
        cpu_core_hour=declared.get("cpu_core_hour", 0.0),
        ram_gb_hour=declared.get("ram_gb_hour", 0.0),
        gpu_hour=declared.get("gpu_hour", 0.0),
    )
    if book:
        use = used_share(total, available)
        price = prices.price_at(book, now, use, gpu_model=p.gpu_model, default=price) or price
    return PoolView(
        id=p.id,
        site_id=site.id,
        provider_id=site.provider_id,
        name=p.name,
        type=p.type,
        region_code=site.region_code,
        labels=tuple(sorted(desc.get("labels", {}).items())),
        total=total,
        available=available,
        gpu_model=p.gpu_model,
        queue_length=p.queue_length,
        running=p.running,
        price=price,
        online=p.online,
        can_run_images=bool(desc.get("can_run_images", False)),
        scu=tuple(sorted((p.scu or {}).items())),
        place=site_place(site.id),
        recent_wait_s=past.wait_s,
        recent_runtime_s=past.runtime_s,
        failure_rate=past.failure_rate if reputation is None else 1.0 - reputation,
        reputation=reputation,
        carbon_g_per_kwh=carbon,
    )


def pool_views(
    s: Session, now: float, online_only: bool = True, *, cached_history: bool = False
) -> list[PoolView]:
    """Every live pool as the scheduler sees it, with its recent record and its price at now;
    `cached_history`: the record as read at most HISTORY_REFRESH_S ago (a scheduling pass)."""
    return pool_views_and_records(s, now, online_only, cached_history=cached_history)[0]


def recent_history(s: Session, now: float) -> dict[str, history.PoolHistory]:
    """Each pool's recent record, read and folded again at most every HISTORY_REFRESH_S (per
    database: passes run in threads, and two reading it at once only read it twice)."""
    engine = s.get_bind()
    got = _HISTORY.get(engine)
    if got is None or not got[0] <= now < got[0] + HISTORY_REFRESH_S:
        got = (now, history.of(tasks_store.recent_attempts(s, now - HISTORY_S)))
        _HISTORY[engine] = got
    return got[1]


def pool_views_and_records(
    s: Session, now: float, online_only: bool = True, *, cached_history: bool = False
) -> tuple[list[PoolView], dict[str, history.PoolHistory]]:
    """``pool_views``, and each pool's recent record."""
    if cached_history:
        past = recent_history(s, now)
    else:
        past = history.of(tasks_store.recent_attempts(s, now - HISTORY_S))
    books = price_store.entries_in_force(s, now)
    scores = sla_store.scores(s)
    views = [
        pool_view(p, site, past.get(p.id, history.NONE), books.get(p.id, ()), now, scores.get(p.id))
        for p, site in reg.live_pools(s, online_only=online_only)
    ]
    return views, past


def network_map(s: Session, now: float) -> NetworkMap:
    """The network map the scheduler estimates staging and latency with: the agents' measured
    samples, declared links, and where sites (and the hub) lie (store/network.py)."""
    return network_store.load_map(s, now)


_RES = TaskResources.model_fields


def _inputs(spec: dict) -> tuple[tuple[str, int], ...]:
    """(place, bytes) of each input whose size is known: the hub's blobs live at the hub."""
    out = []
    for i in spec.get("inputs", ()):
        url, size = i.get("url"), i.get("size_bytes")
        if not url or size is None:
            continue
        place = HUB if url.startswith(BLOB_URL_PREFIX) else url_place(url)
        if place is not None:
            out.append((place, int(size)))
    return tuple(out)


def _seconds_until(iso: str | None, now: float) -> float | None:
    return None if iso is None else datetime.fromisoformat(iso).timestamp() - now


def request_from_dict(
    task_id: str, spec: dict, avoid: tuple[str, ...] = (), now: float = 0.0
) -> TaskRequest:
    """`task_request` over the stored spec dict, without re-validating it (it was, on create).

    The scheduler reads hundreds of queued specs per pass; pydantic validation of each one was
    most of a pass's cost. Defaults come from the model, so the two paths cannot disagree.
    ``now`` turns the task's deadline into seconds from now.
    """
    r = spec.get("resources", {})
    c = spec.get("constraints", {})
    latency = c.get("latency")

    def res(key: str):  # type: ignore[no-untyped-def]
        return r.get(key, _RES[key].default)

    return TaskRequest(
        id=task_id,
        demand=Resources(res("cpu_cores"), res("ram_gb"), res("disk_gb"), res("gpus")),
        gpu_model=r.get("gpu_model"),
        regions=tuple(c.get("regions", ())) + tuple(r.get("zones", ())),
        providers=tuple(p.lower() for p in c.get("providers", ())),
        pools=tuple(p.lower() for p in c.get("pools", ())),
        pool_types=tuple(c.get("pool_types", ())),
        labels=tuple(sorted(c.get("labels", {}).items())),
        avoid_pools=avoid,
        expected_runtime_s=spec.get("expected_runtime_s", 600.0),
        profile=(spec.get("work") or {}).get("profile"),
        work_scu_h=(spec.get("work") or {}).get("scu_hours"),
        image=next((e["image"] for e in spec.get("executors", ()) if e.get("image")), None),
        inputs=_inputs(spec),
        deadline_s=_seconds_until(c.get("deadline"), now),
        budget=c.get("budget"),
        latency=(latency["to"], latency["max_rtt_ms"]) if latency else None,
        latency_fallback_ms=latency.get("fallback_max_rtt_ms") if latency else None,
        deny_providers=tuple(p.lower() for p in c.get("deny_providers", ())),
        objective=spec.get("objective", "balanced"),
        tiers=tuple(tuple(tier) for tier in c.get("spillover", ())),
    )


@dataclass(frozen=True, slots=True)
class PassResult:
    placed: int
    sites: frozenset[str]  # sites that got new work
    waiting: int  # queued tasks that found no room


def _has_room(views: dict[str, PoolView]) -> bool:
    return any(v.available.cpu_cores > 0 for v in views.values())


def schedule_once(
    store: Store,
    now: float,
    batch: int = BATCH,
    *,
    joint_time_limit_s: float | None = None,
) -> PassResult:
    """One pass: place as many queued tasks as fit, oldest first, in one transaction.

    The queue is read a few tasks at a time (FIRST_READ, doubling while all of a read fits, at
    most `batch`) until it ends or no pool has room left, so tasks that cannot be placed (a
    region no pool serves) never block the ones behind them, and a pass with room for one task
    reads a few, not the whole queue. ``waiting`` counts the tasks read that found no room. With
    ``joint_time_limit_s`` set, each read is placed jointly (``sched.joint``) within that
    limit; else greedily, one task after another (``sched.assign``).
    """
    placed, sites, waiting = 0, set(), 0
    # Joint placement optimises over everything it reads, so it reads `batch` at once.
    read = batch if joint_time_limit_s is not None else min(batch, FIRST_READ)
    with store.tx() as s:
        if not tasks_store.any_waiting(s):
            # Nothing waits: skip the snapshot of every pool (at 10,000 pools it costs more
            # than a second of CPU, and an idle hub would pay it on every wake-up).
            return PassResult(0, frozenset(), 0)
        placed, sites, leased, snapshot = lease_pass(s, now, batch)
        if not reg.any_room(s):
            # No pool has a free core: reading the queue (specs and all) could place nothing.
            # Without this, every submission to a full or empty hub paid a read of the queue.
            return PassResult(placed, frozenset(sites), 0)
        queued = tasks_store.queued_tasks(s, read)
        if not queued:
            return PassResult(placed, frozenset(sites), 0)
        views = (
            snapshot
            if snapshot is not None
            else {v.id: v for v in pool_views(s, now, cached_history=True)}
        )
        for pool_id, held in leased.items():  # leased and unused: nobody else's to take
            if pool_id in views:
                v = views[pool_id]
                views[pool_id] = replace(v, available=_less(v.available, held))
        network = network_map(s, now) if views else None
        after = None
        done: list[tuple[tasks_store.QueuedTask, str, str, str]] = []
        while _has_room(views):  # else nothing can be placed: skip reading the queue
            if after is not None:
                queued = tasks_store.queued_tasks(s, read, after_seq=after)
            if not queued:
                break
            placed_before = placed
            after = queued[-1].seq
            requests = [
                request_from_dict(
                    t.id,
                    t.spec,
                    tuple(tasks_store.failed_pools(s, t.id)) if t.attempts else (),
                    now,
                )
                for t in queued
            ]
            by_id = {t.id: t for t in queued}
            chosen: list[tasks_store.Placement] = []
            for req, decision, pool_id in _assign(requests, views, network, joint_time_limit_s):
                if pool_id is None:
                    waiting += 1
                    continue
                best = decision.best
                why = "; ".join(best.reasons[:2]) if best else ""
                view = views[pool_id]
                price = charge.attempt_price(
                    view.price,
                    profile=req.profile,
                    work_scu_h=req.work_scu_h,
                    scu_rate=view.scu_rate(req.profile) if req.profile else None,
                )
                chosen.append(
                    tasks_store.Placement(
                        by_id[req.id], pool_id, view.site_id, req.demand, why, price
                    )
                )
                views[pool_id] = replace(view, available=view.available - req.demand)
            # Written together: one reservation per pool, one statement per table.
            for p, attempt in zip(chosen, tasks_store.place_many(s, chosen, now), strict=True):
                if attempt is None:  # the pool lost room, or the task changed, meanwhile
                    waiting += 1
                    v = views[p.pool_id]
                    views[p.pool_id] = replace(v, available=v.available + p.demand)
                    continue
                done.append((p.task, attempt, p.pool_id, p.site_id))
                placed += 1
                sites.add(p.site_id)
            if len(queued) < read:
                break
            if placed - placed_before == len(queued):
                read = min(batch, 2 * read)  # all of it fitted: read more at once
    # Committed: say so, one line per placement (telemetry/logs.py).
    if log.isEnabledFor(logging.INFO):
        for task, attempt_id, pool_id, site_id in done:
            log.info(
                "task placed on %s",
                pool_id,
                extra={
                    "task_id": task.id,
                    "attempt_id": attempt_id,
                    "pool_id": pool_id,
                    "site_id": site_id,
                    "trace_id": task.trace_id,
                },
            )
    return PassResult(placed, frozenset(sites), waiting)


def _less(a: Resources, b: Resources) -> Resources:
    """``a − b``, never below zero in any resource."""
    d = a - b
    return Resources(max(0.0, d.cpu_cores), max(0.0, d.ram_gb), max(0.0, d.disk_gb), max(0, d.gpus))


def _least(a: Resources, b: Resources) -> Resources:
    """The smaller of ``a`` and ``b`` in each resource."""
    return Resources(
        min(a.cpu_cores, b.cpu_cores),
        min(a.ram_gb, b.ram_gb),
        min(a.disk_gb, b.disk_gb),
        min(a.gpus, b.gpus),
    )


FREE = Price(cpu_core_hour=0.0, ram_gb_hour=0.0, gpu_hour=0.0)  # a lease's tasks: paid already


def lease_pass(
    s: Session, now: float, batch: int
) -> tuple[int, set[str], dict[str, Resources], dict[str, PoolView] | None]:
    """Place the queued tasks of organisations holding live leases on those leases first.

    Each organisation's tasks, oldest first, are assigned (``sched.assign``, the same
    feasibility as any placement) over views of the pools it leases whose room is the lease's
    unused part (never more than the pool has free) and whose price is nil (the lease pays); a
    task placed there records the lease on its attempt. Returns how many were placed, the sites
    that got work, per pool what live leases hold and their tasks do not use (the rest of the
    pass keeps that from everyone: docs/market.md, "Auctions and leases"), and the pool views
    it took, less what it placed, for the rest of the pass to reuse (None: it took none).
    """
    live = lease_store.live(s, now)
    if not live:
        return 0, set(), {}, None
    unused = {lease.id: _less(lease.resources, used) for lease, used in live}
    placed, sites = 0, set()
    views: dict[str, PoolView] | None = None
    queued = lease_store.queued_of(s, sorted({lease.org_id for lease, _ in live}), batch)
    if queued:
        views = {v.id: v for v in pool_views(s, now, cached_history=True)}
        network = network_map(s, now)
        for org in sorted({o for o, _ in queued}):
            own = [lease for lease, _ in live if lease.org_id == org and lease.pool_id in views]
            room: dict[str, Resources] = {}
            for lease in own:
                room[lease.pool_id] = room.get(lease.pool_id, Resources()) + unused[lease.id]
            lease_views = [
                replace(
                    views[pid],
                    available=_least(views[pid].available, r),
                    price=replace(FREE, currency=views[pid].price.currency),
                )
                for pid, r in room.items()
            ]
            tasks = {t.id: t for o, t in queued if o == org}
            requests = [
                request_from_dict(
                    t.id,
                    t.spec,
                    tuple(tasks_store.failed_pools(s, t.id)) if t.attempts else (),
                    now,
                )
                for t in tasks.values()
            ]
            for req, _decision, pool_id in assign(requests, lease_views, keep=1, network=network):
                if pool_id is None:
                    continue  # the normal pass tries it
                lease = next(
                    (x for x in own if x.pool_id == pool_id and req.demand.fits_in(unused[x.id])),
                    None,
                )
                if lease is None:
                    continue  # fits the leases together but no single one
                view = views[pool_id]
                attempt = tasks_store.place(
                    s,
                    tasks[req.id],
                    pool_id,
                    view.site_id,
                    req.demand,
                    now,
                    f"on lease {lease.id}",
                    # nil: the lease pays for these resources (store/ledger.metered skips it)
                    price=charge.attempt_price(replace(FREE, currency=view.price.currency)),
                    lease_id=lease.id,
                )
                if attempt is None:
                    continue
                unused[lease.id] = _less(unused[lease.id], req.demand)
                views[pool_id] = replace(view, available=view.available - req.demand)
                placed += 1
                sites.add(view.site_id)
    held: dict[str, Resources] = {}
    for lease, _ in live:
        held[lease.pool_id] = held.get(lease.pool_id, Resources()) + unused[lease.id]
    return placed, sites, held, views


def _assign(
    requests: list[TaskRequest],
    views: dict[str, PoolView],
    network: NetworkMap | None,
    joint_time_limit_s: float | None,
) -> list[tuple[TaskRequest, Decision, str | None]]:
    """Place one read of the queue: jointly when a time limit is given, else greedily."""
    if joint_time_limit_s is None:
        return assign(requests, list(views.values()), keep=1, network=network)
    rows, result = joint.assign(
        requests, list(views.values()), keep=1, time_limit_s=joint_time_limit_s, network=network
    )
    if result.method == joint.GREEDY:
        log.warning("joint assignment of %d tasks fell back: %s", len(requests), result.reason)
    return rows


def explain(s: Session, task: Task) -> Decision:
    """The current ranking of every pool for a task (the same function the loop uses)."""
    return explain_with_runtimes(s, task)[0]


def explain_with_runtimes(s: Session, task: Task) -> tuple[Decision, dict[str, float | None]]:
    """``explain``, and the predicted run time (s) of the task on every pool (None: unknown).

    Run times are predicted only for tasks that state their work in SCU-hours.
    """
    now = time.time()
    live = pool_views(s, now, online_only=False)
    avoid = tuple(tasks_store.failed_pools(s, task.id)) if task.attempts else ()
    req = request_from_dict(task.id, task.spec, avoid, now)
    runtimes: dict[str, float | None] = {}
    if req.work_scu_h is not None:
        for view in live:
            runtime_s, predicted = req.runtime_on(view)
            runtimes[view.id] = runtime_s if predicted else None
    return rank(req, live, network=network_map(s, now)), runtimes
