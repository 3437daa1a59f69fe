"""Tasks, attempts and events in the store.

Every function here runs inside the caller's transaction, so a state change, its event and any
capacity it reserves or releases commit together or not at all.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from sqlalchemy import Update, bindparam, insert, select
from sqlalchemy import update as _sql_update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from cpnet.audit.chain import digest_of
from cpnet.auth.model import Principal, Role
from cpnet.errors import Invalid, NotFound, new_id
from cpnet.market.metering import Judgement, Observed
from cpnet.sched import Resources
from cpnet.store import audit, ledger, usage
from cpnet.store.registry import ts
from cpnet.store.tables import Attempt, AttemptTransfer, Pool, Task, TaskEvent
from cpnet.tasks import lifecycle
from cpnet.tasks.lifecycle import (
    ACTIVE_ATTEMPT,
    AgentReport,
    AttemptChange,
    AttemptFacts,
    Changes,
    StopRequest,
    TaskFacts,
    TaskMove,
    TaskNote,
)
from cpnet.tasks.model import (
    AttemptProgress,
    AttemptUpdate,
    AttemptView,
    ExecutorLog,
    OutputFileLog,
    TaskSpec,
    TaskView,
    TransferRecord,
    Usage,
)
from cpnet.tasks.model import TaskEvent as TaskEventView
from cpnet.tasks.states import State


def update(model: type) -> Update:
    """An UPDATE that does not scan the session's objects to keep them in step.

    The default ("evaluate") visits every loaded object per statement, which made a scheduling
    pass over 500 queued tasks quadratic; the callers here set the attributes they change.
    """
    return _sql_update(model).execution_options(synchronize_session=False)


EPS = 1e-9  # float slack when comparing reserved capacity with totals


def _event(
    s: Session,
    task_id: str,
    now: float,
    frm: str | None,
    to: str,
    reason: str | None,
    attempt: int | None = None,
    later: _Deferred | None = None,
) -> None:
    # One statement built once, run on the connection: an ORM object would make the next
    # statement flush the unit of work, and Session.execute of a fresh INSERT … VALUES costs
    # ~8× the connection's execute of a prepared one (its cache key, the ORM's bulk path).
    # With `later` (a batch of reports), all of the batch's events go in one statement.
    row = {
        "task_id": task_id,
        "at": now,
        "from_state": frm,
        "to_state": to,
        "reason": reason,
        "attempt": attempt,
    }
    if later is not None:
        later.events.append(row)
    else:
        s.connection().execute(_INSERT_EVENT, row)


_T = Task.__table__
_INSERT_TASK = insert(_T)
_BY_KEYS = select(_T.c.idempotency_key, _T.c.id).where(
    _T.c.org_id == bindparam("b_org"),
    _T.c.idempotency_key.in_(bindparam("b_keys", expanding=True)),
)
_P = Pool.__table__
_INSERT_ATTEMPT = insert(Attempt.__table__)
# Reserve capacity on a pool only if it has room (see place): one conditional UPDATE.
_RESERVE = (
    _sql_update(_P)
    .where(
        _P.c.id == bindparam("b_pool"),
        _P.c.online.is_(True),
        _P.c.reserved_cpu + bindparam("b_cpu") <= _P.c.total_cpu + EPS,
        _P.c.reserved_ram + bindparam("b_ram") <= _P.c.total_ram + EPS,
        _P.c.reserved_disk + bindparam("b_disk") <= _P.c.total_disk + EPS,
        _P.c.reserved_gpus + bindparam("b_gpus") <= _P.c.total_gpus,
    )
    .values(
        reserved_cpu=_P.c.reserved_cpu + bindparam("b_cpu"),
        reserved_ram=_P.c.reserved_ram + bindparam("b_ram"),
        reserved_disk=_P.c.reserved_disk + bindparam("b_disk"),
        reserved_gpus=_P.c.reserved_gpus + bindparam("b_gpus"),
    )
)
# The task takes its next attempt, if it is still queued with the attempts it was read with.
_PLACE_TASK = (
    _sql_update(_T)
    .where(
        _T.c.id == bindparam("b_id"),
        _T.c.state == State.QUEUED.value,
        _T.c.attempts == bindparam("b_n"),
    )
    .values(
        attempts=bindparam("b_next"),
        pool_id=bindparam("b_pool"),
        updated_at=bindparam("b_at"),
        reason=bindparam("b_why"),
    )
)
_INSERT_EVENT = insert(TaskEvent.__table__)
# Compare-and-set of a task's state (see _move); bound names differ from the columns'.
_MOVE = (
    _sql_update(_T)
    .where(_T.c.id == bindparam("b_id"), _T.c.state == bindparam("b_frm"))
    .values(state=bindparam("b_to"), reason=bindparam("b_reason"), updated_at=bindparam("b_at"))
)


# ---- create, read, list ----


def create_tasks(
    s: Session, who: Principal, specs: Sequence[TaskSpec], now: float
) -> list[tuple[str, bool]]:
    """`create_task` for many specs at once: one query finds the idempotency keys used before
    (a key repeated inside `specs` makes one task too), one multi-row INSERT writes the new
    tasks and one their ``created`` events. Returns (task id, created) per spec, in order.
    IntegrityError when a concurrent transaction took one of the keys meanwhile: the caller
    rolls back to its savepoint and creates them one by one (which finds that task)."""
    found: dict[str, str] = {}
    keys = sorted({x.idempotency_key for x in specs if x.idempotency_key is not None})
    for chunk in _chunks(keys):
        rows = s.connection().execute(_BY_KEYS, {"b_org": who.org_id, "b_keys": chunk})
        found.update((k, tid) for k, tid in rows if k is not None)
    out: list[tuple[str, bool]] = []
    rows: list[dict[str, Any]] = []
    trace = audit.request_id()
    for spec in specs:
        key = spec.idempotency_key
        if key is not None and key in found:
            out.append((found[key], False))
            continue
        tid = new_id("tsk")
        if key is not None:
            found[key] = tid
        rows.append(
            {
                "id": tid,
                "org_id": who.org_id,
                "user_id": who.user_id,
                "name": spec.name,
                "state": State.QUEUED.value,
                "reason": None,
                "spec": spec.model_dump(mode="json", exclude_none=True),
                "tags": spec.tags,
                "idempotency_key": key,
                "pool_id": None,
                "attempts": 0,
                "max_attempts": spec.max_attempts,
                "created_at": now,
                "updated_at": now,
                "cpu_cores": spec.resources.cpu_cores,
                "gpus": spec.resources.gpus,
                "trace_id": trace,
            }
        )
        out.append((tid, True))
    if rows:
        conn = s.connection()
        conn.execute(_INSERT_TASK, rows)
        events = [
            {
                "task_id": r["id"],
                "at": now,
                "from_state": None,
                "to_state": State.QUEUED.value,
                "reason": "created",
                "attempt": None,
            }
            for r in rows
        ]
        conn.execute(_INSERT_EVENT, events)
        audit.created(s, rows[0]["id"])
    return out


def by_idempotency_key(s: Session, who: Principal, key: str) -> Task | None:
    """The caller's organisation's task made with this idempotency key, if any."""
    return s.scalar(select(Task).where(Task.org_id == who.org_id, Task.idempotency_key == key))


def create_task(s: Session, who: Principal, spec: TaskSpec, now: float) -> tuple[Task, bool]:
    """Insert a task, or return the original one for a repeated idempotency key (created=False)."""
    key = spec.idempotency_key
    if key is not None:
        existing = s.scalar(
            select(Task).where(Task.org_id == who.org_id, Task.idempotency_key == key)
        )
        if existing is not None:
            return existing, False
    task = Task(
        id=new_id("tsk"),
        org_id=who.org_id,
        user_id=who.user_id,
        name=spec.name,
        state=State.QUEUED.value,
        spec=spec.model_dump(mode="json", exclude_none=True),
        tags=spec.tags,
        idempotency_key=key,
        attempts=0,
        max_attempts=spec.max_attempts,
        created_at=now,
        updated_at=now,
        cpu_cores=spec.resources.cpu_cores,
        gpus=spec.resources.gpus,
        trace_id=audit.request_id(),
    )
    try:
        with s.begin_nested():
            s.add(task)
            s.flush()
    except IntegrityError:
        # A concurrent request with the same key won the race: return its task.
        existing = s.scalar(
            select(Task).where(Task.org_id == who.org_id, Task.idempotency_key == key)
        )
        if existing is None:
            raise
        return existing, False
    _event(s, task.id, now, None, State.QUEUED.value, "created")
    audit.created(s, task.id)
    return task, True


def note(s: Session, task: Task, now: float, text: str) -> None:
    """Record a remark about a task (e.g. an ignored TES backend parameter) as an event that
    changes no state."""
    _event(s, task.id, now, task.state, task.state, text)


def notes_of(s: Session, task_id: str, prefix: str) -> list[str]:
    """The remarks `note` recorded whose text starts with `prefix`, oldest first."""
    q = (
        select(TaskEvent.reason)
        .where(
            TaskEvent.task_id == task_id,
            TaskEvent.from_state == TaskEvent.to_state,
            TaskEvent.reason.startswith(prefix, autoescape=True),
        )
        .order_by(TaskEvent.id)
    )
    return [r for r in s.scalars(q) if r]


def task_by_id(s: Session, task_id: str) -> Task:
    """A task by id, whoever owns it (the caller decided it may see it)."""
    task = s.scalar(select(Task).where(Task.id == task_id))
    if task is None:
        raise NotFound(f"no task {task_id!r}", field="task_id")
    return task


def get_task(s: Session, who: Principal, task_id: str) -> Task:
    """A task the caller may see; another organisation's task is reported as unknown (404)."""
    task = s.scalar(select(Task).where(Task.id == task_id))
    if task is None or not who.sees(task.org_id):
        raise NotFound(f"no task {task_id!r}", field="task_id")
    return task


