"""The per-attempt runner: ``python -m cpnet.agent.runner WORK_DIR``.

One runner process runs one attempt, in its own session, so that it outlives an agent restart and
a cancel can stop everything it started. It reads ``WORK_DIR/job.json``, stages inputs into
``WORK_DIR/files/``, runs the executors in order (argv lists, never a shell), stages outputs, and
after every step rewrites ``WORK_DIR/status.json`` atomically, so a reader always sees one
consistent state. SIGTERM cancels: the running executor's process group gets SIGTERM, then
SIGKILL after a grace period, and the attempt ends CANCELED.

The file names and the status record defined here are the contract with the local backend.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

# Only the standard library and light cpnet modules: a spawned runner (and each fork server, see
# forkserver.py) starts a fresh interpreter, and importing pydantic (cpnet.tasks.model) alone
# would cost more than everything else here.
from cpnet.agent import containers, hostinfo, private_tmp
from cpnet.agent.jobfile import MAX_TAIL_CHARS, Executor, ExecutorLog, JobSpec, Usage
from cpnet.agent.private_tmp import probe as probe_private_tmp
from cpnet.agent.staging import Remote, StagingError, Transfer, stage_in, stage_out, task_path
from cpnet.crypto.datakey import DataKeyError, Sealer, parse_key
from cpnet.limits.ssrf import parse_allow
from cpnet.tasks.secrets import DATA_KEY, scrub
from cpnet.tasks.states import State

TYPE_CHECKING = False  # not typing's: typing is for type checkers only here, and costs startup
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import IO, Any

JOB_FILE = "job.json"
# The task's secret env values by executor index, written (0600) by the agent just before the
# runner starts; the runner reads and deletes it first thing (docs/security.md, "Secrets").
SECRETS_FILE = "secrets.json"
ASSIGN_FILE = "assign.json"  # local backend: CPUs and GPUs given; merged into the runner block
STATUS_FILE = "status.json"
CANCEL_FILE = "cancel"  # present once a cancel was asked for, even before the runner started
# A backend gave the attempt up while the runner may live on unseen (its node's slurmd died): the
# runner stops as if canceled and writes its own account to FENCED_FILE, leaving status.json to
# the backend. Watched every ``fence_poll_s`` (a runner setting; 0: not watched).
FENCE_FILE = "fence"
FENCED_FILE = "status.fenced.json"
RUNNER_LOG = "runner.log"  # the runner's own stdout/stderr (crash tracebacks land here)
# Who runs the attempt, written by the backend that starts it: "PID START_TICKS" of a runner of its
# own, "PID START_TICKS SEQ" of a warm worker (cpnet.agent.warm) running its SEQth attempt.
RUNNER_PID = "runner.pid"

TAIL_BYTES = MAX_TAIL_CHARS  # 16 KiB of each stream's end goes into the executor log
DEFAULT_GRACE_S = 5.0  # between SIGTERM and SIGKILL for a canceled executor
DEFAULT_MAX_STAGE_BYTES = 10 * 1024**3  # per direction, when the task gives no disk size
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
MAX_SYSTEM_LOGS = 64  # the hub accepts at most this many lines, each up to 4096 chars
MAX_LOG_CHARS = 4096
PROGRESS_EVERY_S = 1.0  # status.json is rewritten at most this often while a transfer runs
HUB_TOKEN_ENV = "CPNET_STAGING_TOKEN"  # the agent's token for cpnet://blobs/ (env, not job.json)
PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
GIB = 1024**3
MIB = 1024**2
# RLIMIT_AS bounds address space, not resident memory: an interpreter maps its loader, libraries
# and arenas before it allocates anything, so the limit is the task's ram_gb plus this slack, and
# never below the floor (a 0.1 GiB task must still be able to start python).
MEMORY_SLACK_BYTES = 256 * MIB
MEMORY_FLOOR_BYTES = 512 * MIB


def address_space_limit(ram_gb: float) -> int:
    """The RLIMIT_AS an executor of a task asking `ram_gb` runs under."""
    return max(MEMORY_FLOOR_BYTES, int(ram_gb * GIB) + MEMORY_SLACK_BYTES)


def _child_setup(
    tmp_source: Path | None,
    as_limit: int | None,
    cpus: list[int] | None = None,
    keep: tuple[Path, ...] = (),
) -> Any:
    """The preexec_fn of an executor: private /tmp first (`tmp_source` on /tmp, `keep` kept at
    their place; mounting needs memory), then the CPU affinity, then RLIMIT_AS. None when there
    is nothing to do (so that Popen may use vfork)."""
    if tmp_source is None and as_limit is None and cpus is None:
        return None

    def setup() -> None:
        if tmp_source is not None:
            private_tmp.enter(tmp_source, keep)
        if cpus is not None:
            # probed by the runner before (probe_cpu_affinity); should it fail here after all,
            # the executor runs unpinned rather than not at all
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, cpus)
        if as_limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, (as_limit, as_limit))

    return setup


LEND_MARGIN_BYTES = 128 * MIB  # address space this process keeps free while it lends a limit


def _can_lend_limit(limit: int) -> bool:
    """Whether an executor may get RLIMIT_AS `limit` through `_lent_limit` instead of a
    ``preexec_fn``: while this process's own address space is well below `limit` (it runs
    under that soft limit for the moment the executor is started) and its hard limit allows
    it."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            size = int(f.read().split()[0]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return False
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    return size + LEND_MARGIN_BYTES < limit and (hard == resource.RLIM_INFINITY or limit <= hard)


