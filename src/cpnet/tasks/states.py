"""Task states (the GA4GH TES ones) and the one table of legal transitions."""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    """A task's (or one attempt's) state; names and meanings follow GA4GH TES v1.1."""

    QUEUED = "QUEUED"
    INITIALIZING = "INITIALIZING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETE = "COMPLETE"
    EXECUTOR_ERROR = "EXECUTOR_ERROR"
    SYSTEM_ERROR = "SYSTEM_ERROR"
    CANCELING = "CANCELING"
    CANCELED = "CANCELED"
    PREEMPTED = "PREEMPTED"

    @property
    def terminal(self) -> bool:
        """True when nothing can follow this state."""
        return self in TERMINAL

    @property
    def active(self) -> bool:
        """True while the task holds (or is about to hold) capacity on a pool."""
        return self in (State.INITIALIZING, State.RUNNING, State.PAUSED, State.CANCELING)


TERMINAL = frozenset({State.COMPLETE, State.EXECUTOR_ERROR, State.SYSTEM_ERROR, State.CANCELED})

# Why QUEUED is reachable again from INITIALIZING/RUNNING/PREEMPTED: a lost site or a system error
# ends the *attempt*, and the task goes back to the queue for another attempt elsewhere.
# CANCELING may still end in COMPLETE or an error: the backend's truth wins over the wish.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.QUEUED: frozenset(
        {State.INITIALIZING, State.RUNNING, State.CANCELED, State.SYSTEM_ERROR}
    ),
    State.INITIALIZING: frozenset(
        {
            State.RUNNING,
            State.QUEUED,
            State.COMPLETE,
            State.EXECUTOR_ERROR,
            State.SYSTEM_ERROR,
            State.CANCELING,
            State.CANCELED,
        }
    ),
    State.RUNNING: frozenset(
        {
            State.PAUSED,
            State.COMPLETE,
            State.EXECUTOR_ERROR,
            State.SYSTEM_ERROR,
            State.QUEUED,
            State.CANCELING,
            State.CANCELED,
            State.PREEMPTED,
        }
    ),
    State.PAUSED: frozenset({State.RUNNING, State.CANCELING, State.CANCELED, State.SYSTEM_ERROR}),
    State.CANCELING: frozenset(
        {State.CANCELED, State.COMPLETE, State.EXECUTOR_ERROR, State.SYSTEM_ERROR}
    ),
    State.PREEMPTED: frozenset({State.QUEUED, State.SYSTEM_ERROR, State.CANCELED}),
    State.COMPLETE: frozenset(),
    State.EXECUTOR_ERROR: frozenset(),
    State.SYSTEM_ERROR: frozenset(),
    State.CANCELED: frozenset(),
}


class IllegalTransition(ValueError):
    """Raised when a state change is not in the transition table."""

    def __init__(self, current: State, target: State) -> None:
        self.current = current
        self.target = target
        super().__init__(f"a task in state {current} cannot become {target}")


def can_transition(current: State, target: State) -> bool:
    """Whether `current → target` is a legal change (a repeat of the same state is not a change)."""
    return target in TRANSITIONS[current]


def transition(current: State, target: State) -> State:
    """Return `target` if the change is legal, else raise IllegalTransition."""
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(current, target)
    return target
