"""A warm worker: ``python -m cpnet.agent.warm``, one long-lived runner that runs attempts one
after another (the pilot-job idea of HTCondor's glideins and Parsl's high-throughput executor).

A forked runner (forkserver.py) still pays a fork of a Python process, and the copy-on-write
faults that follow, for every attempt. A warm worker pays its interpreter start-up and imports
once, then runs each attempt the local backend hands it with the same code as ``python -m
cpnet.agent.runner WORK_DIR`` (`runner.Runner`), in the worker process itself. What an attempt
had as a runner of its own, it keeps:

- **its record**: ``runner.pid`` holds "PID START_TICKS SEQ" (the worker, and which of its
  attempts this is), written by the backend *before* the worker is told to run it, so an attempt
  never runs unrecorded; ``status.json`` is written the same way, final states durably;
- **its processes**: executors run in process groups of their own inside the worker's session,
  as a runner's do inside its own; the worker is a child subreaper and kills and reaps whatever
  an executor left before it moves on, so at any time the worker's session holds the worker and
  the processes of one attempt only;
- **cancel**: the backend creates the attempt's ``cancel`` file, then sends SIGTERM to the
  worker's process group. The worker stops the attempt only when that file exists for the
  attempt it is running: a late SIGTERM meant for an attempt that already ended is ignored.
  Should the attempt not end within the backend's grace period, the backend kills the worker's
  whole session (the worker and that attempt's processes) — under the backend's lock and only
  while the attempt is not final, so never while the worker runs another one (the backend hands
  a worker its next attempt only after reading its ``done`` for the last);
- **its work dir, private /tmp, usage**: all per attempt, as in the runner (usage is the
  executors' own, from ``wait4``); the runner's stdout and stderr go to the attempt's
  ``runner.log`` while it runs, and the worker's cwd is the attempt's work dir;
- **an agent SIGKILL**: the attempt under way runs to its end (the worker does not read its
  stdin while it runs one); the worker then sees EOF on its stdin and exits, taking nothing more,
  and the next agent re-attaches to the attempt through runner.pid and status.json, as to any
  runner.

A worker that misbehaves is replaced: the backend starts another when it next needs one. The
worker retires itself (says ``retire``, then exits) after an attempt that broke it (the runner
raised, or no final state is on disk), or when it holds threads or children it should not, more
open files than it started with (plus a margin), more than `MAX_RSS_MB` of memory, or has run
`MAX_ATTEMPTS` attempts. A worker that dies during an attempt leaves it to the backend, which
reports it as for any runner that died (SYSTEM_ERROR, "runner died"; the hub retries it under
the task's ``max_attempts``), and one that never picks up an attempt it was handed within the
backend's deadline is killed, with the same outcome.

The protocol is lines of text on the worker's stdin (requests) and stdout (replies); the worker
moves both pipes off fds 0 and 1 at once, so nothing an attempt prints can reach them:

- the worker first says ``ready PID START_TICKS``;
- ``run SEQ WORK_DIR`` (the backend wrote "PID START_TICKS SEQ" to WORK_DIR/runner.pid): the
  worker checks runner.pid names it (else it exits without running anything), runs the attempt,
  and says ``done SEQ``, or ``retire SEQ WHY`` and exits.

It exits at EOF on its stdin and when its parent changes (checked between attempts, at least
every `TICK_S`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import sys
import threading
import traceback
from pathlib import Path

import cpnet.agent.runner as runner  # the point of the worker: imported once, run many times
from cpnet.agent import hostinfo

TICK_S = 1.0  # how often an idle worker checks its parent even when nothing happens
# Defaults of the two limits the backend may pass (``--max-attempts N --max-rss-mb M``):
MAX_ATTEMPTS = 1000  # then it retires: bounds slow leaks, and how long past attempts' data lingers
MAX_RSS_MB = 256.0  # resident memory after an attempt beyond which it retires
FD_MARGIN = 16  # open files beyond its own at start-up after which it retires
THREAD_JOIN_S = 1.0  # how long an attempt's finished helper threads are given to end


def _send(fd: int, line: str) -> None:
    data = (line + "\n").encode("utf-8", "surrogateescape")
    while data:
        data = data[os.write(fd, data) :]


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Worker:
    """The request loop; attempts run on the main thread, one at a time."""

    def __init__(
        self,
        rfd: int = 0,
        wfd: int = 1,
        max_attempts: int = MAX_ATTEMPTS,
        max_rss_mb: float = MAX_RSS_MB,
    ) -> None:
        self.max_attempts = max_attempts
        self.max_rss_mb = max_rss_mb
        # The protocol pipes move off 0 and 1, which become /dev/null between attempts and
        # /dev/null + runner.log during one; fd 2 (the agent's stderr) is kept for the worker.
        self.rfd = os.dup(rfd)
        self.wfd = os.dup(wfd)
        self.null = os.open(os.devnull, os.O_RDWR)
        os.dup2(self.null, rfd)
        os.dup2(self.null, wfd)
        for fd in (self.rfd, self.wfd, self.null):
            os.set_inheritable(fd, False)
        self.err = os.dup(2)
        self.home = os.getcwd()
        self.parent = os.getppid()
        self.pid = os.getpid()
        st = hostinfo.proc_stat(self.pid)
        self.ticks = st.start_ticks if st is not None else 0
        self.buf = b""
        self.attempts = 0
        self.fds = 0  # open files when idle, measured once ready

    def serve(self) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # between attempts: a late cancel
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        runner.warm_up(Path(self.home))
        self.fds = _open_fds()
        _send(self.wfd, f"ready {self.pid} {self.ticks}")
        while True:
            line = self.next_line()
            if line is None:
                return  # the backend is gone
            verb, _, rest = line.partition(" ")
            seq, _, work_dir = rest.partition(" ")
            if verb != "run" or not seq.isdigit() or not work_dir:
                self.say(f"cpnet warm worker: bad request {line!r}")
                continue
            why = self.run(int(seq), Path(work_dir))
            if why is not None:
                self.say(f"cpnet warm worker {self.pid}: retiring after attempt {seq}: {why}")
                with contextlib.suppress(OSError):
                    _send(self.wfd, f"retire {seq} {why}".replace("\n", " "))
                return
            try:
                _send(self.wfd, f"done {seq}")
            except OSError:
                return  # the backend is gone

    def next_line(self) -> str | None:
        """The next request; None at EOF or once the parent changed."""
        while b"\n" not in self.buf:
            ready, _, _ = select.select([self.rfd], [], [], TICK_S)
            if not ready:
                if os.getppid() != self.parent:
                    return None
                continue
            data = os.read(self.rfd, 65536)
            if not data:
                return None
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode("utf-8", "surrogateescape")

    def say(self, text: str) -> None:
        with contextlib.suppress(OSError):
            os.write(self.err, (text + "\n").encode("utf-8", "replace"))

    def run(self, seq: int, work_dir: Path) -> str | None:
        """Run one attempt as its runner; None when the worker may take another, else why it
        must retire."""
        try:
            recorded = (work_dir / runner.RUNNER_PID).read_text().split()
        except OSError as exc:
            return f"cannot read {runner.RUNNER_PID}: {exc}; not run"
        if recorded != [str(self.pid), str(self.ticks), str(seq)]:
            return f"{runner.RUNNER_PID} says {' '.join(recorded)!r}, not this worker; not run"
        self.attempts += 1
        crashed: str | None = None
        try:
            log = os.open(
                work_dir / runner.RUNNER_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644
            )
        except OSError as exc:
            return f"cannot open {runner.RUNNER_LOG}: {exc}; not run"
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        r = runner.Runner(work_dir.resolve(), shared=True)
        try:
            os.chdir(work_dir)
            signal.signal(signal.SIGTERM, r.on_sigterm)
            signal.signal(signal.SIGINT, r.on_sigterm)
            r.run()
        except BaseException as exc:  # recorded as SYSTEM_ERROR by run() where it could be
            crashed = f"the attempt broke it: {type(exc).__name__}: {exc}"
            with contextlib.suppress(BaseException):
                traceback.print_exc()
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(BaseException):
                    stream.flush()
            os.dup2(self.null, 1)
            os.dup2(self.err, 2)
            with contextlib.suppress(OSError):
                os.chdir(self.home)
        return crashed or self.health(r)

    def health(self, r: runner.Runner) -> str | None:
        """Why this worker should not take another attempt (None: it may)."""
        record = runner.read_status(r.work_dir)
        if record is None or not runner.State(record["state"]).terminal:
            return "the attempt ended without a final state"
        if r.stuck is not None:
            return r.stuck
        for t in threading.enumerate():
            if t is not threading.current_thread():
                t.join(THREAD_JOIN_S)  # a canceled kill timer, a fence watch: ending
        extra = [t.name for t in threading.enumerate() if t is not threading.current_thread()]
        if extra:
            return f"threads left running: {', '.join(extra)}"
        kids = hostinfo.own_children()
        if kids:
            return f"processes left: {kids}"
        fds = _open_fds()
        if fds > self.fds + FD_MARGIN:
            return f"{fds} open files (it started with {self.fds})"
        rss = _rss_mb()
        if rss > self.max_rss_mb:
            return f"{rss:.0f} MB resident (more than {self.max_rss_mb:g} MB)"
        if self.attempts >= self.max_attempts:
            return f"ran {self.attempts} attempts"
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m cpnet.agent.warm", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--max-attempts", type=int, default=MAX_ATTEMPTS)
    ap.add_argument("--max-rss-mb", type=float, default=MAX_RSS_MB)
    args = ap.parse_args(argv)
    Worker(max_attempts=args.max_attempts, max_rss_mb=args.max_rss_mb).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
