"""The audit chain in the store: appending in the caller's transaction, reading, checkpoints.

`append(s, ...)` only queues an entry on the session; `_flush` (a `before_commit` hook that
`Store` installs) chains every queued entry at commit: it locks the head row (`SELECT … FOR
UPDATE` on PostgreSQL; SQLite's `BEGIN IMMEDIATE` already serialises writers), inserts the
records in one statement and moves the head. The head's lock is so the last lock a transaction
takes, held only while it commits, and the chain's order is the order of commit, whatever the
number of writers or hub replicas.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session

from cpnet.audit import chain
from cpnet.audit.chain import Actor, Checkpoint, Entry, Record
from cpnet.auth.model import Principal
from cpnet.ident import SigningKey
from cpnet.store.tables import AuditCheckpoint, AuditHead, AuditRecord, HubKey

_PENDING = "cpnet_audit_pending"
_CREATED = "cpnet_audit_created"
_CALL = "cpnet_audit_call"


@dataclass(slots=True)
class Call:
    """The HTTP call being served (set by the API's audit middleware; the caller dependency
    fills in `who`), so that domain events name their request and actor. Mutable on purpose:
    routes run in worker threads with a copy of the context, and share this one object.

    A mutating call's own record rides in the first write transaction the call commits (no
    transaction of its own on the hot path): `entry` builds it then, `recorded` says it was
    committed with that status. A call that commits nothing is recorded by the middleware."""

    request_id: str
    who: Principal | None = None
    method: str = ""
    scope: dict | None = None  # the ASGI scope: the route and path parameters, once routed
    body: Any = None  # a hashlib sha256 of the request body, fed as it is read
    recorded: int | None = None  # the status committed with the call's record

    def entry(self, at: float, created: str | None, status: int | None = None) -> Entry:
        """The call's record: the route's template, the path parameters (or the id of what the
        call created), and `status` (default: the route's own success status)."""
        scope = self.scope or {}
        route = scope.get("route")
        template = getattr(route, "path", None) or "(no route)"
        params = scope.get("path_params") or {}
        object_id = "/".join(str(v) for v in params.values())[:200] or None
        if status is None:
            status = getattr(route, "status_code", None) or 200
        digest = self.body.hexdigest() if self.body is not None else None
        detail = {"created": created} if created and object_id and created != object_id else {}
        return Entry(
            at=at,
            action=f"{self.method} {template}"[:200],
            actor=actor_of(self.who),
            org_id=self.who.org_id if self.who else None,
            object_id=object_id or created,
            status=status,
            request_id=self.request_id,
            body=digest,
            detail=detail,
        )


current: ContextVar[Call | None] = ContextVar("cpnet_audit_call", default=None)


def request_id() -> str | None:
    """The id of the HTTP request being served (None outside one): a new task keeps it as its
    trace id (telemetry/logs.py)."""
    call = current.get()
    return call.request_id if call is not None else None


def actor_of(who: Principal | None) -> Actor:
    """The audit actor for a principal (never its token, only the token's id)."""
    if who is None:
        return chain.HUB
    return Actor(who.role.value, who.org_id, who.user_id, who.site_id, who.token_id)


def append(
    s: Session,
    action: str,
    at: float,
    *,
    org_id: str | None = None,
    object_id: str | None = None,
    detail: Mapping[str, Any] | None = None,
    before: str | None = None,
    after: str | None = None,
    status: int | None = None,
    body: str | None = None,
    actor: Actor | None = None,
    request_id: str | None = None,
) -> None:
    """Queue an audit record, written when (and only if) `s`'s transaction commits. The actor
    and request id default to the HTTP call being served (the hub itself outside one)."""
    call = current.get()
    if actor is None:
        actor = actor_of(call.who if call else None)
    if request_id is None and call is not None:
        request_id = call.request_id
    entry = Entry(
        at=at,
        action=action,
        actor=actor,
        org_id=org_id,
        object_id=object_id,
        status=status,
        request_id=request_id,
        body=body,
        before=before,
        after=after,
        detail=dict(detail or {}),
    )
    append_entry(s, entry)


def append_entry(s: Session, entry: Entry) -> None:
    """Queue a ready entry (see `append`)."""
    s.info.setdefault(_PENDING, []).append(entry)


def mark(s: Session) -> tuple[str | None, int]:
    """Where the session's queued audit state stands, before a savepoint (see `rollback_to`)."""
    return s.info.get(_CREATED), len(s.info.get(_PENDING) or ())


def rollback_to(s: Session, at: tuple[str | None, int]) -> None:
    """Forget what was queued since `mark` (its savepoint was rolled back): the records of
    changes that no longer exist, and the name of a created object that no longer exists."""
    created_before, n = at
    pending = s.info.get(_PENDING)
    if pending is not None:
        del pending[n:]
    if created_before is None:
        s.info.pop(_CREATED, None)


def created(s: Session, object_id: str) -> None:
    """Name what this transaction created, for the record of the call that commits it."""
    s.info.setdefault(_CREATED, object_id)


def flush(s: Session) -> None:
    """Chain the session's queued entries after the head (the `before_commit` hook): the
    serving call's own record first (if not recorded yet), then the domain events."""
    if s.in_nested_transaction():  # a savepoint: the outer commit chains them
        return
    entries: list[Entry] = s.info.pop(_PENDING, None) or []
    call = current.get()
    if call is not None and call.scope is not None and call.recorded is None:
        first = call.entry(entries[0].at if entries else time.time(), s.info.get(_CREATED))
        entries.insert(0, first)
        s.info[_CALL] = (call, first.status)
    if not entries:
        return
    conn = s.connection()
    # Plain SQL built once: this runs in every audited transaction, and SQLAlchemy's statement
    # building and cache keys would cost more than the three statements themselves.
    head_seq, head_hash = conn.execute(_LOCK_HEAD[conn.dialect.name == "postgresql"]).one()
    records = chain.extend(head_seq, head_hash, entries)
    conn.execute(_INSERT, [_row(r) for r in records])
    conn.execute(_MOVE_HEAD, {"seq": records[-1].seq, "hash": records[-1].hash})


def committed(s: Session) -> None:
    """The `after_commit` hook: the serving call's record is in the chain now."""
    got = s.info.pop(_CALL, None)
    if got is not None:
        got[0].recorded = got[1]


def discard(s: Session, previous: Any) -> None:
    """The `after_soft_rollback` hook: a rolled-back transaction's entries are not audited (a
    savepoint's rollback keeps the outer transaction's)."""
    if previous.parent is None:
        s.info.pop(_PENDING, None)
        s.info.pop(_CREATED, None)
        s.info.pop(_CALL, None)


_LOCK_HEAD = {
    False: text("SELECT seq, hash FROM audit_head WHERE id = 1"),  # SQLite: BEGIN IMMEDIATE
    True: text("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE"),
}
_INSERT = insert(AuditRecord)
_MOVE_HEAD = text("UPDATE audit_head SET seq = :seq, hash = :hash WHERE id = 1")


def _row(r: Record) -> dict:
    e = r.entry
    return {
        "seq": r.seq,
        "prev_hash": r.prev_hash,
        "hash": r.hash,
        "at": e.at,
        "action": e.action,
        "role": e.actor.role,
        "actor_org": e.actor.org_id,
        "actor_user": e.actor.user_id,
        "actor_site": e.actor.site_id,
        "actor_token": e.actor.token_id,
        "org_id": e.org_id,
        "object_id": e.object_id,
        "status": e.status,
        "request_id": e.request_id,
        "body": e.body,
        "before": e.before,
        "after": e.after,
        "detail": dict(e.detail),
    }


def _record(row: AuditRecord) -> Record:
    actor = Actor(row.role, row.actor_org, row.actor_user, row.actor_site, row.actor_token)
    entry = Entry(
        at=row.at,
        action=row.action,
        actor=actor,
        org_id=row.org_id,
        object_id=row.object_id,
        status=row.status,
        request_id=row.request_id,
        body=row.body,
        before=row.before,
        after=row.after,
        detail=row.detail or {},
    )
    return Record(row.seq, row.prev_hash, row.hash, entry)


def records(s: Session, batch: int = 5000) -> Iterator[Record]:
    """The whole chain in seq order, read in pages."""
    after = 0
    while True:
        rows = list(
            s.scalars(
                select(AuditRecord)
                .where(AuditRecord.seq > after)
                .order_by(AuditRecord.seq)
                .limit(batch)
            )
        )
        for r in rows:
            yield _record(r)
        if len(rows) < batch:
            return
        after = rows[-1].seq


def page(
    s: Session,
    org_id: str | None,
    since: float | None,
    until: float | None,
    after_seq: int,
    limit: int,
) -> list[Record]:
    """Records concerning `org_id` (or done by one of its principals; any org: None) with
    `since <= at < until`, after `after_seq`, oldest first."""
    q = select(AuditRecord).where(AuditRecord.seq > after_seq)
    if org_id is not None:
        q = q.where((AuditRecord.org_id == org_id) | (AuditRecord.actor_org == org_id))
    if since is not None:
        q = q.where(AuditRecord.at >= since)
    if until is not None:
        q = q.where(AuditRecord.at < until)
    return [_record(r) for r in s.scalars(q.order_by(AuditRecord.seq).limit(limit))]


def head(s: Session) -> tuple[int, str]:
    row = s.execute(select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1)).one()
    return row.seq, row.hash


