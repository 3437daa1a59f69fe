"""The DNS gateway of one hub: the Knot server and the publisher, run while the hub leads.

``cpnet hub --dns`` makes one (hub/service.py). It is one of the leader's loops: the replica
that leads the background work (hub/leader.py; on SQLite the one hub process) starts knotd,
publishes the whole registry, then keeps the zone in step; on stepping down or stopping it
stops knotd. So one replica publishes at a time, and the zone is always rebuilt from the store
by whoever leads (Knot keeps no journal here: dns/knot.py).

The zone served is the apex, or for a hub its parent delegated a prefix to, that prefix's name
(``CPNET_DNS_ZONE``); the prefixes this hub delegates further are declared in
``DATA_DIR/dns/delegations.toml`` (``cpnet dns delegate``), read again whenever it changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from anyio import to_thread

from cpnet.config import HubSettings, listen_address
from cpnet.dns import delegation, knot, zonekey
from cpnet.dns.publisher import Publisher
from cpnet.errors import Invalid
from cpnet.ident import SigningKey
from cpnet.ident import dns as idns
from cpnet.store.db import Store

log = logging.getLogger("cpnet.dns")

RESTART_BACKOFF_S = (0.5, 10.0)  # between tries to start knotd again after it failed


def dns_dir(settings: HubSettings) -> Path:
    """Where the gateway keeps its files: DATA_DIR/dns."""
    return settings.data_dir / "dns"


def zone_of(settings: HubSettings, authority: str | None = None) -> str:
    """The zone this hub serves (ValueError naming the setting when it cannot be)."""
    return delegation.served_zone(settings.dns_apex, settings.dns_zone, authority)


def server_config(settings: HubSettings, authority: str | None = None) -> knot.ServerConfig:
    """Knot serves the hub's zone: ``ServerConfig.apex`` is that zone's name."""
    host, port = listen_address(settings.dns_listen)
    return knot.ServerConfig(
        apex=zone_of(settings, authority),
        host=host,
        port=port,
        dns_dir=dns_dir(settings),
        max_ttl=settings.dns_max_ttl_s,
    )


class DelegationFile:
    """``DATA_DIR/dns/delegations.toml``, read again whenever it changes (size, mtime): a
    declaration made while the hub runs is published at the publisher's next poll. A file
    that became wrong is reported once and the last good declarations stay published."""

    def __init__(self, path: Path, *, authority: str, apex: str, zone: str) -> None:
        self.path, self.authority, self.apex, self.zone = path, authority, apex, zone
        self._stamp: tuple[int, int] | None = None
        self._current: tuple[delegation.Delegation, ...] = ()

    def load(self) -> tuple[delegation.Delegation, ...]:
        """The declarations now (none without a file); Invalid naming the field if wrong."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return ()
        except OSError as exc:
            raise Invalid(f"cannot read {self.path}: {exc}", field="file") from None
        found = delegation.from_toml(text, authority=self.authority, apex=self.apex, zone=self.zone)
        return tuple(found)

    def current(self) -> tuple[delegation.Delegation, ...]:
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = (0, -1)
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                found = self.load()
                if found != self._current:
                    log.warning("DNS delegations: %s", ", ".join(d.prefix for d in found) or "none")
                self._current = found
            except Invalid as exc:
                log.error("%s ignored, the last declarations stay: %s", self.path, exc)
        return self._current


def delegation_file(settings: HubSettings, authority: str) -> DelegationFile:
    return DelegationFile(
        dns_dir(settings) / delegation.FILE,
        authority=authority,
        apex=idns.normalise_apex(settings.dns_apex),
        zone=zone_of(settings, authority),
    )


def check(settings: HubSettings, authority: str) -> None:
    """What ``cpnet hub --dns`` checks before it starts: the zone and the delegations file
    (ValueError / Invalid saying what is wrong)."""
    delegation_file(settings, authority).load()


