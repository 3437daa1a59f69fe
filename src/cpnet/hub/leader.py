"""Which hub replica leads the singleton loops: a PostgreSQL session-level advisory lock.

Several hub processes (replicas) may serve one PostgreSQL database. Requests go to any of them,
but some background work must be done by one at a time (docs/operations.md, "Leadership"):
the scheduling pass, the liveness sweep, SLA windows, the market's awards and lease
settlements, and audit checkpoints. The replica that holds ``pg_advisory_lock(LEADER_KEY)``
on its own dedicated connection leads them; the others try ``pg_try_advisory_lock`` every
``POLL_S``. The lock belongs to the session, so it goes when the session does:

- the leader stops (its connection closes): another replica leads within ``POLL_S``;
- the leader's process dies (SIGKILL, a crash): the kernel closes its socket, the server ends
  the session at once, and another replica leads within ``POLL_S``;
- the leader's machine vanishes (no FIN ever comes): the server's TCP keepalives end the
  session after about ``SERVER_DEAD_S``; another replica leads ``POLL_S`` later.

A leader checks its session every ``POLL_S`` and steps down when the check fails or takes
longer than ``CHECK_TIMEOUT_S``: a leader cut off from the database stops within
``POLL_S + CHECK_TIMEOUT_S``, before the server lets another replica take the lock. Even so
two replicas may briefly both run a pass (a step-down waits for the pass in flight), so the
leader's work is safe when repeated: placements reserve capacity with a conditional UPDATE and
move tasks by compare-and-set, and the sweeps run in ``Serialised`` transactions that queue
behind each other's.

On SQLite the one hub process simply leads (a second process cannot share the file safely;
``cpnet hub --workers`` refuses SQLite).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from cpnet.store.db import Store

log = logging.getLogger("cpnet.hub.leader")

# Advisory lock keys (one bigint space per database): b"cpnet" then a number.
LEADER_KEY = 0x63706E6574_0001  # held by the leading replica's session
SWEEP_KEY = 0x63706E6574_0002  # taken by each sweep transaction (Serialised)

POLL_S = 1.0  # a follower tries the lock, and the leader checks its session, this often
CHECK_TIMEOUT_S = 3.0  # a leader whose session does not answer within this steps down
CONNECT_TIMEOUT_S = 5.0
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.2, 5.0  # between tries to reach the database again
# TCP keepalives, both ends: the server drops the session of a machine that vanished after
# 5 s of silence and 3 unanswered probes 2 s apart (tcp_user_timeout bounds unacknowledged
# sends); the client side the same, so a replica notices a vanished server as soon.
SERVER_DEAD_S = 5 + 3 * 2
KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,  # ms
    "connect_timeout": int(CONNECT_TIMEOUT_S),
    "options": "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 "
    "-c tcp_keepalives_count=3 -c tcp_user_timeout=10000",
}


def libpq_url(url: str) -> str:
    """The SQLAlchemy URL (``postgresql+psycopg://…``) as libpq takes it (``postgresql://…``)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def connect(url: str, **extra: Any) -> psycopg.AsyncConnection:
    """A dedicated autocommit connection with keepalives (for a lock or LISTEN)."""
    return await asyncio.wait_for(
        psycopg.AsyncConnection.connect(libpq_url(url), autocommit=True, **{**KEEPALIVES, **extra}),
        CONNECT_TIMEOUT_S + 1,
    )


async def close_quietly(conn: psycopg.AsyncConnection | None) -> None:
    """Close a connection that may be broken, without waiting on a dead peer."""
    if conn is None:
        return
    with contextlib.suppress(Exception):
        await asyncio.wait_for(conn.close(), 2.0)


class Leadership:
    """This replica's claim on the leader lock; ``on_change(leading)`` runs on the event loop
    whenever it starts or stops leading. ``url`` None: the one process that leads (SQLite)."""

    def __init__(
        self,
        url: str | None,
        on_change: Callable[[bool], None],
        poll_s: float = POLL_S,
    ) -> None:
        self.url = url
        self.on_change = on_change
        self.poll_s = poll_s
        self.leading = False
        self.since: float | None = None  # when this replica last became the leader
        self.terms = 0  # how many times it became the leader

    @property
    def alone(self) -> bool:
        """True when no lock is needed: this process is the only one (SQLite)."""
        return self.url is None

    async def run(self) -> None:
        """Hold or seek the lock until cancelled (then let it go at once)."""
        if self.url is None:
            self._set(True)
            return
        backoff = BACKOFF_MIN_S
        while True:
            conn = None
            try:
                conn = await connect(self.url)
                backoff = BACKOFF_MIN_S
                await self._hold(conn)
            except (psycopg.Error, OSError, TimeoutError) as exc:
                if self.leading:
                    log.error("leader lock's session lost (%s): stepping down", describe(exc))
                else:
                    log.warning("cannot reach the database for the leader lock: %s", describe(exc))
            finally:
                self._set(False)
                await close_quietly(conn)  # ends the session: the lock is released with it
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _hold(self, conn: psycopg.AsyncConnection) -> None:
        while True:
            if self.leading:
                # The lock lasts as long as the session: check that the session does.
                await asyncio.wait_for(conn.execute("SELECT 1"), CHECK_TIMEOUT_S)
            else:
                cur = await asyncio.wait_for(
                    conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_KEY,)),
                    CHECK_TIMEOUT_S,
                )
                row = await cur.fetchone()
                if row and row[0]:
                    self._set(True)
            await asyncio.sleep(self.poll_s)

    def _set(self, leading: bool) -> None:
        if leading == self.leading:
            return
        self.leading = leading
        if leading:
            self.since = time.time()
            self.terms += 1
            log.warning("this replica now leads the hub's background loops")
        else:
            log.warning("this replica no longer leads the hub's background loops")
        self.on_change(leading)


class Serialised:
    """The store, with each write transaction first taking ``pg_advisory_xact_lock(key)``.

    For the leader's sweeps (liveness, SLA, market, checkpoints): two replicas that both
    believe they lead for a moment (a step-down waits for the sweep in flight) run their
    sweeps one after the other, each reading what the other committed, instead of
    interleaving. Reads (``read()``) and everything else pass through to the store. On SQLite
    ``BEGIN IMMEDIATE`` already serialises writers.
    """

    def __init__(self, store: Store, key: int = SWEEP_KEY) -> None:
        self._store = store
        self._key = key

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    @contextmanager
    def tx(self) -> Iterator[Session]:
        with self._store.tx() as s:
            if not self._store.is_sqlite:
                s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": self._key})
            yield s


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip()[:200]}" if str(exc) else type(exc).__name__