def checkpoints(s: Session) -> list[Checkpoint]:
    rows = s.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.seq))
    return [Checkpoint(r.seq, r.hash, r.at, r.key_id, r.signature) for r in rows]


def public_keys(s: Session) -> dict[str, str]:
    """Every signing key the hub ever had (retired ones too: their checkpoints still verify)."""
    return {k: pub for k, pub in s.execute(select(HubKey.kid, HubKey.public_b64))}


def checkpoint(s: Session, key: SigningKey, now: float) -> Checkpoint | None:
    """Sign the head unless the newest checkpoint already names it; the new checkpoint."""
    seq, hash_ = head(s)
    last = s.scalar(select(AuditCheckpoint.seq).order_by(AuditCheckpoint.seq.desc()).limit(1))
    if seq == 0 or (last is not None and last >= seq):
        return None
    c = chain.sign_head(seq, hash_, now, key)
    s.add(AuditCheckpoint(seq=c.seq, hash=c.hash, at=c.at, key_id=c.key_id, signature=c.signature))
    return c


@dataclass(frozen=True, slots=True)
class Verdict:
    records: int
    checkpoints: int
    head: tuple[int, str]
    problems: list[chain.Problem]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(s: Session) -> Verdict:
    """Verify the whole stored chain against its checkpoints and head."""
    recs = list(records(s))
    cps = checkpoints(s)
    h = head(s)
    problems = chain.verify(recs, cps, public_keys(s), head=h)
    return Verdict(len(recs), len(cps), h, problems)
