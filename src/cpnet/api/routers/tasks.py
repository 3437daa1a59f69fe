"""Tasks: create, list, read, cancel, logs, events, and the scheduler's explanation."""

from __future__ import annotations

import asyncio
import contextlib
import time
from enum import StrEnum
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Depends, Query, Response
from pydantic import ValidationError

from cpnet.api.deps import caller, hub, person
from cpnet.api.routers.pools import parse_pairs
from cpnet.auth.model import Principal
from cpnet.errors import DomainError
from cpnet.hub import tasks
from cpnet.hub.scheduling import explain_with_runtimes
from cpnet.hub.service import Hub
from cpnet.store import tasks as store
from cpnet.tasks.model import (
    BatchItem,
    BatchRequest,
    BatchResult,
    ItemError,
    TaskPage,
    TaskSpec,
    TaskView,
)
from cpnet.tasks.states import State

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])
MAX_WAIT_S = 60.0  # the longest a GET of one task may wait for it to move (wait_s)
RECHECK_S = 5.0  # a waiting GET re-reads its task at least this often


@router.post("", response_model=TaskView, status_code=201, response_model_exclude_none=True)
def create_task(
    spec: TaskSpec, response: Response, who: Principal = Depends(person), h: Hub = Depends(hub)
) -> TaskView:
    """Submit a task. A repeated `idempotency_key` returns the original task with 200."""
    done = tasks.submit(h, who, spec)
    if not done.created:
        response.status_code = 200
    assert done.view is not None
    return done.view


@router.post(":batch", response_model=BatchResult, response_model_exclude_none=True)
def create_tasks(
    batch: BatchRequest, who: Principal = Depends(person), h: Hub = Depends(hub)
) -> BatchResult:
    """Submit up to 1000 tasks in one request and one transaction. Each item is checked and
    created on its own: its result is 201 (created), 200 (its `idempotency_key` found the task
    it made before) or its own 4xx with the error, field names starting `tasks.N.`; a refused
    item leaves nothing behind and the others are still created. The answer is 200 whenever
    the request itself was well formed."""
    items: list[TaskSpec | DomainError] = []
    for i, raw in enumerate(batch.tasks):
        try:
            items.append(TaskSpec.model_validate(raw))
        except ValidationError as exc:
            e = exc.errors()[0]
            where = ".".join(str(x) for x in e.get("loc", ()))
            field = f"tasks.{i}.{where}" if where else f"tasks.{i}"
            items.append(NotATask(f"{field}: {e.get('msg', 'invalid')}", field=field))
    outcomes = tasks.submit_many(h, who, items)
    results = [
        BatchItem(
            index=o.index,
            status=o.status,
            id=o.id,
            error=None if o.error is None else _item_error(o.index, o.error),
        )
        for o in outcomes
    ]
    return BatchResult(
        results=results,
        created=sum(r.status == 201 for r in results),
        existing=sum(r.status == 200 for r in results),
        failed=sum(r.error is not None for r in results),
    )


class NotATask(DomainError):
    """A batch item that is no valid TaskSpec: 422, as POST /v1/tasks answers such a body."""

    status = 422
    code = "validation_error"


def _item_error(index: int, err: DomainError) -> ItemError:
    field = err.field
    if field is not None and not field.startswith(f"tasks.{index}"):
        field = f"tasks.{index}.{field}"
    return ItemError(code=err.code, message=err.message, field=field)


@router.get("", response_model=TaskPage, response_model_exclude_none=True)
def list_tasks(
    state: Annotated[list[State], Query(max_length=16)] = [],  # noqa: B006
    name_prefix: Annotated[str | None, Query(max_length=256)] = None,
    tag: Annotated[list[str], Query(max_length=16)] = [],  # noqa: B006
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    who: Principal = Depends(caller),
    h: Hub = Depends(hub),
) -> TaskPage:
    """Your organisation's tasks, newest first, `limit` per page (follow `next_cursor`)."""
    f = store.TaskFilter(
        states=tuple(x.value for x in state), name_prefix=name_prefix, tags=parse_pairs(tag, "tag")
    )
    with h.store.read() as s:
        rows, nxt = store.list_tasks(s, who, f, limit, cursor)
        return TaskPage(tasks=store.task_views(s, rows), next_cursor=nxt)


class View(StrEnum):
    BASIC = "basic"
    FULL = "full"


