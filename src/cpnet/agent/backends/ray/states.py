"""Ray's job statuses and what each means for an attempt: the Ray backend's translate table."""

from __future__ import annotations

import logging

from cpnet.tasks.states import State

log = logging.getLogger(__name__)


# Ray job status → the state it means when the runner left no final state of its own.
RAY_STATES: dict[str, State] = {
    "PENDING": State.QUEUED,
    "RUNNING": State.RUNNING,
    "SUCCEEDED": State.COMPLETE,
    "FAILED": State.SYSTEM_ERROR,
    "STOPPED": State.CANCELED,
}


def ray_state(status: str) -> State:
    """Our state for a Ray job status (an unknown status is a SYSTEM_ERROR)."""
    return RAY_STATES.get(str(status).split(".")[-1].upper(), State.SYSTEM_ERROR)


__all__ = ["RAY_STATES", "ray_state"]