@dataclass(frozen=True, slots=True)
class TaskFilter:
    states: tuple[str, ...] = ()
    name_prefix: str | None = None
    tags: tuple[tuple[str, str], ...] = ()
    tag_keys: tuple[str, ...] = ()  # the tag must be present, with any value (TES tag filters)


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"s{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith("s"):
            raise ValueError(raw)
        return int(raw[1:])
    except (ValueError, UnicodeDecodeError) as exc:
        raise Invalid("cursor is not one this hub issued", field="cursor") from exc


def list_tasks(
    s: Session, who: Principal, f: TaskFilter, limit: int, cursor: str | None
) -> tuple[list[Task], str | None]:
    """The caller's tasks, newest first, one page at a time."""
    q = select(Task)
    if who.role is not Role.ADMIN:
        q = q.where(Task.org_id == who.org_id)
    if f.states:
        q = q.where(Task.state.in_(f.states))
    if f.name_prefix:
        q = q.where(Task.name.startswith(f.name_prefix, autoescape=True))
    if cursor:
        q = q.where(Task.seq < decode_cursor(cursor))
    q = q.order_by(Task.seq.desc())
    out: list[Task] = []
    # Tag filters are checked in Python so the query stays portable across SQLite and PostgreSQL.
    tagged = bool(f.tags or f.tag_keys)
    batch = max(limit + 1, 200) if tagged else limit + 1
    last_seq: int | None = None
    while len(out) <= limit:
        rows = list(
            s.scalars(
                q.limit(batch) if last_seq is None else q.where(Task.seq < last_seq).limit(batch)
            )
        )
        if not rows:
            break
        last_seq = rows[-1].seq
        out.extend(
            t
            for t in rows
            if all((t.tags or {}).get(k) == v for k, v in f.tags)
            and all(k in (t.tags or {}) for k in f.tag_keys)
        )
        if len(rows) < batch:
            break
    page = out[:limit]
    nxt = encode_cursor(page[-1].seq) if len(out) > limit else None
    return page, nxt


