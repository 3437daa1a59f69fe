"""The task service: submitting and cancelling tasks, written once for both front doors.

The native router (``/v1/tasks``) and the GA4GH TES router (``/ga4gh/tes/v1``) parse their own
wire formats into a :class:`~cpnet.tasks.model.TaskSpec`, authorise the caller, and call these
functions; what a submission or a cancel *means* — what a new task may not ask for, how its work
in SCU-hours is fixed from a reference pool, the transaction, and whom to wake — lives here.
Each function is synchronous (the store is): async routes call it in a worker thread.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError

from cpnet.auth.model import Principal
from cpnet.errors import DomainError, Invalid, NotFound
from cpnet.hub import market
from cpnet.hub import secrets as hub_secrets
from cpnet.hub.scheduling import pool_view, request_from_dict
from cpnet.hub.service import Hub
from cpnet.limits.ssrf import STRICT, UrlRule, literal_refusal
from cpnet.market import charge, quotes
from cpnet.measure.scu import work_scu_hours
from cpnet.sched import PoolView, rank
from cpnet.store import audit, ledger, registry
from cpnet.store import prices as price_store
from cpnet.store import quotas as quota_store
from cpnet.store import quotes as quote_store
from cpnet.store import secrets as secret_store
from cpnet.store import tasks as store
from cpnet.tasks import secrets as task_secrets
from cpnet.tasks import wildcards
from cpnet.tasks.model import BLOB_URL_PREFIX, TaskSpec, TaskView

log = logging.getLogger("cpnet.hub.tasks")
NOTE_PREFIX = "tes: "  # the task events that hold warnings given at creation (TES shows them)


@dataclass(frozen=True, slots=True)
class Submitted:
    """A submission's outcome: the task, and whether this call created it (False: a repeated
    idempotency key found the original)."""

    id: str
    created: bool
    view: TaskView | None  # None unless asked for


def check_new(spec: TaskSpec, rule: UrlRule = STRICT) -> None:
    """What a new task may not ask for though the schema reads it (stored tasks stay readable):
    TES wildcard outputs the agent could not stage; http(s) URLs whose host is a literal
    loopback, link-local or private address the hub's `rule` does not allow (the agent checks
    names, after resolving them, and every redirect). Invalid (400) naming the field."""
    problem = wildcards.first_problem(spec.outputs)
    if problem is not None:
        raise Invalid(f"{problem[0]}: {problem[1]}", field=problem[0])
    urls = [(f"inputs[{n}].url", i.url) for n, i in enumerate(spec.inputs)]
    urls += [(f"outputs[{n}].url", o.url) for n, o in enumerate(spec.outputs)]
    for field, url in urls:
        why = literal_refusal(url, rule) if url else None
        if why is not None:
            raise Invalid(
                f"{field}: {why}: this hub takes no URL naming a loopback, link-local, "
                "private, multicast or reserved address unless its operator allows it "
                "(CPNET_ALLOW_PRIVATE_URLS); use a public address or a name",
                field=field,
                code="url_not_allowed",
            )


def with_scu_hours(h: Hub, spec: TaskSpec) -> TaskSpec:
    """`spec` with work.scu_hours fixed from its reference pool's SCU rate, when the task gives
    a reference run time instead of the work itself (fixed at submission: later measurements of
    the pool do not change it). Invalid naming ``work.reference_pool`` when that cannot be done."""
    work = spec.work
    if work is None or work.scu_hours is not None:
        return spec
    assert work.reference_pool and work.reference_runtime_s  # the model insists on both
    field = "work.reference_pool"
    try:
        with h.store.read() as s:
            rec = registry.get_pool(s, work.reference_pool)
    except NotFound:
        raise Invalid(
            f"no pool {work.reference_pool!r} to take as reference", field=field
        ) from None
    rate = (rec.capacity or {}).get("scu", {}).get(work.profile, 0.0)
    if rate <= 0:
        raise Invalid(
            f"reference pool {rec.id} has no SCU rate for profile {work.profile!r} (its hardware "
            "is not in the catalogue and it has not been measured); give work.scu_hours instead",
            field=field,
        )
    hours = work_scu_hours(work.reference_runtime_s, rate)
    return spec.model_copy(update={"work": work.model_copy(update={"scu_hours": hours})})


def with_input_sizes(h: Hub, spec: TaskSpec) -> TaskSpec:
    """`spec` with the size of each input from the hub's blob store filled in, so the scheduler
    can count its staging time (other URLs keep the size the user gave, if any)."""
    inputs = list(spec.inputs)
    changed = False
    for n, i in enumerate(inputs):
        if i.size_bytes is None and i.url and i.url.startswith(BLOB_URL_PREFIX):
            size = h.blobs.size(i.url[len(BLOB_URL_PREFIX) :])
            if size is not None:
                inputs[n] = i.model_copy(update={"size_bytes": size})
                changed = True
    return spec.model_copy(update={"inputs": inputs}) if changed else spec


VIEWS_TTL_S = 1.0  # how long hold_for reuses its snapshot of the pools' prices and states
_views: weakref.WeakKeyDictionary[Hub, tuple[float, list[PoolView]]] = weakref.WeakKeyDictionary()


def _pool_views(h: Hub, now: float) -> list[PoolView]:
    """Every unretired pool as the scheduler sees it (without its recent record), reused for
    VIEWS_TTL_S: a burst of submissions reads the pools once, not once per task."""
    cached = _views.get(h)
    if cached is not None and 0 <= now - cached[0] < VIEWS_TTL_S:
        return cached[1]
    with h.store.read() as s:
        books = price_store.entries_in_force(s, now)
        views = [
            pool_view(p, site, book=books.get(p.id, ()), now=now)
            for p, site in registry.live_pools(s, online_only=False)
        ]
    _views[h] = (now, views)
    return views


def hold_for(h: Hub, spec: TaskSpec, now: float) -> int:
    """The hold a new task takes, in minor units (docs/market.md): its budget if it gives one,
    else the largest cost the scheduler predicts over the online pools that could run it, times
    the hub's margin; when none could yet, the dearest known pool's price of its demand for its
    expected run time, times the margin; never below the hub's minimum."""
    req = request_from_dict("new", spec.model_dump(mode="json", exclude_none=True), now=now)
    if req.budget is not None:
        return charge.hold_amount((), h.settings.hold_margin, h.settings.min_hold, req.budget)
    views = _pool_views(h, now)
    placements = rank(req, [v for v in views if v.online]).placements
    costs = [p.estimated_cost for p in placements] or [
        v.price.hourly(req.demand) * req.expected_runtime_s / 3600.0 for v in views
    ]
    return charge.hold_amount(costs, h.settings.hold_margin, h.settings.min_hold)


