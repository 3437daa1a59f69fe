"""Tasks, attempts and events in the store.

Every function here runs inside the caller's transaction, so a state change, its event and any
capacity it reserves or releases commit together or not at all.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from sqlalchemy import Update, insert, select
from sqlalchemy import update as _sql_update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cpnet.auth.model import Principal, Role
from cpnet.errors import Invalid, NotFound, new_id
from cpnet.store.registry import ts
from cpnet.store.tables import Attempt, AttemptTransfer, Pool, Task, TaskEvent
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
from cpnet.tasks.states import State, can_transition


def update(model: type) -> Update:
    """An UPDATE that does not scan the session's objects to keep them in step.

    The default ("evaluate") visits every loaded object per statement, which made a scheduling
    pass over 500 queued tasks quadratic; the callers here set the attributes they change.
    """
    return _sql_update(model).execution_options(synchronize_session=False)


ACTIVE_ATTEMPT = (State.QUEUED, State.INITIALIZING, State.RUNNING, State.PAUSED, State.CANCELING)
EPS = 1e-9  # float slack when comparing reserved capacity with totals


def _event(
    s: Session,
    task_id: str,
    now: float,
    frm: str | None,
    to: str,
    reason: str | None,
    attempt: int | None = None,
) -> None:
    # A Core INSERT: an ORM object would make the next statement flush the unit of work.
    s.execute(
        insert(TaskEvent).values(
            task_id=task_id, at=now, from_state=frm, to_state=to, reason=reason, attempt=attempt
        )
    )


# ---- create, read, list ----


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


# ---- state changes ----


def set_task_state(
    s: Session, task: Task, to: State, now: float, reason: str | None, n: int | None
) -> bool:
    """Move a task to `to` if legal (compare-and-set on its current state); record the event."""
    cur = State(task.state)
    if cur == to or not can_transition(cur, to):
        return False
    res = s.execute(
        update(Task)
        .where(Task.id == task.id, Task.state == cur.value)
        .values(state=to.value, reason=reason, updated_at=now)
    )
    if res.rowcount != 1:
        return False
    task.state, task.reason, task.updated_at = to.value, reason, now
    _event(s, task.id, now, cur.value, to.value, reason, n)
    return True


def _unreserve(s: Session, pool_id: str, d: dict[str, float]) -> None:
    s.execute(
        update(Pool)
        .where(Pool.id == pool_id)
        .values(
            reserved_cpu=Pool.reserved_cpu - d["cpu_cores"],
            reserved_ram=Pool.reserved_ram - d["ram_gb"],
            reserved_disk=Pool.reserved_disk - d["disk_gb"],
            reserved_gpus=Pool.reserved_gpus - d["gpus"],
        )
    )


def release(s: Session, a: Attempt) -> None:
    """Give back the capacity an attempt reserved (exactly once)."""
    if a.released:
        return
    _unreserve(s, a.pool_id, a.demand)
    a.released = True


def place(
    s: Session,
    task: Task | QueuedTask,
    pool_id: str,
    site_id: str,
    demand: dict[str, float],
    now: float,
    why: str,
) -> str | None:
    """Reserve capacity on a pool and create the task's next attempt; its id, or None if the
    pool no longer has room (or the task changed meanwhile).

    The reservation is one conditional UPDATE, so two placements racing for the last cores can
    never both succeed, whichever database and however many hub replicas.
    """
    res = s.execute(
        update(Pool)
        .where(
            Pool.id == pool_id,
            Pool.online.is_(True),
            Pool.reserved_cpu + demand["cpu_cores"] <= Pool.total_cpu + EPS,
            Pool.reserved_ram + demand["ram_gb"] <= Pool.total_ram + EPS,
            Pool.reserved_disk + demand["disk_gb"] <= Pool.total_disk + EPS,
            Pool.reserved_gpus + demand["gpus"] <= Pool.total_gpus,
        )
        .values(
            reserved_cpu=Pool.reserved_cpu + demand["cpu_cores"],
            reserved_ram=Pool.reserved_ram + demand["ram_gb"],
            reserved_disk=Pool.reserved_disk + demand["disk_gb"],
            reserved_gpus=Pool.reserved_gpus + demand["gpus"],
        )
    )
    if res.rowcount != 1:
        return None
    n = task.attempts + 1
    moved = s.execute(
        update(Task)
        .where(Task.id == task.id, Task.state == State.QUEUED.value, Task.attempts == task.attempts)
        .values(attempts=n, pool_id=pool_id, updated_at=now, reason=why)
    )
    if moved.rowcount != 1:
        # The task changed meanwhile (cancelled, or placed by another hub replica): give the
        # capacity back in this same transaction and leave the task alone.
        _unreserve(s, pool_id, demand)
        return None
    task.attempts, task.pool_id = n, pool_id
    attempt_id = new_id("att")
    s.execute(
        insert(Attempt).values(
            id=attempt_id,
            task_id=task.id,
            n=n,
            pool_id=pool_id,
            site_id=site_id,
            state=State.QUEUED.value,
            delivered_at=None,
            cancel_requested=False,
            released=False,
            demand=demand,
            created_at=now,
            executor_logs=[],
            outputs=[],
            system_logs=[],
        )
    )
    _event(
        s, task.id, now, State.QUEUED.value, State.QUEUED.value, f"placed on {pool_id}: {why}", n
    )
    return attempt_id


@dataclass(slots=True)
class QueuedTask:
    """The little the scheduler needs of a waiting task (no ORM object: passes stay cheap)."""

    id: str
    attempts: int
    spec: dict
    seq: int
    pool_id: str | None = None


def queued_tasks(s: Session, limit: int, after_seq: int | None = None) -> list[QueuedTask]:
    """Tasks waiting for a placement, oldest first.

    A QUEUED task whose newest attempt is still active is placed already (its agent has not
    picked it up yet), so it is not waiting.
    """
    placed = (
        select(Attempt.id)
        .where(Attempt.task_id == Task.id, Attempt.state.in_([x.value for x in ACTIVE_ATTEMPT]))
        .exists()
    )
    q = (
        select(Task.id, Task.attempts, Task.spec, Task.seq)
        .where(Task.state == State.QUEUED.value, ~placed)
        .order_by(Task.seq)
        .limit(limit)
    )
    if after_seq is not None:
        q = q.where(Task.seq > after_seq)
    return [QueuedTask(tid, n, spec, seq) for tid, n, spec, seq in s.execute(q)]


def failed_pools(s: Session, task_id: str) -> list[str]:
    q = select(Attempt.pool_id).where(
        Attempt.task_id == task_id, Attempt.state == State.SYSTEM_ERROR.value
    )
    return list(s.scalars(q))


def cancel_task(s: Session, task: Task, now: float) -> list[str]:
    """Cancel a task; returns the site ids whose agents must be told to stop an attempt."""
    cur = State(task.state)
    if cur.terminal:
        return []
    active = [a for a in attempts_of(s, task.id) if State(a.state) in ACTIVE_ATTEMPT]
    notify: list[str] = []
    if cur is State.QUEUED:
        for a in active:  # placed but not yet started: the agent may not even have it
            _end_attempt(s, a, State.CANCELED, now, "canceled before it started")
            notify.append(a.site_id)
        set_task_state(s, task, State.CANCELED, now, "canceled by user", task.attempts or None)
        return notify
    for a in active:
        a.cancel_requested = True
        notify.append(a.site_id)
    set_task_state(s, task, State.CANCELING, now, "cancel requested by user", task.attempts or None)
    return notify


def _end_attempt(s: Session, a: Attempt, to: State, now: float, reason: str | None) -> None:
    a.state = to.value
    a.end_time = a.end_time or now
    if reason and not a.reason:
        a.reason = reason
    release(s, a)


@dataclass(frozen=True, slots=True)
class UpdateResult:
    attempt_id: str
    status: str  # applied | duplicate | rejected
    reason: str | None = None
    cancel: bool = False  # the agent should stop this attempt
    requeued: bool = False  # the task went back to the queue (capacity to reschedule)
    released: bool = False  # capacity was freed


def apply_update(s: Session, site_id: str, u: AttemptUpdate, now: float) -> UpdateResult:
    """Apply one agent report to its attempt and, through it, to the task."""
    a = s.scalar(select(Attempt).where(Attempt.id == u.attempt_id))
    if a is None or a.site_id != site_id:
        # Unknown to this site: never let an agent touch another site's attempt.
        return UpdateResult(u.attempt_id, "rejected", "no such attempt for this site", cancel=True)
    cur = State(a.state)
    _merge_details(a, u)
    if u.progress is not None and not cur.terminal and not u.state.terminal:
        # The agent's latest word on a running attempt, even when its state lags the hub's (a
        # batch system may say RUNNING before the runner first wrote INITIALIZING).
        a.progress = u.progress.model_dump(mode="json")
    if u.state == cur:
        return UpdateResult(a.id, "duplicate", cancel=a.cancel_requested and not cur.terminal)
    if cur.terminal:
        return UpdateResult(
            a.id, "rejected", f"attempt already ended {cur.value}", cancel=not u.state.terminal
        )
    if not can_transition(cur, u.state):
        return UpdateResult(a.id, "rejected", f"attempt in state {cur} cannot become {u.state}")
    a.state = u.state.value
    if u.state.terminal:
        a.progress = None  # it ended: the transfers tell the rest
    if u.state in (State.INITIALIZING, State.RUNNING) and a.start_time is None:
        a.start_time = u.at.timestamp()
    if u.reason:
        a.reason = u.reason
    task = s.scalar(select(Task).where(Task.id == a.task_id))
    assert task is not None
    released = requeued = False
    if u.state.terminal:
        a.end_time = u.at.timestamp()
        release(s, a)
        released = True
        # Recorded once, as the attempt ends: a repeat is a duplicate and changes nothing.
        if u.transfers or u.transfers_omitted:
            _record_transfers(s, a, u, now)
    if task.attempts == a.n:  # only the newest attempt speaks for the task
        requeued = _follow(s, task, a, u.state, now, u.reason)
    return UpdateResult(
        a.id,
        "applied",
        cancel=a.cancel_requested and not u.state.terminal,
        requeued=requeued,
        released=released,
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


def _follow(s: Session, task: Task, a: Attempt, st: State, now: float, reason: str | None) -> bool:
    """Derive the task's state from its newest attempt's; True if the task was re-queued."""
    cur = State(task.state)
    if st is State.SYSTEM_ERROR and cur is not State.CANCELING:
        return retry_or_fail(s, task, a, now, reason or "system error")
    if st in (State.INITIALIZING, State.RUNNING) and cur is State.CANCELING:
        return False  # still stopping
    if st is State.RUNNING and cur is State.QUEUED:
        set_task_state(s, task, State.INITIALIZING, now, "started", a.n)
    set_task_state(s, task, st, now, reason, a.n)
    return False


def retry_or_fail(s: Session, task: Task, a: Attempt, now: float, reason: str) -> bool:
    """After a system failure: back to the queue if attempts remain, else SYSTEM_ERROR."""
    if task.attempts < task.max_attempts:
        why = f"attempt {a.n} on {a.pool_id} failed ({reason}); retrying elsewhere"
        if State(task.state) is State.QUEUED:
            _event(s, task.id, now, "QUEUED", "QUEUED", why, a.n)
            s.execute(update(Task).where(Task.id == task.id).values(reason=why, updated_at=now))
            return True
        return set_task_state(s, task, State.QUEUED, now, why, a.n)
    why = f"attempt {a.n} on {a.pool_id} failed ({reason}); no attempts left ({task.max_attempts})"
    set_task_state(s, task, State.SYSTEM_ERROR, now, why, a.n)
    return False


def fail_site(s: Session, site_id: str, now: float, reason: str) -> int:
    """A site was lost: end its active attempts as SYSTEM_ERROR and re-queue their tasks."""
    q = select(Attempt).where(
        Attempt.site_id == site_id, Attempt.state.in_([x.value for x in ACTIVE_ATTEMPT])
    )
    n = 0
    for a in list(s.scalars(q)):
        task = s.scalar(select(Task).where(Task.id == a.task_id))
        assert task is not None
        _end_attempt(s, a, State.SYSTEM_ERROR, now, reason)
        if task.attempts == a.n:
            if State(task.state) is State.CANCELING:
                set_task_state(s, task, State.CANCELED, now, f"canceled ({reason})", a.n)
            else:
                retry_or_fail(s, task, a, now, reason)
        n += 1
    return n


def assignments(s: Session, site_id: str, now: float, redeliver_after_s: float) -> list[Attempt]:
    """Attempts placed on this site that its agent has not acknowledged yet."""
    q = select(Attempt).where(
        Attempt.site_id == site_id,
        Attempt.state == State.QUEUED.value,
        (Attempt.delivered_at.is_(None)) | (Attempt.delivered_at < now - redeliver_after_s),
    )
    rows = list(s.scalars(q.order_by(Attempt.created_at)))
    for a in rows:
        a.delivered_at = now
    return rows


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
