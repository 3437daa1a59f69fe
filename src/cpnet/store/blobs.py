"""Who may read which blob of the hub's blob store (the bytes are on disk: hub/blobs.py).

The rule (docs/staging.md):

- a blob is readable by the organisations granted it: the uploader's organisation, and for a
  blob an agent uploaded as a task's output, the task's organisation;
- an agent (site token) may read a blob while its site runs an unfinished attempt of a task that
  names the blob as an input and belongs to an organisation granted the blob (that is how
  runners fetch ``cpnet://blobs/`` inputs; knowing a hash is not enough);
- an admin may read every blob.
"""

from __future__ import annotations

from sqlalchemy import Text, cast, select
from sqlalchemy.orm import Session

from cpnet.auth.model import Principal, Role
from cpnet.store.tables import Attempt, BlobGrant, Task
from cpnet.tasks.model import BLOB_URL_PREFIX
from cpnet.tasks.states import State

UNFINISHED = [s.value for s in State if not s.terminal]
MAX_CANDIDATES = 50  # unfinished attempts on one site whose spec mentions one hash


def _needs(spec: dict, sha256: str) -> bool:
    """Whether a stored task spec has the blob as an input (``cpnet://blobs/<sha>[#…]``)."""
    url = BLOB_URL_PREFIX + sha256
    for i in spec.get("inputs") or ():
        got = str(i.get("url") or "").lower()
        if got == url or got.startswith(url + "#"):
            return True
    return False


def grant(s: Session, sha256: str, org_id: str, now: float) -> None:
    """Let `org_id` read the blob (idempotent)."""
    if s.get(BlobGrant, (sha256, org_id)) is None:
        s.add(BlobGrant(sha256=sha256, org_id=org_id, created_at=now))


def attempt_org(s: Session, attempt_id: str, site_id: str) -> str | None:
    """The organisation of the task whose attempt `attempt_id` runs on `site_id` (else None)."""
    row = s.execute(
        select(Task.org_id)
        .join(Attempt, Attempt.task_id == Task.id)
        .where(Attempt.id == attempt_id, Attempt.site_id == site_id)
    ).first()
    return None if row is None else row[0]


def may_read(s: Session, who: Principal, sha256: str) -> bool:
    """Whether `who` may read the blob (see the module's rule)."""
    if who.role is Role.ADMIN:
        return True
    if who.role is Role.AGENT:
        if not who.site_id:
            return False
        # Candidates by a textual match on the stored spec (portable: SQLite keeps JSON as
        # text, PostgreSQL casts jsonb), then each confirmed by its inputs' URLs.
        q = (
            select(Task.spec)
            .join(Attempt, Attempt.task_id == Task.id)
            .join(BlobGrant, BlobGrant.org_id == Task.org_id)
            .where(BlobGrant.sha256 == sha256)
            .where(Attempt.site_id == who.site_id)
            .where(Attempt.state.in_(UNFINISHED))
            .where(cast(Task.spec, Text).contains(sha256))
            .limit(MAX_CANDIDATES)
        )
        return any(_needs(spec, sha256) for spec in s.scalars(q))
    return s.get(BlobGrant, (sha256, who.org_id)) is not None