@dataclass(slots=True)
class _Prepared:
    """A checked submission, ready for its transaction: the spec as stored (secrets taken out),
    the values to seal, the quote's hash of it, and the hold it takes."""

    spec: TaskSpec
    sealed_values: dict
    quoted: str | None
    amount: int


def _prepare(h: Hub, spec: TaskSpec, now: float) -> _Prepared:
    """Everything about a submission that needs no transaction; DomainError (4xx) naming the
    field when the task may not be created."""
    check_new(spec, h.settings.allow_private_urls)
    if spec.data_key == task_secrets.PLACEHOLDER:
        raise Invalid(
            f"data_key: {task_secrets.PLACEHOLDER!r} is how the hub shows a data key; give the key "
            "itself (`cpnet data key` makes one)",
            field="data_key",
        )
    dumped = spec.model_dump(mode="json", exclude_none=True)
    sealed_values: dict = {}
    if task_secrets.has_secrets(dumped):
        # Stored, shown and quoted without the values; they are sealed beside the task.
        dumped, sealed_values = task_secrets.split(dumped)
        spec = TaskSpec.model_validate(dumped)
    quoted = None
    if spec.quote_id is not None:
        quoted = quotes.spec_hash(dumped)
    elif spec.quote_option is not None:
        raise Invalid("quote_option needs a quote_id", field="quote_option")
    spec = with_input_sizes(h, with_scu_hours(h, spec))
    return _Prepared(spec, sealed_values, quoted, hold_for(h, spec, now))


