"""The task lifecycle: what a cancel, an agent's report, a failed attempt and a lost site do to a
task and its attempts, as pure functions over plain values that return the changes to write.

The hub's store (`store/tasks.py`) loads rows into `TaskFacts` and `AttemptFacts`, calls one of
these functions and writes the `Changes` it returns in the caller's transaction; a simulator
drives the same functions over its own values. Nothing here reads the clock (`now` is passed in),
draws a random number or touches a database.

How one task walks through it: created QUEUED, it is placed (a new attempt, QUEUED, with capacity
reserved on a pool). Its agent's reports move the attempt (`update_attempt`) and the task follows
its newest attempt (`follow`): RUNNING on a QUEUED task passes through INITIALIZING. A final report
ends the attempt and releases its capacity, exactly once. A SYSTEM_ERROR — reported, or a lost site
(`fail_site`) — sends the task back to QUEUED while it has attempts left, else ends it SYSTEM_ERROR
(`retry_or_fail`). `cancel` ends a QUEUED task's placed attempts at once; a started task goes
CANCELING and its agents are asked to stop, and their final report ends it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal

from cpnet.tasks.states import State, can_transition

# An attempt in one of these states holds (or is about to hold) capacity on its pool.
ACTIVE_ATTEMPT = (State.QUEUED, State.INITIALIZING, State.RUNNING, State.PAUSED, State.CANCELING)


# ---- what the rules read ----


@dataclass(frozen=True, slots=True)
class TaskFacts:
    """What the lifecycle rules need of a task."""

    id: str
    state: State
    attempts: int  # attempts placed so far, so also the newest one's number (0: never placed)
    max_attempts: int


@dataclass(frozen=True, slots=True)
class AttemptFacts:
    """What the lifecycle rules need of one attempt."""

    id: str
    task_id: str
    n: int  # 1 for a task's first attempt
    pool_id: str
    site_id: str
    state: State
    cancel_requested: bool = False
    released: bool = False  # the capacity it reserved was given back
    start_time: float | None = None  # seconds since the epoch
    end_time: float | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class AgentReport:
    """What the lifecycle rules need of an agent's report on one attempt."""

    state: State
    at: float  # when the agent saw that state, seconds since the epoch
    reason: str | None = None
    progress: bool = False  # it carries the attempt's latest progress


# ---- what they return ----


@dataclass(frozen=True, slots=True)
class AttemptChange:
    """An attempt's new state and the fields that change with it (None: left as it is)."""

    attempt_id: str
    pool_id: str
    state: State
    start_time: float | None = None
    end_time: float | None = None
    reason: str | None = None
    release: bool = False  # give back the capacity it reserved on pool_id
    clear_progress: bool = False  # ended by its agent's report: the transfers tell the rest


@dataclass(frozen=True, slots=True)
class StopRequest:
    """The attempt's agent must stop it; the attempt's state waits for the agent's report."""

    attempt_id: str
    site_id: str


@dataclass(frozen=True, slots=True)
class TaskMove:
    """A task's state change, written only if the task is still in `frm` (compare-and-set).

    Once written it is recorded as an event `frm → to` with `reason` and `attempt`, at `at`; one
    that does not land (the task changed meanwhile) is dropped with the task's later steps.
    """

    task_id: str
    frm: State
    to: State
    reason: str | None
    attempt: int | None
    at: float


@dataclass(frozen=True, slots=True)
class TaskNote:
    """A remark that keeps the task's state (an attempt of a task still QUEUED failed): recorded
    as an event `state → state`, and made the task's reason."""

    task_id: str
    state: State
    reason: str
    attempt: int | None
    at: float


Step = AttemptChange | StopRequest | TaskMove | TaskNote


@dataclass(frozen=True, slots=True)
class Changes:
    """The steps one rule asks for, in the order they are written."""

    steps: tuple[Step, ...] = ()
    requeued: tuple[str, ...] = ()  # tasks sent back to the queue (if their moves land)
    notify: tuple[str, ...] = ()  # sites whose agents must be told to stop an attempt


@dataclass(frozen=True, slots=True)
class Verdict:
    """What an agent's report does to its attempt."""

    status: Literal["applied", "duplicate", "rejected"]
    reason: str | None = None  # why it was rejected
    cancel: bool = False  # the agent should stop this attempt
    take_progress: bool = False  # the report's progress becomes the attempt's latest
    change: AttemptChange | None = None  # when applied

    @property
    def ended(self) -> bool:
        """True when this report ended the attempt."""
        return self.change is not None and self.change.state.terminal


# ---- the rules ----


def cancel(task: TaskFacts, attempts: Iterable[AttemptFacts], now: float) -> Changes:
    """Cancel a task: a QUEUED one at once (its placed attempts end CANCELED), a started one by
    asking its agents to stop (CANCELING); a final one stays as it is."""
    if task.state.terminal:
        return Changes()
    active = [a for a in attempts if a.state in ACTIVE_ATTEMPT]
    sites = tuple(a.site_id for a in active)
    n = task.attempts or None
    if task.state is State.QUEUED:
        # Placed but not yet started: the agent may not even have it.
        ends = tuple(
            end_attempt(a, State.CANCELED, now, "canceled before it started") for a in active
        )
        return Changes(ends + _move(task, State.CANCELED, "canceled by user", n, now), notify=sites)
    stops = tuple(StopRequest(a.id, a.site_id) for a in active)
    return Changes(
        stops + _move(task, State.CANCELING, "cancel requested by user", n, now), notify=sites
    )


