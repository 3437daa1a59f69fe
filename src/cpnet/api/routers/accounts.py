"""Organisations, users, tokens, providers and sites: who may offer and use compute."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request, Response

from cpnet.api.deps import admin, caller, hub, person, provider_admin, require
from cpnet.auth.model import (
    IssuedToken,
    OrgCreate,
    OrgRecord,
    Principal,
    ProviderCreate,
    Role,
    SiteCreate,
    TokenCreate,
    TokenRecord,
    UserCreate,
    UserRecord,
    WhoAmI,
)
from cpnet.errors import NotFound
from cpnet.hub.service import Hub
from cpnet.registry.model import ProviderRecord, Region, SiteRecord
from cpnet.store import accounts, registry
from cpnet.store.registry import ts
from cpnet.store.tables import Org, Token, User

router = APIRouter(prefix="/v1", tags=["accounts"])


def _org(o: Org) -> OrgRecord:
    return OrgRecord(id=o.id, name=o.name, created_at=ts(o.created_at))


def _user(u: User) -> UserRecord:
    return UserRecord(
        id=u.id, org_id=u.org_id, name=u.name, role=Role(u.role), created_at=ts(u.created_at)
    )


def _token(t: Token) -> TokenRecord:
    return TokenRecord(
        id=t.id,
        name=t.name,
        role=Role(t.role),
        org_id=t.org_id,
        user_id=t.user_id,
        site_id=t.site_id,
        created_at=ts(t.created_at),
        revoked_at=ts(t.revoked_at),
    )


def _issued(t: Token, secret: str) -> IssuedToken:
    return IssuedToken(**_token(t).model_dump(), token=secret)


@router.get("/whoami", response_model=WhoAmI)
def whoami(who: Principal = Depends(caller)) -> WhoAmI:
    return WhoAmI(
        token_id=who.token_id,
        role=who.role,
        org_id=who.org_id,
        user_id=who.user_id,
        site_id=who.site_id,
    )


@router.post("/orgs", response_model=OrgRecord, status_code=201)
def create_org(
    body: OrgCreate, who: Principal = Depends(admin), h: Hub = Depends(hub)
) -> OrgRecord:
    with h.store.tx() as s:
        return _org(accounts.create_org(s, body.name, time.time()))


@router.get("/orgs")
def list_orgs(who: Principal = Depends(caller), h: Hub = Depends(hub)) -> dict:
    with h.store.read() as s:
        if who.is_admin:
            return {"orgs": [_org(o) for o in accounts.list_orgs(s)]}
        return {"orgs": [_org(accounts.get_org(s, who.org_id))]}


@router.post("/users", status_code=201)
def create_user(body: UserCreate, who: Principal = Depends(admin), h: Hub = Depends(hub)) -> dict:
    """Create a user and its first token (shown once). Admins only."""
    now = time.time()
    with h.store.tx() as s:
        user = accounts.create_user(s, body.org_id, body.name, body.role, now)
        tok, secret = accounts.issue_token(
            s,
            role=body.role,
            org_id=user.org_id,
            user_id=user.id,
            now=now,
            name=f"{body.name} (first)",
        )
        return {"user": _user(user), "token": _issued(tok, secret)}


@router.post("/tokens", response_model=IssuedToken, status_code=201)
def create_token(
    body: TokenCreate, who: Principal = Depends(caller), h: Hub = Depends(hub)
) -> IssuedToken:
    """A new token for yourself, or (admins) for any user."""
    now = time.time()
    with h.store.tx() as s:
        user_id = body.user_id or who.user_id
        if user_id is None:
            raise NotFound("agents cannot create user tokens", field="user_id")
        if user_id != who.user_id:
            require(who)
        user = accounts.get_user(s, user_id)
        tok, secret = accounts.issue_token(
            s, role=Role(user.role), org_id=user.org_id, user_id=user.id, now=now, name=body.name
        )
        return _issued(tok, secret)


@router.get("/tokens")
def list_tokens(who: Principal = Depends(person), h: Hub = Depends(hub)) -> dict:
    with h.store.read() as s:
        rows = accounts.list_tokens(s, None if who.is_admin else who.org_id)
        if who.role is Role.USER:
            rows = [t for t in rows if t.user_id == who.user_id]
        return {"tokens": [_token(t) for t in rows]}


@router.delete("/tokens/{token_id}", response_model=TokenRecord)
def revoke_token(
    token_id: str, request: Request, who: Principal = Depends(caller), h: Hub = Depends(hub)
) -> TokenRecord:
    with h.store.tx() as s:
        tok = accounts.get_token(s, token_id)
        mine = tok.user_id is not None and tok.user_id == who.user_id
        same_org_admin = who.role is Role.PROVIDER_ADMIN and tok.org_id == who.org_id
        if not (who.is_admin or mine or same_org_admin):
            raise NotFound(f"no token {token_id!r}", field="token_id")
        rec = _token(accounts.revoke_token(s, token_id, time.time()))
    request.app.state.token_cache.clear()
    return rec


@router.post("/providers", response_model=ProviderRecord, status_code=201)
def create_provider(
    body: ProviderCreate,
    response: Response,
    who: Principal = Depends(provider_admin),
    h: Hub = Depends(hub),
) -> ProviderRecord:
    org_id = body.org_id if (who.is_admin and body.org_id) else who.org_id
    now = time.time()
    with h.store.tx() as s:
        accounts.get_org(s, org_id)
        p = registry.create_provider(s, org_id, body.name, h.authority, now)
        if p.created_at != now:
            response.status_code = 200
        rec = registry.provider_record(p)
    h.resolver.invalidate([rec.id])  # after the commit: the DNS publisher reads it now
    return rec


@router.get("/providers")
def list_providers(who: Principal = Depends(caller), h: Hub = Depends(hub)) -> dict:
    with h.store.read() as s:
        rows = registry.list_providers(s, None if who.is_admin else who.org_id)
        return {"providers": [registry.provider_record(p) for p in rows]}


def _own_provider(s, who: Principal, provider_id: str):  # type: ignore[no-untyped-def]
    p = registry.get_provider(s, provider_id)
    who.must_see(p.org_id, "provider", provider_id, "provider_id")
    return p


@router.post("/sites", response_model=SiteRecord, status_code=201)
def create_site(
    body: SiteCreate,
    response: Response,
    who: Principal = Depends(provider_admin),
    h: Hub = Depends(hub),
) -> SiteRecord:
    now = time.time()
    with h.store.tx() as s:
        prov = _own_provider(s, who, body.provider_id)
        region = Region(code=body.region_code, name=body.region_name, lat=body.lat, lon=body.lon)
        site = registry.create_site(s, prov, name=body.name, type=body.type, region=region, now=now)
        if site.created_at != now:
            response.status_code = 200
        rec = registry.site_record(s, site)
    h.resolver.invalidate([rec.id])  # after the commit: the DNS publisher reads it now
    return rec


@router.get("/sites")
def list_sites(who: Principal = Depends(caller), h: Hub = Depends(hub)) -> dict:
    with h.store.read() as s:
        rows = registry.list_sites(s, None if who.is_admin else who.org_id)
        return {"sites": [registry.site_record(s, x) for x in rows]}


def own_site(s, who: Principal, site_id: str):  # type: ignore[no-untyped-def]
    """The site, if `who` may see it (else the 404 of a site that does not exist)."""
    site = registry.get_site(s, site_id)
    who.must_see(site.org_id, "site", site_id, "site_id")
    return site


@router.get("/sites/{site_id}", response_model=SiteRecord)
def get_site(site_id: str, who: Principal = Depends(caller), h: Hub = Depends(hub)) -> SiteRecord:
    with h.store.read() as s:
        return registry.site_record(s, own_site(s, who, site_id))


@router.post("/sites/{site_id}/tokens", response_model=IssuedToken, status_code=201)
def create_site_token(
    site_id: str,
    body: TokenCreate | None = None,
    who: Principal = Depends(provider_admin),
    h: Hub = Depends(hub),
) -> IssuedToken:
    """A token for the site's agent: it may act for this site only."""
    with h.store.tx() as s:
        site = own_site(s, who, site_id)
        tok, secret = accounts.issue_token(
            s,
            role=Role.AGENT,
            org_id=site.org_id,
            site_id=site.id,
            now=time.time(),
            name=(body.name if body else "") or f"agent of {site.name}",
        )
        return _issued(tok, secret)