class Gateway:
    """Knot DNS plus the publisher, for a hub with ``--dns``."""

    def __init__(self, settings: HubSettings, store: Store, key: SigningKey, authority: str):
        self.settings = settings
        self.cfg = server_config(settings, authority)
        self.delegations = delegation_file(settings, authority)
        # Checked now, so that a hub without Knot refuses to start instead of failing later.
        self.tools = knot.find_tools(settings.dns_knotd or None)
        self.server = knot.KnotServer(self.cfg, self.tools)
        # A knotd whose hub was killed serves an old zone until stopped: whichever replica of
        # this data dir starts first stops it (the leader-to-be would anyway, before its own).
        stale = knot.stop_stale(self.cfg, orphans_only=True)
        if stale is not None:
            log.warning(
                "stopped knotd %d, left serving %s by a hub that was killed", stale, self.cfg.apex
            )
        self.publisher = Publisher(
            store,
            key,
            authority,
            idns.normalise_apex(settings.dns_apex),  # names are made under the apex
            self.server.apply,
            record_ttl_s=settings.dns_record_ttl_s,
            max_ttl=settings.dns_max_ttl_s,
            zone=self.cfg.apex,
            delegations=self.delegations.current,
        )
        # The trust anchor, known before knotd runs (the key is ours): GET /.well-known/…
        # (None while there is no key: the server's start then says so, and retries).
        self.anchor: zonekey.Anchor | None = None
        with contextlib.suppress(knot.KnotError):
            self.anchor = zonekey.anchor(self.cfg.apex, self._pem())
        self.ready = asyncio.Event()  # set once the server runs and the first full pass is done

    def anchor_document(self) -> dict | None:
        """The trust anchor as ``GET /.well-known/cpnet/dns-anchor.json`` serves it (lists: a
        zone may publish several keys); None without a zone key."""
        a = self.anchor
        if a is None:
            return None
        return {
            "zone": a.apex,
            "ds": [a.ds],
            "dnskey": [a.dnskey],
            "key_tags": [a.key_tag],
            "trust_anchors": a.bind_anchor,
        }

    def _pem(self) -> bytes:
        try:
            return zonekey.key_path(self.cfg.dns_dir).read_bytes()
        except FileNotFoundError:
            raise knot.KnotError(
                f"no zone key at {zonekey.key_path(self.cfg.dns_dir)}: run `cpnet hub init` "
                "(a hub initialised before the DNS gateway existed: `cpnet dns init`)"
            ) from None

    async def run(self) -> None:
        """Serve and publish until cancelled; start knotd again if it dies."""
        backoff = RESTART_BACKOFF_S[0]
        try:
            while True:
                try:
                    self.anchor = await to_thread.run_sync(self.server.prepare, self._pem())
                    await to_thread.run_sync(self.server.start)
                except knot.KnotError as exc:
                    log.error("the DNS server did not start (retrying in %.1f s): %s", backoff, exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, RESTART_BACKOFF_S[1])
                    continue
                backoff = RESTART_BACKOFF_S[0]
                log.warning(
                    "DNS gateway serving %s on %s:%s (DS: %s)",
                    self.cfg.apex,
                    self.cfg.host,
                    self.cfg.port,
                    self.anchor.ds,
                )
                self.publisher.reset()  # a fresh server holds only the apex records
                await self._publish_until_server_dies()
                code = self.server.proc.returncode if self.server.proc else None
                log.error("knotd exited (status %s); starting it again: %s", code, self.cfg.log)
                self.server.stop()  # reaps it
                self.ready.clear()
        finally:
            self.ready.clear()
            self.server.stop()  # SIGTERM: knotd exits at once (SIGKILL after a grace period)

    async def _publish_until_server_dies(self) -> None:
        def passed() -> None:
            if self.publisher.stats.full_passes and not self.ready.is_set():
                self.ready.set()

        task = asyncio.create_task(self.publisher.run(on_pass=passed), name="cpnet-dns-publisher")
        try:
            while self.server.running and not task.done():
                await asyncio.sleep(0.5)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