def update_attempt(attempt: AttemptFacts, report: AgentReport) -> Verdict:
    """Judge an agent's report on its attempt: a repeat is a duplicate, a report on an attempt
    that already ended or an illegal move is rejected (never overwrites), anything else applies."""
    cur, to = attempt.state, report.state
    # The agent's latest progress on a running attempt is kept even when its state lags the hub's
    # (a batch system may say RUNNING before the runner first wrote INITIALIZING).
    take = report.progress and not cur.terminal and not to.terminal
    if to == cur:
        return Verdict(
            "duplicate", cancel=attempt.cancel_requested and not cur.terminal, take_progress=take
        )
    if cur.terminal:
        return Verdict("rejected", f"attempt already ended {cur.value}", cancel=not to.terminal)
    if not can_transition(cur, to):
        return Verdict("rejected", f"attempt in state {cur} cannot become {to}", take_progress=take)
    ended = to.terminal
    started = to in (State.INITIALIZING, State.RUNNING) and attempt.start_time is None
    change = AttemptChange(
        attempt.id,
        attempt.pool_id,
        to,
        start_time=report.at if started else None,
        end_time=report.at if ended else None,
        reason=report.reason or None,
        release=ended and not attempt.released,
        clear_progress=ended,
    )
    return Verdict(
        "applied", cancel=attempt.cancel_requested and not ended, take_progress=take, change=change
    )


def follow(
    task: TaskFacts, attempt: AttemptFacts, state: State, reason: str | None, now: float
) -> Changes:
    """The task's changes after its attempt reached `state` (only the newest attempt speaks for
    its task)."""
    if task.attempts != attempt.n:
        return Changes()
    cur = task.state
    if state is State.SYSTEM_ERROR and cur is not State.CANCELING:
        return retry_or_fail(task, attempt, reason or "system error", now)
    if state in (State.INITIALIZING, State.RUNNING) and cur is State.CANCELING:
        return Changes()  # still stopping
    steps: tuple[Step, ...] = ()
    if state is State.RUNNING and cur is State.QUEUED:
        steps = _move(task, State.INITIALIZING, "started", attempt.n, now)
        task = replace(task, state=State.INITIALIZING)
    return Changes(steps + _move(task, state, reason, attempt.n, now))


def apply_update(
    task: TaskFacts, attempt: AttemptFacts, report: AgentReport, now: float
) -> tuple[Verdict, Changes]:
    """An agent's report on one attempt: its verdict (with the attempt's change) and the task's
    changes that follow from it."""
    verdict = update_attempt(attempt, report)
    if verdict.change is None:
        return verdict, Changes()
    return verdict, follow(task, attempt, verdict.change.state, report.reason, now)


def retry_or_fail(task: TaskFacts, attempt: AttemptFacts, reason: str, now: float) -> Changes:
    """After a system failure of `attempt`: back to the queue if attempts remain, else
    SYSTEM_ERROR."""
    where = f"attempt {attempt.n} on {attempt.pool_id} failed ({reason})"
    if task.attempts < task.max_attempts:
        why = f"{where}; retrying elsewhere"
        if task.state is State.QUEUED:
            note = TaskNote(task.id, State.QUEUED, why, attempt.n, now)
            return Changes((note,), requeued=(task.id,))
        moves = _move(task, State.QUEUED, why, attempt.n, now)
        return Changes(moves, requeued=(task.id,) if moves else ())
    why = f"{where}; no attempts left ({task.max_attempts})"
    return Changes(_move(task, State.SYSTEM_ERROR, why, attempt.n, now))


def fail_site(
    site_id: str,
    attempts: Iterable[AttemptFacts],
    tasks: Mapping[str, TaskFacts],
    reason: str,
    now: float,
) -> Changes:
    """A site was lost: end its active attempts as SYSTEM_ERROR; their tasks go back to the queue
    (or fail, with no attempts left), and a CANCELING one ends CANCELED. `tasks` holds each
    attempt's task by id."""
    steps: list[Step] = []
    requeued: list[str] = []
    for a in attempts:
        if a.site_id != site_id or a.state not in ACTIVE_ATTEMPT:
            continue
        steps.append(end_attempt(a, State.SYSTEM_ERROR, now, reason))
        task = tasks[a.task_id]
        if task.attempts != a.n:  # only the newest attempt speaks for its task
            continue
        if task.state is State.CANCELING:
            steps += _move(task, State.CANCELED, f"canceled ({reason})", a.n, now)
        else:
            then = retry_or_fail(task, a, reason, now)
            steps += then.steps
            requeued += then.requeued
    return Changes(tuple(steps), requeued=tuple(requeued))


def end_attempt(a: AttemptFacts, to: State, now: float, reason: str | None) -> AttemptChange:
    """End an attempt on the hub's word (not its agent's): its first reason and end time stay."""
    return AttemptChange(
        a.id,
        a.pool_id,
        to,
        end_time=a.end_time or now,
        reason=reason if reason and not a.reason else None,
        release=not a.released,
    )


def _move(
    task: TaskFacts, to: State, reason: str | None, n: int | None, now: float
) -> tuple[TaskMove, ...]:
    """The move of `task` to `to` if it is a legal change (a repeat is none)."""
    if task.state == to or not can_transition(task.state, to):
        return ()
    return (TaskMove(task.id, task.state, to, reason, n, now),)
