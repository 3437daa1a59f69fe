"""Tasks' sealed secret values (hub/secrets.py seals them; this keeps and finds them)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from cpnet.store.tables import Attempt, TaskSecret
from cpnet.tasks.states import State


def put(s: Session, task_id: str, sealed: bytes, now: float) -> None:
    s.add(TaskSecret(task_id=task_id, sealed=sealed, created_at=now))


def for_attempt(s: Session, attempt_id: str, site_id: str) -> tuple[str, bytes] | None:
    """(task id, sealed values) of an attempt on `site_id` that has not ended and whose task
    has secrets; None otherwise (another site's attempt, an ended one, no secrets)."""
    row = s.execute(
        select(Attempt.task_id, Attempt.state, TaskSecret.sealed)
        .join(TaskSecret, TaskSecret.task_id == Attempt.task_id)
        .where(Attempt.id == attempt_id, Attempt.site_id == site_id)
    ).first()
    if row is None or State(row.state).terminal:
        return None
    return row.task_id, row.sealed
