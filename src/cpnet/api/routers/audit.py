"""The audit chain: an organisation's records for a period, and verification of the chain.

Who may read: an admin any organisation's (or all); a provider admin their own organisation's;
users and agents not (403)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Query

from cpnet.api.deps import admin, hub, provider_admin
from cpnet.audit.wire import AuditPage, AuditRecordOut, AuditVerify, ProblemOut
from cpnet.auth.model import Principal
from cpnet.errors import Invalid
from cpnet.hub.service import Hub
from cpnet.store import audit

router = APIRouter(prefix="/v1", tags=["audit"])


def _epoch(moment: datetime | None, field: str) -> float | None:
    if moment is None:
        return None
    if moment.utcoffset() is None:
        raise Invalid(f"{field} needs a time zone, e.g. 2026-12-01T00:00:00Z", field=field)
    return moment.timestamp()


@router.get("/audit", response_model=AuditPage)
def list_audit(
    org: str | None = Query(None, max_length=64, description="organisation (default: yours)"),
    since: datetime | None = Query(None, description="from this time (RFC 3339), inclusive"),
    until: datetime | None = Query(None, description="to this time (RFC 3339), exclusive"),
    cursor: str | None = Query(None, pattern=r"^[0-9]{1,18}$", description="next_cursor"),
    limit: int = Query(500, ge=1, le=5000),
    who: Principal = Depends(provider_admin),
    h: Hub = Depends(hub),
) -> AuditPage:
    """Audit records concerning an organisation (or done by one of its principals), oldest
    first. Admins may name any organisation, or none for every record."""
    org_id = org if (org is not None or who.is_admin) else who.org_id
    if org_id is not None:
        who.must_see(org_id, "organisation", org_id, "org")
    lo, hi = _epoch(since, "since"), _epoch(until, "until")
    with h.store.read() as s:
        rows = audit.page(s, org_id, lo, hi, int(cursor or 0), limit)
    nxt = str(rows[-1].seq) if len(rows) == limit else None
    return AuditPage(records=[AuditRecordOut.of(r) for r in rows], next_cursor=nxt)


@router.get("/audit/verify", response_model=AuditVerify)
def verify_audit(_: Principal = Depends(admin), h: Hub = Depends(hub)) -> AuditVerify:
    """Verify the whole chain: every link, every signed checkpoint, the head (admins)."""
    with h.store.read() as s:
        v = audit.verify(s)
    return AuditVerify(
        ok=v.ok,
        records=v.records,
        checkpoints=v.checkpoints,
        head_seq=v.head[0],
        head_hash=v.head[1],
        problems=[ProblemOut.of(p) for p in v.problems],
    )
