"""Opening the store: engines for SQLite (WAL) and PostgreSQL, sessions, migrations."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from cpnet.store import audit

MIGRATIONS = Path(__file__).parent / "migrations"
MIGRATE_KEY = 0x63706E6574_0003  # advisory lock: one hub replica migrates at a time


class ReadOnlyViolation(RuntimeError):
    """A programming error: something tried to write inside `Store.read()`."""


class Store:
    """An engine plus a session factory; one per process."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        # Audit records queued in a transaction are chained as it commits (store/audit.py).
        event.listen(self.sessions, "before_commit", audit.flush)
        event.listen(self.sessions, "after_commit", audit.committed)
        event.listen(self.sessions, "after_soft_rollback", audit.discard)
        # Reads share the pool but begin without taking SQLite's write lock (see _on_begin).
        self.read_sessions = sessionmaker(
            self.engine.execution_options(cpnet_read=True), expire_on_commit=False
        )

        @event.listens_for(self.engine, "before_cursor_execute")
        def _no_writes_in_reads(conn, _cursor, statement, *_):  # type: ignore[no-untyped-def]
            # A write inside Store.read() would be rolled back silently: make it loud instead.
            if conn.get_execution_options().get("cpnet_read") and statement.lstrip()[
                :6
            ].upper() in ("INSERT", "UPDATE", "DELETE"):
                raise ReadOnlyViolation(f"write inside a read-only transaction: {statement[:60]}")

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def tx(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self.sessions() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only transaction: a consistent snapshot that never waits for writers."""
        with self.read_sessions() as session, session.begin():
            yield session
            session.rollback()

    def migrate(self) -> None:
        """Bring the schema to the newest revision (safe to call on every start)."""
        upgrade(self.engine)

    def close(self) -> None:
        self.engine.dispose()


def make_engine(url: str) -> Engine:
    """An engine with the settings each backend needs for safe concurrent use."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=8,
            max_overflow=8,
        )
        sync = os.environ.get("CPNET_SQLITE_SYNC", "NORMAL").upper()
        if sync not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            sync = "NORMAL"

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            # Autocommit at the driver level so that we emit BEGIN ourselves (below).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a crash of any process (only power loss can drop the
            # last commits); CPNET_SQLITE_SYNC=FULL for power-loss durability.
            cur.execute(f"PRAGMA synchronous={sync}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):  # type: ignore[no-untyped-def]
            # IMMEDIATE takes the write lock up front: a deferred transaction that later writes
            # can fail with SQLITE_BUSY without waiting, when another writer got there first.
            # Read-only transactions (Store.read) stay deferred: in WAL mode they never block.
            if conn.get_execution_options().get("cpnet_read"):
                conn.exec_driver_sql("BEGIN")
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run Alembic migrations up to `revision` on this engine.

    On PostgreSQL under an advisory lock: hub replicas starting together migrate one after the
    other (the later ones find the schema done), never two at once."""
    if engine.dialect.name != "postgresql":
        command.upgrade(alembic_config(engine), revision)
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as lock:
        lock.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATE_KEY})
        try:
            command.upgrade(alembic_config(engine), revision)
        finally:
            lock.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATE_KEY})