@contextlib.contextmanager
def _lent_limit(limit: int | None) -> Iterator[list[int]]:
    """Start an executor under RLIMIT_AS `limit` without a ``preexec_fn`` (which would force a
    full fork of this process where vfork does): this process holds `limit` as its soft limit
    while the executor is started, so the executor inherits it through vfork and exec and is
    under it from its first instruction; this process's soft limit is set back at once, and the
    executor's hard limit is lowered to `limit` too (`prlimit`, given its pid in the yielded
    list), as a ``preexec_fn`` would have set it."""
    pid: list[int] = []
    if limit is None:
        yield pid
        return
    home = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (limit, home[1]))
    try:
        yield pid
    finally:
        resource.setrlimit(resource.RLIMIT_AS, home)
        if pid:
            with contextlib.suppress(OSError):  # it exited already
                resource.prlimit(pid[0], resource.RLIMIT_AS, (limit, limit))


def probe_cpu_affinity(cpus: list[int]) -> str | None:
    """Try ``sched_setaffinity(0, cpus)`` in a throwaway child; None when it works, else why not.

    Without the child when `cpus` are a subset of this thread's own affinity: the call then
    cannot fail (it refuses only a set with no CPU the thread may use), and a fork costs ~2 ms
    of CPU per attempt."""
    with contextlib.suppress(OSError):
        if cpus and set(cpus) <= os.sched_getaffinity(0):
            return None
    return hostinfo.allowed(lambda: os.sched_setaffinity(0, cpus), "sched_setaffinity")


_tmp_probed: list[str | None] = []  # this process's private /tmp probe, once it ran


def probe_private_tmp_once(source: Path) -> str | None:
    """`probe_private_tmp`, run once per process: whether a mount namespace may be entered
    depends on this process's privileges, not on the attempt, and each probe is a fork (~3 ms of
    CPU). A fork server probes before it forks (`warm_up`), so its children inherit the answer,
    and a warm worker probes for its first attempt only. Should a later executor's mount fail
    after all, the runner falls back to TMPDIR for that attempt and logs it (`execute`)."""
    if not _tmp_probed:
        _tmp_probed.append(probe_private_tmp(source))
    return _tmp_probed[0]


def warm_up(scratch: Path) -> None:
    """Pay what every attempt would pay again, once, before forking runners or running many:
    the private /tmp probe (on a scratch directory made and removed here)."""
    d = scratch / f".cpnet-probe-{os.getpid()}"
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe_private_tmp_once(d)
    except OSError:
        return  # then each attempt probes on its own
    finally:
        with contextlib.suppress(OSError):
            d.rmdir()


class Canceled(BaseException):
    """Raised from the SIGTERM handler to abandon staging.

    A BaseException, like KeyboardInterrupt, so that no `except Exception` on the way (in httpx,
    in shutil) can swallow it.
    """


# ---- the status record -------------------------------------------------------------------------


def write_atomic(path: Path, text: str, durable: bool = True, sync_dir: bool = True) -> None:
    """Replace a small file so a reader sees the old or the new one, never a mix (tmp, fsync,
    rename, fsync of the directory). `durable=False` skips both fsyncs: the file still survives
    any process's SIGKILL (the page cache outlives processes), not a crash of the machine — for
    facts that die with the machine anyway, such as a runner's pid. `sync_dir=False` skips only
    the directory's: after a crash of the machine the name holds the old or the new content,
    whole either way (the data was synced before the rename), but maybe the old — for a record
    whose every version is a valid one, such as a runner's intermediate status."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if not (durable and sync_dir):
        return
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def write_json_atomic(path: Path, data: dict[str, Any], sync_dir: bool = True) -> None:
    """`write_atomic` for a JSON record."""
    write_atomic(path, json.dumps(data, separators=(",", ":")), sync_dir=sync_dir)


def read_status(work_dir: Path) -> dict[str, Any] | None:
    """The attempt's status record, or None when the runner has not written one yet."""
    try:
        text = (work_dir / STATUS_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return json.loads(text)


def new_record(state: State, reason: str | None = None, pid: int | None = None) -> dict[str, Any]:
    """A status record with nothing measured yet."""
    return {
        "state": state.value,
        "reason": reason,
        "pid": pid,
        "executor_logs": [],
        "outputs": [],
        "usage": None,
        "system_logs": [],
        "bytes_in": 0,
        "bytes_out": 0,
        "staging": [],  # one record per input and output moved (staging.Transfer.to_dict)
        "staging_progress": None,  # the transfer under way: {"path", "bytes", "total"}
        # The phase and how far it got: {"phase": staging_in | running | staging_out,
        # "items_done", "items_total" (inputs, executors or outputs), "bytes_done" (finished
        # transfers of the phase; the one under way is in staging_progress)}.
        "progress": None,
    }


def _clip(text: str) -> str:
    return text if len(text) <= MAX_LOG_CHARS else text[: MAX_LOG_CHARS - 1] + "…"


def tail(path: Path, limit: int = TAIL_BYTES) -> str:
    """The last `limit` bytes of a file as text ('' when it does not exist)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            return f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def now() -> datetime:
    return datetime.now(UTC)


def staging_limits(settings: dict[str, Any], attempt_id: str) -> dict[str, Any]:
    """The keyword arguments of `stage_in` / `stage_out` from job.json's ``runner`` block (the
    hub token comes from the environment, never from job.json). Also used by the Kubernetes
    backend's stage containers (`cpnet.agent.podstage`)."""
    roots = settings.get("file_roots")
    max_file = settings.get("max_file_bytes")
    return {
        "max_bytes": int(settings.get("max_stage_bytes", DEFAULT_MAX_STAGE_BYTES)),
        "max_file_bytes": None if max_file is None else int(max_file),
        "timeout_s": float(settings.get("http_timeout_s", 60.0)),
        "file_roots": None if roots is None else [Path(r) for r in roots],
        "remote": Remote(
            s3_endpoint=settings.get("s3_endpoint") or None,
            s3_region=settings.get("s3_region") or None,
            hub_url=settings.get("hub_url") or None,
            hub_token=os.environ.get(HUB_TOKEN_ENV) or None,
            attempt_id=attempt_id or None,
            # a job.json without the key (an older agent's) gets the strict rule
            url_rule=parse_allow(settings.get("allow_private_urls") or ()),
        ),
    }