def attempts_of(s: Session, task_id: str) -> list[Attempt]:
    return list(s.scalars(select(Attempt).where(Attempt.task_id == task_id).order_by(Attempt.n)))


def attempt_view(a: Attempt, transfers: list[TransferRecord] | None = None) -> AttemptView:
    """One attempt as shown; `transfers` (the full view) are its per-transfer records."""
    return AttemptView(
        attempt=a.n,
        attempt_id=a.id,
        pool_id=a.pool_id,
        site_id=a.site_id,
        state=State(a.state),
        created_at=ts(a.created_at),
        start_time=ts(a.start_time),
        end_time=ts(a.end_time),
        reason=a.reason,
        executor_logs=[ExecutorLog.model_validate(x) for x in a.executor_logs or []],
        outputs=[OutputFileLog.model_validate(x) for x in a.outputs or []],
        system_logs=list(a.system_logs or []),
        usage=Usage.model_validate(a.usage) if a.usage else None,
        progress=AttemptProgress.model_validate(a.progress) if a.progress else None,
        transfers=transfers,
        transfers_omitted=a.transfers_omitted,
    )


def transfers_of(s: Session, attempt_ids: list[str]) -> dict[str, list[TransferRecord]]:
    """The per-transfer records of these attempts, in the order they were moved."""
    out: dict[str, list[TransferRecord]] = {aid: [] for aid in attempt_ids}
    if not attempt_ids:
        return out
    q = (
        select(AttemptTransfer)
        .where(AttemptTransfer.attempt_id.in_(attempt_ids))
        .order_by(AttemptTransfer.attempt_id, AttemptTransfer.n)
    )
    for t in s.scalars(q):
        out[t.attempt_id].append(
            TransferRecord(
                direction=t.direction,  # type: ignore[arg-type]
                url=t.url,
                path=t.path,
                size_bytes=t.size_bytes,
                seconds=t.seconds,
                sha256=t.sha256,
                sha256_verified=t.sha256_verified,
                resumed_from=t.resumed_from,
                files=t.files,
            )
        )
    return out


def task_view(
    s: Session, task: Task, attempts: list[Attempt] | None = None, *, full: bool = False
) -> TaskView:
    """A task as shown; `full` adds every attempt's per-transfer records."""
    if attempts is None:
        attempts = attempts_of(s, task.id)
    moved = transfers_of(s, [a.id for a in attempts]) if full else {}
    return TaskView(
        id=task.id,
        name=task.name,
        state=State(task.state),
        reason=task.reason,
        org_id=task.org_id,
        pool_id=task.pool_id,
        created_at=ts(task.created_at),
        updated_at=ts(task.updated_at),
        tags=task.tags or {},
        spec=TaskSpec.model_validate(task.spec),
        attempts=[attempt_view(a, moved.get(a.id)) for a in attempts],
    )


def new_task_view(task_id: str, who: Principal, spec: TaskSpec, now: float) -> TaskView:
    """`task_view` of a task `create_tasks` made now for `who` from `spec`: what the row holds,
    without reading it back (it has no attempts yet)."""
    return TaskView(
        id=task_id,
        name=spec.name,
        state=State.QUEUED,
        reason=None,
        org_id=who.org_id,
        pool_id=None,
        created_at=ts(now),
        updated_at=ts(now),
        tags=spec.tags or {},
        spec=spec,
        attempts=[],
    )


def task_views(s: Session, tasks: list[Task]) -> list[TaskView]:
    """Views of many tasks with one query for all their attempts."""
    by_task: dict[str, list[Attempt]] = {t.id: [] for t in tasks}
    if tasks:
        q = select(Attempt).where(Attempt.task_id.in_(list(by_task))).order_by(Attempt.n)
        for a in s.scalars(q):
            by_task[a.task_id].append(a)
    return [task_view(s, t, by_task[t.id]) for t in tasks]


