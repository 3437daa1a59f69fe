"""The Hub: one object that owns the store, the signing key and the background loops.

Several hub processes (replicas) may serve one PostgreSQL database (docs/operations.md). Any
replica serves any request; the background loops run on the leader only (hub/leader.py), and
wake-ups reach the other replicas through PostgreSQL NOTIFY (hub/broadcast.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time

from anyio import to_thread
from sqlalchemy.exc import IntegrityError

from cpnet.config import HubSettings
from cpnet.errors import DomainError
from cpnet.hub import auctions
from cpnet.hub import secrets as hub_secrets
from cpnet.hub.blobs import BlobStore
from cpnet.hub.bootstrap import hub_authority
from cpnet.hub.broadcast import Broadcast
from cpnet.hub.keys import active_keys
from cpnet.hub.leader import Leadership, Serialised
from cpnet.hub.notify import Notifier
from cpnet.hub.resolver import Resolver
from cpnet.hub.scheduling import schedule_once
from cpnet.hub.sla import sweep as sla_sweep
from cpnet.ident import SigningKey
from cpnet.store import audit, network
from cpnet.store import registry as reg
from cpnet.store import tasks as tasks_store
from cpnet.store.db import Store
from cpnet.telemetry.metrics import HubMetrics

log = logging.getLogger("cpnet.hub")
COALESCE_S = 0.01  # seconds a scheduler wake-up waits for more of the same burst
# The liveness loop waking this many seconds later than it asked means the process itself was
# stalled (not scheduled, paused): no site's silence is judged across such a gap.
STALL_S = 1.0


class NotInitialised(DomainError):
    status = 503
    code = "not_initialised"


class Hub:
    """Everything a running hub process shares between requests."""

    def __init__(self, settings: HubSettings) -> None:
        self.settings = settings
        self.store = Store(settings.url)
        self.store.migrate()
        with self.store.tx() as s:
            keys = active_keys(s)
        if not keys:
            raise NotInitialised(
                f"the hub store at {settings.url} has no signing key: run "
                "`cpnet hub init` with the same --data-dir/--database-url first"
            )
        self.keys: list[SigningKey] = keys
        self.authority = hub_authority(self.store, settings.authority)
        self.resolver = Resolver(self.store, keys[0], self.authority, settings.resolve_ttl_s)
        # The DNS gateway (`cpnet hub --dns`): Knot DNS fed by the leader (dns/gateway.py).
        self.dns = None
        if settings.dns:
            from cpnet.dns.gateway import Gateway

            self.dns = Gateway(settings, self.store, keys[0], self.authority)
            self.resolver.on_change = self.dns.publisher.wake
        # Blobs are encrypted at rest under the hub's data-at-rest key (made here on first start).
        self.blobs = BlobStore(
            settings.data_dir / "blobs", hub_secrets.load_key(settings), settings.max_blob_bytes
        )
        self.started_at = time.time()
        # Signs of life: when this replica last received an authenticated request from each
        # site's agent (any request: a heartbeat, a report, a long poll), stamped on arrival,
        # before it waits for a worker thread or the database (api/deps.caller).
        self.heard: dict[str, float] = {}
        # When this process last found itself stalled (its liveness loop woke far too late: an
        # overloaded machine, a long pause): agents' silence counts from then at the earliest.
        self.stalled_at = 0.0
        self.metrics = HubMetrics(self.store)  # GET /metrics (telemetry/metrics.py)
        # The dashboard's last reading per (role, organisation): when, body and how long it took
        # (api/routers/ui.py)
        self.dashboard_cache: dict[tuple[str, str | None], tuple[float, dict, float]] = {}
        self.notifier: Notifier | None = None
        self.replica = f"{socket.gethostname()}:{os.getpid()}"  # this process, among replicas
        # Leading the loops (hub/leader.py): on SQLite this process alone, always.
        self.leadership = Leadership(
            None if self.store.is_sqlite else settings.url, self._leading_changed
        )
        self.broadcast: Broadcast | None = None  # PostgreSQL: wake-ups across replicas
        # The leader's sweeps queue behind any other replica's (a step-down is not instant).
        self.sweeps = Serialised(self.store)
        self._tasks: list[asyncio.Task] = []  # leadership and broadcast, while running
        self._loops: list[asyncio.Task] = []  # the leader's loops, while leading
        self.closing = False  # set when the process is asked to stop: long polls return

    # ---- lifecycle ----

    async def start(self) -> None:
        # Agents' silence counts from here, as the server is about to listen, at the earliest.
        self.started_at = time.time()
        self.notifier = Notifier(asyncio.get_running_loop())
        if self.settings.region_code:  # the store's copy, read by network.load_map
            with self.store.tx() as s:
                network.set_hub_region(s, self.settings.region_code)
        if not self.store.is_sqlite:
            self.broadcast = Broadcast(self.settings.url, self.notifier, self.replica)
            self._tasks.append(asyncio.create_task(self.broadcast.run(), name="cpnet-wakeups"))
        if self.leadership.alone:
            await self.leadership.run()  # leads at once: the loops start now
        else:
            self._tasks.append(asyncio.create_task(self.leadership.run(), name="cpnet-leader"))

    def _leading_changed(self, leading: bool) -> None:
        """Start the leader's loops on becoming the leader; stop them on stepping down."""
        if not leading:
            for t in self._loops:
                t.cancel()  # a pass in flight finishes in its thread (safe when repeated)
            self._loops = []
            return
        self._loops = [
            asyncio.create_task(self._scheduler_loop(), name="cpnet-scheduler"),
            asyncio.create_task(self._liveness_loop(), name="cpnet-liveness"),
            asyncio.create_task(self._sla_loop(), name="cpnet-sla"),
            asyncio.create_task(self._market_loop(), name="cpnet-market"),
            asyncio.create_task(self._audit_loop(), name="cpnet-audit"),
        ]
        if self.dns is not None:
            self._loops.append(asyncio.create_task(self.dns.run(), name="cpnet-dns"))
        if self.notifier is not None:
            self.notifier.wake_scheduler()  # a pass now: the queue may have waited for a leader
        if self.broadcast is not None:
            # The old leader may have died between a placement and its NOTIFY: every replica's
            # long polls read the store once.
            self.broadcast.publish(all_sites=True)

    @property
    def leading(self) -> bool:
        return self.leadership.leading

    async def stop(self) -> None:
        leading = self.leading
        for t in [*self._loops, *self._tasks]:
            t.cancel()
        for t in [*self._loops, *self._tasks]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if leading:
            with contextlib.suppress(Exception):  # a clean stop leaves the head signed
                self.checkpoint_once(time.time())
        self.store.close()

    def begin_shutdown(self) -> None:
        """Let every waiting long poll return now, so shutdown does not wait for them."""
        self.closing = True
        if self.notifier:
            self.notifier.wake_all_sites()

    # ---- signals from routes (any thread) ----

    def wake_scheduler(self) -> None:
        """Ask for a scheduling pass (call after the change committed): here if this replica
        leads, else on the leader."""
        if self.notifier:
            self.notifier.wake_scheduler()
        if self.broadcast is not None and not self.leading:
            self.broadcast.publish(scheduler=True)

    def tasks_changed(self) -> None:
        """Tasks changed state (call after the change committed): readers waiting for one to
        move re-read it, on every replica."""
        if self.notifier:
            self.notifier.tasks_changed()
        if self.broadcast is not None:
            self.broadcast.publish(changed=True)

    def wake_sites(self, site_ids) -> None:  # type: ignore[no-untyped-def]
        """Wake these sites' long polls, on whichever replica their agents wait."""
        site_ids = tuple(site_ids)
        if self.notifier:
            for sid in site_ids:
                self.notifier.wake_site(sid)
        if self.broadcast is not None:
            self.broadcast.publish(sites=site_ids)

    # ---- loops ----

    async def _scheduler_loop(self) -> None:
        assert self.notifier is not None
        event = self.notifier.scheduler
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), self.settings.schedule_interval_s)
            # Let a burst of submissions or completions gather into one pass.
            await asyncio.sleep(COALESCE_S)
            event.clear()
            try:
                limit = (
                    self.settings.sched_joint_time_limit_s if self.settings.sched_joint else None
                )
                # Not Serialised: a pass may overlap another replica's for a moment after a
                # failover, and placements are safe then (conditional UPDATE, compare-and-set).
                began = time.perf_counter()
                result = await to_thread.run_sync(
                    functools.partial(
                        schedule_once, self.store, time.time(), joint_time_limit_s=limit
                    )
                )
                self.metrics.passes.observe(time.perf_counter() - began)
                self.metrics.placements.inc(result.placed)
                self.wake_sites(result.sites)
            except Exception:  # keep scheduling after a transient database error
                log.exception("scheduling pass failed")
                await asyncio.sleep(0.5)

    async def _liveness_loop(self) -> None:
        period = max(0.1, min(1.0, self.settings.heartbeat_interval_s / 2))
        woke = time.monotonic()
        while True:
            await asyncio.sleep(period)
            late, woke = time.monotonic() - woke - period, time.monotonic()
            if late > STALL_S:
                # This process did not run for a while: heartbeats that reached it meanwhile
                # may still wait unread in its sockets, so nobody's silence is evidence now.
                self.stalled_at = time.time()
                log.warning(
                    "the hub stalled for %.1f s: sites' silence counts from now", late + period
                )
                continue
            try:
                lost = await to_thread.run_sync(self.sweep_once, time.time())
            except Exception:
                log.exception("liveness sweep failed")
                continue
            if lost:
                self.wake_scheduler()
                self.tasks_changed()

    async def _sla_loop(self) -> None:
        """Evaluate SLA windows that ended and refresh reputations, every sla_interval_s."""
        while True:
            await asyncio.sleep(self.settings.sla_interval_s)
            try:
                await to_thread.run_sync(self.sla_once, time.time())
            except Exception:  # keep sweeping after a transient database error
                log.exception("SLA sweep failed")

    def sla_once(self, now: float):  # type: ignore[no-untyped-def]
        """One SLA sweep (hub/sla.py): credits for breached windows, fresh reputations."""
        return sla_sweep(self.sweeps, now, self.settings.reputation_half_life_s)  # type: ignore[arg-type]

    async def _market_loop(self) -> None:
        """Award requests whose bids have closed, and settle leases as their windows run."""
        while True:
            await asyncio.sleep(self.settings.market_sweep_s)
            try:
                swept = await to_thread.run_sync(
                    auctions.sweep,
                    self.sweeps,
                    self.settings.platform_fee_bps,
                    time.time(),
                    self.settings.lease_period_s,
                )
            except Exception:
                log.exception("market sweep failed")
                continue
            if swept.awarded or swept.settled:
                self.wake_scheduler()  # a lease began or ended: capacity moved

    async def _audit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.audit_checkpoint_s)
            try:
                await to_thread.run_sync(self.checkpoint_once, time.time())
            except IntegrityError:  # another replica signed the same head first
                continue
            except Exception:
                log.exception("audit checkpoint failed")

    def checkpoint_once(self, now: float) -> None:
        """Sign the audit chain's head with the hub's key, if it moved since the last one."""
        with self.sweeps.tx() as s:
            audit.checkpoint(s, self.keys[0], now)

    def sweep_once(self, now: float) -> list[str]:
        """Mark silent sites offline and give their running attempts back to the queue.

        A site's silence counts from when this replica began to lead at the earliest (agents
        that talked to a replica that just died need a full timeout to reach another one), and
        from when this process last stalled; any request its agent made to this replica since
        its last heartbeat (`heard`) ends it too."""
        not_before = max(self.started_at, self.leadership.since or 0.0, self.stalled_at)
        with self.sweeps.tx() as s:
            lost = reg.sweep_liveness(
                s, now, self.settings.missed_heartbeats, not_before, dict(self.heard)
            )
            for site_id in lost:
                n = tasks_store.fail_site(
                    s,
                    site_id,
                    now,
                    f"site {site_id} lost: no heartbeat for "
                    f"{self.settings.missed_heartbeats} intervals",
                )
                log.warning(
                    "site %s lost; %d attempts failed over", site_id, n, extra={"site_id": site_id}
                )
        self.metrics.sites_lost.inc(len(lost))
        return lost
