"""The task state machine: one table, illegal moves refused, terminal states final."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cpnet.tasks.states import TERMINAL, TRANSITIONS, IllegalTransition, State, transition

states = st.sampled_from(list(State))


def test_every_state_has_a_row() -> None:
    assert set(TRANSITIONS) == set(State)


def test_terminal_states_have_no_way_out() -> None:
    for s in TERMINAL:
        assert TRANSITIONS[s] == frozenset()
        assert s.terminal


@given(states, states)
def test_transition_obeys_the_table(a: State, b: State) -> None:
    if b in TRANSITIONS[a]:
        assert transition(a, b) is b
    else:
        with pytest.raises(IllegalTransition) as e:
            transition(a, b)
        assert str(a) in str(e.value) and str(b) in str(e.value)


@given(st.lists(states, max_size=30))
def test_any_walk_that_reaches_a_terminal_state_stays_there(walk: list[State]) -> None:
    cur = State.QUEUED
    for nxt in walk:
        if nxt in TRANSITIONS[cur]:
            cur = transition(cur, nxt)
        if cur.terminal:
            assert all(nxt not in TRANSITIONS[cur] for nxt in State)


def test_every_state_is_reachable_from_queued() -> None:
    seen, frontier = {State.QUEUED}, [State.QUEUED]
    while frontier:
        for nxt in TRANSITIONS[frontier.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    assert seen == set(State)


def test_no_self_loops() -> None:
    # A repeated report of the same state is a no-op for the caller, never a "change".
    assert all(s not in TRANSITIONS[s] for s in State)


def test_retry_and_cancel_paths() -> None:
    assert State.QUEUED in TRANSITIONS[State.RUNNING]  # a lost site sends it back
    assert State.CANCELED in TRANSITIONS[State.QUEUED]
    assert State.CANCELING in TRANSITIONS[State.RUNNING]
    assert State.COMPLETE not in TRANSITIONS[State.QUEUED]