def events_of(s: Session, task_id: str) -> list[TaskEventView]:
    q = select(TaskEvent).where(TaskEvent.task_id == task_id).order_by(TaskEvent.id)
    return [
        TaskEventView(
            at=ts(e.at),
            from_state=State(e.from_state) if e.from_state else None,
            to_state=State(e.to_state),
            reason=e.reason,
            attempt=e.attempt,
        )
        for e in s.scalars(q)
    ]


# ---- state changes: the rules are in tasks/lifecycle.py; here they are loaded and written ----


def _task_facts(t: Task) -> TaskFacts:
    return TaskFacts(t.id, State(t.state), t.attempts, t.max_attempts)


def _attempt_facts(a: Attempt) -> AttemptFacts:
    return AttemptFacts(
        a.id,
        a.task_id,
        a.n,
        a.pool_id,
        a.site_id,
        State(a.state),
        cancel_requested=bool(a.cancel_requested),
        released=bool(a.released),
        start_time=a.start_time,
        end_time=a.end_time,
        reason=a.reason,
    )


def _write(
    s: Session,
    changes: Changes,
    tasks: dict[str, Task],
    attempts: dict[str, Attempt],
    later: _Deferred | None = None,
) -> set[str]:
    """Write the steps in order; the ids of the tasks whose move did not land (the task changed
    meanwhile: on PostgreSQL another transaction may have committed since it was read), whose
    later steps are then dropped. A task that ends is settled now, or by `later` (a batch of
    reports), which also writes the events."""
    stale: set[str] = set()
    for step in changes.steps:
        if isinstance(step, AttemptChange):
            _change_attempt(s, attempts[step.attempt_id], step)
        elif isinstance(step, StopRequest):
            attempts[step.attempt_id].cancel_requested = True
        elif step.task_id in stale:
            continue
        elif isinstance(step, TaskMove):
            if not _move(s, tasks[step.task_id], step, later):
                stale.add(step.task_id)
        elif isinstance(step, TaskNote):
            _note(s, step, later)
    return stale


def _move(s: Session, task: Task, m: TaskMove, later: _Deferred | None = None) -> bool:
    """Compare-and-set the task's state from `m.frm`; record the event if it landed."""
    res = s.connection().execute(
        _MOVE,
        {
            "b_id": task.id,
            "b_frm": m.frm.value,
            "b_to": m.to.value,
            "b_reason": m.reason,
            "b_at": m.at,
        },
    )
    if res.rowcount != 1:
        return False
    # What the row now holds, set as loaded: marking them changed would UPDATE the row again.
    set_committed_value(task, "state", m.to.value)
    set_committed_value(task, "reason", m.reason)
    set_committed_value(task, "updated_at", m.at)
    _event(s, task.id, m.at, m.frm.value, m.to.value, m.reason, m.attempt, later)
    if m.to.terminal:
        # The money moves in the transaction that ends the task (docs/market.md).
        if later is None:
            ledger.settle_task(s, task.id, m.at)
        else:
            later.settle[task.id] = m.at
    return True


def _note(s: Session, n: TaskNote, later: _Deferred | None = None) -> None:
    """Record a remark that keeps the task's state, and make it the task's reason."""
    _event(s, n.task_id, n.at, n.state.value, n.state.value, n.reason, n.attempt, later)
    s.execute(update(Task).where(Task.id == n.task_id).values(reason=n.reason, updated_at=n.at))


def _change_attempt(s: Session, a: Attempt, ch: AttemptChange) -> None:
    a.state = ch.state.value
    if ch.clear_progress:
        a.progress = None
    if ch.start_time is not None:
        a.start_time = ch.start_time
    if ch.reason is not None:
        a.reason = ch.reason
    if ch.end_time is not None:
        a.end_time = ch.end_time
    if ch.release and not a.released:  # given back exactly once, whatever the caller computed
        _unreserve(s, a.pool_id, Resources(**a.demand))
        a.released = True


def _unreserve(s: Session, pool_id: str, d: Resources) -> None:
    s.connection().execute(_UNRESERVE, _amounts(pool_id, d))


def _amounts(pool_id: str, d: Resources) -> dict[str, Any]:
    """The bound values of _RESERVE and _UNRESERVE."""
    return {
        "b_pool": pool_id,
        "b_cpu": d.cpu_cores,
        "b_ram": d.ram_gb,
        "b_disk": d.disk_gb,
        "b_gpus": d.gpus,
    }


_UNRESERVE = (
    _sql_update(_P)
    .where(_P.c.id == bindparam("b_pool"))
    .values(
        reserved_cpu=_P.c.reserved_cpu - bindparam("b_cpu"),
        reserved_ram=_P.c.reserved_ram - bindparam("b_ram"),
        reserved_disk=_P.c.reserved_disk - bindparam("b_disk"),
        reserved_gpus=_P.c.reserved_gpus - bindparam("b_gpus"),
    )
)


