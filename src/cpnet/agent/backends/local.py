"""The local backend: runs each attempt on this machine as a runner process in its own session,
or on an idle warm worker (cpnet.agent.warm: a long-lived runner that runs attempts one after
another; see that module for what each attempt keeps there).

Everything about an attempt lives in its work dir ``work_root/<attempt_id>/`` (its `Handle`), so a
new instance after an agent restart picks up where the old one was: ``job.json`` (what to run),
``runner.pid`` (who runs it: "pid start_ticks", or "pid start_ticks seq" for a warm worker's seq-th
attempt), ``status.json`` (what the runner last recorded), ``cancel`` (a cancel was asked for),
``forgotten`` (the hub acknowledged the end).

Options: `LocalOptions` (below), each typed and documented, with the staging ones.

GPUs: when a pool declares ``gpus``, each started attempt is assigned that many concrete indices
(lowest free first, never shared by two unfinished attempts), recorded in job.json's ``runner``
settings, and the runner sets ``CUDA_VISIBLE_DEVICES`` to them ('' for an attempt asking none).

CPUs: each started attempt is assigned ``ceil(cpu_cores)`` concrete CPU ids among the ones this
process may use (``os.sched_getaffinity(0)``), the ones the fewest unfinished attempts hold first
(lowest id on ties), also recorded in job.json's ``runner`` settings; the runner pins every
executor to them with ``sched_setaffinity``. While the pools' declared cores together fit the
machine (and tasks ask whole cores), no two unfinished attempts share a CPU; when they are
oversubscribed (more declared than there are CPUs), CPUs are shared round-robin.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import select
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from cpnet.agent import hostinfo
from cpnet.agent.backends.base import (
    Backend,
    BackendConfig,
    BackendError,
    Handle,
    Job,
    JobStatus,
    PoolCapacity,
    PoolDecl,
    PoolLive,
)
from cpnet.agent.backends.options import (
    FLAG,
    PATHS,
    TEXT,
    StagingOptions,
    cpu_count,
    option,
    seconds,
)
from cpnet.agent.backends.runner_job import (
    runner_env,
    runner_settings,
    staging_env,
    staging_settings,
)
from cpnet.agent.backends.workdir import mtime, status_from_record
from cpnet.agent.inotify import Watcher
from cpnet.agent.runner import (
    ASSIGN_FILE,
    CANCEL_FILE,
    DEFAULT_GRACE_S,
    JOB_FILE,
    RUNNER_LOG,
    RUNNER_PID,
    STATUS_FILE,
    new_record,
    read_status,
    tail,
    write_atomic,
    write_json_atomic,
)
from cpnet.tasks.model import TaskSpec
from cpnet.tasks.states import State

log = logging.getLogger(__name__)

FORGOTTEN = "forgotten"
SPAWN_TIMEOUT_S = 30.0  # an empty runner.pid older than this means the spawner died mid-way
RUNNER_LOG_TAIL = 2048  # bytes of runner.log quoted when a runner dies
FORK_SERVER_READY_S = 20.0  # the fork server's own start-up (an interpreter and the imports)
FORK_SERVER_REPLY_S = 10.0  # one fork (the child only has to call setsid)
WARM_WORKERS_MAX = 8  # the default pool of warm workers: the usable CPUs, at most this many
WARM_MAX_ATTEMPTS = 1000  # a warm worker retires after this many attempts (and is replaced)
WARM_MAX_RSS_MB = 256.0  # or once its resident memory after an attempt is larger
WARM_PICKUP_S = SPAWN_TIMEOUT_S  # a warm worker that wrote no status.json by then is killed
PIPE_BUF = 4096  # a request no longer than this reaches a worker whole or not at all


@dataclass(slots=True)
class _Tracked:
    """What this instance knows about one attempt it runs or queues."""

    work_dir: Path
    pool: str
    demand: PoolCapacity
    started: bool  # a runner was spawned (by this or another instance)
    final: bool = False
    popen: subprocess.Popen[bytes] | None = None  # set when this instance spawned it
    gpus: tuple[int, ...] = ()  # GPU indices assigned at start (held until final)
    cpus: tuple[int, ...] = ()  # CPU ids assigned at start (held until final)
    seen: dict[str, Any] | None = None  # status.json as `_refresh` just read it, for `_status`


@dataclass(frozen=True)
class LocalOptions(StagingOptions):
    """Options of the local backend, besides the staging ones (`StagingOptions`)."""

    pool_name: str = option("local", TEXT, "name of the discovered pool")
    cancel_grace_s: float = option(
        10.0, seconds(), "seconds from SIGTERM to SIGKILL of a canceled runner's session"
    )
    executor_grace_s: float = option(
        DEFAULT_GRACE_S, seconds(), "seconds the runner gives a canceled executor before SIGKILL"
    )
    file_roots: tuple[str, ...] | None = option(
        None,
        PATHS,
        "':'-separated host directories file:// URLs may read or write (default: any; the "
        "executors run as the agent's user anyway, so this only matters with sandboxed "
        "executors)",
    )
    fork_server: bool = option(
        True,
        FLAG,
        "false spawns every runner as python -m cpnet.agent.runner instead of forking it from "
        "this instance's fork server (cpnet.agent.forkserver), which saves the interpreter "
        "start-up and imports (~60 ms of CPU) per attempt. Either way the runner leads its own "
        "session; when the fork server is unavailable the runner is spawned, and the server is "
        "restarted at a later start",
    )
    memory_limit: bool = option(
        True,
        FLAG,
        "false runs executors without an address-space limit (default: each executor runs "
        "under RLIMIT_AS = the task's ram_gb + 256 MiB, at least 512 MiB; a task asking 0 GiB is "
        "not limited)",
    )
    private_tmp: bool = option(
        True,
        FLAG,
        "false gives executors the host's /tmp (with TMPDIR = the work dir's tmp/) instead of a "
        "private /tmp: by default each executor runs in its own mount namespace with the work "
        "dir's tmp/ bind-mounted on /tmp, so the executors of one attempt share a /tmp that no "
        "other attempt or the host sees, and task paths under /tmp are where the task says. "
        "Directories under the host's /tmp that executors need stay visible at their place: "
        "the tree holding the work dir when that is under /tmp, and the agent's and executors' "
        "software (cpnet.agent.private_tmp says which). It falls back to TMPDIR when not root "
        "or when the kernel refuses; the attempt's system logs say which one was used",
    )
    cpu_pinning: bool = option(
        True,
        FLAG,
        "false runs executors on every CPU this process may use (default: each attempt is "
        "pinned to CPUs assigned to it, see the module doc)",
    )
    warm_workers: int | None = option(
        None,
        cpu_count(),
        "how many warm workers (cpnet.agent.warm) this instance keeps: long-lived runners that "
        "run attempts one after another, saving the fork of a runner per attempt; an attempt "
        "that finds none idle is forked (fork_server) or spawned as before. 0 turns them off "
        f"(default: the CPUs this process may use, at most {WARM_WORKERS_MAX}). Each attempt "
        "keeps its own work dir, private /tmp, usage, status.json and cancel; see "
        "docs/providers.md",
    )


class LocalBackend(Backend):
    """Runs attempts as runner processes on this machine, bounded by each pool's capacity.

    `submit`, `poll`, `cancel`, `live`, `logs`, `usage` and `forget` never block for long: they
    read small files and may spawn a queued runner (a fork); cancel's SIGKILL escalation happens
    on a timer thread. `discover` may take up to 10 s the first time (nvidia-smi), then is cached.
    """

    name: ClassVar[str] = "local"
    probe_cores: ClassVar[float | None] = None  # attempts run on this host
    Options = LocalOptions
    options: LocalOptions

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        self._lock = threading.RLock()
        self._pools: list[PoolDecl] | None = None
        self._jobs: dict[str, _Tracked] = {}
        self._queues: dict[str, deque[str]] = {}
        self._escalations: dict[str, threading.Timer] = {}
        self._orphans: list[subprocess.Popen[bytes]] = []  # forgotten runners not yet reaped
        self._fork_server: _ForkServer | None = None
        self._fork_failures = 0  # consecutive times the fork server broke or failed to start
        self._fork_retry_at = 0.0  # monotonic time before which runners are spawned instead
        self._workers: list[_WarmWorker] = []
        self._warm_failures = 0  # consecutive workers that exited before they were ready
        self._warm_retry_at = 0.0  # monotonic time before which no worker is started
        size = self.options.warm_workers
        if size is None:
            size = min(WARM_WORKERS_MAX, len(os.sched_getaffinity(0)))
        self.warm_size = size
        self.staging_env = staging_env(self.options, config.hub_token)
        # Told when a runner replaces an attempt's status.json (`changed`); None: not on this
        # kernel, then the agent reads every attempt's status every tick.
        self._watcher: Watcher | None = None
        with contextlib.suppress(OSError, AttributeError):
            self._watcher = Watcher((STATUS_FILE,))
        self._unwatched: set[str] = set()  # attempts the kernel would not watch: always polled
        self._adopt_all()

    @property
    def fork_server_pid(self) -> int | None:
        """The pid of this instance's fork server while it runs (None: off, not started yet,
        or gone)."""
        with self._lock:
            server = self._fork_server
            return server.pid if server is not None and server.running() else None

    @property
    def warm_worker_pids(self) -> list[int]:
        """The pids of this instance's warm workers that run (idle, busy or starting)."""
        with self._lock:
            self._pump_workers()
            return [w.pid for w in self._workers]

    @property
    def idle_warm_worker_pids(self) -> list[int]:
        """The pids of this instance's warm workers that are ready for an attempt."""
        with self._lock:
            self._pump_workers()
            return [w.pid for w in self._workers if w.idle]

    def close(self) -> None:
        """Stop this instance's fork server and warm workers (runners and attempts under way
        keep running: a busy worker ends its attempt first). Dropping the instance, or the
        agent's exit, has the same effect."""
        with self._lock:
            server, self._fork_server = self._fork_server, None
            if server is not None:
                server.close()
            workers, self._workers = self._workers, []
            for w in workers:
                w.close()
            watcher, self._watcher = self._watcher, None
            if watcher is not None:
                watcher.close()

    # ---- pools ---------------------------------------------------------------------------------

    def discover(self) -> list[PoolDecl]:
        """The declared pools, else one pool describing this machine (cached after first call)."""
        with self._lock:
            if self._pools is None:
                self._pools = list(self.config.pools or [self._host_pool()])
            return list(self._pools)

    def _host_pool(self) -> PoolDecl:
        facts = hostinfo.host_facts(self.work_root)
        gpu = facts.gpus[0] if facts.gpus else None
        return PoolDecl(
            name=self.options.pool_name,
            type="general",
            total=PoolCapacity(
                cpu_cores=float(facts.cpu_cores),
                ram_gb=round(facts.ram_gb, 2),
                disk_gb=round(facts.disk_gb, 2),
                gpus=len(facts.gpus),
            ),
            cpu_model=facts.cpu_model,
            gpu_model=gpu.model if gpu else None,
            gpu_memory_gb=round(gpu.memory_gb, 2) if gpu else None,
            labels={"hostname": facts.hostname, "arch": facts.arch, "os": "linux"},
        )

    def _pool(self, name: str) -> PoolDecl | None:
        return next((p for p in self.discover() if p.name == name), None)

    def live(self) -> list[PoolLive]:
        """Free capacity = total − demands of unfinished attempts; queued ones are counted."""
        with self._lock:
            self._advance(refresh_all=True)
            result = []
            for pool in self.discover():
                holding = [
                    t
                    for t in self._jobs.values()
                    if t.pool == pool.name and t.started and not t.final
                ]
                used = PoolCapacity()
                for t in holding:
                    used = used.plus(t.demand)
                result.append(
                    PoolLive(
                        name=pool.name,
                        free=pool.total.minus(used),
                        queue_length=len(self._queues.get(pool.name, ())),
                        running=len(holding),
                    )
                )
            return result

    # ---- attempts ------------------------------------------------------------------------------

    def submit(self, job: Job) -> Handle:
        """Queue the attempt and start it when its pool has room; return its work dir.

        Problems with the job itself (unknown pool, bigger than the pool) become a final
        SYSTEM_ERROR that `poll` reports; BackendError only when the work dir cannot be made.
        """
        with self._lock:
            work_dir = self.work_dir_for(job.attempt_id)
            handle = Handle(work_dir)
            if str(work_dir) in self._jobs:
                return handle
            if (work_dir / JOB_FILE).exists():  # submitted before (this agent before a restart)
                self._adopt(work_dir)
                self._advance()
                return handle
            job = replace(job, work_dir=work_dir)
            data: dict[str, Any] = job.to_dict()
            data["runner"] = self._runner_settings(job.spec)
            try:
                work_dir.mkdir(parents=True, exist_ok=True)
                # Its data fsynced, not the rename: after a crash of the machine the name holds
                # the whole job or nothing, and the agent's journal (durable) submits it again.
                write_json_atomic(work_dir / JOB_FILE, data, sync_dir=False)
            except OSError as exc:
                raise BackendError(f"cannot create the work dir {work_dir}: {exc}") from exc
            self._adopt(work_dir, job)  # tracked from the job in hand, not read back
            self._advance()
            return handle

    def _runner_settings(self, spec: TaskSpec) -> dict[str, Any]:
        o = self.options
        return runner_settings(
            spec,
            max_stage_gb=o.max_stage_gb,
            grace_s=o.executor_grace_s,
            http_timeout_s=o.http_timeout_s,
            file_roots=o.file_roots,
            memory_limit_gb=spec.resources.ram_gb if o.memory_limit else None,
            private_tmp=o.private_tmp,
            staging=staging_settings(o, self.config.hub_url),
            images=self.images.to_runner(),
        )

    def changed(self) -> set[Handle] | None:
        """The attempts whose status.json was replaced since the last call (inotify), and those
        that could not be watched; None when that cannot be told (see `Backend.changed`)."""
        with self._lock:
            if self._watcher is None:
                return None
            keys = self._watcher.changed()
            if keys is None:
                return None
            return {Handle(Path(k)) for k in keys | self._unwatched}

    def _watch(self, key: str, work_dir: Path) -> None:
        if self._watcher is not None and not self._watcher.add(key, work_dir):
            self._unwatched.add(key)

    def poll(self, handle: Handle) -> JobStatus:
        """The attempt's state from its status file and its runner's liveness."""
        return self.poll_many([handle])[0]

    def poll_many(self, handles: Sequence[Handle]) -> list[JobStatus]:
        """`poll` for every attempt the agent holds, with one pass over the queues for all of
        them (a pass per attempt cost the agent's loop that much more at every tick)."""
        with self._lock:
            tracked = [self._tracked(h) for h in handles]
            self._advance()
            return [
                JobStatus(State.SYSTEM_ERROR, f"no attempt at {key} (work dir gone)")
                if t is None
                else self._status(key, t)
                for key, t in tracked
            ]

    def cancel(self, handle: Handle) -> None:
        """SIGTERM the runner's session now; SIGKILL it after `cancel_grace_s` (on a timer)."""
        with self._lock:
            key, t = self._tracked(handle)
            if t is None or t.final:
                return
            work_dir = handle.work_dir
            (work_dir / CANCEL_FILE).touch()
            if not t.started:
                with contextlib.suppress(ValueError):
                    self._queues[t.pool].remove(key)
                if self._claim(work_dir):
                    self._write_final(t, State.CANCELED, "canceled while queued")
                    return
                t.started = True  # another instance started it meanwhile: stop that runner
            pid, ticks = self._runner_pid(work_dir)
            if pid is None:
                return  # being spawned: the runner sees the cancel file when it starts
            if hostinfo.alive(pid, ticks):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGTERM)
            if key not in self._escalations:
                grace = self.options.cancel_grace_s
                if self._warm_record(work_dir):
                    timer = threading.Timer(grace, self._escalate_warm, (work_dir, pid, ticks))
                else:
                    timer = threading.Timer(grace, _escalate, (pid, ticks, grace))
                timer.daemon = True
                timer.start()
                self._escalations[key] = timer

    def _escalate_warm(self, work_dir: Path, pid: int, ticks: int | None) -> None:
        """(A timer thread.) The canceled attempt of a warm worker is still not final after the
        grace period: SIGKILL the worker's session (the worker and the attempt's processes).
        Under the lock, so that this instance hands the worker no other attempt meanwhile (it
        would first have to read the worker's ``done``, written after the final state this
        checks); a worker of an earlier instance takes no other attempt at all."""
        with self._lock:
            if _final_on_disk(work_dir) or not hostinfo.alive(pid, ticks):
                return
            log.warning(
                "attempt %s still running on warm worker %d after SIGTERM: SIGKILL to its session",
                work_dir.name,
                pid,
            )
            _kill_session(pid)

    def forget(self, handle: Handle) -> None:
        """Drop a final attempt: its work dir gets a `forgotten` marker, so that no other
        instance adopts it (`remove_work_dir` deletes it)."""
        with self._lock:
            key, t = self._tracked(handle)
            if t is None:
                return
            work_dir = handle.work_dir
            if not t.final:
                raise BackendError(f"attempt {work_dir.name} is not final; cancel it first")
            self._jobs.pop(key, None)
            self._unwatched.discard(key)
            if self._watcher is not None:
                self._watcher.remove(key)
            timer = self._escalations.pop(key, None)
            if timer is not None:
                timer.cancel()
            if t.popen is not None and t.popen.poll() is None:
                self._orphans.append(t.popen)  # it wrote its final state and is exiting
            try:  # the agent then removes the dir, unless the task or the operator keeps it
                (work_dir / FORGOTTEN).touch()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise BackendError(f"cannot clean up {work_dir}: {exc}") from exc

    # ---- internals (all under self._lock) ------------------------------------------------------

    def _tracked(self, handle: Handle) -> tuple[str, _Tracked | None]:
        """The attempt's key and what this instance knows of it (adopted from its files when
        another instance started it), refreshed; None when there is no such attempt."""
        key = str(handle)
        t = self._jobs.get(key) or self._adopt(handle.work_dir)
        if t is not None:
            self._refresh(key, t)
        return key, t

    def _adopt_all(self) -> None:
        """Track every unfinished attempt in work_root (after a restart), oldest first."""
        found = []
        for entry in os.scandir(self.work_root):
            path = Path(entry.path)
            if not entry.is_dir() or (path / FORGOTTEN).exists():
                continue
            try:
                found.append(((path / JOB_FILE).stat().st_mtime, path))
            except FileNotFoundError:  # not an attempt dir, or deleted meanwhile
                continue
        for _mtime, path in sorted(found):
            record = read_status(path)
            if record is None or not State(record["state"]).terminal:
                self._adopt(path)

    def _adopt(self, work_dir: Path, new: Job | None = None) -> _Tracked | None:
        """Start tracking an attempt from its files; None when there is no such attempt.
        `new`: the job of an attempt `submit` just wrote, which has nothing else on disk yet
        (reading it back re-validated its whole spec, and looked for files it cannot have)."""
        key = str(work_dir)
        if new is not None:
            t = _Tracked(work_dir, new.pool_name, PoolCapacity.of(new.spec), started=False)
            self._jobs[key] = t
            self._watch(key, work_dir)  # before its runner starts: no change goes unseen
            return self._enqueue(key, t, new)
        try:
            job = Job.from_dict(_read_json(work_dir / JOB_FILE))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError) as exc:
            t = _Tracked(work_dir, "", PoolCapacity(), started=True)
            self._jobs[key] = t
            if not _final_on_disk(work_dir):
                self._write_final(t, State.SYSTEM_ERROR, f"unreadable {JOB_FILE}: {exc}")
            t.final = True
            return t
        t = _Tracked(work_dir, job.pool_name, PoolCapacity.of(job.spec), started=False)
        t.gpus, t.cpus = _assigned(work_dir, "gpus"), _assigned(work_dir, "cpus")
        self._jobs[key] = t
        self._watch(key, work_dir)
        if _final_on_disk(work_dir):
            t.started = t.final = True
            return t
        if (work_dir / RUNNER_PID).exists():
            t.started = True
            return t
        return self._enqueue(key, t, job)

    def _enqueue(self, key: str, t: _Tracked, job: Job) -> _Tracked:
        """Queue a tracked attempt on its pool, or end it SYSTEM_ERROR when no pool here can
        ever run it."""
        work_dir = t.work_dir
        pool = self._pool(job.pool_name)
        if pool is None:
            names = ", ".join(p.name for p in self.discover())
            why = f"pool {job.pool_name!r} is not offered here (pools: {names})"
            self._claim(work_dir)
            self._write_final(t, State.SYSTEM_ERROR, why)
        elif not pool.total.covers(t.demand):
            why = f"needs {_show(t.demand)}, more than pool {pool.name!r} has: {_show(pool.total)}"
            self._claim(work_dir)
            self._write_final(t, State.SYSTEM_ERROR, why)
        else:
            self._queues.setdefault(job.pool_name, deque()).append(key)
        return t

    def _refresh(self, key: str, t: _Tracked) -> None:
        """Mark the attempt final when its runner recorded a final state or is gone. The record
        it read is kept in `t.seen` for `_status` (one read of status.json per poll)."""
        t.seen = None
        if t.final or not t.started:
            return
        if t.popen is not None:
            t.popen.poll()  # reap our child so that it does not linger as a zombie
        record = read_status(t.work_dir)
        if record is not None and State(record["state"]).terminal:
            t.final = True
            t.seen = record
            return
        pid, ticks = self._runner_pid(t.work_dir)
        if pid is None:
            age = time.time() - mtime(t.work_dir / RUNNER_PID)
            if age < SPAWN_TIMEOUT_S:
                t.seen = record
                return  # being spawned right now
        elif hostinfo.alive(pid, ticks):
            if record is not None or not self._stuck_warm(t.work_dir):
                t.seen = record
                return
            log.warning(
                "attempt %s: warm worker %d never picked it up: killed", t.work_dir.name, pid
            )
            _kill_session(pid)
        if _final_on_disk(t.work_dir):  # it finished between our two looks
            t.final = True
            return
        if pid is not None:
            _kill_session(pid)  # its executors must not keep running unaccounted
        if (t.work_dir / CANCEL_FILE).exists():
            self._write_final(t, State.CANCELED, "canceled (the runner was stopped)")
            return
        why = "runner died" if pid is not None else "runner never started"
        log.warning("attempt %s: %s before recording a final state", t.work_dir.name, why)
        self._write_final(t, State.SYSTEM_ERROR, f"{why}; see {RUNNER_LOG}")

    def _advance(self, refresh_all: bool = False) -> None:
        """Reap, notice finished runners, and start queued attempts that now fit (FIFO).

        Noticing finished runners reads two files per running attempt, so unless `refresh_all`
        it is done only when a queue's head does not fit what is known to be free: accepting an
        attempt on a pool with room costs the same with 10 or 10,000 attempts running."""
        self._orphans = [p for p in self._orphans if p.poll() is None]
        if refresh_all:
            self._refresh_all()
        if not any(self._queues.values()):
            return
        refreshed = refresh_all
        for pool_name, queue in self._queues.items():
            pool = self._pool(pool_name)
            if pool is None:
                continue
            used = self._used(pool_name)
            while queue:
                t = self._jobs.get(queue[0])
                if t is None or t.final or t.started:
                    queue.popleft()
                    continue
                if not pool.total.minus(used).covers(t.demand):
                    if refreshed:
                        break  # strict FIFO: a big attempt is not starved by small ones behind it
                    self._refresh_all()
                    refreshed = True
                    used = self._used(pool_name)
                    continue
                queue.popleft()
                self._start(t)
                if not t.final:
                    used = used.plus(t.demand)

    def _refresh_all(self) -> None:
        for key, t in list(self._jobs.items()):
            self._refresh(key, t)

    def _used(self, pool_name: str) -> PoolCapacity:
        """What the started, unfinished attempts of a pool hold, as far as known."""
        used = PoolCapacity()
        for t in self._jobs.values():
            if t.pool == pool_name and t.started and not t.final:
                used = used.plus(t.demand)
        return used

    def _claim(self, work_dir: Path) -> bool:
        """Create runner.pid exclusively: only the one instance that does may start the runner."""
        try:
            fd = os.open(work_dir / RUNNER_PID, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        os.close(fd)
        return True

    def _start(self, t: _Tracked) -> None:
        """Start the runner in a new session and record "pid start_ticks" in runner.pid: forked by
        the fork server when it is on and available, else spawned."""
        if not self._claim(t.work_dir):
            t.started = True  # another instance beat us to it
            return
        t.started = True
        if (t.work_dir / CANCEL_FILE).exists():
            self._write_final(t, State.CANCELED, "canceled while queued")
            return
        try:
            self._assign_gpus(t)
            self._assign_cpus(t)
            self._write_assignment(t)
        except (OSError, ValueError) as exc:
            self._write_final(t, State.SYSTEM_ERROR, f"cannot assign GPUs or CPUs: {exc}")
            return
        if self.warm_size > 0 and self._warm(t):
            return
        if self.options.fork_server and self._fork(t):
            return
        argv = [sys.executable, "-m", "cpnet.agent.runner", str(t.work_dir)]
        try:
            with (t.work_dir / RUNNER_LOG).open("ab") as out:
                t.popen = subprocess.Popen(
                    argv,
                    cwd=t.work_dir,
                    env=runner_env(self.staging_env),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # survives an agent restart; one kill stops it all
                    close_fds=True,
                )
        except OSError as exc:
            self._write_final(t, State.SYSTEM_ERROR, f"cannot start the runner: {exc}")
            return
        st = hostinfo.proc_stat(t.popen.pid)
        ticks = st.start_ticks if st is not None else 0
        write_atomic(t.work_dir / RUNNER_PID, f"{t.popen.pid} {ticks}\n", durable=False)

    def _assign_gpus(self, t: _Tracked) -> None:
        """On a pool with GPUs, give `t` the lowest indices no other unfinished attempt holds and
        record them in job.json (before its runner starts, which reads them from there)."""
        pool = self._pool(t.pool)
        if pool is None or pool.total.gpus <= 0:
            return
        held = {
            g
            for other in self._jobs.values()
            if other is not t and other.pool == t.pool and other.started and not other.final
            for g in other.gpus
        }
        free = [g for g in range(pool.total.gpus) if g not in held]
        if len(free) < t.demand.gpus:
            raise ValueError(f"needs {t.demand.gpus}, free are {free}")
        t.gpus = tuple(free[: t.demand.gpus])

    def _assign_cpus(self, t: _Tracked) -> None:
        """Give `t` ``ceil(cpu_cores)`` of the CPUs this process may use, the ones the fewest other
        unfinished attempts (of any pool) hold first, lowest id on ties: disjoint while the
        declared cores fit the machine, round-robin when they are oversubscribed. Recorded in
        job.json (before its runner starts, which reads them from there)."""
        if not self.options.cpu_pinning:
            return
        usable = sorted(os.sched_getaffinity(0))
        held = dict.fromkeys(usable, 0)
        for other in self._jobs.values():
            if other is not t and other.started and not other.final:
                for c in other.cpus:
                    if c in held:
                        held[c] += 1
        want = min(len(usable), max(1, math.ceil(t.demand.cpu_cores - 1e-9)))
        t.cpus = tuple(sorted(sorted(usable, key=lambda c: (held[c], c))[:want]))

    def _write_assignment(self, t: _Tracked) -> None:
        """Record the GPUs and CPUs given to `t` in assign.json, which its runner reads (merged
        into job.json's runner block) and a restarted agent adopts. Not fsynced: an assignment
        matters only while its runner lives, and a crash of the machine ends both."""
        assigned: dict[str, Any] = {}
        pool = self._pool(t.pool)
        if pool is not None and pool.total.gpus > 0:
            assigned["gpus"] = list(t.gpus)
        if self.options.cpu_pinning:
            assigned.update(cpus=list(t.cpus), cpu_cores=t.demand.cpu_cores)
        if assigned:
            write_atomic(t.work_dir / ASSIGN_FILE, json.dumps(assigned), durable=False)

    def cpus_of(self, handle: Handle) -> tuple[int, ...]:
        """The CPU ids assigned to an attempt (empty: pinning is off, or not started yet)."""
        with self._lock:
            t = self._jobs.get(str(handle))
            return t.cpus if t is not None else ()

    def gpus_of(self, handle: Handle) -> tuple[int, ...]:
        """The GPU indices assigned to an attempt (empty: none, or not started yet)."""
        with self._lock:
            t = self._jobs.get(str(handle))
            return t.gpus if t is not None else ()

    def _fork(self, t: _Tracked) -> bool:
        """Start the runner through the fork server; False when the caller must spawn it (the
        server is unavailable, or broke before the runner could run: then it never will)."""
        server = self._fork_server
        if server is not None and not server.running():
            self._fork_broke(server, "it exited")
            server = None
        if server is None:
            if time.monotonic() < self._fork_retry_at:
                return False
            try:
                server = self._fork_server = _ForkServer.start(self.work_root, self.staging_env)
            except ForkServerError as exc:
                self._fork_broke(None, f"cannot start it: {exc}")
                return False
        try:
            pid, ticks = server.request_start(t.work_dir)
        except ForkServerRefused as exc:  # the server is fine; this one fork failed
            log.warning("fork server could not fork a runner (%s): spawning it", exc)
            return False
        except ForkServerError as exc:
            self._fork_broke(server, str(exc))
            return False
        try:
            write_atomic(t.work_dir / RUNNER_PID, f"{pid} {ticks}\n", durable=False)
        except OSError:
            with contextlib.suppress(ForkServerError):
                server.send(f"drop {pid}")
            raise
        try:
            server.send(f"go {pid}")
        except ForkServerError as exc:
            # The server is gone, so the child never gets "go" and exits without running:
            # spawning the runner now (which rewrites runner.pid) cannot run the attempt twice.
            self._fork_broke(server, str(exc))
            return False
        self._fork_failures = 0
        return True

    def _fork_broke(self, server: _ForkServer | None, why: str) -> None:
        """Forget a broken fork server; runners are spawned until the next (lazy) restart, which
        backs off when the server keeps breaking."""
        if server is not None:
            server.close(kill=True)
        if server is self._fork_server:
            self._fork_server = None
        self._fork_failures += 1
        delay = 0.0 if self._fork_failures <= 1 else min(60.0, 2.0**self._fork_failures)
        self._fork_retry_at = time.monotonic() + delay
        log.warning("fork server unavailable (%s): spawning runners; retry in %.0f s", why, delay)

    def _runner_pid(self, work_dir: Path) -> tuple[int | None, int | None]:
        """(pid, start_ticks) from runner.pid; (None, None) while it is empty or absent."""
        try:
            fields = (work_dir / RUNNER_PID).read_text().split()
        except FileNotFoundError:
            return None, None
        if len(fields) not in (2, 3) or not all(f.isdigit() for f in fields):
            return None, None
        pid, ticks = int(fields[0]), int(fields[1])
        return pid, (ticks or None)

    @staticmethod
    def _warm_record(work_dir: Path) -> bool:
        """runner.pid names a warm worker ("PID START_TICKS SEQ")."""
        with contextlib.suppress(OSError):
            return len((work_dir / RUNNER_PID).read_text().split()) == 3
        return False

    def _stuck_warm(self, work_dir: Path) -> bool:
        """A warm worker was handed the attempt over `WARM_PICKUP_S` ago, is alive, and has not
        written its first status.json (it must be hung: it writes that before anything else)."""
        if (work_dir / STATUS_FILE).exists() or not self._warm_record(work_dir):
            return False
        return time.time() - mtime(work_dir / RUNNER_PID) > WARM_PICKUP_S

    # ---- warm workers (all under self._lock) ---------------------------------------------------

    def _pump_workers(self) -> None:
        """Read what the workers said (non-blocking): ready and done make a worker idle; retire,
        EOF or death drop it (it is reaped; a later start replaces it)."""
        alive = []
        for w in self._workers:
            w.pump()
            if w.gone:
                if not w.was_ready:
                    self._warm_broke(f"worker {w.pid} exited before it was ready")
                w.close(kill=True)
                continue
            alive.append(w)
        self._workers = alive

    def _warm(self, t: _Tracked) -> bool:
        """Hand the attempt to an idle warm worker; False when there is none (one is started for
        later attempts when the pool is not full) or it cannot be handed."""
        self._pump_workers()
        worker = next((w for w in self._workers if w.idle), None)
        if worker is None:
            if len(self._workers) < self.warm_size and time.monotonic() >= self._warm_retry_at:
                try:  # not waited for: it says ready while this attempt is forked
                    self._workers.append(_WarmWorker.start(self.work_root, self.staging_env))
                except OSError as exc:
                    self._warm_broke(f"cannot start one: {exc}")
            return False
        request = f"run {worker.seq + 1} {t.work_dir}"
        if "\n" in str(t.work_dir) or len(request.encode("utf-8", "surrogateescape")) >= PIPE_BUF:
            return False
        worker.seq += 1
        write_atomic(t.work_dir / RUNNER_PID, f"{worker.pid} {worker.ticks} {worker.seq}\n", False)
        try:
            worker.send(request)
        except OSError:
            # It is gone and never read the request, so it never runs the attempt: the fallback
            # (which rewrites runner.pid) cannot run it twice.
            worker.gone = True
            self._pump_workers()
            return False
        worker.busy = str(t.work_dir)
        self._warm_failures = 0
        return True

    def _warm_broke(self, why: str) -> None:
        self._warm_failures += 1
        delay = 0.0 if self._warm_failures <= 1 else min(60.0, 2.0**self._warm_failures)
        self._warm_retry_at = time.monotonic() + delay
        log.warning("warm worker unavailable (%s): retry in %.0f s", why, delay)

    def _write_final(self, t: _Tracked, state: State, reason: str) -> None:
        """Record a final state the runner could not (it never ran, or it died)."""
        record = read_status(t.work_dir) or new_record(state)
        record["state"] = state.value
        record["reason"] = reason
        if state is State.SYSTEM_ERROR:
            text = tail(t.work_dir / RUNNER_LOG, RUNNER_LOG_TAIL).strip()
            if text:
                record.setdefault("system_logs", []).append(f"{RUNNER_LOG}: {text}")
        write_json_atomic(t.work_dir / STATUS_FILE, record)
        t.final = True
        t.seen = None

    def _status(self, key: str, t: _Tracked) -> JobStatus:
        if not t.started and not t.final:
            queue = self._queues.get(t.pool, deque())
            ahead = queue.index(key) if key in queue else 0
            return JobStatus(
                State.QUEUED, f"waiting for capacity on pool {t.pool!r} ({ahead} ahead)"
            )
        record, t.seen = t.seen, None
        if record is None:
            record = read_status(t.work_dir)
        if record is None:
            return JobStatus(State.INITIALIZING, "runner starting")
        return status_from_record(record)


class ForkServerError(Exception):
    """The fork server did not answer as it should (gone, hung, or garbled)."""


class ForkServerRefused(ForkServerError):
    """The fork server answered, but could not fork this runner."""


class _ForkServer:
    """The backend's end of one ``python -m cpnet.agent.forkserver`` (see that module for the
    protocol). Used under the backend's lock only."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.proc = proc
        self.pid = proc.pid
        self._in = proc.stdin.fileno()
        self._out = proc.stdout.fileno()
        self._buf = b""
        # Dropping the backend closes the server's stdin, and the server exits on EOF.
        self._finalizer = weakref.finalize(self, _ForkServer._shut, proc, False)

    @classmethod
    def start(cls, work_root: Path, extra_env: dict[str, str] | None = None) -> _ForkServer:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "cpnet.agent.forkserver"],
                cwd=work_root,
                env=runner_env(extra_env),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                start_new_session=True,  # no terminal signal of the agent's reaches it
                close_fds=True,
                bufsize=0,
            )
        except OSError as exc:
            raise ForkServerError(str(exc)) from exc
        server = cls(proc)
        try:
            line = server._read_line(FORK_SERVER_READY_S)
            if line != f"ready {proc.pid}":
                raise ForkServerError(f"unexpected greeting {line!r}")
        except ForkServerError:
            server.close(kill=True)
            raise
        log.info("fork server %d started", proc.pid)
        return server

    def running(self) -> bool:
        return self.proc.poll() is None

    def send(self, line: str) -> None:
        data = (line + "\n").encode("utf-8", "surrogateescape")
        try:
            while data:
                data = data[os.write(self._in, data) :]
        except OSError as exc:  # BrokenPipeError: it is gone
            raise ForkServerError(f"cannot write to it: {exc}") from exc

    def request_start(self, work_dir: Path) -> tuple[int, int]:
        """(pid, start_ticks) of a forked child that waits for ``go``."""
        if "\n" in str(work_dir):
            raise ForkServerRefused("a newline in the work dir's path")
        self.send(f"start {work_dir}")
        line = self._read_line(FORK_SERVER_REPLY_S)
        verb, _, rest = line.partition(" ")
        if verb == "err":
            raise ForkServerRefused(rest)
        fields = rest.split()
        if verb != "ok" or len(fields) != 2 or not all(f.isdigit() for f in fields):
            raise ForkServerError(f"unexpected reply {line!r}")
        return int(fields[0]), int(fields[1])

    def _read_line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._out], [], [], left)[0]:
                raise ForkServerError(f"no answer within {timeout:g} s")
            try:
                data = os.read(self._out, 4096)
            except OSError as exc:
                raise ForkServerError(f"cannot read from it: {exc}") from exc
            if not data:
                raise ForkServerError("it exited")
            self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode("utf-8", "replace")

    def close(self, kill: bool = False) -> None:
        self._finalizer.detach()
        _ForkServer._shut(self.proc, kill)

    @staticmethod
    def _shut(proc: subprocess.Popen[bytes], kill: bool) -> None:
        """Close its stdin (it exits at EOF), or SIGKILL it; reap it when it is quick."""
        for f in (proc.stdin, proc.stdout):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
        if kill and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=1.0 if kill else 0.2)


class _WarmWorker:
    """The backend's end of one ``python -m cpnet.agent.warm`` (see that module for the
    protocol). Used under the backend's lock only; never blocks on the worker."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.proc = proc
        self.pid = proc.pid
        self.ticks = 0  # from its "ready"
        self.seq = 0  # attempts handed to it
        self.was_ready = False
        self.busy: str | None = None  # the work dir of the attempt it runs
        self.gone = False
        self._in = proc.stdin.fileno()
        self._out = proc.stdout.fileno()
        os.set_blocking(self._out, False)
        self._buf = b""
        self._finalizer = weakref.finalize(self, _ForkServer._shut, proc, False)

    @classmethod
    def start(cls, work_root: Path, extra_env: dict[str, str] | None = None) -> _WarmWorker:
        argv = [sys.executable, "-m", "cpnet.agent.warm", "--max-attempts"]
        argv += [str(WARM_MAX_ATTEMPTS), "--max-rss-mb", str(WARM_MAX_RSS_MB)]
        proc = subprocess.Popen(
            argv,
            cwd=work_root,
            env=runner_env(extra_env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,  # its session holds it and its attempt's processes only
            close_fds=True,
            bufsize=0,
        )
        log.info("warm worker %d started", proc.pid)
        return cls(proc)

    @property
    def idle(self) -> bool:
        return self.was_ready and self.busy is None and not self.gone

    def send(self, line: str) -> None:
        data = (line + "\n").encode("utf-8", "surrogateescape")
        while data:
            data = data[os.write(self._in, data) :]

    def pump(self) -> None:
        """Take in every line the worker wrote so far."""
        while not self.gone:
            try:
                data = os.read(self._out, 4096)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                self.gone = True
                break
            self._buf += data
        while b"\n" in self._buf:
            raw, self._buf = self._buf.split(b"\n", 1)
            verb, *args = raw.decode("utf-8", "replace").split(" ")
            if verb == "ready" and len(args) == 2 and args[1].isdigit():
                self.ticks, self.was_ready = int(args[1]), True
            elif verb == "done" and args and args[0] == str(self.seq):
                self.busy = None
            elif verb == "retire":
                log.warning("warm worker %d retires: %s", self.pid, " ".join(args[1:]))
                self.gone = True
        if not self.gone and self.proc.poll() is not None:
            self.gone = True

    def close(self, kill: bool = False) -> None:
        """Close its stdin (it exits when idle, or after its attempt), or SIGKILL it when it is
        not running an attempt; reap it when that is quick."""
        self._finalizer.detach()
        _ForkServer._shut(self.proc, kill and self.busy is None)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _assigned(work_dir: Path, key: str) -> tuple[int, ...]:
    """The GPU indices or CPU ids (`key`: "gpus" or "cpus") recorded in assign.json when the
    attempt was started (after a restart)."""
    with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
        ids = _read_json(work_dir / ASSIGN_FILE).get(key)
        return tuple(int(i) for i in ids or ())
    return ()


def _final_on_disk(work_dir: Path) -> bool:
    record = read_status(work_dir)
    return record is not None and State(record["state"]).terminal


def _escalate(pid: int, ticks: int | None, grace_s: float) -> None:
    """SIGKILL whatever is left of a canceled runner's session (runs on a timer thread)."""
    if not hostinfo.alive(pid, ticks) and not hostinfo.session_members(pid):
        return
    log.warning(
        "runner %d still running %.1f s after SIGTERM: SIGKILL to its session", pid, grace_s
    )
    _kill_session(pid)


def _kill_session(sid: int) -> None:
    """SIGKILL every process in the session a runner leads (the runner and its executors)."""
    for pid in hostinfo.session_members(sid):
        with contextlib.suppress(ProcessLookupError):  # exited meanwhile
            os.kill(pid, signal.SIGKILL)


def _show(c: PoolCapacity) -> str:
    return f"{c.cpu_cores:g} cores, {c.ram_gb:g} GiB RAM, {c.disk_gb:g} GiB disk, {c.gpus} GPUs"
