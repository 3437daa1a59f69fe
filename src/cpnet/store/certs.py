"""The agents' client certificates: which the hub issued, to which site, and which are revoked."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cpnet.store import audit
from cpnet.store.tables import Site, SiteCert, Token


def record(s: Session, serial: int, site_id: str, issued_at: float, not_after: float) -> None:
    s.add(SiteCert(serial=str(serial), site_id=site_id, issued_at=issued_at, not_after=not_after))


def refusal(s: Session, serial: int, site_id: str, now: float) -> str | None:
    """Why a presented certificate may not be used now (None: it may): unknown to this hub,
    issued to another site, revoked, expired, or its site retired."""
    row = s.execute(
        select(SiteCert.site_id, SiteCert.revoked_at, SiteCert.not_after, Site.retired_at)
        .join(Site, Site.id == SiteCert.site_id, isouter=True)
        .where(SiteCert.serial == str(serial))
    ).first()
    if row is None:
        return "the client certificate was not issued by this hub"
    if row.site_id != site_id:
        return "the client certificate belongs to another site"
    if row.revoked_at is not None:
        return "the client certificate was revoked"
    if row.not_after <= now:
        return "the client certificate has expired"
    if row.retired_at is not None:
        return "the site is retired"
    return None


def revoke_site(s: Session, site_id: str, now: float) -> int:
    """Revoke every unrevoked certificate of a site; how many."""
    res = s.execute(
        update(SiteCert)
        .where(SiteCert.site_id == site_id, SiteCert.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    n = int(res.rowcount or 0)
    audit.append(s, "site.certificates_revoked", now, object_id=site_id, detail={"count": n})
    return n


def of_site(s: Session, site_id: str) -> list[SiteCert]:
    return list(s.scalars(select(SiteCert).where(SiteCert.site_id == site_id)))


def revoke_agent_tokens(s: Session, site_id: str, now: float) -> int:
    """Revoke every agent token of a site (so it cannot get a new certificate either)."""
    res = s.execute(
        update(Token)
        .where(Token.site_id == site_id, Token.role == "agent", Token.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    n = int(res.rowcount or 0)
    audit.append(s, "site.agent_tokens_revoked", now, object_id=site_id, detail={"count": n})
    return n