def place(
    s: Session,
    task: Task | QueuedTask,
    pool_id: str,
    site_id: str,
    demand: Resources,
    now: float,
    why: str,
    price: dict | None = None,
    lease_id: str | None = None,
) -> str | None:
    """Reserve capacity on a pool and create the task's next attempt; its id, or None if the
    pool no longer has room (or the task changed meanwhile). `price` is what the attempt will
    be charged at (market/charge.attempt_price), fixed now. ``lease_id``: the attempt runs on
    that lease of the task's organisation (which pays for its resources).

    The reservation is one conditional UPDATE, so two placements racing for the last cores can
    never both succeed, whichever database and however many hub replicas.
    """
    conn = s.connection()
    res = conn.execute(_RESERVE, _amounts(pool_id, demand))
    if res.rowcount != 1:
        return None
    n = task.attempts + 1
    moved = conn.execute(
        _PLACE_TASK,
        {
            "b_id": task.id,
            "b_n": task.attempts,
            "b_next": n,
            "b_pool": pool_id,
            "b_at": now,
            "b_why": why,
        },
    )
    if moved.rowcount != 1:
        # The task changed meanwhile (cancelled, or placed by another hub replica): give the
        # capacity back in this same transaction and leave the task alone.
        _unreserve(s, pool_id, demand)
        return None
    attempt_id = new_id("att")
    placement = Placement(task, pool_id, site_id, demand, why, price)
    conn.execute(
        _INSERT_ATTEMPT, {**_attempt_row(attempt_id, placement, now), "lease_id": lease_id}
    )
    _event(
        s, task.id, now, State.QUEUED.value, State.QUEUED.value, f"placed on {pool_id}: {why}", n
    )
    _placed(s, task, pool_id, site_id, attempt_id, now)
    return attempt_id


@dataclass(frozen=True, slots=True)
class Placement:
    """One task to place (`place`'s arguments)."""

    task: Task | QueuedTask
    pool_id: str
    site_id: str
    demand: Resources
    why: str
    price: dict | None = None


class _Raced(Exception):
    """A placement of the batch did not land: place them one by one instead."""


def place_many(s: Session, batch: Sequence[Placement], now: float) -> list[str | None]:
    """`place` for a scheduling pass's placements at once: one conditional reservation per
    pool for what its placements need together, the tasks' compare-and-set as one statement,
    and one multi-row INSERT each for the attempts and their events, in a savepoint. Should
    any of it not land (another hub replica placed or a user cancelled meanwhile, or a pool
    lost room), the savepoint is rolled back and they are placed one by one, so that each
    lands or not on its own. The attempt ids, in order (None: not placed)."""
    if len(batch) <= 1 or not s.connection().dialect.supports_sane_multi_rowcount:
        return [
            place(s, p.task, p.pool_id, p.site_id, p.demand, now, p.why, p.price) for p in batch
        ]
    need: dict[str, Resources] = {}
    for p in batch:
        need[p.pool_id] = need.get(p.pool_id, Resources(0.0, 0.0, 0.0, 0)) + p.demand
    ids = [new_id("att") for _ in batch]
    try:
        with s.begin_nested():
            conn = s.connection()
            for pool_id in sorted(need):  # a fixed order: no deadlock between two passes
                if conn.execute(_RESERVE, _amounts(pool_id, need[pool_id])).rowcount != 1:
                    raise _Raced
            moved = conn.execute(
                _PLACE_TASK,
                [
                    {
                        "b_id": p.task.id,
                        "b_n": p.task.attempts,
                        "b_next": p.task.attempts + 1,
                        "b_pool": p.pool_id,
                        "b_at": now,
                        "b_why": p.why,
                    }
                    for p in batch
                ],
            )
            if moved.rowcount != len(batch):
                raise _Raced
            conn.execute(
                _INSERT_ATTEMPT,
                [_attempt_row(aid, p, now) for aid, p in zip(ids, batch, strict=True)],
            )
            conn.execute(
                _INSERT_EVENT,
                [
                    {
                        "task_id": p.task.id,
                        "at": now,
                        "from_state": State.QUEUED.value,
                        "to_state": State.QUEUED.value,
                        "reason": f"placed on {p.pool_id}: {p.why}",
                        "attempt": p.task.attempts + 1,
                    }
                    for p in batch
                ],
            )
    except _Raced:
        return [
            place(s, p.task, p.pool_id, p.site_id, p.demand, now, p.why, p.price) for p in batch
        ]
    for aid, p in zip(ids, batch, strict=True):
        _placed(s, p.task, p.pool_id, p.site_id, aid, now)
    return list(ids)


def _attempt_row(attempt_id: str, p: Placement, now: float) -> dict[str, Any]:
    """A new attempt's row (_INSERT_ATTEMPT): the task's next, reserved on `p.pool_id`."""
    return {
        "id": attempt_id,
        "task_id": p.task.id,
        "n": p.task.attempts + 1,
        "pool_id": p.pool_id,
        "site_id": p.site_id,
        "state": State.QUEUED.value,
        "delivered_at": None,
        "cancel_requested": False,
        "released": False,
        "demand": asdict(p.demand),  # what was reserved, given back as it was when it ends
        "price": p.price,
        "created_at": now,
        "executor_logs": [],
        "outputs": [],
        "system_logs": [],
        "lease_id": None,
    }


def _placed(
    s: Session, task: Task | QueuedTask, pool_id: str, site_id: str, attempt_id: str, now: float
) -> None:
    """The task holds its new attempt now (as loaded, not as changes), and the audit says so."""
    n = task.attempts + 1
    if isinstance(task, Task):  # the row holds these now: set as loaded, not as changes
        set_committed_value(task, "attempts", n)
        set_committed_value(task, "pool_id", pool_id)
    else:
        task.attempts, task.pool_id = n, pool_id
    audit.append(
        s,
        "task.placed",
        now,
        org_id=task.org_id,
        object_id=task.id,
        detail={"attempt_id": attempt_id, "pool_id": pool_id, "site_id": site_id, "n": n},
    )


