"""What the runnable examples (examples/*/run.py) share: their checks and figures, an error
that says what to do next, bounded waits, SIGTERM as Ctrl-C, and finding what they left running."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol, TypeVar

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


class Run(Protocol):
    """What ``run_example`` needs of an example's run: its outcome and how to stop it."""

    out: Outcome

    def teardown(self) -> None: ...


def run_example(
    args: Any,
    console: Any,
    prefix: str,
    make: Callable[[Path], Run],
    steps: Callable[[Run], None],
    report: Callable[[Any, Outcome], None],
    failures: tuple[type[BaseException], ...] = (),
) -> int:
    """The one skeleton of an example's command: a work dir (``args.work_dir``, which must be
    new or empty, else a temporary one), ``steps`` on the run ``make`` builds there, teardown
    whatever happened (Ctrl-C and SIGTERM included), a check that nothing was left running, the
    report (a table, or one JSON document with ``args.json``), and the work dir removed unless
    something failed or ``args.keep``. Exit status: 0 passed, 1 a check failed or an error in
    ``failures`` (or ExampleError), 2 a bad work dir, 130 interrupted."""
    from rich.text import Text  # the examples' console is Rich's

    started = time.monotonic()
    if args.work_dir is not None:
        root = args.work_dir.expanduser().resolve()
        if root.exists() and any(root.iterdir()):
            console.print(f"error: --work-dir {root} is not empty; give a new or empty one")
            return 2
        root.mkdir(parents=True, exist_ok=True)
        temporary = False
    else:
        root, temporary = Path(tempfile.mkdtemp(prefix=prefix)), True
    run = make(root)
    error = ""
    with sigterm_interrupts():
        try:
            steps(run)
        except KeyboardInterrupt:
            error = "interrupted: everything the example started was stopped"
        except (ExampleError, *failures) as err:
            error = str(err)
        finally:
            run.teardown()
    left = processes_under(root)
    run.out.check("nothing left running", not left, f"leftover pids {left}" if left else "none")
    run.out.figures["wall_s"] = round(time.monotonic() - started, 1)
    passed = run.out.passed and not error
    if temporary and not any(x.is_file() for x in root.rglob("*")):
        shutil.rmtree(root, ignore_errors=True)  # stopped before anything was written
    if error:
        console.print(Text(f"error: {error}", style="bold red"), soft_wrap=True)
        if root.exists():
            console.print(f"logs kept in {root}")
    report(console, run.out)
    if passed and temporary and not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    elif not error:
        console.print(f"work dir kept: {root}")
    if args.json:
        doc = {
            "passed": passed,
            "error": error or None,
            "checks": [c.__dict__ for c in run.out.checks],
            "figures": run.out.figures,
            "work_dir": str(root) if root.exists() else None,
        }
        print(json.dumps(doc, indent=2))
    elif passed:
        console.print(Text("every check passed", style="bold green"))
    else:
        msg = "some check failed: see the tables above and the logs in the work dir"
        console.print(Text(msg, style="bold red"))
    if error.startswith("interrupted"):
        return 130
    return 0 if passed else 1
