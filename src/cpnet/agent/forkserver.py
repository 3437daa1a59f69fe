"""A fork server for runners: ``python -m cpnet.agent.forkserver``.

Starting ``python -m cpnet.agent.runner`` costs ~60 ms of CPU per attempt, nearly all of it
interpreter start-up and imports. This helper pays that once: it imports the runner, then forks a
child per attempt that runs exactly what ``python -m cpnet.agent.runner WORK_DIR`` runs (the
child leads a new session, stdin is /dev/null, stdout and stderr append to ``runner.log``, cwd is
the work dir), so status.json, runner.pid, cancel by session and re-attach after an agent restart
are unchanged. The local backend starts one per instance and falls back to spawning runners
whenever it is unavailable.

The protocol is lines of text on the server's stdin (requests) and stdout (replies):

- the server first says ``ready PID``;
- ``start WORK_DIR`` → ``ok PID START_TICKS`` or ``err MESSAGE``: the child exists and leads its
  own session, but waits;
- ``go PID`` (no reply): the backend recorded the pid in runner.pid; the child runs the runner;
- ``drop PID`` (no reply): the backend could not record it; the child exits without running.

A child runs only after ``go``, so a runner never runs unrecorded, and if the server dies before
relaying ``go`` its waiting children see EOF and exit without running: the backend can then spawn
the runner itself without ever running an attempt twice.

The server exits when its stdin reaches EOF, which is when the backend that started it is gone
(the agent died, or the backend object was dropped), or when its parent changes; the runners it
forked keep running in their own sessions. (Not PR_SET_PDEATHSIG: that fires when the *thread*
that started the server ends, and the agent calls its backend from several threads.) It reaps its
children on SIGCHLD, so their CPU time is added to its own ``cutime``.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import traceback
from pathlib import Path

import cpnet.agent.runner as runner  # the point of the server: imported once, forked many times
from cpnet.agent import hostinfo

READY_TIMEOUT_S = 10.0  # a forked child says it leads its session within this
TICK_S = 1.0  # how often the server checks its parent even when nothing happens


def _send(fd: int, line: str) -> None:
    data = (line + "\n").encode()
    while data:
        data = data[os.write(fd, data) :]


def _wait_readable(fd: int, timeout: float) -> bool:
    r, _, _ = select.select([fd], [], [], timeout)
    return bool(r)


def _child(work_dir: str, ready_w: int, go_r: int) -> None:
    """In the forked child: become a session leader, wait for ``go``, run the runner, exit."""
    code = 1
    try:
        os.setsid()  # like start_new_session=True: cancel kills this whole session
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the runner wait4()s its executors
        null = os.open(os.devnull, os.O_RDONLY)
        log = os.open(
            os.path.join(work_dir, runner.RUNNER_LOG), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644
        )
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        keep = sorted((ready_w, go_r))  # everything else of the server's (its pipes) goes
        os.closerange(3, keep[0])
        os.closerange(keep[0] + 1, keep[1])
        os.closerange(keep[1] + 1, 1 << 20)
        os.write(ready_w, b"s")
        os.close(ready_w)
        go = b""
        with contextlib.suppress(InterruptedError):
            go = os.read(go_r, 1)
        os.close(go_r)
        if go != b"g":
            msg = "cpnet fork server: not started (the backend could not record the runner)\n"
            os.write(2, msg.encode())
            code = 3
            return
        os.chdir(work_dir)
        code = runner.main([work_dir])
    except SystemExit as exc:
        code = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        with contextlib.suppress(BaseException):
            traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
        os._exit(code)


class Server:
    """The request loop (single-threaded, so forking from it is safe)."""

    def __init__(self, rfd: int = 0, wfd: int = 1) -> None:
        self.rfd = rfd
        self.wfd = wfd
        self.parent = os.getppid()
        self.waiting: dict[int, int] = {}  # pid → write end of its go pipe
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)

    def serve(self) -> None:
        signal.signal(signal.SIGCHLD, lambda _s, _f: None)  # wakes select via the wakeup fd
        signal.set_wakeup_fd(self.wake_w)
        _send(self.wfd, f"ready {os.getpid()}")
        buf = b""
        while True:
            ready, _, _ = select.select([self.rfd, self.wake_r], [], [], TICK_S)
            if self.wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self.wake_r, 4096):
                        pass
            self.reap()
            orphaned = os.getppid() != self.parent  # the backend's process is gone
            # Read before acting on the parent's death: a ``go`` it wrote just before dying is
            # still in the pipe, and its runner.pid is already recorded, so it must be honoured.
            while self.rfd in ready or (orphaned and _wait_readable(self.rfd, 0)):
                ready = []
                data = os.read(self.rfd, 65536)
                if not data:
                    orphaned = True  # EOF: the backend that started us is gone
                    break
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    self.handle(line.decode("utf-8", "surrogateescape"))
            if orphaned:
                return

    def handle(self, line: str) -> None:
        verb, _, arg = line.partition(" ")
        if verb == "start":
            try:
                pid, ticks = self.fork(arg)
            except Exception as exc:  # any failure is the backend's to handle
                _send(self.wfd, f"err {type(exc).__name__}: {exc}".replace("\n", " "))
            else:
                _send(self.wfd, f"ok {pid} {ticks}")
        elif verb in ("go", "drop") and arg.isdigit():
            fd = self.waiting.pop(int(arg), None)
            if fd is not None:
                with contextlib.suppress(OSError):  # it died meanwhile: nothing to start
                    if verb == "go":
                        os.write(fd, b"g")
                os.close(fd)
        else:
            print(f"cpnet fork server: bad request {line!r}", file=sys.stderr, flush=True)

    def fork(self, work_dir: str) -> tuple[int, int]:
        if not os.path.isdir(work_dir):
            raise FileNotFoundError(f"no work dir {work_dir}")
        ready_r, ready_w = os.pipe()
        go_r, go_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError:
            for fd in (ready_r, ready_w, go_r, go_w):
                os.close(fd)
            raise
        if pid == 0:
            os.close(ready_r)
            os.close(go_w)
            _child(work_dir, ready_w, go_r)  # never returns
        os.close(ready_w)
        os.close(go_r)
        try:
            ok = _wait_readable(ready_r, READY_TIMEOUT_S) and os.read(ready_r, 1) == b"s"
        finally:
            os.close(ready_r)
        st = hostinfo.proc_stat(pid)
        if not ok or st is None:
            os.close(go_w)  # it exits without running
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            raise RuntimeError(f"the forked runner {pid} did not start its session")
        self.waiting[pid] = go_w
        return pid, st.start_ticks

    def reap(self) -> None:
        while True:
            try:
                pid, _status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            fd = self.waiting.pop(pid, None)
            if fd is not None:
                os.close(fd)


def main() -> int:
    runner.warm_up(Path.cwd())  # probed once here, inherited by every child
    Server().serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