@dataclass(slots=True)
class QueuedTask:
    """The little the scheduler needs of a waiting task (no ORM object: passes stay cheap)."""

    id: str
    attempts: int
    spec: dict
    seq: int
    pool_id: str | None = None
    org_id: str | None = None
    trace_id: str | None = None


def queued_tasks(s: Session, limit: int, after_seq: int | None = None) -> list[QueuedTask]:
    """Tasks waiting for a placement, oldest first.

    A QUEUED task whose newest attempt is still active is placed already (its agent has not
    picked it up yet), so it is not waiting.
    """
    # Built once, run on the connection: every scheduling pass reads the queue.
    rows = s.connection().execute(
        _QUEUED, {"b_after": -1 if after_seq is None else after_seq, "b_limit": limit}
    )
    return [
        QueuedTask(tid, n, spec, seq, org_id=org, trace_id=trace)
        for tid, n, spec, seq, org, trace in rows
    ]


def any_waiting(s: Session) -> bool:
    """Whether any task waits for a placement (`queued_tasks` would read one)."""
    return s.connection().execute(_ANY_QUEUED).first() is not None


_PLACED = (
    select(Attempt.id)
    .where(Attempt.task_id == Task.id, Attempt.state.in_([x.value for x in ACTIVE_ATTEMPT]))
    .exists()
)
_ANY_QUEUED = select(Task.seq).where(Task.state == State.QUEUED.value, ~_PLACED).limit(1)
_QUEUED = (
    select(Task.id, Task.attempts, Task.spec, Task.seq, Task.org_id, Task.trace_id)
    .where(Task.state == State.QUEUED.value, ~_PLACED, Task.seq > bindparam("b_after"))
    .order_by(Task.seq)
    .limit(bindparam("b_limit"))
)


def failed_pools(s: Session, task_id: str) -> list[str]:
    q = select(Attempt.pool_id).where(
        Attempt.task_id == task_id, Attempt.state == State.SYSTEM_ERROR.value
    )
    return list(s.scalars(q))


def cancel_task(s: Session, task: Task, now: float) -> list[str]:
    """Cancel a task; returns the site ids whose agents must be told to stop an attempt."""
    rows = attempts_of(s, task.id)
    before = task.state
    changes = lifecycle.cancel(_task_facts(task), [_attempt_facts(a) for a in rows], now)
    _write(s, changes, {task.id: task}, {a.id: a for a in rows})
    audit.append(
        s,
        "task.canceled",
        now,
        org_id=task.org_id,
        object_id=task.id,
        before=digest_of({"id": task.id, "state": before}),
        after=digest_of({"id": task.id, "state": task.state}),
        detail={"from": before, "to": task.state},
    )
    return list(changes.notify)


@dataclass(frozen=True, slots=True)
class UpdateResult:
    attempt_id: str
    status: str  # applied | duplicate | rejected
    reason: str | None = None
    cancel: bool = False  # the agent should stop this attempt
    requeued: bool = False  # the task went back to the queue (capacity to reschedule)
    released: bool = False  # capacity was freed
    usage: Judgement | None = None  # the verdict on the update's signed usage record
    # what an applied report changed, for the hub's log line about it (telemetry/logs.py)
    task_id: str | None = None
    trace_id: str | None = None
    task_state: str | None = None  # the task's state after the report
    usage_at: int | None = None  # apply_updates: the judgement's place among the batch's


class _Deferred:
    """What a batch of reports leaves to its end, to do set-wise: the tasks' events, the usage
    records to judge (with the hub's view of their attempts as each was reported) and the
    tasks that ended, to settle. Judged before settled, as one report's record is judged
    before its task settles; a record about a task already ended earlier in the batch (or
    about an attempt the batch did not load) first finishes what is pending, so that
    everything sees what it would have seen one report at a time."""

    def __init__(self, s: Session, site_id: str, now: float) -> None:
        self.s, self.site_id, self.now = s, site_id, now
        self.usage: list[tuple[Any, Any]] = []  # (envelope, observed or usage.LOOKUP)
        self.settle: dict[str, float] = {}  # task id → when it ended
        self.events: list[dict[str, Any]] = []  # the tasks' events (_INSERT_EVENT rows)
        self.judged: list[Judgement] = []  # of the records finished so far, in order

    def judge(self, envelope: Any, seen: Any, task_id: str | None) -> int:
        """Queue a record; its index in `judged` once finished."""
        if seen is usage.LOOKUP or task_id in self.settle:
            self.finish()
        self.usage.append((envelope, seen))
        return len(self.judged) + len(self.usage) - 1

    def finish(self) -> None:
        """Write the events, judge the queued records, then settle the ended tasks."""
        if self.events:
            self.s.connection().execute(_INSERT_EVENT, self.events)
            self.events = []
        if self.usage:
            self.judged += usage.take_many(self.s, self.site_id, self.usage, self.now)
            self.usage = []
        if self.settle:
            ledger.settle_tasks(self.s, self.settle)
            self.settle = {}


