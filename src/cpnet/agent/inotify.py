"""Which attempt directories had a file renamed into them: Linux inotify (``inotify_simple``).

The local backend watches each attempt's work dir for ``IN_MOVED_TO`` (a runner replaces its
status.json by a rename), so the agent reads the status of the attempts that changed instead of
every attempt it holds every tick. Everything here degrades to "cannot tell" (None): the caller
then polls all, as it would without it.
"""

from __future__ import annotations

import os
from pathlib import Path

from inotify_simple import INotify, flags


class Watcher:
    """Watches directories for files renamed into them under given names."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = set(names)
        self._inotify = INotify(nonblocking=True)  # close-on-exec: runners never inherit it
        self.fd = self._inotify.fileno()
        self._keys: dict[int, str] = {}  # watch descriptor -> the caller's key
        self._wds: dict[str, int] = {}

    def add(self, key: str, directory: Path) -> bool:
        """Watch `directory` under `key`; False when the kernel refuses (no more watches: the
        caller polls it instead)."""
        if key in self._wds:
            return True
        try:
            wd = self._inotify.add_watch(os.fsencode(directory), flags.MOVED_TO | flags.ONLYDIR)
        except OSError:
            return False
        self._keys[wd] = key
        self._wds[key] = wd
        return True

    def remove(self, key: str) -> None:
        wd = self._wds.pop(key, None)
        if wd is not None:
            self._keys.pop(wd, None)
            try:
                self._inotify.rm_watch(wd)
            except OSError:
                pass  # gone already when its dir went

    def changed(self) -> set[str] | None:
        """The keys whose directory got one of the names since the last call (no waiting);
        None when events were lost (the queue overflowed) or cannot be read."""
        keys: set[str] = set()
        try:
            events = self._inotify.read(timeout=0)
        except OSError:
            return None
        for e in events:
            if e.mask & flags.Q_OVERFLOW:
                self._drain()
                return None
            if e.mask & flags.IGNORED:  # its directory was removed
                key = self._keys.pop(e.wd, None)
                if key is not None and self._wds.get(key) == e.wd:
                    del self._wds[key]
                continue
            if e.name in self.names and e.wd in self._keys:
                keys.add(self._keys[e.wd])
        return keys

    def _drain(self) -> None:
        try:
            while self._inotify.read(timeout=0):
                pass
        except OSError:
            pass

    def close(self) -> None:
        try:
            self._inotify.close()
        except OSError:
            pass
