"""The hub's signing keys and small facts, kept in the store so every replica shares them."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from cpnet.ident import SigningKey
from cpnet.store.tables import HubKey, HubMeta


def active_keys(s: Session) -> list[SigningKey]:
    """Every active key, newest first (the first one signs)."""
    rows = s.scalars(
        select(HubKey).where(HubKey.active.is_(True)).order_by(HubKey.created_at.desc())
    )
    return [SigningKey.from_pem(r.private_pem.encode()) for r in rows]


def add_key(s: Session, key: SigningKey, now: float) -> None:
    s.add(
        HubKey(
            kid=key.key_id,
            private_pem=key.to_pem().decode(),
            public_b64=key.public_key_b64,
            created_at=now,
            active=True,
        )
    )


def get_meta(s: Session, key: str) -> str | None:
    row = s.get(HubMeta, key)
    return None if row is None else row.value


def set_meta(s: Session, key: str, value: str) -> None:
    row = s.get(HubMeta, key)
    if row is None:
        s.add(HubMeta(key=key, value=value))
    else:
        row.value = value