def _create(  # type: ignore[no-untyped-def]
    s, h: Hub, who: Principal, p: _Prepared, notes: Sequence[str], now: float
) -> tuple:
    """The submission's writes, in the caller's transaction `s`: the task (or the one its
    idempotency key made before), its sealed secrets, the quota check, the hold, the notes.
    Returns (task, created)."""
    spec, amount = p.spec, p.amount
    if p.quoted is not None and not _repeated(s, who, spec):
        row, spec, use = market.bind(s, who, spec, p.quoted, now)
        # a quoted task holds its quote's max charge × the margin, so that an overrun at the
        # quote's rate can be paid (docs/market.md)
        amount = charge.hold_amount((use.max_charge,), h.settings.hold_margin, h.settings.min_hold)
        task, created = store.create_task(s, who, spec, now)
        if created:
            quote_store.mark_used(s, row, task.id, spec.quote_option or 1, use, now)
            store.note(
                s,
                task,
                now,
                f"quote {row.id} option {spec.quote_option}: on pool {use.pool_id}, charged "
                f"at most {use.max_charge:.6g} {use.currency} as stated, "
                f"{use.overrun_rate:.6g} per extra {use.overrun_unit}",
            )
    else:
        task, created = store.create_task(s, who, spec, now)
    if created and p.sealed_values:
        key = hub_secrets.load_key(h.settings)
        secret_store.put(s, task.id, hub_secrets.seal(key, task.id, p.sealed_values), now)
    if created:
        # The organisation's quotas (429 naming the one passed); a refused task is rolled back
        # with this transaction. Racing submissions are checked one at a time.
        quota_store.admit(s, task)
        # In the task's own transaction: a hold refused (402) leaves no task behind.
        ledger.open_hold(
            s, who.org_id, who.user_id, task.id, amount, h.settings.platform_fee_bps, now
        )
        for n in notes:
            store.note(s, task, now, NOTE_PREFIX + n)
    return task, created


def submit(
    h: Hub,
    who: Principal,
    spec: TaskSpec,
    *,
    notes: Sequence[str] = (),
    view: bool = True,
) -> Submitted:
    """Create a task (or find the one a repeated idempotency key names) in one transaction, with
    `notes` (warnings for its owner, recorded as events) on a new one; wake the scheduler."""
    now = time.time()
    prepared = _prepare(h, spec, now)
    with h.store.tx() as s:
        # A plain one the way a batch is created (fewer, prebuilt statements), else in full.
        plain = not notes and _plain(prepared)
        made = _create_together(s, h, who, [prepared], now) if plain else None
        if made is not None and made[0][1]:  # made now: shown without reading it back
            tid, created = made[0]
            shown = store.new_task_view(tid, who, prepared.spec, now) if view else None
        else:
            if made is not None:  # its idempotency key found the task made before
                task, created = store.task_by_id(s, made[0][0]), False
            else:
                task, created = _create(s, h, who, prepared, notes, now)
            tid = task.id
            shown = store.task_view(s, task, [] if created else None) if view else None
    if created:
        h.wake_scheduler()
        # Its trace id is this request's: every later line about the task carries it.
        trace = audit.request_id()
        log.info("task created", extra={"task_id": tid, "trace_id": trace, "org_id": who.org_id})
    return Submitted(tid, created, shown)


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    """One item of a batch: the task it made or found, or the error that refused it."""

    index: int
    status: int  # 201 created, 200 found by its idempotency key, else the item's 4xx
    id: str | None = None
    error: DomainError | None = None


