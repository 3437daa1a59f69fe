"""The audit chain's wire models: what `GET /v1/audit` and `GET /v1/audit/verify` give."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from cpnet.audit.chain import Problem, Record


class ActorOut(BaseModel):
    role: str
    org_id: str | None = None
    user_id: str | None = None
    site_id: str | None = None
    token_id: str | None = None


class AuditRecordOut(BaseModel):
    seq: int
    prev_hash: str
    hash: str
    at: float  # UTC epoch seconds
    action: str
    actor: ActorOut
    org_id: str | None = None
    object_id: str | None = None
    status: int | None = None
    request_id: str | None = None
    body: str | None = None  # sha256 of the request body
    before: str | None = None
    after: str | None = None
    detail: dict[str, Any] = {}

    @classmethod
    def of(cls, r: Record) -> AuditRecordOut:
        e = r.entry
        a = e.actor
        return cls(
            seq=r.seq,
            prev_hash=r.prev_hash,
            hash=r.hash,
            at=e.at,
            action=e.action,
            actor=ActorOut(
                role=a.role,
                org_id=a.org_id,
                user_id=a.user_id,
                site_id=a.site_id,
                token_id=a.token_id,
            ),
            org_id=e.org_id,
            object_id=e.object_id,
            status=e.status,
            request_id=e.request_id,
            body=e.body,
            before=e.before,
            after=e.after,
            detail=dict(e.detail),
        )


class AuditPage(BaseModel):
    records: list[AuditRecordOut]
    next_cursor: str | None = None  # pass as `cursor` for the next page


class ProblemOut(BaseModel):
    seq: int
    kind: str
    message: str

    @classmethod
    def of(cls, p: Problem) -> ProblemOut:
        return cls(seq=p.seq, kind=p.kind, message=p.message)


class AuditVerify(BaseModel):
    ok: bool
    records: int
    checkpoints: int
    head_seq: int
    head_hash: str
    problems: list[ProblemOut]
