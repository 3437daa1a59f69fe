"""The agent API's wire models, in one module that the hub's routes and the agent share.

Every message between a site's agent and the hub (under ``/v1/sites/{site_id}/``) is one of
these: what the agent sends (registration, heartbeat, measurements, attempt updates) and what the
hub answers (the registration result, the heartbeat reply, assignments, per-update outcomes).
Those that belong to the registry's or the task's own vocabulary are defined there and named here
too, so that both sides import the protocol from one place. Light: only pydantic models, no I/O.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from cpnet.network.records import ProbeSample, ProbeSamples
from cpnet.registry.model import Heartbeat, Measurements, RegisterResult, Registration
from cpnet.tasks.model import Assignment, AttemptUpdate

MAX_UPDATES = 1000  # attempt updates in one POST .../updates

__all__ = [
    "MAX_UPDATES",
    "Assignment",
    "Assignments",
    "AttemptUpdate",
    "Heartbeat",
    "HeartbeatReply",
    "Measurements",
    "ProbeSample",
    "ProbeSamples",
    "RegisterResult",
    "Registration",
    "UpdateOutcome",
    "UpdateReply",
    "Updates",
]


class HeartbeatReply(BaseModel):
    """The hub's answer to a heartbeat."""

    cancel: list[str] = Field(default_factory=list)  # attempts to stop
    unknown: list[str] = Field(default_factory=list)  # attempts the hub does not expect here
    # Pools to probe again: name -> when it was asked (an agent acts once per request).
    measure: dict[str, float] = Field(default_factory=dict)
    # Peer sites to probe now: place ("site:<id>") -> its probe URL (docs/network.md).
    probe: dict[str, str] = Field(default_factory=dict)


class Assignments(BaseModel):
    """New attempts for the site (a long poll's answer), and attempts to cancel."""

    assignments: list[Assignment]
    cancel: list[str]


class Updates(BaseModel):
    """Attempt reports, applied in order in one transaction; repeats are harmless."""

    updates: list[AttemptUpdate] = Field(max_length=MAX_UPDATES)


class UpdateOutcome(BaseModel):
    """What the hub made of one attempt update."""

    attempt_id: str
    status: str
    reason: str | None = None
    cancel: bool = False  # the attempt is to be stopped (its task was canceled)
    # The verdict on the update's signed usage record, if it carried one: {"verdict", "reason",
    # "field"} (docs/market.md, "Metering"); the update itself applies whatever the verdict.
    usage: dict[str, str | None] | None = None


class UpdateReply(BaseModel):
    results: list[UpdateOutcome]
