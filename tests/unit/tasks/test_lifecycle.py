"""The task lifecycle rules over plain values, no database: cancel, an agent's report, retry or
fail, a lost site; and invariants over any sequence of them (a final task never changes, every
task move is a legal step from where the task stands, capacity is released exactly once)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

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
    apply_update,
    cancel,
    end_attempt,
    fail_site,
    follow,
    retry_or_fail,
    update_attempt,
)
from cpnet.tasks.states import TERMINAL, State, can_transition

NOW = 1000.0
AT = 990.0  # when the agent saw it
FINAL = sorted(TERMINAL)


def task(state: State = State.RUNNING, attempts: int = 1, max_attempts: int = 3) -> TaskFacts:
    return TaskFacts("tsk_1", state, attempts, max_attempts)


def attempt(state: State = State.RUNNING, n: int = 1, **kw: object) -> AttemptFacts:
    fields: dict = {"site_id": "site_a", "pool_id": "pool_a", "task_id": "tsk_1"} | kw
    return AttemptFacts(f"att_{n}_{fields['site_id']}", n=n, state=state, **fields)


def report(state: State, reason: str | None = None, progress: bool = False) -> AgentReport:
    return AgentReport(state, AT, reason, progress)


def move(frm: State, to: State, reason: str | None, n: int | None = 1) -> TaskMove:
    return TaskMove("tsk_1", frm, to, reason, n, NOW)


# ---- cancel ----


def test_cancel_a_task_never_placed() -> None:
    got = cancel(task(State.QUEUED, attempts=0), [], NOW)
    assert got == Changes((move(State.QUEUED, State.CANCELED, "canceled by user", None),))


def test_cancel_a_queued_task_ends_its_placed_attempt_at_once() -> None:
    old = attempt(State.SYSTEM_ERROR, n=1, released=True, end_time=5.0, site_id="site_b")
    placed = attempt(State.QUEUED, n=2)
    got = cancel(task(State.QUEUED, attempts=2), [old, placed], NOW)
    assert got.steps == (
        AttemptChange(
            placed.id,
            "pool_a",
            State.CANCELED,
            end_time=NOW,
            reason="canceled before it started",
            release=True,
        ),
        move(State.QUEUED, State.CANCELED, "canceled by user", 2),
    )
    assert got.notify == ("site_a",)  # the ended attempt's site is not told
    assert got.requeued == ()


def test_cancel_a_queued_task_ends_any_active_attempt_it_has() -> None:
    # As today: whatever state the attempt reached (the task's own move may lag behind it).
    a = attempt(State.RUNNING, start_time=1.0)
    ended, moved = cancel(task(State.QUEUED), [a], NOW).steps
    assert ended == end_attempt(a, State.CANCELED, NOW, "canceled before it started")
    assert moved == move(State.QUEUED, State.CANCELED, "canceled by user")


@pytest.mark.parametrize("cur", [State.INITIALIZING, State.RUNNING, State.PAUSED])
def test_cancel_a_started_task_asks_its_agent_to_stop(cur: State) -> None:
    a = attempt(cur)
    got = cancel(task(cur), [a], NOW)
    assert got.steps == (
        StopRequest(a.id, "site_a"),
        move(cur, State.CANCELING, "cancel requested by user"),
    )
    assert got.notify == ("site_a",)


def test_cancel_a_canceling_task_asks_again_and_moves_nothing() -> None:
    a = attempt(State.RUNNING, cancel_requested=True)
    got = cancel(task(State.CANCELING), [a], NOW)
    assert got == Changes((StopRequest(a.id, "site_a"),), notify=("site_a",))


@pytest.mark.parametrize("cur", FINAL)
def test_cancel_a_final_task_changes_nothing(cur: State) -> None:
    assert cancel(task(cur), [attempt(State.RUNNING)], NOW) == Changes()


def test_cancel_a_preempted_task_changes_nothing() -> None:
    # As today: PREEMPTED → CANCELING is not in the table and a PREEMPTED attempt is not active.
    assert cancel(task(State.PREEMPTED), [attempt(State.PREEMPTED)], NOW) == Changes()


def test_end_attempt_keeps_its_first_reason_and_end_time() -> None:
    a = attempt(State.RUNNING, reason="first", end_time=7.0)
    assert end_attempt(a, State.SYSTEM_ERROR, NOW, "lost") == AttemptChange(
        a.id, "pool_a", State.SYSTEM_ERROR, end_time=7.0, reason=None, release=True
    )
    done = attempt(State.RUNNING, released=True)
    assert not end_attempt(done, State.CANCELED, NOW, None).release


# ---- an agent's report on its attempt ----


def test_a_repeat_is_a_duplicate_that_keeps_progress_and_repeats_a_cancel() -> None:
    v = update_attempt(
        attempt(State.RUNNING, cancel_requested=True), report(State.RUNNING, progress=True)
    )
    assert (v.status, v.cancel, v.take_progress, v.change) == ("duplicate", True, True, None)
    v = update_attempt(
        attempt(State.COMPLETE, cancel_requested=True), report(State.COMPLETE, progress=True)
    )
    assert (v.status, v.cancel, v.take_progress) == ("duplicate", False, False)


@pytest.mark.parametrize("late", [State.RUNNING, State.EXECUTOR_ERROR])
def test_a_report_for_an_attempt_that_already_ended_is_rejected(late: State) -> None:
    v = update_attempt(attempt(State.COMPLETE), report(late, "late", progress=True))
    assert v.status == "rejected" and v.reason == "attempt already ended COMPLETE"
    assert v.cancel is (not late.terminal)  # a still-running one must be stopped
    assert not v.take_progress and v.change is None


def test_an_illegal_report_is_rejected_but_its_progress_is_kept() -> None:
    # A batch system may say RUNNING before the runner first wrote INITIALIZING.
    v = update_attempt(attempt(State.RUNNING), report(State.INITIALIZING, progress=True))
    assert v.status == "rejected"
    assert v.reason == "attempt in state RUNNING cannot become INITIALIZING"
    assert v.take_progress and not v.cancel and v.change is None
    v = update_attempt(attempt(State.QUEUED), report(State.COMPLETE, progress=True))
    assert v.reason == "attempt in state QUEUED cannot become COMPLETE" and not v.take_progress


def test_a_start_sets_the_start_time_once() -> None:
    v = update_attempt(attempt(State.QUEUED), report(State.INITIALIZING, progress=True))
    assert v.status == "applied" and v.take_progress and not v.ended
    assert v.change == AttemptChange("att_1_site_a", "pool_a", State.INITIALIZING, start_time=AT)
    v = update_attempt(attempt(State.INITIALIZING, start_time=1.0), report(State.RUNNING, "go"))
    assert v.change == AttemptChange("att_1_site_a", "pool_a", State.RUNNING, reason="go")


def test_a_running_attempt_asked_to_stop_is_told_again() -> None:
    v = update_attempt(attempt(State.INITIALIZING, cancel_requested=True), report(State.RUNNING))
    assert v.status == "applied" and v.cancel


@pytest.mark.parametrize("end", [State.COMPLETE, State.EXECUTOR_ERROR, State.SYSTEM_ERROR])
def test_the_end_releases_capacity_and_clears_progress(end: State) -> None:
    a = attempt(State.RUNNING, start_time=1.0, cancel_requested=True)
    v = update_attempt(a, report(end, "why", progress=True))
    assert v.status == "applied" and v.ended and not v.cancel and not v.take_progress
    assert v.change == AttemptChange(
        a.id, "pool_a", end, end_time=AT, reason="why", release=True, clear_progress=True
    )


def test_canceling_attempt_ends_canceled() -> None:
    v = update_attempt(attempt(State.CANCELING), report(State.CANCELED))
    assert v.ended and v.change is not None and v.change.release


# ---- the task follows its newest attempt ----


def test_running_on_a_queued_task_passes_through_initializing() -> None:
    got = follow(task(State.QUEUED), attempt(), State.RUNNING, "go", NOW)
    assert got == Changes(
        (
            move(State.QUEUED, State.INITIALIZING, "started"),
            move(State.INITIALIZING, State.RUNNING, "go"),
        )
    )


@pytest.mark.parametrize(
    ("cur", "to"),
    [
        (State.QUEUED, State.INITIALIZING),
        (State.INITIALIZING, State.RUNNING),
        (State.RUNNING, State.COMPLETE),
        (State.RUNNING, State.EXECUTOR_ERROR),
        (State.CANCELING, State.CANCELED),
        (State.CANCELING, State.COMPLETE),  # the backend's truth wins over the wish
        (State.RUNNING, State.CANCELED),
        (State.RUNNING, State.PREEMPTED),
        (State.RUNNING, State.PAUSED),
        (State.PAUSED, State.RUNNING),
        (State.PREEMPTED, State.QUEUED),
    ],
)
def test_the_task_takes_its_newest_attempts_state(cur: State, to: State) -> None:
    assert follow(task(cur), attempt(), to, "r", NOW) == Changes((move(cur, to, "r"),))


def test_an_older_attempt_does_not_speak_for_its_task() -> None:
    assert follow(task(State.QUEUED, attempts=2), attempt(n=1), State.SYSTEM_ERROR, "x", NOW) == (
        Changes()
    )


@pytest.mark.parametrize("to", [State.INITIALIZING, State.RUNNING])
def test_a_canceling_task_stays_canceling_while_its_attempt_runs(to: State) -> None:
    assert follow(task(State.CANCELING), attempt(), to, None, NOW) == Changes()


def test_a_system_error_while_canceling_ends_the_task_with_the_reports_reason() -> None:
    got = follow(task(State.CANCELING), attempt(), State.SYSTEM_ERROR, None, NOW)
    assert got == Changes((move(State.CANCELING, State.SYSTEM_ERROR, None),))


def test_a_system_error_sends_the_task_back_to_the_queue() -> None:
    got = follow(task(State.RUNNING), attempt(), State.SYSTEM_ERROR, None, NOW)
    why = "attempt 1 on pool_a failed (system error); retrying elsewhere"
    assert got == Changes((move(State.RUNNING, State.QUEUED, why),), requeued=("tsk_1",))


def test_an_attempt_failing_before_its_task_started_leaves_a_note() -> None:
    got = retry_or_fail(task(State.QUEUED, attempts=2), attempt(State.QUEUED, n=2), "boom", NOW)
    why = "attempt 2 on pool_a failed (boom); retrying elsewhere"
    assert got == Changes((TaskNote("tsk_1", State.QUEUED, why, 2, NOW),), requeued=("tsk_1",))


@pytest.mark.parametrize("cur", [State.QUEUED, State.RUNNING])
def test_retries_exhausted_fail_the_task(cur: State) -> None:
    got = retry_or_fail(task(cur, attempts=2, max_attempts=2), attempt(n=2), "boom", NOW)
    why = "attempt 2 on pool_a failed (boom); no attempts left (2)"
    assert got == Changes((move(cur, State.SYSTEM_ERROR, why, 2),))


def test_a_paused_task_is_not_requeued() -> None:
    # As today: PAUSED → QUEUED is not in the table, so the move is dropped (nothing requeued).
    assert retry_or_fail(task(State.PAUSED), attempt(), "boom", NOW) == Changes()


@pytest.mark.parametrize("cur", FINAL)
def test_a_final_task_ignores_its_attempts(cur: State) -> None:
    for to in State:
        assert follow(task(cur), attempt(), to, "x", NOW) == Changes()
    assert retry_or_fail(task(cur, attempts=3, max_attempts=3), attempt(n=3), "x", NOW) == (
        Changes()
    )


def test_apply_update_follows_only_an_applied_report() -> None:
    v, then = apply_update(task(State.QUEUED), attempt(State.QUEUED), report(State.RUNNING), NOW)
    assert v.status == "applied" and [m.to for m in then.steps] == [  # type: ignore[union-attr]
        State.INITIALIZING,
        State.RUNNING,
    ]
    v, then = apply_update(task(State.RUNNING), attempt(State.RUNNING), report(State.RUNNING), NOW)
    assert v.status == "duplicate" and then == Changes()


# ---- a lost site ----


def test_a_lost_site_fails_its_running_and_initializing_attempts() -> None:
    tasks = {
        "t_run": TaskFacts("t_run", State.RUNNING, 1, 3),
        "t_init": TaskFacts("t_init", State.INITIALIZING, 2, 3),
        "t_placed": TaskFacts("t_placed", State.QUEUED, 1, 3),
        "t_last": TaskFacts("t_last", State.RUNNING, 3, 3),
        "t_cancel": TaskFacts("t_cancel", State.CANCELING, 1, 3),
        "t_old": TaskFacts("t_old", State.RUNNING, 2, 3),
    }
    run = attempt(State.RUNNING, task_id="t_run", reason="earlier")
    init = attempt(State.INITIALIZING, n=2, task_id="t_init")
    placed = attempt(State.QUEUED, task_id="t_placed")
    last = attempt(State.RUNNING, n=3, task_id="t_last")
    canceling = attempt(State.CANCELING, task_id="t_cancel")
    old = attempt(State.RUNNING, n=1, task_id="t_old")  # its task has a newer attempt
    ignored = [
        attempt(State.COMPLETE, n=1, task_id="t_old"),
        attempt(State.RUNNING, n=2, task_id="t_old", site_id="site_b"),
    ]
    got = fail_site(
        "site_a", [run, init, placed, last, canceling, old, *ignored], tasks, "gone", NOW
    )

    def end(a: AttemptFacts, reason: str | None = "gone") -> AttemptChange:
        return AttemptChange(
            a.id, "pool_a", State.SYSTEM_ERROR, end_time=NOW, reason=reason, release=True
        )

    def retry(n: int) -> str:
        return f"attempt {n} on pool_a failed (gone); retrying elsewhere"

    assert got.steps == (
        end(run, reason=None),  # its first reason stays
        TaskMove("t_run", State.RUNNING, State.QUEUED, retry(1), 1, NOW),
        end(init),
        TaskMove("t_init", State.INITIALIZING, State.QUEUED, retry(2), 2, NOW),
        end(placed),
        TaskNote("t_placed", State.QUEUED, retry(1), 1, NOW),
        end(last),
        TaskMove(
            "t_last",
            State.RUNNING,
            State.SYSTEM_ERROR,
            "attempt 3 on pool_a failed (gone); no attempts left (3)",
            3,
            NOW,
        ),
        end(canceling),
        TaskMove("t_cancel", State.CANCELING, State.CANCELED, "canceled (gone)", 1, NOW),
        end(old),
    )
    assert got.requeued == ("t_run", "t_init", "t_placed")
    assert got.notify == ()


# ---- invariants over any sequence ----

states = st.sampled_from(list(State))
events = st.one_of(
    st.tuples(st.just("report"), states, st.sampled_from([None, "", "why"]), st.booleans()),
    st.tuples(st.just("cancel")),
    st.tuples(st.just("lost")),
)


def _write(t: TaskFacts, a: AttemptFacts, changes: Changes) -> tuple[TaskFacts, AttemptFacts]:
    """Apply the changes to the plain values the way the store writes them to rows."""
    for step in changes.steps:
        if isinstance(step, TaskMove):
            assert step.frm is t.state  # every move starts where the task stands
            assert can_transition(step.frm, step.to) and step.at == NOW
            t = replace(t, state=step.to)
        elif isinstance(step, AttemptChange):
            a = replace(
                a,
                state=step.state,
                released=a.released or step.release,
                start_time=a.start_time if step.start_time is None else step.start_time,
                end_time=a.end_time if step.end_time is None else step.end_time,
                reason=a.reason if step.reason is None else step.reason,
            )
        elif isinstance(step, StopRequest):
            a = replace(a, cancel_requested=True)
    return t, a


@given(
    st.sampled_from(sorted(set(State) - TERMINAL)),
    st.integers(1, 3),
    st.lists(events, max_size=12),
)
def test_any_sequence_keeps_the_invariants(start: State, max_attempts: int, seq: list) -> None:
    t = TaskFacts("tsk_1", start, 1, max_attempts)
    a = attempt(State.QUEUED if start is State.QUEUED else State.RUNNING)
    releases = 0
    for ev in seq:
        was_final = t.state.terminal
        if ev[0] == "report":
            v, then = apply_update(t, a, report(ev[1], ev[2], ev[3]), NOW)
            changes = Changes(((v.change,) if v.change else ()) + then.steps)
        elif ev[0] == "cancel":
            changes = cancel(t, [a], NOW)
        else:
            changes = fail_site("site_a", [a], {t.id: t}, "gone", NOW)
        releases += sum(isinstance(x, AttemptChange) and x.release for x in changes.steps)
        ended_before = a.state.terminal
        t, a = _write(t, a, changes)
        if was_final:  # a final task never changes
            assert not any(isinstance(x, TaskMove | TaskNote) for x in changes.steps)
        if ended_before:  # an ended attempt never changes
            assert not any(isinstance(x, AttemptChange) for x in changes.steps)
        assert releases == (1 if a.state.terminal else 0)  # capacity released exactly once
        assert a.released is a.state.terminal


@given(states, states, st.booleans(), st.booleans())
def test_a_report_is_applied_only_as_a_legal_change(
    cur: State, to: State, asked: bool, p: bool
) -> None:
    v = update_attempt(attempt(cur, cancel_requested=asked), report(to, progress=p))
    if v.status == "applied":
        assert v.change is not None and can_transition(cur, to) and v.change.state is to
    else:
        assert v.change is None
    assert v.take_progress is (p and not cur.terminal and not to.terminal)
    if cur in ACTIVE_ATTEMPT and to == cur:
        assert v.cancel is asked
