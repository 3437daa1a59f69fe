"""Which attempt directories had a file renamed into them: Linux inotify through ctypes.

The local backend watches each attempt's work dir for ``IN_MOVED_TO`` (a runner replaces its
status.json by a rename), so the agent reads the status of the attempts that changed instead of
every attempt it holds every tick. Everything here degrades to "cannot tell" (None): the caller
then polls all, as it would without it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import struct
from pathlib import Path

IN_MOVED_TO = 0x00000080  # <sys/inotify.h>
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name


class Watcher:
    """Watches directories for files renamed into them under given names."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = {os.fsencode(n) for n in names}
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self._keys: dict[int, str] = {}  # watch descriptor -> the caller's key
        self._wds: dict[str, int] = {}

    def add(self, key: str, directory: Path) -> bool:
        """Watch `directory` under `key`; False when the kernel refuses (no more watches: the
        caller polls it instead)."""
        if key in self._wds:
            return True
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(directory), IN_MOVED_TO | IN_ONLYDIR)
        if wd < 0:
            return False
        self._keys[wd] = key
        self._wds[key] = wd
        return True

    def remove(self, key: str) -> None:
        wd = self._wds.pop(key, None)
        if wd is not None:
            self._keys.pop(wd, None)
            self._libc.inotify_rm_watch(self.fd, wd)  # gone already when its dir went

    def changed(self) -> set[str] | None:
        """The keys whose directory got one of the names since the last call (no waiting);
        None when events were lost (the queue overflowed) or cannot be read."""
        keys: set[str] = set()
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return keys
            except OSError:
                return None
            if not data:
                return keys
            at = 0
            while at + _EVENT.size <= len(data):
                wd, mask, _cookie, size = _EVENT.unpack_from(data, at)
                name = data[at + _EVENT.size : at + _EVENT.size + size].rstrip(b"\0")
                at += _EVENT.size + size
                if mask & IN_Q_OVERFLOW:
                    self._drain()
                    return None
                if mask & IN_IGNORED:  # its directory was removed
                    key = self._keys.pop(wd, None)
                    if key is not None and self._wds.get(key) == wd:
                        del self._wds[key]
                    continue
                if name in self.names and wd in self._keys:
                    keys.add(self._keys[wd])

    def _drain(self) -> None:
        with contextlib.suppress(OSError):
            while os.read(self.fd, 65536):
                pass

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
