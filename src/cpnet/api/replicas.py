"""`cpnet hub --workers N`: N hub replicas on one machine, sharing one listening socket.

A small supervisor of our own rather than uvicorn's ``--workers``, because each replica must
be a whole hub process of ours — its Hub (store, leader lock, wake-up listener) built from the
settings object, and uvicorn's exit handler wrapped so that long polls are answered at once on
shutdown (api/app.serve) — and because uvicorn's supervisor changed between the versions we
accept (restarting dead workers came late). Choices:

- The supervisor binds the port once and every replica accepts on that same socket (passed to
  it by multiprocessing). One accept queue: a connection waiting there is served by whichever
  replica is free, and survives the death of any one of them. (SO_REUSEPORT would give each
  replica its own queue, and the connections queued at a replica that dies would be reset.)
- Before starting replicas it opens the store once: migrations run there, one at a time, and
  a store that was never initialised fails here with `cpnet hub init`'s hint.
- A replica that dies is started again (after a pause that grows while they keep dying at
  start); the others go on serving, and one of them takes over the loops if it led
  (hub/leader.py). SIGINT or SIGTERM stop every replica (SIGTERM, then SIGKILL after
  ``STOP_GRACE_S``), and a replica whose supervisor vanished stops itself.

Replicas share a database, so this needs PostgreSQL: SQLite is one process's store.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from multiprocessing.process import BaseProcess

from cpnet.config import HubSettings

log = logging.getLogger("cpnet.hub.replicas")

MAX_WORKERS = 64
STOP_GRACE_S = 15.0  # a replica's shutdown: answering long polls, finishing requests
CHECK_S = 0.5  # how often the supervisor looks at its replicas
RESTART_MIN_S, RESTART_MAX_S = 0.5, 30.0  # pause before starting a dead replica again
STABLE_S = 30.0  # a replica up this long resets the pause


class ReplicasRefused(ValueError):
    """`--workers` cannot be honoured with these settings; the message says what to do."""


def check(settings: HubSettings, workers: int) -> None:
    """ReplicasRefused unless `workers` replicas can share these settings' store."""
    if not 1 <= workers <= MAX_WORKERS:
        raise ReplicasRefused(f"--workers must be 1 to {MAX_WORKERS}, got {workers}")
    if workers > 1 and not settings.url.startswith("postgresql"):
        raise ReplicasRefused(
            f"--workers {workers} needs PostgreSQL: replicas share one database, and SQLite "
            "is one process's store. Run `cpnet hub init --database-url "
            "postgresql+psycopg://USER@HOST/DB` and start with that --database-url "
            "(docs/operations.md), or leave out --workers"
        )


def _listen(settings: HubSettings) -> socket.socket:
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _replica(settings: HubSettings, sock: socket.socket, supervisor: int) -> None:
    """A replica's main (in the child): serve on the shared socket until told to stop."""
    from cpnet.api.app import serve

    def orphaned() -> None:  # the supervisor was killed: nobody would ever stop us
        while os.getppid() == supervisor:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=orphaned, name="cpnet-orphan-watch", daemon=True).start()
    serve(settings, sock)


class Supervisor:
    """Starts `workers` replicas on one socket and keeps them running until told to stop."""

    def __init__(self, settings: HubSettings, workers: int) -> None:
        self.settings = settings
        self.workers = workers
        self.stopping = threading.Event()
        self._ctx = multiprocessing.get_context("spawn")
        self._sock: socket.socket | None = None
        self._procs: list[BaseProcess | None] = [None] * workers
        self._started = [0.0] * workers
        self._pause = [RESTART_MIN_S] * workers
        self._due = [0.0] * workers  # when a dead replica may start again

    def _start(self, i: int) -> None:
        assert self._sock is not None
        p = self._ctx.Process(
            target=_replica,
            args=(self.settings, self._sock, os.getpid()),
            name=f"cpnet-hub-replica-{i}",
        )
        p.start()
        self._procs[i], self._started[i] = p, time.monotonic()
        log.info("replica %d started (pid %s)", i, p.pid)

    def _watch(self) -> None:
        now = time.monotonic()
        for i, p in enumerate(self._procs):
            if p is not None and p.is_alive():
                if now - self._started[i] > STABLE_S:
                    self._pause[i] = RESTART_MIN_S
                continue
            if p is not None:  # it died: start it again after a pause
                self._procs[i] = None
                self._due[i] = now + self._pause[i]
                print(
                    f"cpnet hub: replica {i} (pid {p.pid}) exited with {p.exitcode}; "
                    f"starting it again in {self._pause[i]:g} s",
                    file=sys.stderr,
                    flush=True,
                )
                self._pause[i] = min(self._pause[i] * 2, RESTART_MAX_S)
            elif now >= self._due[i]:
                self._start(i)

    def _stop_all(self) -> None:
        alive = [p for p in self._procs if p is not None and p.is_alive()]
        for p in alive:
            if p.pid is not None:
                os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for p in alive:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in alive:
            if p.is_alive():
                p.kill()
                p.join(5)

    def run(self) -> None:
        """Serve until SIGINT or SIGTERM."""
        from cpnet.hub.service import Hub

        # Migrations (one process at a time) and the "not initialised" check, before binding.
        Hub(self.settings).store.close()
        self._sock = _listen(self.settings)

        def _signal(sig: int, _frame: object) -> None:
            self.stopping.set()

        old = {s: signal.signal(s, _signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while not self.stopping.is_set():
                self._watch()
                self.stopping.wait(CHECK_S)
        finally:
            self._stop_all()
            self._sock.close()
            for s, handler in old.items():
                signal.signal(s, handler)


def serve_replicas(settings: HubSettings, workers: int) -> None:
    """Run `workers` hub replicas on settings' host and port until interrupted."""
    check(settings, workers)
    Supervisor(settings, workers).run()