@router.get("/{task_id}", response_model=TaskView, response_model_exclude_none=True)
async def get_task(
    task_id: str,
    view: View = View.BASIC,
    wait_s: Annotated[
        float,
        Query(
            ge=0,
            le=MAX_WAIT_S,
            description="Wait up to this many seconds for the task to leave `state` (or, "
            "without `state`, to end) before answering; 0 answers at once.",
        ),
    ] = 0.0,
    state: Annotated[
        State | None,
        Query(
            description="With `wait_s`: the state you last saw; the answer comes when the "
            "task is in another one."
        ),
    ] = None,
    who: Principal = Depends(caller),
    h: Hub = Depends(hub),
) -> TaskView:
    """One task with its attempts (and each running attempt's progress); `view=full` adds every
    attempt's per-transfer records (what was moved, where, bytes, seconds, sha256 verified).
    With `wait_s` it is a long poll: the answer comes as soon as the task is no longer in
    `state` (without `state`: has ended), or when `wait_s` has passed, whichever is first."""

    def read() -> TaskView:
        with h.store.read() as s:
            return store.task_view(s, store.get_task(s, who, task_id), full=view is View.FULL)

    deadline = time.monotonic() + wait_s
    while True:
        # Taken before the read: a change committed after it sets this event.
        changed = h.notifier.change_event() if h.notifier is not None else None
        shown = await to_thread.run_sync(read)
        left = deadline - time.monotonic()
        moved = shown.state.terminal or (state is not None and shown.state != state)
        if moved or left <= 0 or changed is None or h.closing:
            return shown
        with contextlib.suppress(TimeoutError):
            # A change anywhere wakes every waiter; a re-read now and then covers a change
            # that rang no bell.
            await asyncio.wait_for(changed.wait(), min(left, RECHECK_S))


@router.post("/{task_id}/cancel", response_model=TaskView, response_model_exclude_none=True)
def cancel_task(task_id: str, who: Principal = Depends(caller), h: Hub = Depends(hub)) -> TaskView:
    """Cancel: a queued task ends CANCELED at once; a running one goes CANCELING until its agent
    stops it. Cancelling a finished task changes nothing."""
    return tasks.cancel(h, who, task_id)


@router.get("/{task_id}/logs")
def task_logs(task_id: str, who: Principal = Depends(caller), h: Hub = Depends(hub)) -> dict:
    """Executor logs (exit codes, times, stdout/stderr tails) of every attempt."""
    with h.store.read() as s:
        task = store.get_task(s, who, task_id)
        attempts = [store.attempt_view(a) for a in store.attempts_of(s, task.id)]
    return {
        "task_id": task_id,
        "attempts": [
            {
                "attempt": a.attempt,
                "attempt_id": a.attempt_id,
                "pool_id": a.pool_id,
                "state": a.state,
                "executor_logs": [x.model_dump(mode="json") for x in a.executor_logs],
                "system_logs": a.system_logs,
            }
            for a in attempts
        ],
    }


@router.get("/{task_id}/events")
def task_events(task_id: str, who: Principal = Depends(caller), h: Hub = Depends(hub)) -> dict:
    """Every state change of the task with its time and reason, oldest first."""
    with h.store.read() as s:
        task = store.get_task(s, who, task_id)
        return {"events": [e.model_dump(mode="json") for e in store.events_of(s, task.id)]}


@router.get("/{task_id}/explain")
def explain(task_id: str, who: Principal = Depends(caller), h: Hub = Depends(hub)) -> dict:
    """How the scheduler ranks every pool for this task right now, and why others are out."""
    with h.store.read() as s:
        task = store.get_task(s, who, task_id)
        d, runtimes = explain_with_runtimes(s, task)
        return {
            "task_id": task.id,
            "state": task.state,
            "chosen_pool": task.pool_id,
            "placements": [
                {
                    "pool_id": p.pool_id,
                    "rank": p.rank,
                    "score": round(p.score, 6),
                    "expected_start_s": p.expected_start_s,
                    "hourly_price": p.hourly_price,
                    "estimated_cost": p.estimated_cost,
                    "fits_now": p.fits_now,
                    "predicted_runtime_s": p.predicted_runtime_s,
                    "staging_s": p.staging_s,
                    "runtime_s": p.runtime_s,
                    "time_to_result_s": p.time_to_result_s,
                    "egress_cost": p.egress_cost,
                    "carbon_g": p.carbon_g,
                    "tier": p.tier + 1,
                    "reasons": list(p.reasons),
                }
                for p in d.placements
            ],
            "rejections": [
                {"pool_id": r.pool_id, "reasons": list(r.reasons)} for r in d.rejections
            ],
            "objective": task.spec.get("objective", "balanced"),
            "work": task.spec.get("work"),
            # Every pool's predicted run time for a task with work in SCU-hours (None: unknown).
            "predicted_runtime_s": runtimes,
        }