# ---- the runner ------------------------------------------------------------------------------


class Runner:
    """One attempt's run, recorded step by step in status.json."""

    def __init__(self, work_dir: Path, shared: bool = False) -> None:
        self.work_dir = work_dir
        # In a warm worker (cpnet.agent.warm), which runs attempts one after another: a SIGTERM
        # counts only when this attempt's cancel (or fence) file exists, since it may be meant
        # for an attempt this process ran before.
        self.shared = shared
        self.done = False  # the attempt's final state is recorded (the fence watch stops)
        self.files = work_dir / "files"
        self.logs_dir = work_dir / "logs"
        self.tmp_dir = work_dir / "tmp"
        self.record = new_record(State.INITIALIZING, "staging inputs", os.getpid())
        self.t0 = time.monotonic()
        self.cpu_s = 0.0
        self.peak_rss_mb = 0.0
        self.staging = False  # while True, SIGTERM raises Canceled to abandon the transfer
        self.cancel_requested = False
        self.executor_pgid: int | None = None
        self.grace_s = DEFAULT_GRACE_S
        # The timer thread only signals; every field here is touched by the main thread alone
        # (the SIGTERM handler runs there too), so no lock is needed — and a lock taken in a
        # signal handler could deadlock against the code it interrupted.
        self.kill_timer: threading.Timer | None = None
        self.ram_gb: float | None = None  # the memory limit executors run under (None: off)
        self.private_tmp: Path | None = None  # bind-mounted on their /tmp (None: shared /tmp)
        self.gpus: list[int] | None = None  # assigned GPU indices (None: the pool has none)
        self.cpus: list[int] | None = None  # CPU ids executors are pinned to (None: unpinned)
        self.progress_saved = 0.0  # monotonic time status.json last got a progress update
        self.inherit_env: tuple[str, ...] = ()  # prefixes of the runner's variables executors see
        self.secret_values: list[str] = []  # the task's secret env values: scrubbed from logs
        self.sealer: Sealer | None = None  # the task's data key, when it has one
        self.sealed = False  # seal_data ran
        self.runtime: str | None = None  # podman | docker | apptainer for executors' images
        self.allow_host_exec = False  # an executor's image may be ignored (run on the host)
        self.mounts = containers.Mounts()  # task directories bound into containers
        self.keep: tuple[Path, ...] = ()  # host dirs under /tmp still seen in a private /tmp
        self.mount_points: list[Path] = []  # directories made in tmp_dir to bind `keep` on
        # Set up once per attempt on the main thread, which starts the executors (`isolate`):
        # the host's mount namespace it left (an fd), and the CPU affinity it had.
        self.ns_home: int | None = None
        self.affinity_home: set[int] | None = None
        self.stuck: str | None = None  # why this process cannot run another attempt (warm)

    # -- recording --

    def log(self, line: str) -> None:
        """Add a line to the attempt's system log (kept to what the hub accepts)."""
        logs = self.record["system_logs"]
        if len(logs) < MAX_SYSTEM_LOGS:
            logs.append(_clip(line))

    def save(self, final: bool = False) -> None:
        """Rewrite status.json. Only a `final` record is made durable against a crash of the
        machine (its rename fsynced too): an intermediate one dies with the runner anyway, and
        whichever version a crash leaves is whole and valid (see `write_atomic`)."""
        self.record["usage"] = Usage(
            wall_s=time.monotonic() - self.t0,
            cpu_s=self.cpu_s,
            peak_rss_mb=self.peak_rss_mb,
            bytes_in=self.record["bytes_in"],
            bytes_out=self.record["bytes_out"],
        ).to_dict()
        fenced = (self.work_dir / FENCE_FILE).exists()
        path = self.work_dir / (FENCED_FILE if fenced else STATUS_FILE)
        write_json_atomic(path, self.record, sync_dir=final)

    def finish(self, state: State, reason: str | None) -> None:
        self.seal_data()
        self.record["state"] = state.value
        self.record["reason"] = reason
        self.save(final=True)

    def seal_data(self) -> None:
        """With a data key: encrypt in place every file the attempt leaves behind (its files,
        temp and log dirs), once — before stage-out, so that outputs leave encrypted, and at the
        end whatever happened, so that the provider's disk holds ciphertext only."""
        if self.sealer is None or self.sealed:
            return
        self.sealed = True
        roots: list[Path] = []
        for d in sorted({self.files, self.tmp_dir, self.logs_dir}, key=lambda p: len(p.parts)):
            if d.is_dir() and not any(d.is_relative_to(r) for r in roots):
                roots.append(d)
        try:
            n = sum(self.sealer.encrypt_tree(d) for d in roots)
        except OSError as exc:
            self.log(f"encrypting the attempt's files under the data key failed: {exc}")
            raise
        self.log(f"encrypted {n} files under the task's data key")

    # -- signals --

    def on_sigterm(self, signum: int, _frame: object) -> None:
        """Cancel: abandon staging at once, or stop the running executor's process group."""
        if self.done or (self.shared and not self.stop_marked()):
            return  # meant for an attempt that already ended
        self.cancel_requested = True
        if self.staging:
            self.staging = False  # a second SIGTERM must not raise inside the first's cleanup
            raise Canceled
        self.stop_executor()

    def stop_executor(self) -> None:
        """SIGTERM the executor's process group now, SIGKILL it after the grace period."""
        pgid = self.executor_pgid
        if pgid is None or self.kill_timer is not None:
            return
        _killpg(pgid, signal.SIGTERM)
        self.kill_timer = threading.Timer(self.grace_s, _killpg, (pgid, signal.SIGKILL))
        self.kill_timer.daemon = True
        self.kill_timer.start()

    def watch_fence(self, every_s: float) -> None:
        """(A thread; it only signals.) Once the fence appears, SIGTERM this runner: the
        executor is stopped and nothing is staged out, as on a cancel."""
        while not (self.work_dir / FENCE_FILE).exists():
            if self.done:
                return
            time.sleep(every_s)
        os.kill(os.getpid(), signal.SIGTERM)

    def cancel_marked(self) -> bool:
        return self.cancel_requested or (self.work_dir / CANCEL_FILE).exists()

    def stop_marked(self) -> bool:
        """A cancel or a fence is on disk for this attempt."""
        return any((self.work_dir / f).exists() for f in (CANCEL_FILE, FENCE_FILE))

    # -- the attempt --

    def run(self) -> None:
        """Run the attempt to a final state and record it; a crash is recorded, then re-raised."""
        self.save()
        try:
            self.attempt()
        except Canceled:
            self.finish(State.CANCELED, "canceled while staging")
        except Exception as exc:
            for line in traceback.format_exc().splitlines()[-20:]:
                self.log(line)
            self.finish(State.SYSTEM_ERROR, f"runner crashed: {type(exc).__name__}: {exc}")
            raise
        finally:
            self.done = True

    def attempt(self) -> None:
        try:
            data = json.loads((self.work_dir / JOB_FILE).read_text(encoding="utf-8"))
            spec = JobSpec.from_dict(data["spec"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self.finish(State.SYSTEM_ERROR, f"cannot read {JOB_FILE}: {exc}")
            return
        wanted = [bool(ex.get("secret_env")) for ex in data["spec"].get("executors") or []]
        keyed = bool(data["spec"].get(DATA_KEY))
        if any(wanted) or keyed:
            try:
                spec = self.with_secrets(spec, wanted, keyed)
            except (OSError, ValueError, TypeError, DataKeyError) as exc:
                self.finish(State.SYSTEM_ERROR, f"the task's secrets did not arrive: {exc}")
                return
        settings = data.get("runner") or {}
        try:
            settings = settings | json.loads((self.work_dir / ASSIGN_FILE).read_text("utf-8"))
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError) as exc:
            self.finish(State.SYSTEM_ERROR, f"cannot read {ASSIGN_FILE}: {exc}")
            return
        self.grace_s = float(settings.get("grace_s", DEFAULT_GRACE_S))
        if float(settings.get("fence_poll_s") or 0) > 0:
            watch = (float(settings["fence_poll_s"]),)
            threading.Thread(target=self.watch_fence, args=watch, daemon=True).start()
        ids = {k: str(data.get(k, "")) for k in ("task_id", "attempt_id")}
        limits = staging_limits(settings, ids["attempt_id"])
        limits |= {"on_transfer": self.transferred, "progress": self.progress}
        ram_gb = settings.get("memory_limit_gb")
        self.ram_gb = float(ram_gb) if ram_gb else None
        gpus = settings.get("gpus")
        self.gpus = None if gpus is None else [int(g) for g in gpus]
        cpus = settings.get("cpus")
        self.cpus = [int(c) for c in cpus] if cpus else None
        self.inherit_env = tuple(str(x) for x in settings.get("inherit_env_prefixes") or () if x)
        self.runtime = settings.get("container_runtime") or None
        self.allow_host_exec = bool(settings.get("allow_host_exec", False))
        volumes = [str(v) for v in data["spec"].get("volumes") or []]
        paths = [i.path for i in spec.inputs] + [o.path for o in spec.outputs] + volumes
        for ex in spec.executors:
            paths += [ex.workdir, ex.stdin, ex.stdout, ex.stderr]
        self.mounts = containers.Mounts.of(paths)
        if "tmp" in self.mounts.tops:
            # The task puts files under /tmp (TES clients do): its private /tmp is that
            # directory, so a command run on the host finds them where the task said.
            self.tmp_dir = self.files / "tmp"
        self.become_subreaper()

        for d in (self.files, self.logs_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)
        try:
            for v in volumes:  # TES volumes: empty directories shared by the executors
                task_path(self.files, v).mkdir(parents=True, exist_ok=True)
        except (StagingError, OSError) as exc:
            self.finish(State.SYSTEM_ERROR, f"cannot create volume: {exc}")
            return
        unrunnable = next((e.image for e in spec.executors if not self.image_ok(e)), None)
        if unrunnable is not None:
            self.finish(
                State.SYSTEM_ERROR,
                f"image {unrunnable!r}: this site has no container runtime and does not allow "
                "host execution",
            )
            return
        refused = self.choose_tmp(settings, spec, [p for p in paths if p])
        if refused is not None:
            self.finish(State.SYSTEM_ERROR, refused)
            return
        if self.cancel_marked():
            self.finish(State.CANCELED, "canceled before start")
            return

        started = time.monotonic()
        self.phase("staging_in", len(spec.inputs))
        try:
            self.staging = True
            bytes_in = stage_in(spec.inputs, self.files, sealer=self.sealer, **limits)
            self.staging = False
        except StagingError as exc:
            self.staging = False
            self.finish(State.SYSTEM_ERROR, f"stage-in failed: {exc}")
            return
        self.record["staging_progress"] = None
        self.record["bytes_in"] = bytes_in
        self.log(
            f"staged {len(spec.inputs)} inputs, {bytes_in} bytes, "
            f"in {time.monotonic() - started:.2f} s"
        )
        if self.private_tmp is not None:
            try:  # after stage-in, so that they never stand in the way of the task's inputs
                self.mount_points = private_tmp.make_mount_points(self.tmp_dir, self.keep)
            except OSError as exc:
                self.finish(
                    State.SYSTEM_ERROR,
                    f"cannot keep {', '.join(map(str, self.keep))} visible in the task's "
                    f"private /tmp: {exc}; a task input is in the way",
                )
                return
        self.record["state"] = State.RUNNING.value
        self.record["reason"] = None
        self.phase("running", len(spec.executors))
        if not spec.executors:  # else the first executor's start record says RUNNING at once
            self.save()

        try:
            self.isolate()
            ended = self.run_executors(spec, ids)
        finally:
            self.unisolate()  # first: the mount points are busy inside the namespace
            private_tmp.remove_mount_points(self.mount_points)
        if ended:
            return

        started = time.monotonic()
        self.phase("staging_out", len(spec.outputs))
        try:
            self.staging = True  # from here a SIGTERM raises Canceled; before, it only marked it
            if self.cancel_marked():
                self.staging = False
                self.finish(State.CANCELED, "canceled before stage-out")
                return
            self.seal_data()  # with a data key, outputs leave encrypted
            outputs, bytes_out = stage_out(spec.outputs, self.files, **limits)
            self.staging = False
        except StagingError as exc:
            self.staging = False
            self.finish(State.SYSTEM_ERROR, f"stage-out failed: {exc}")
            return
        self.record["staging_progress"] = None
        self.record["outputs"] = [o.to_dict() for o in outputs]
        self.record["bytes_out"] = bytes_out
        self.log(
            f"staged {len(spec.outputs)} outputs ({len(outputs)} files logged), {bytes_out} bytes, "
            f"in {time.monotonic() - started:.2f} s"
        )
        self.finish(State.COMPLETE, None)

    def with_secrets(self, spec: JobSpec, wanted: list[bool], data_key: bool = False) -> JobSpec:
        """`spec` with the secret values put back into its executors' env, read from
        SECRETS_FILE, which is deleted at once; the values are kept to scrub logs. With
        `data_key`, the task's data key from the same file becomes `self.sealer`."""
        path = self.work_dir / SECRETS_FILE
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(
                f"no {SECRETS_FILE} in the work dir (this backend does not deliver secrets, or "
                "a restarted runner already used them)"
            ) from None
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
        if data_key:
            key = (values.get(DATA_KEY) or {}).get("key")
            if not key:
                raise ValueError("the task's data key is missing")
            self.sealer = Sealer(parse_key(key))
            self.secret_values.append(str(key))
        executors = list(spec.executors)
        for i, ex in enumerate(executors):
            got = values.get(str(i)) or {}
            if wanted[i] and not got:
                raise ValueError(f"executor {i}'s secret values are missing")
            if got:
                executors[i] = dataclasses.replace(ex, env={**ex.env, **got})
                self.secret_values.extend(str(v) for v in got.values())
        return dataclasses.replace(spec, executors=executors)

    def isolate(self) -> None:
        """Once per attempt, before its executors: the main thread (which starts them) enters
        the attempt's private /tmp and takes its CPUs, so that each executor inherits both and
        needs no ``preexec_fn`` for them. Entering a mount namespace per executor cost an
        unshare, the binds and a namespace teardown each, and a ``preexec_fn`` forces a full
        fork of the runner where vfork would do (cpnet issue 15). What cannot be done here
        falls back to the per-executor ``preexec_fn`` (`_child_setup`)."""
        if self.private_tmp is not None:
            try:
                self.ns_home = private_tmp.enter_here(self.private_tmp, self.keep)
            except OSError as exc:
                # As when an executor's mount failed after the probe worked (`execute`).
                self.private_tmp = None
                self.log(f"/tmp: private /tmp failed ({exc}); TMPDIR for this attempt")
        if self.cpus is not None:
            with contextlib.suppress(OSError):  # else each executor pins itself
                home = os.sched_getaffinity(0)
                os.sched_setaffinity(0, self.cpus)
                self.affinity_home = home

    def unisolate(self) -> None:
        """Undo `isolate` (the main thread back in the host's mount namespace and on its own
        CPUs), before stage-out and before a warm worker's next attempt."""
        if self.affinity_home is not None:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, self.affinity_home)
            self.affinity_home = None
        if self.ns_home is None:
            return
        home, self.ns_home = self.ns_home, None
        timer = self.kill_timer
        if timer is not None:  # started inside: it shares this thread's filesystem context
            timer.cancel()
            timer.join(1.0)
        try:
            private_tmp.leave(home)
        except OSError as exc:
            self.stuck = f"still in the attempt's mount namespace: {exc}"
            self.log(f"/tmp: cannot leave the private /tmp: {exc}")

    def run_executors(self, spec: JobSpec, ids: dict[str, str]) -> bool:
        """Run the executors in order; True when the attempt ended (finished) on the way."""
        for i, ex in enumerate(spec.executors):
            if self.cancel_marked():
                self.finish(State.CANCELED, f"canceled before executor {i}")
                return True
            self.record["executor_logs"].append(ExecutorLog(start_time=now()).to_dict())
            self.save()
            log, problem = self.execute(i, ex, ids)
            self.record["executor_logs"][i] = log.to_dict()
            if self.cancel_requested:
                self.finish(State.CANCELED, f"canceled while executor {i} was running")
                return True
            if log.exit_code != 0 and not ex.ignore_error:
                self.finish(State.EXECUTOR_ERROR, problem)
                return True
            if log.exit_code != 0:
                self.log(f"{problem} (ignored: ignore_error)")
            self.record["progress"]["items_done"] = i + 1
            if i + 1 < len(spec.executors) or spec.outputs:
                self.save()  # else the final record follows at once, with this in it
        return False

    def transferred(self, rec: Transfer) -> None:
        """One input or output moved: into the staging log, the system log and status.json."""
        self.record["staging"].append(rec.to_dict())
        key = "bytes_in" if rec.direction == "in" else "bytes_out"
        self.record[key] += rec.size_bytes
        self.log(rec.line())
        self.record["staging_progress"] = None
        done = self.record["progress"]
        if done is not None:
            done["items_done"] = min(done["items_total"], done["items_done"] + 1)
            done["bytes_done"] += rec.size_bytes
        self.save()

    def phase(self, name: str, items: int) -> None:
        """A new phase begins (staging_in, running, staging_out) over `items` inputs, executors
        or outputs."""
        self.record["progress"] = {
            "phase": name,
            "items_done": 0,
            "items_total": items,
            "bytes_done": 0,
        }
        self.progress_saved = 0.0  # the phase's first bytes are written at once

    def progress(self, path: str, done: int, total: int | None) -> None:
        """A transfer moved more bytes: recorded in status.json at most once a second."""
        self.record["staging_progress"] = {"path": path, "bytes": done, "total": total}
        t = time.monotonic()
        if t - self.progress_saved >= PROGRESS_EVERY_S:
            self.progress_saved = t
            self.save()

    def image_ok(self, ex: Executor) -> bool:
        return not ex.image or self.runtime is not None or self.allow_host_exec

    def become_subreaper(self) -> None:
        """Adopt orphaned descendants, so that ones which left the executor's process group are
        still ours to kill and reap (instead of init's, which may never reap them)."""
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            self.log(f"cannot become a child subreaper: errno {ctypes.get_errno()}")

    def choose_tmp(
        self, settings: dict[str, Any], spec: JobSpec, task_paths: list[str]
    ) -> str | None:
        """Decide, once per attempt, whether executors get a private /tmp and whether they can be
        pinned to their CPUs, and log the limits they run under. Returns why the attempt cannot
        run (a task path that a directory kept visible in the private /tmp would hide), else
        None."""
        why = None
        if not settings.get("private_tmp", False):
            why = "turned off"
        else:
            why = probe_private_tmp_once(self.tmp_dir)
        if why is None:
            exec_path = [p for ex in spec.executors for p in ex.env.get("PATH", "").split(":")]
            self.keep = tuple(private_tmp.kept_under_tmp(self.work_dir, exec_path))
            hidden = private_tmp.hidden_paths(task_paths, self.keep)
            if hidden:
                path, kept = hidden[0]
                return (
                    f"task path {path} lies inside {kept}, which stays visible in the task's "
                    "private /tmp (it holds this agent's work dir or software) and would hide "
                    f"it; the site's operator can give the agent a work dir outside {kept} "
                    "(e.g. --work-dir /var/lib/cpnet-agent), or the task can use another path"
                )
            self.private_tmp = self.tmp_dir
            for k in self.keep:
                self.log(f"/tmp: {k} stays visible (it holds the agent's work dir or software)")
            self.log(f"/tmp: private, {self.tmp_dir} bind-mounted on /tmp in a mount namespace")
        else:
            self.log(f"/tmp: shared with the host; TMPDIR={self.tmp_dir} (no private /tmp: {why})")
            tmp_paths = sorted({p for p in task_paths if p and p.startswith("/tmp/")})
            if tmp_paths and any(not ex.image or not self.runtime for ex in spec.executors):
                self.log(
                    f"/tmp: task paths under /tmp (e.g. {tmp_paths[0]}) are staged under "
                    f"{self.files}/tmp, not at /tmp, for executors on the host: use relative "
                    "paths, or run the agent as root so that executors get a private /tmp"
                )
        if self.ram_gb is not None:
            limit = address_space_limit(self.ram_gb)
            self.log(f"memory: RLIMIT_AS {limit / GIB:.2f} GiB ({self.ram_gb:g} GiB asked)")
        if self.gpus is not None:
            self.log(f"GPUs: CUDA_VISIBLE_DEVICES={','.join(map(str, self.gpus))!r}")
        if self.cpus is not None:
            shown = ",".join(map(str, self.cpus))
            asked = f"{float(settings.get('cpu_cores', len(self.cpus))):g} cores asked"
            why = probe_cpu_affinity(self.cpus)
            if why is None:
                self.log(f"cpu: pinned to CPUs {shown} ({asked})")
            else:
                self.log(f"cpu: not pinned to CPUs {shown} ({asked}): {why}")
                self.cpus = None

    def executor_env(self, ex: Executor, ids: dict[str, str]) -> dict[str, str]:
        """A minimal environment: nothing of the agent's leaks into the task."""
        env = {
            "PATH": os.environ.get("PATH", DEFAULT_PATH),
            "HOME": str(self.work_dir),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "TMPDIR": str(self.tmp_dir),
            "CPNET_TASK_ID": ids["task_id"],
            "CPNET_ATTEMPT_ID": ids["attempt_id"],
            "CPNET_WORK_DIR": str(self.work_dir),
        }
        if self.inherit_env:  # e.g. SLURM_* inside a Slurm job, so that srun works
            env.update((k, v) for k, v in os.environ.items() if k.startswith(self.inherit_env))
        env.update(ex.env)
        if self.gpus is not None:  # after the task's env: the assignment is not the task's to pick
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, self.gpus))
        return env

    def execute(self, i: int, ex: Executor, ids: dict[str, str]) -> tuple[ExecutorLog, str]:
        """Run executor `i` to its end; return its log and a sentence on how it ended."""
        start = now()
        out_path = self.logs_dir / f"{i}.stdout"
        err_path = self.logs_dir / f"{i}.stderr"
        streams: list[IO[bytes]] = []
        try:
            cwd = task_path(self.files, ex.workdir) if ex.workdir else self.files.resolve()
            cwd.mkdir(parents=True, exist_ok=True)
            if ex.stdout:
                out_path = task_path(self.files, ex.stdout)
            if ex.stderr:
                err_path = task_path(self.files, ex.stderr)
            stdin: IO[bytes] | int = subprocess.DEVNULL
            if ex.stdin:
                stdin = task_path(self.files, ex.stdin).open("rb")
                streams.append(stdin)
            for p in (out_path, err_path):
                p.parent.mkdir(parents=True, exist_ok=True)
            stdout = out_path.open("wb")
            streams.append(stdout)
            stderr = stdout if err_path == out_path else err_path.open("wb")
            streams.append(stderr)
        except (StagingError, OSError) as exc:
            for s in streams:
                s.close()
            msg = f"cpnet: executor {i} not started: {exc}"
            log = ExecutorLog(start_time=start, end_time=now(), exit_code=1, stderr=msg)
            return log, f"executor {i} could not start: {exc}"

        t_start = time.monotonic()
        as_limit = None if self.ram_gb is None else address_space_limit(self.ram_gb)
        if ex.image and self.runtime:
            self.log(f"executor {i}: runs in image {ex.image!r} with {self.runtime}")
        elif ex.image:
            self.log(
                f"executor {i}: ran on the host, not in image {ex.image!r} "
                "(the site has no container runtime; its operator allows host execution)"
            )
        try:
            try:
                proc = self.popen(ex, ids, cwd, stdin, stdout, stderr, as_limit)
            except subprocess.SubprocessError:  # the private /tmp failed after the probe worked
                if self.private_tmp is None or self.ns_home is not None:
                    raise
                self.private_tmp = None
                self.log(f"/tmp: private tmpfs failed for executor {i}; TMPDIR from now on")
                proc = self.popen(ex, ids, cwd, stdin, stdout, stderr, as_limit)
        except (FileNotFoundError, PermissionError, OSError) as exc:
            code = 127 if isinstance(exc, FileNotFoundError) else 126
            what = "not found" if code == 127 else f"not executable ({exc.strerror})"
            msg = f"cpnet: command {ex.command[0]!r} {what}"
            stderr.write(msg.encode() + b"\n")
            log = ExecutorLog(start_time=start, end_time=now(), exit_code=code, stderr=msg)
            return log, f"executor {i}: command {ex.command[0]!r} {what} (exit code {code})"
        finally:
            for s in streams:
                s.close()

        self.executor_pgid = proc.pid
        if self.cancel_requested:
            self.stop_executor()  # the SIGTERM came while we were starting it
        _pid, status, ru = os.wait4(proc.pid, 0)  # PEP 475: retried after signal handlers
        proc.returncode = os.waitstatus_to_exitcode(status)  # so Popen never waits on it again
        wall = time.monotonic() - t_start
        self.executor_pgid = None
        if self.kill_timer is not None:
            self.kill_timer.cancel()
            self.kill_timer = None
        # Nothing an executor started may outlive it and hold the pool's capacity.
        _killpg(proc.pid, signal.SIGKILL)
        self.reap_leftovers()

        self.cpu_s += ru.ru_utime + ru.ru_stime
        self.peak_rss_mb = max(self.peak_rss_mb, ru.ru_maxrss / 1024)  # Linux: KiB
        code = proc.returncode
        if code < 0:  # killed by a signal: report it the way shells do
            sig = signal.Signals(-code).name
            code = 128 - proc.returncode
            how = f"killed by {sig} (exit code {code})"
        else:
            how = f"exit code {code}"
        if code != 0 and self.ram_gb is not None:
            how += f" (ran under a {self.ram_gb:g} GiB memory limit: RLIMIT_AS)"
        log = ExecutorLog(
            start_time=start,
            end_time=now(),
            exit_code=code,
            stdout=scrub(tail(out_path), self.secret_values),
            stderr=scrub(tail(err_path), self.secret_values),
        )
        self.log(f"executor {i}: {how} after {wall:.2f} s")
        return log, f"executor {i} ({ex.command[0]}) failed: {how}"

    def popen(
        self,
        ex: Executor,
        ids: dict[str, str],
        cwd: Path,
        stdin: IO[bytes] | int,
        stdout: IO[bytes],
        stderr: IO[bytes],
        as_limit: int | None,
    ) -> subprocess.Popen[bytes]:
        argv, env = ex.command, self.executor_env(ex, ids)
        if ex.image and self.runtime:
            inside = {"CPNET_TASK_ID": ids["task_id"], "CPNET_ATTEMPT_ID": ids["attempt_id"]}
            argv = containers.container_argv(
                self.runtime,
                ex.image,
                ex.command,
                files_dir=str(self.files.resolve()),
                mounts=self.mounts,
                workdir=ex.workdir,
                env={**inside, **ex.env},
            )
            env = {**env, "PATH": os.environ.get("PATH", DEFAULT_PATH)}
        # What `isolate` did on this thread, the executor inherits.
        tmp = None if self.ns_home is not None else self.private_tmp
        cpus = None if self.affinity_home is not None else self.cpus
        inherit_limit = as_limit is not None and _can_lend_limit(as_limit)
        setup = _child_setup(tmp, None if inherit_limit else as_limit, cpus, self.keep)
        with _lent_limit(as_limit if inherit_limit else None) as started:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                process_group=0,  # its own group: cancel kills it and everything it forks
                close_fds=True,
                preexec_fn=setup,
            )
            started.append(proc.pid)
        return proc

    def reap_leftovers(self) -> None:
        """Kill and reap every remaining descendant (ours as subreaper), within a bound."""
        deadline = time.monotonic() + 5.0
        while True:
            _reap_zombies()
            kids = hostinfo.own_children()
            if not kids or time.monotonic() > deadline:
                if kids:
                    self.log(f"could not reap leftover processes {kids}")
                return
            for pid in kids:
                with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group is already gone: nothing to stop
        os.killpg(pgid, sig)


def _reap_zombies() -> None:
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:  # no children at all
            return
        if pid == 0:
            return


def main(argv: list[str] | None = None) -> int:
    """Entry point; the exit code is 0 whenever a final state was recorded."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m cpnet.agent.runner WORK_DIR", file=sys.stderr)
        return 2
    runner = Runner(Path(args[0]).resolve())
    signal.signal(signal.SIGTERM, runner.on_sigterm)
    signal.signal(signal.SIGINT, runner.on_sigterm)
    try:
        runner.run()
    except Exception:
        # Already recorded as SYSTEM_ERROR; the traceback also goes to runner.log.
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
