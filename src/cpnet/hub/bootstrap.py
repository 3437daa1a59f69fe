"""`cpnet hub init`: create the store, the signing key and the first admin token."""

from __future__ import annotations

import time

from cpnet import ident
from cpnet.auth.model import Role
from cpnet.config import HubSettings
from cpnet.errors import Conflict, Invalid
from cpnet.hub.keys import active_keys, add_key, get_meta, set_meta
from cpnet.store import accounts
from cpnet.store.db import Store

PLATFORM_ORG = "platform"


def check_authority(authority: str) -> str:
    """An authority prefix is 1–6 identifier labels, e.g. `cn.gd`."""
    labels = [x for x in authority.lower().split(".") if x]
    if not 1 <= len(labels) <= 6:
        raise Invalid(
            "authority must be 1 to 6 dot-separated labels, e.g. cn.gd", field="authority"
        )
    try:
        ident.make([*labels, "x"], ident.IdType.NONE)
    except ident.IdentifierError as exc:
        raise Invalid(f"authority {authority!r}: {exc.message}", field="authority") from exc
    return ".".join(labels)


def init_hub(settings: HubSettings) -> dict[str, str]:
    """Initialise a hub's store once; returns the admin token (shown once) and the public key."""
    authority = check_authority(settings.authority)
    store = Store(settings.url)
    try:
        store.migrate()
        now = time.time()
        with store.tx() as s:
            if active_keys(s):
                raise Conflict(
                    f"the hub at {settings.url} is already initialised; "
                    "use `cpnet admin token create` with an admin token to get another one"
                )
            key = ident.SigningKey.generate()
            add_key(s, key, now)
            set_meta(s, "authority", authority)
            org = accounts.create_org(s, PLATFORM_ORG, now)
            user = accounts.create_user(s, org.id, "admin", Role.ADMIN, now)
            _, secret = accounts.issue_token(
                s, role=Role.ADMIN, org_id=org.id, user_id=user.id, now=now, name="hub init"
            )
        return {
            "admin_token": secret,
            "public_key": key.public_key_b64,
            "key_id": key.key_id,
            "authority": authority,
            "database_url": settings.url,
            **init_dns_key(settings),
        }
    finally:
        store.close()


def write_dev_cert(
    settings: HubSettings, authority: str, hosts: list[str] | None = None
) -> dict[str, str]:
    """Write the development TLS files (DATA_DIR/tls/: CA, certificate, key) for `hosts`."""
    from cpnet.hub import pki

    store = Store(settings.url)
    try:
        return pki.write_dev_files(settings, store, authority, hosts)
    finally:
        store.close()


def hub_authority(store: Store, default: str) -> str:
    with store.tx() as s:
        return get_meta(s, "authority") or default


def init_dns_key(settings: HubSettings) -> dict[str, str]:
    """Make the DNS zone's Ed25519 key (DATA_DIR/dns/zone-ed25519.pem) unless there is one;
    return its path, its DNSKEY's key field and, when the apex is known (CPNET_DNS_APEX), the
    DS record for the parent zone (docs/identifiers.md, "Running the DNS gateway")."""
    from cpnet.dns import zonekey

    dns_dir = settings.data_dir / "dns"
    pem, _ = zonekey.ensure_key(dns_dir)
    out = {"dns_key": str(zonekey.key_path(dns_dir))}
    anchor = zonekey.anchor(settings.dns_apex or "apex.invalid", pem)
    out["dns_public_key"] = anchor.public_key_b64
    if settings.dns_apex:
        from cpnet.ident import dns as idns

        anchor = zonekey.anchor(idns.normalise_apex(settings.dns_apex), pem)
        out["dns_ds"] = anchor.ds
        out["dns_dnskey"] = anchor.dnskey
    return out