def submit_many(
    h: Hub, who: Principal, items: Sequence[TaskSpec | DomainError]
) -> list[ItemOutcome]:
    """Create many tasks in one transaction: each item is created (or found by its idempotency
    key) or refused on its own — an invalid item, a quota or a hold it does not pass gets its
    own error and leaves no trace (a savepoint per item), and the others are still created.
    `items` holds the specs, or the error an item already failed with when it was parsed. The
    scheduler is woken once."""
    now = time.time()
    out: list[ItemOutcome | None] = [None] * len(items)
    ready: list[tuple[int, _Prepared]] = []
    for i, item in enumerate(items):
        if isinstance(item, DomainError):
            out[i] = ItemOutcome(i, item.status, error=item)
            continue
        try:
            ready.append((i, _prepare(h, item, now)))
        except DomainError as exc:
            out[i] = ItemOutcome(i, exc.status, error=exc)
    created_any = False
    if ready:
        with h.store.tx() as s:
            if all(_plain(p) for _, p in ready):
                made = _create_together(s, h, who, [p for _, p in ready], now)
                if made is not None:
                    for (i, _), (tid, created) in zip(ready, made, strict=True):
                        created_any = created_any or created
                        out[i] = ItemOutcome(i, 201 if created else 200, id=tid)
                    ready = []
            for i, prepared in ready:
                queued = audit.mark(s)
                try:
                    with s.begin_nested():
                        task, created = _create(s, h, who, prepared, (), now)
                except DomainError as exc:
                    audit.rollback_to(s, queued)  # no record of what the savepoint undid
                    out[i] = ItemOutcome(i, exc.status, error=exc)
                    continue
                created_any = created_any or created
                out[i] = ItemOutcome(i, 201 if created else 200, id=task.id)
    if created_any:
        h.wake_scheduler()
        made_now = [x.id for x in out if x is not None and x.status == 201]
        log.info(
            "%d tasks created in one batch (first %s, last %s)",
            len(made_now),
            made_now[0],
            made_now[-1],
            extra={"count": len(made_now), "trace_id": audit.request_id(), "org_id": who.org_id},
        )
    return [x for x in out if x is not None]


def _plain(p: _Prepared) -> bool:
    """Whether a submission needs nothing but the task, its quota check and its hold."""
    return p.quoted is None and not p.sealed_values


def _create_together(  # type: ignore[no-untyped-def]
    s, h: Hub, who: Principal, items: list[_Prepared], now: float
) -> list[tuple[str, bool]] | None:
    """Plain submissions (`_plain`) created with a few statements for all of them: their tasks
    (store.create_tasks), one quota check (quotas.admit_many) and their holds
    (ledger.open_holds), in a savepoint of `s`. None, with nothing left behind, when the batch
    does not pass together — a quota, a hold, a spending limit, or an idempotency key taken by
    a concurrent request — and each item must be created, or refused, on its own."""
    queued = audit.mark(s)
    try:
        with s.begin_nested():
            made = store.create_tasks(s, who, [p.spec for p in items], now)
            new = [(tid, p) for (tid, created), p in zip(made, items, strict=True) if created]
            if new:
                quota_store.admit_many(
                    s,
                    who.org_id,
                    sum(p.spec.resources.cpu_cores for _, p in new),
                    sum(p.spec.resources.gpus for _, p in new),
                    len(new),
                )
                holds = [(tid, p.amount) for tid, p in new]
                fee = h.settings.platform_fee_bps
                if not ledger.open_holds(s, who.org_id, who.user_id, holds, fee, now):
                    raise _OneByOne
    except (DomainError, IntegrityError, _OneByOne):
        audit.rollback_to(s, queued)
        return None
    return made


class _OneByOne(Exception):
    """The batch must be created item by item (see _create_together)."""


def _repeated(s, who: Principal, spec: TaskSpec) -> bool:  # type: ignore[no-untyped-def]
    """Whether the spec's idempotency key already made a task (a retried submission with a
    quote finds its task instead of being told the quote is used)."""
    key = spec.idempotency_key
    return key is not None and store.by_idempotency_key(s, who, key) is not None


def cancel(h: Hub, who: Principal, task_id: str) -> TaskView:
    """Cancel a task the caller may see: a queued one ends CANCELED at once, a running one goes
    CANCELING until its agent stops it, a finished one is left as it is. Wakes the sites that
    must stop an attempt, and the scheduler (capacity may be free)."""
    with h.store.tx() as s:
        task = store.get_task(s, who, task_id)
        sites = store.cancel_task(s, task, time.time())
        shown = store.task_view(s, task)
    h.wake_sites(sites)
    h.wake_scheduler()
    h.tasks_changed()
    return shown
