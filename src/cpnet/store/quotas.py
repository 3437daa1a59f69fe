"""Organisation quotas in the store: set and read them, count use, and admit a new task."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from cpnet.errors import DomainError
from cpnet.limits.quota import Quota, Refusal, Usage, check
from cpnet.store.tables import OrgQuota, Task
from cpnet.tasks.states import TERMINAL, State

_UNFINISHED = ~Task.state.in_([s.value for s in TERMINAL])


class QuotaExceeded(DomainError):
    """A new task would pass one of its organisation's quotas (429: it passes once tasks end)."""

    status = 429
    code = "quota_exceeded"


def get(s: Session, org_id: str) -> Quota:
    row = s.get(OrgQuota, org_id)
    if row is None:
        return Quota()
    return Quota(row.max_queued, row.max_cores, row.max_gpus)


def put(s: Session, org_id: str, quota: Quota, now: float) -> None:
    """Set the organisation's quotas (all None: remove them, and the lock with them)."""
    row = s.get(OrgQuota, org_id)
    if quota.empty:
        if row is not None:
            s.delete(row)
        return
    if row is None:
        row = OrgQuota(org_id=org_id, version=0, updated_at=now)
        s.add(row)
    row.max_queued, row.max_cores, row.max_gpus = quota.queued, quota.cores, quota.gpus
    row.updated_at = now
    s.flush()


def usage(s: Session, org_id: str, without: str | None = None) -> Usage:
    """The organisation's queued tasks and the cores and GPUs of its unfinished ones (leaving
    out the task `without`)."""
    mine = [Task.org_id == org_id]
    if without is not None:
        mine.append(Task.id != without)
    queued = s.scalar(
        select(func.count()).select_from(Task).where(*mine, Task.state == State.QUEUED.value)
    )
    cores, gpus = s.execute(
        select(
            func.coalesce(func.sum(Task.cpu_cores), 0), func.coalesce(func.sum(Task.gpus), 0)
        ).where(*mine, _UNFINISHED)
    ).one()
    return Usage(int(queued or 0), float(cores), int(gpus))


def admit(s: Session, task: Task) -> None:
    """Refuse (QuotaExceeded, naming the quota and the use) a task just created in this
    transaction if its organisation's quotas do not leave room for it.

    The quota row is updated first: that takes its row lock (PostgreSQL) or the write lock
    (SQLite's BEGIN IMMEDIATE already holds it), so the organisation's submissions are checked
    one at a time, and each counts the tasks the ones before it committed. An organisation
    without quotas takes no lock."""
    locked = _lock(s, task.org_id)
    if locked is None:
        return
    quota = Quota(*locked)
    used = usage(s, task.org_id, without=task.id)
    refused = check(quota, used, task.cpu_cores, task.gpus)
    if refused is not None:
        raise QuotaExceeded(
            refused.message,
            field=f"resources.{'cpu_cores' if refused.quota == 'cores' else refused.quota}"
            if refused.quota != "queued"
            else None,
            quota=refused.quota,
            limit=refused.limit,
            used=refused.used,
            asked=refused.asked,
        )


def admit_many(s: Session, org_id: str, cores: float, gpus: int, n: int) -> None:
    """`admit` for `n` tasks just created together in this transaction, asking `cores` and
    `gpus` in all: the organisation's use, counted with them, must stay within its quotas.
    Equivalent to admitting them one after another (use only grows), with one check; the
    QuotaExceeded raised names the whole batch's ask, and the caller then admits the tasks one
    by one, so that those that fit are still created."""
    locked = _lock(s, org_id)
    if locked is None:
        return
    quota = Quota(*locked)
    used = usage(s, org_id)  # the batch included
    before = Usage(used.queued - n, used.cores - cores, used.gpus - gpus)
    for ask in (
        ("queued", quota.queued, before.queued, n),
        ("cores", quota.cores, before.cores, cores),
        ("gpus", quota.gpus, before.gpus, gpus),
    ):
        name, limit, had, asked = ask
        if limit is not None and asked and had + asked > limit + 1e-9:
            raise QuotaExceeded(
                Refusal(name, limit, had, asked).message,
                field=None,
                quota=name,
                limit=limit,
                used=had,
                asked=asked,
            )


_LOCK = (
    update(OrgQuota.__table__)
    .where(OrgQuota.__table__.c.org_id == bindparam("b_org"))
    .values(version=OrgQuota.__table__.c.version + 1)
    .returning(
        OrgQuota.__table__.c.max_queued,
        OrgQuota.__table__.c.max_cores,
        OrgQuota.__table__.c.max_gpus,
    )
)


def _lock(s: Session, org_id: str) -> Any:
    """Take the organisation's quota row (its quotas), or None when it has none. A statement
    built once: every submission runs it."""
    return s.connection().execute(_LOCK, {"b_org": org_id}).one_or_none()
