"""Organisations, users and API tokens in the store."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cpnet.auth.model import Principal, Role, new_token, token_hash
from cpnet.errors import Conflict, NotFound
from cpnet.errors import new_id as _new_id
from cpnet.store import audit
from cpnet.store.tables import Org, Token, User


def create_org(s: Session, name: str, now: float) -> Org:
    if s.scalar(select(Org).where(Org.name == name)) is not None:
        raise Conflict(f"an organisation named {name!r} exists", field="name")
    org = Org(id=_new_id("org"), name=name, created_at=now)
    s.add(org)
    s.flush()
    audit.created(s, org.id)
    return org


def get_org(s: Session, org_id: str) -> Org:
    org = s.get(Org, org_id)
    if org is None:
        raise NotFound(f"no organisation {org_id!r}", field="org_id")
    return org


def list_orgs(s: Session) -> list[Org]:
    return list(s.scalars(select(Org).order_by(Org.created_at)))


def create_user(s: Session, org_id: str, name: str, role: Role, now: float) -> User:
    get_org(s, org_id)
    if role is Role.AGENT:
        raise Conflict("agents are not users: create a site token instead", field="role")
    user = User(id=_new_id("usr"), org_id=org_id, name=name, role=role.value, created_at=now)
    s.add(user)
    try:
        s.flush()
    except IntegrityError as exc:
        raise Conflict(f"a user named {name!r} exists in {org_id}", field="name") from exc
    audit.created(s, user.id)
    return user


def get_user(s: Session, user_id: str) -> User:
    user = s.get(User, user_id)
    if user is None:
        raise NotFound(f"no user {user_id!r}", field="user_id")
    return user


def issue_token(
    s: Session,
    *,
    role: Role,
    org_id: str,
    now: float,
    user_id: str | None = None,
    site_id: str | None = None,
    name: str = "",
) -> tuple[Token, str]:
    """Store a new token's hash and return the row and the secret (shown once)."""
    secret = new_token()
    row = Token(
        id=_new_id("tok"),
        hash=token_hash(secret),
        name=name,
        role=role.value,
        org_id=org_id,
        user_id=user_id,
        site_id=site_id,
        created_at=now,
    )
    s.add(row)
    s.flush()
    audit.created(s, row.id)
    audit.append(
        s,
        "token.issued",
        now,
        org_id=org_id,
        object_id=row.id,
        detail={"role": role.value, "user_id": user_id, "site_id": site_id},
    )
    return row, secret


def principal_for(s: Session, secret: str) -> Principal | None:
    """The caller a bearer token stands for, or None if unknown or revoked."""
    row = s.scalar(select(Token).where(Token.hash == token_hash(secret)))
    if row is None or row.revoked_at is not None:
        return None
    return Principal(
        token_id=row.id,
        role=Role(row.role),
        org_id=row.org_id,
        user_id=row.user_id,
        site_id=row.site_id,
    )


def list_tokens(s: Session, org_id: str | None) -> list[Token]:
    q = select(Token).order_by(Token.created_at)
    if org_id is not None:
        q = q.where(Token.org_id == org_id)
    return list(s.scalars(q))


def get_token(s: Session, token_id: str) -> Token:
    row = s.get(Token, token_id)
    if row is None:
        raise NotFound(f"no token {token_id!r}", field="token_id")
    return row


def revoke_token(s: Session, token_id: str, now: float) -> Token:
    row = get_token(s, token_id)
    if row.revoked_at is None:
        s.execute(update(Token).where(Token.id == token_id).values(revoked_at=now))
        row.revoked_at = now
        audit.append(s, "token.revoked", now, org_id=row.org_id, object_id=token_id)
    return row