def apply_updates(
    s: Session, site_id: str, updates: Sequence[AttemptUpdate], now: float
) -> list[UpdateResult]:
    """Apply an agent's reports in order, as `apply_update` one after another would, set-wise:
    their attempts and tasks are read with one query each first; the usage records they carry
    are judged together and the tasks they end are settled together at the end (`_Deferred`)."""
    # Held here: the session's identity map holds unchanged objects only weakly.
    attempts: dict[str, Attempt] = {}
    for chunk in _chunks(sorted({u.attempt_id for u in updates})):
        attempts.update((a.id, a) for a in s.scalars(select(Attempt).where(Attempt.id.in_(chunk))))
    tasks: dict[str, Task] = {}
    for chunk in _chunks(sorted({a.task_id for a in attempts.values()})):
        tasks.update((x.id, x) for x in s.scalars(select(Task).where(Task.id.in_(chunk))))
    later = _Deferred(s, site_id, now)
    results = [apply_update(s, site_id, u, now, attempts, tasks, later) for u in updates]
    later.finish()
    return [
        r if r.usage_at is None else replace(r, usage=later.judged[r.usage_at], usage_at=None)
        for r in results
    ]


def _observed(a: Attempt) -> Observed:
    """What the hub knows of an attempt now (as `usage.observed` reads it back)."""
    return Observed(a.id, a.site_id, a.task_id, a.pool_id, a.created_at, a.start_time, a.end_time)


def _chunks(ids: list[str], size: int = 500) -> Iterator[list[str]]:
    for i in range(0, len(ids), size):
        yield ids[i : i + size]


def apply_update(
    s: Session,
    site_id: str,
    u: AttemptUpdate,
    now: float,
    attempts: dict[str, Attempt] | None = None,
    tasks: dict[str, Task] | None = None,
    later: _Deferred | None = None,
) -> UpdateResult:
    """Apply one agent report to its attempt and, through it, to the task (`attempts`,
    `tasks`: rows loaded already, by id; what they lack is read here). With `later`, its usage
    record's judgement and its task's settlement are left to it (`apply_updates`): the result
    then names the judgement by index (`usage_at`)."""
    if attempts is not None:  # loaded by apply_updates: absent means there is none
        a = attempts.get(u.attempt_id)
    else:
        a = s.scalar(select(Attempt).where(Attempt.id == u.attempt_id))
    if a is None or a.site_id != site_id:
        # Unknown to this site: never let an agent touch another site's attempt (a usage record
        # it carries is still judged — not_ours — and kept as evidence).
        judged, at = None, None
        if u.usage_record is not None:
            env = u.usage_record.model_dump(mode="json")
            if later is not None:
                at = later.judge(env, usage.LOOKUP, None)
            else:
                judged = usage.take(s, site_id, env, now)
        return UpdateResult(
            u.attempt_id,
            "rejected",
            "no such attempt for this site",
            cancel=True,
            usage=judged,
            usage_at=at,
        )
    facts = _attempt_facts(a)
    report = AgentReport(u.state, u.at.timestamp(), u.reason, progress=u.progress is not None)
    verdict = lifecycle.update_attempt(facts, report)
    # The report's details are kept whatever its verdict (a repeated RUNNING brings newer logs).
    _merge_details(a, u)
    if verdict.take_progress and u.progress is not None:
        a.progress = u.progress.model_dump(mode="json")
    if verdict.change is not None:
        _change_attempt(s, a, verdict.change)
    # Judged once the attempt's end is recorded and before the task is settled (below), so
    # that settlement charges by an accepted record; a refused one is kept as evidence.
    judged, at = None, None
    if u.usage_record is not None:
        env = u.usage_record.model_dump(mode="json")
        if later is not None:
            # The hub's view of the attempt the record names, as it stands now (loaded by the
            # batch, else read when judged).
            named = env.get("record", {}).get("attempt_id") if isinstance(env, dict) else None
            b = attempts.get(named) if attempts is not None and isinstance(named, str) else None
            seen = usage.LOOKUP if b is None else _observed(b)
            at = later.judge(env, seen, None if b is None else b.task_id)
        else:
            s.flush()  # the attempt's end, just set, is what the record is judged against
            judged = usage.take(s, site_id, env, now)
    if verdict.change is None:
        return UpdateResult(
            a.id, verdict.status, verdict.reason, cancel=verdict.cancel, usage=judged, usage_at=at
        )
    task = (
        tasks.get(a.task_id)
        if tasks is not None
        else s.scalar(select(Task).where(Task.id == a.task_id))
    )
    assert task is not None
    # Recorded once, as the attempt ends: a repeat is a duplicate and changes nothing.
    if verdict.ended and (u.transfers or u.transfers_omitted):
        _record_transfers(s, a, u, now)
    changes = lifecycle.follow(_task_facts(task), facts, verdict.change.state, u.reason, now)
    stale = _write(s, changes, {task.id: task}, {a.id: a}, later)
    return UpdateResult(
        a.id,
        "applied",
        cancel=verdict.cancel,
        requeued=task.id in changes.requeued and task.id not in stale,
        released=verdict.ended,
        usage=judged,
        usage_at=at,
        task_id=task.id,
        trace_id=task.trace_id,
        task_state=task.state,
    )


def _merge_details(a: Attempt, u: AttemptUpdate) -> None:
    if u.executor_logs is not None:
        a.executor_logs = [x.model_dump(mode="json") for x in u.executor_logs]
    if u.outputs is not None:
        a.outputs = [x.model_dump(mode="json") for x in u.outputs]
    if u.system_logs is not None:
        a.system_logs = list(u.system_logs)
    if u.usage is not None:
        a.usage = u.usage.model_dump(mode="json")


