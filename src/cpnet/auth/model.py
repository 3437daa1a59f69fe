"""Organisations, users, roles and tokens: the wire models and the caller identity."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from cpnet.errors import NotFound

TOKEN_PREFIX = "cpn_"
Name = Annotated[
    str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._@-]*$")
]


class Role(StrEnum):
    """What a caller may do. Agents act for exactly one site."""

    ADMIN = "admin"
    PROVIDER_ADMIN = "provider-admin"
    USER = "user"
    AGENT = "agent"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: resolved from the bearer token on every request."""

    token_id: str
    role: Role
    org_id: str
    user_id: str | None = None
    site_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def sees(self, org_id: str | None) -> bool:
        """The tenancy rule: an object of organisation `org_id` is this caller's to see (admins
        see every organisation's)."""
        return self.is_admin or (org_id is not None and org_id == self.org_id)

    def must_see(self, org_id: str | None, what: str, ident: str, field: str) -> None:
        """Refuse another organisation's object as if it did not exist (404), so that its
        existence is not confirmed either."""
        if not self.sees(org_id):
            raise NotFound(f"no {what} {ident!r}", field=field)


def new_token() -> str:
    """A fresh random API token (shown once, stored only as its hash)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """The stored form of a token: SHA-256 hex (tokens are 256-bit random, so no salt is needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OrgCreate(Strict):
    name: Name


class OrgRecord(BaseModel):
    id: str
    name: str
    created_at: datetime


class UserCreate(Strict):
    org_id: Annotated[str, Field(max_length=64)]
    name: Name
    role: Role = Role.USER


class UserRecord(BaseModel):
    id: str
    org_id: str
    name: str
    role: Role
    created_at: datetime


class TokenCreate(Strict):
    """Create a token for a user (admins for anyone; others for themselves)."""

    user_id: Annotated[str, Field(max_length=64)] | None = None
    name: Annotated[str, Field(max_length=128)] = ""


class TokenRecord(BaseModel):
    id: str
    name: str
    role: Role
    org_id: str
    user_id: str | None = None
    site_id: str | None = None
    created_at: datetime
    revoked_at: datetime | None = None


class IssuedToken(TokenRecord):
    """A token record plus the secret itself, returned exactly once."""

    token: str


class ProviderCreate(Strict):
    name: Name
    org_id: Annotated[str, Field(max_length=64)] | None = None  # admins may create for any org


class SiteCreate(Strict):
    provider_id: Annotated[str, Field(max_length=128)]
    name: Name
    type: Annotated[
        str, Field(max_length=16, pattern=r"^(general|intelligent|supercomputing|edge)$")
    ] = "general"
    region_code: Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9._-]+$")]
    region_name: Annotated[str, Field(max_length=128)] = ""
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)


class WhoAmI(BaseModel):
    token_id: str
    role: Role
    org_id: str
    user_id: str | None = None
    site_id: str | None = None
