"""Wake-ups inside one hub process: the scheduler, and agents waiting in a long poll.

Across replicas (several hub processes on one PostgreSQL) hub/broadcast.py carries them.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict


class Notifier:
    """Thread-safe signals delivered on the hub's event loop.

    Routes run in worker threads; they call `wake_scheduler()` / `wake_site()` /
    `tasks_changed()` after their transaction commits, and the waiting coroutines re-read the
    store.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.scheduler = asyncio.Event()
        self._sites: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        # Per site, the number of the newest long poll: an older one still waiting belongs to an
        # agent that has gone (a site has one agent, which polls once at a time).
        self._polls: dict[str, int] = defaultdict(int)
        # Set (and replaced by a fresh one) whenever tasks may have changed state: a reader
        # waiting for a task to move (GET /v1/tasks/{id}?wait_s=) takes it before it reads.
        self._changes = asyncio.Event()

    def call(self, fn, *args) -> None:  # type: ignore[no-untyped-def]
        """Run `fn(*args)` on the hub's event loop: now if called there, else soon."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            fn(*args)
        elif not self.loop.is_closed():
            self.loop.call_soon_threadsafe(fn, *args)

    def wake_scheduler(self) -> None:
        self.call(self.scheduler.set)

    def wake_site(self, site_id: str) -> None:
        self.call(self._set_site, site_id)

    def _set_site(self, site_id: str) -> None:
        self._sites[site_id].set()

    def wake_all_sites(self) -> None:
        self.call(self._set_all)

    def _set_all(self) -> None:
        for event in self._sites.values():
            event.set()

    def tasks_changed(self) -> None:
        self.call(self._tasks_changed)

    def _tasks_changed(self) -> None:
        event, self._changes = self._changes, asyncio.Event()
        event.set()

    def change_event(self) -> asyncio.Event:
        """The event the next change of any task's state sets (call on the loop; take it before
        reading what you wait on, so a change in between is not missed)."""
        return self._changes

    def site_event(self, site_id: str) -> asyncio.Event:
        """The event a long poll for this site waits on (call on the loop)."""
        return self._sites[site_id]

    def poll_begins(self, site_id: str) -> int:
        """A long poll for the site starts (call on the loop): its number. Any older poll still
        waiting is woken, to find itself superseded and answer empty (``poll_is_newest``)."""
        self._polls[site_id] += 1
        self._sites[site_id].set()
        return self._polls[site_id]

    def poll_is_newest(self, site_id: str, number: int) -> bool:
        """Whether poll ``number`` is still the newest for the site (call on the loop)."""
        return self._polls[site_id] == number