def _record_transfers(s: Session, a: Attempt, u: AttemptUpdate, now: float) -> None:
    """Store the per-transfer records a final update carries (the model caps them at
    MAX_TRANSFERS; what the agent left out is counted in transfers_omitted)."""
    recs = u.transfers or []
    if recs:
        s.execute(
            insert(AttemptTransfer),
            [
                {
                    "attempt_id": a.id,
                    "task_id": a.task_id,
                    "site_id": a.site_id,
                    "n": i,
                    "at": now,
                    **r.model_dump(mode="json"),
                }
                for i, r in enumerate(recs)
            ],
        )
    a.transfers_omitted = u.transfers_omitted or None


def fail_site(s: Session, site_id: str, now: float, reason: str) -> int:
    """A site was lost: end its active attempts as SYSTEM_ERROR and re-queue their tasks."""
    q = select(Attempt).where(
        Attempt.site_id == site_id, Attempt.state.in_([x.value for x in ACTIVE_ATTEMPT])
    )
    rows = list(s.scalars(q))
    ids = sorted({a.task_id for a in rows})
    tasks = {t.id: t for t in s.scalars(select(Task).where(Task.id.in_(ids)))} if ids else {}
    facts = {tid: _task_facts(t) for tid, t in tasks.items()}
    before = {a.id: a.state for a in rows}
    changes = lifecycle.fail_site(site_id, [_attempt_facts(a) for a in rows], facts, reason, now)
    _write(s, changes, tasks, {a.id: a for a in rows})
    for a in rows:  # the hub's own change, in its transaction: one record per task's owner
        task = tasks[a.task_id]
        audit.append(
            s,
            "attempt.lost",
            now,
            org_id=task.org_id,
            object_id=a.task_id,
            before=digest_of({"id": a.id, "state": before[a.id]}),
            after=digest_of({"id": a.id, "state": a.state}),
            detail={
                "attempt_id": a.id,
                "site_id": site_id,
                "from": before[a.id],
                "to": a.state,
                "task_state": task.state,
            },
        )
    return sum(isinstance(step, AttemptChange) for step in changes.steps)


def assignments(
    s: Session, site_id: str, now: float, redeliver_after_s: float
) -> list[dict[str, Any]]:
    """Attempts placed on this site that its agent has not acknowledged yet, marked delivered
    now, as the ``Assignment`` wire items (the task's spec as stored: it was validated when the
    task was created). One query reads them with their tasks and pools, one marks them."""
    q = (
        select(
            Attempt.id,
            Attempt.task_id,
            Attempt.n,
            Attempt.pool_id,
            Pool.name,
            Task.spec,
            Task.trace_id,
        )
        .join(Task, Task.id == Attempt.task_id)
        .join(Pool, Pool.id == Attempt.pool_id)
        .where(
            Attempt.site_id == site_id,
            Attempt.state == State.QUEUED.value,
            (Attempt.delivered_at.is_(None)) | (Attempt.delivered_at < now - redeliver_after_s),
        )
        .order_by(Attempt.created_at)
    )
    out = [
        {
            "attempt_id": aid,
            "task_id": tid,
            "attempt": n,
            "pool_id": pool_id,
            "pool_name": pool_name,
            "spec": spec,
            "trace_id": trace,
        }
        for aid, tid, n, pool_id, pool_name, spec, trace in s.execute(q)
    ]
    ids = [x["attempt_id"] for x in out]
    for chunk in _chunks(ids):
        s.execute(update(Attempt).where(Attempt.id.in_(chunk)).values(delivered_at=now))
    return out


def cancels(s: Session, site_id: str) -> list[str]:
    """Attempts on this site that must be stopped."""
    q = select(Attempt.id).where(
        Attempt.site_id == site_id,
        Attempt.cancel_requested.is_(True),
        Attempt.state.in_([x.value for x in ACTIVE_ATTEMPT]),
    )
    return list(s.scalars(q))


def unknown_running(s: Session, site_id: str, attempt_ids: list[str]) -> list[str]:
    """Of the attempts an agent says it runs, those the hub no longer expects it to run."""
    if not attempt_ids:
        return []
    q = select(Attempt.id, Attempt.state, Attempt.site_id).where(Attempt.id.in_(attempt_ids))
    ok = {aid for aid, st, sid in s.execute(q) if sid == site_id and State(st) in ACTIVE_ATTEMPT}
    return [x for x in attempt_ids if x not in ok]


def get_attempt_task(s: Session, attempt: Attempt) -> Task:
    task = s.scalar(select(Task).where(Task.id == attempt.task_id))
    if task is None:
        raise NotFound(f"no task {attempt.task_id!r}")
    return task


def recent_attempts(
    s: Session, since: float, limit: int = 5000
) -> list[tuple[str, float, float | None, float | None, str]]:
    """The newest attempts created after ``since`` (at most ``limit``), for pool history:
    (pool id, created, started, ended, state)."""
    q = (
        select(Attempt.pool_id, Attempt.created_at, Attempt.start_time, Attempt.end_time)
        .add_columns(Attempt.state)
        .where(Attempt.created_at >= since)
        .order_by(Attempt.created_at.desc())
        .limit(limit)
    )
    return [tuple(row) for row in s.execute(q)]  # type: ignore[misc]
