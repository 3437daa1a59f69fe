"""Wake-ups across hub replicas: PostgreSQL NOTIFY out, LISTEN in, onto the local Notifier.

An agent's long poll waits on the replica its connection reached; the placement that should
wake it may be made by the leader, another replica. So every wake-up a replica gives its own
Notifier (after the transaction that caused it committed) is also published on the channel
``CHANNEL``, and every replica listens there and wakes its own waiters:

- ``publish`` may be called from any thread; it only merges the wake-up into a pending set.
  One publisher task sends what is pending as ``pg_notify`` calls on a dedicated connection,
  so a burst of a thousand submissions costs a handful of notifications, not a thousand.
- The listener holds a dedicated autocommit connection with ``LISTEN``; each notification
  wakes the scheduler and the named sites' long polls here. A replica skips its own.
- Both reconnect with backoff when their connection drops. Notifications sent while nobody
  listened are lost, so after each (re)connection the listener wakes everything here once:
  long polls re-read the store and the scheduler runs a pass.

Wake-ups are hints, never the truth: the waiter re-reads the store. A lost one (a replica
killed between its commit and its NOTIFY) delays work by at most the waiter's own timeout (the
scheduler's interval, a long poll's ``wait``), and a replica that becomes the leader wakes
every replica's long polls at once (``all_sites``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable

import psycopg

from cpnet.hub.leader import BACKOFF_MAX_S, BACKOFF_MIN_S, close_quietly, connect, describe
from cpnet.hub.notify import Notifier

log = logging.getLogger("cpnet.hub.broadcast")

CHANNEL = "cpnet_wake"
MAX_PAYLOAD = 7000  # bytes per notification (PostgreSQL refuses 8000 and more)


def payloads(
    replica: str, scheduler: bool, all_sites: bool, sites: Iterable[str], changed: bool = False
) -> list[str]:
    """The notifications for one set of wake-ups: JSON ``{"r", "s", "a", "c", "t"}`` (replica,
    scheduler, all sites, tasks changed, site ids), split so that none is over MAX_PAYLOAD."""
    head = {"r": replica, "s": scheduler, "a": all_sites, "c": changed}
    out: list[str] = []
    chunk: list[str] = []
    size = len(json.dumps({**head, "t": []}))
    for site in sorted(sites):
        n = len(json.dumps(site)) + 1
        if chunk and size + n > MAX_PAYLOAD:
            out.append(json.dumps({**head, "t": chunk}, separators=(",", ":")))
            head = {"r": replica, "s": False, "a": False, "c": False}
            chunk, size = [], len(json.dumps({**head, "t": []}))
        chunk.append(site)
        size += n
    if chunk or scheduler or all_sites or changed:
        out.append(json.dumps({**head, "t": chunk}, separators=(",", ":")))
    return out


class Broadcast:
    """This replica's side of the wake-up channel (see the module's docstring)."""

    def __init__(self, url: str, notifier: Notifier, replica: str) -> None:
        self.url = url
        self.notifier = notifier
        self.replica = replica
        self.listening = False  # the listener's connection is up and LISTENing
        self.connections = 0  # how many times the listener (re)connected
        self.received = 0  # notifications from other replicas
        self._scheduler = False
        self._all = False
        self._sites: set[str] = set()
        self._changed = False
        self._dirty = asyncio.Event()

    # ---- out ----

    def publish(
        self,
        *,
        scheduler: bool = False,
        sites: Iterable[str] = (),
        all_sites: bool = False,
        changed: bool = False,
    ) -> None:
        """Tell the other replicas to wake their scheduler, these sites' long polls, or the
        readers waiting for tasks to change (any thread; call after the transaction that made
        the work committed)."""
        sites = tuple(sites)
        if scheduler or all_sites or sites or changed:
            self.notifier.call(self._add, scheduler, all_sites, sites, changed)

    def _add(
        self, scheduler: bool, all_sites: bool, sites: Iterable[str], changed: bool = False
    ) -> None:
        self._scheduler |= scheduler
        self._all |= all_sites
        self._sites.update(sites)
        self._changed |= changed
        self._dirty.set()

    async def _publisher(self) -> None:
        conn: psycopg.AsyncConnection | None = None
        backoff = BACKOFF_MIN_S
        try:
            while True:
                await self._dirty.wait()
                self._dirty.clear()
                scheduler, all_sites, sites = self._scheduler, self._all, self._sites
                changed = self._changed
                self._scheduler, self._all, self._sites = False, False, set()
                self._changed = False
                try:
                    if conn is None or conn.closed:
                        conn = await connect(self.url)
                    sent = [
                        (CHANNEL, p)
                        for p in payloads(self.replica, scheduler, all_sites, sites, changed)
                    ]
                    async with conn.cursor() as cur:
                        await asyncio.wait_for(
                            cur.executemany("SELECT pg_notify(%s, %s)", sent), 5.0
                        )
                    backoff = BACKOFF_MIN_S
                except (psycopg.Error, OSError, TimeoutError) as exc:
                    log.warning("cannot publish wake-ups (retrying): %s", describe(exc))
                    await close_quietly(conn)
                    conn = None
                    self._add(scheduler, all_sites, sites, changed)  # for the next try
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX_S)
        finally:
            await close_quietly(conn)

    # ---- in ----

    async def _listener(self) -> None:
        backoff = BACKOFF_MIN_S
        while True:
            conn = None
            try:
                conn = await connect(self.url)
                await conn.execute(f"LISTEN {CHANNEL}")
                self.listening = True
                self.connections += 1
                backoff = BACKOFF_MIN_S
                # What was sent while nobody listened here is lost: wake everything once.
                self.notifier.wake_scheduler()
                self.notifier.wake_all_sites()
                self.notifier.tasks_changed()
                async for n in conn.notifies():
                    self._deliver(n.payload)
            except (psycopg.Error, OSError, TimeoutError) as exc:
                log.warning("wake-up listener's connection lost (reconnecting): %s", describe(exc))
            finally:
                self.listening = False
                await close_quietly(conn)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    def _deliver(self, payload: str) -> None:
        try:
            msg = json.loads(payload)
            if msg.get("r") == self.replica:
                return
            sites = [str(s) for s in msg.get("t", ())]
        except (ValueError, AttributeError, TypeError):
            log.warning("ignoring a malformed wake-up on %s: %.100r", CHANNEL, payload)
            return
        self.received += 1
        if msg.get("s"):
            self.notifier.wake_scheduler()
        if msg.get("a"):
            self.notifier.wake_all_sites()
        if msg.get("c"):
            self.notifier.tasks_changed()
        for site in sites:
            self.notifier.wake_site(site)

    # ---- lifecycle ----

    async def run(self) -> None:
        """Publish and listen until cancelled."""
        tasks = [
            asyncio.create_task(self._publisher(), name="cpnet-wake-publisher"),
            asyncio.create_task(self._listener(), name="cpnet-wake-listener"),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
