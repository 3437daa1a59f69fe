"""What the runnable examples (examples/*/run.py) share: their checks and figures, an error
that says what to do next, bounded waits, SIGTERM as Ctrl-C, and finding what they left running."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from cpnet.agent import hostinfo

T = TypeVar("T")


class ExampleError(Exception):
    """The example cannot go on, with what to do about it."""


@dataclass
class Check:
    """One thing an example verified, whether it held, and the evidence."""

    name: str
    ok: bool
    detail: str


@dataclass
class Outcome:
    """An example's checks and the figures it measured; passed only if it checked something
    and every check held."""

    checks: list[Check] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def check(self, name: str, ok: bool, detail: str) -> bool:
        self.checks.append(Check(name, bool(ok), detail))
        return bool(ok)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)


def wait_for(
    pred: Callable[[], T | None], timeout: float, what: str, hint: str = "", poll_s: float = 0.2
) -> T:
    """Poll ``pred`` until it returns something truthy; ExampleError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise ExampleError(f"timed out after {timeout:g}s waiting for {what}. {hint}".strip())
        time.sleep(poll_s)


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM stops the example like Ctrl-C: everything started is torn down either way."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def kill_session(pid: int) -> None:
    """SIGKILL every process in the session ``pid`` leads (the leader first)."""
    members = hostinfo.session_members(pid)
    for p in sorted(members, key=lambda x: x != pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGKILL)


def processes_under(root: Path) -> list[int]:
    """Live processes (other than this one) whose command line or cwd is under ``root``."""
    found = []
    for st in hostinfo.all_stats():
        if st.state in ("Z", "X") or st.pid == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{st.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(f"/proc/{st.pid}/cwd")
        except OSError:
            continue
        if str(root) in cmd or cwd.startswith(str(root)):
            found.append(st.pid)
    return found
