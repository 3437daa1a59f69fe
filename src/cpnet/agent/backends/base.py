"""The one interface every backend (local, Slurm, Ray, Kubernetes) implements.

The agent's loop talks only to this interface, as Parsl's executors talk only to providers. A
backend reports what it offers (``discover``), what is free now (``live``), and runs attempts
(``submit`` → `Handle` → ``poll_many`` / ``poll`` / ``cancel`` / ``forget``). The backend's truth
wins: ``poll`` reads the real state of the attempt wherever it runs, never a cached wish.
"""

from __future__ import annotations

import abc
import contextlib
import os
import re
import shutil
import stat
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from cpnet.sched.snapshot import Resources
from cpnet.tasks.model import (
    AttemptProgress,
    ExecutorLog,
    OutputFileLog,
    TaskSpec,
    TransferRecord,
    Usage,
)
from cpnet.tasks.states import State

if TYPE_CHECKING:
    from cpnet.agent.backends.options import BackendOptions

# Attempt ids become directory names, so they must be plain file names.
RM_ARGS = 200  # work dirs per `rm -rf` (remove_work_dirs): well inside the kernel's argv limit
RM_TIMEOUT_S = 60.0
ATTEMPT_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
POOL_TYPES = ("general", "intelligent", "supercomputing", "edge")


class BackendError(Exception):
    """Raised when a backend cannot do what it was asked (bad handle, unknown backend, I/O)."""


@dataclass(frozen=True, slots=True)
class PoolCapacity(Resources):
    """An amount of each resource a pool has (or has free); memory and disk in GiB.

    The scheduler's ``Resources`` (the one resources shape from the API to the backends), with
    the floored arithmetic a backend counting its own capacity needs.
    """

    def minus(self, other: PoolCapacity) -> PoolCapacity:
        """This capacity less `other`, floored at zero (a pool never has negative free)."""
        return PoolCapacity(
            cpu_cores=max(0.0, self.cpu_cores - other.cpu_cores),
            ram_gb=max(0.0, self.ram_gb - other.ram_gb),
            disk_gb=max(0.0, self.disk_gb - other.disk_gb),
            gpus=max(0, self.gpus - other.gpus),
        )

    def plus(self, other: PoolCapacity) -> PoolCapacity:
        """The sum of two capacities."""
        return PoolCapacity(
            cpu_cores=self.cpu_cores + other.cpu_cores,
            ram_gb=self.ram_gb + other.ram_gb,
            disk_gb=self.disk_gb + other.disk_gb,
            gpus=self.gpus + other.gpus,
        )

    def covers(self, demand: Resources) -> bool:
        """Whether `demand` fits in this capacity (with slack for float sums)."""
        return demand.fits_in(self)

    @classmethod
    def of(cls, spec: TaskSpec) -> PoolCapacity:
        """What one attempt of `spec` reserves."""
        r = spec.resources
        return cls(cpu_cores=r.cpu_cores, ram_gb=r.ram_gb, disk_gb=r.disk_gb, gpus=r.gpus)


@dataclass(frozen=True, slots=True)
class PoolDecl:
    """A pool this backend offers, as the agent registers it with the hub."""

    name: str
    type: str  # one of POOL_TYPES
    total: PoolCapacity
    cpu_model: str
    gpu_model: str | None
    gpu_memory_gb: float | None
    labels: dict[str, str]
    can_run_images: bool = False

    def __post_init__(self) -> None:
        if self.type not in POOL_TYPES:
            raise ValueError(f"pool type {self.type!r} unknown; use one of {POOL_TYPES}")


@dataclass(frozen=True, slots=True)
class PoolLive:
    """One pool's live state, for a heartbeat."""

    name: str
    free: PoolCapacity
    queue_length: int  # attempts accepted but waiting for capacity inside the backend
    running: int  # attempts holding capacity (staging, running, or finishing)


@dataclass(frozen=True, slots=True)
class Job:
    """One attempt to run: what the agent hands a backend."""

    attempt_id: str
    task_id: str
    pool_name: str
    spec: TaskSpec
    work_dir: Path  # backends that choose their own work dir (local) replace this on submit

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the form a backend journals next to the attempt)."""
        return {
            "attempt_id": self.attempt_id,
            "task_id": self.task_id,
            "pool_name": self.pool_name,
            "spec": self.spec.model_dump(mode="json"),
            "work_dir": str(self.work_dir),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        """The Job `to_dict` wrote; raises ValueError (pydantic's) on a malformed spec."""
        return cls(
            attempt_id=str(data["attempt_id"]),
            task_id=str(data["task_id"]),
            pool_name=str(data["pool_name"]),
            spec=TaskSpec.model_validate(data["spec"]),
            work_dir=Path(data["work_dir"]),
        )


@dataclass(frozen=True, slots=True)
class JobStatus:
    """What `poll` reports about one attempt.

    `state` is QUEUED (accepted, waiting for capacity inside the backend), INITIALIZING (staging
    inputs), RUNNING, or one of the final states COMPLETE, EXECUTOR_ERROR, SYSTEM_ERROR, CANCELED.
    """

    state: State
    reason: str | None = None
    executor_logs: list[ExecutorLog] = field(default_factory=list)
    outputs: list[OutputFileLog] = field(default_factory=list)
    usage: Usage | None = None
    system_logs: list[str] = field(default_factory=list)
    progress: AttemptProgress | None = None  # where it is (phase, files, bytes), when known
    transfers: list[TransferRecord] = field(default_factory=list)  # inputs and outputs moved

    @property
    def final(self) -> bool:
        """True when the attempt is over and nothing about it will change."""
        return self.state.terminal


@dataclass(frozen=True, slots=True)
class Handle:
    """A submitted attempt as its backend finds it again: its work dir and, for a backend that
    hands attempts to a scheduler, that scheduler's id of its job.

    ``str(handle)`` (the work dir) is what the agent journals, unchanged from when handles were
    plain strings, and `Backend.handle` reads it back after a restart. ``os.fspath`` gives the
    work dir too.
    """

    work_dir: Path
    job_id: str | None = None  # None: the backend keeps no job id, or the scheduler refused it

    def __str__(self) -> str:
        return str(self.work_dir)

    def __fspath__(self) -> str:
        return str(self.work_dir)


@dataclass(frozen=True, slots=True)
class BackendConfig:
    """How the agent configures a backend."""

    work_root: Path  # one sub-directory per attempt lives here
    pools: list[PoolDecl] | None = None  # declared pools override discovery
    # backend-specific, as the agent was given them: each backend reads them into its `Options`
    options: dict[str, str] = field(default_factory=dict)
    hub_url: str = ""  # the hub the agent reports to (runners fetch cpnet://blobs/ from it)
    hub_token: str = field(default="", repr=False)  # the agent's site token (a credential)


class Backend(abc.ABC):
    """Runs attempts somewhere (this machine, a Slurm cluster, ...) and reports on them.

    Every attempt keeps its files in ``work_root/<attempt_id>/``. The agent journals ``str`` of
    the `Handle` that `submit` returns; a new backend instance (after an agent restart) turns it
    back into the handle with `handle`. Every method must be safe to call from several threads.
    """

    name: ClassVar[str]
    # The backend's options, typed and documented (backends/options.py); read once, here.
    Options: ClassVar[type[BackendOptions]]
    # The cores a calibration probe asks for: None for all of this host's (the backend runs
    # attempts here), else a number that fits a node of unknown size.
    probe_cores: ClassVar[float | None] = 1.0

    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self.work_root = config.work_root.resolve()
        self.work_root.mkdir(parents=True, exist_ok=True)
        self.options = self.Options.parse(config.options, self.name)
        # What executors with an image get here (options container_runtime, allow_host_exec).
        self.images = self.options.images()
        # Set by a backend that notices its cluster changed shape (a node of a new kind, a
        # partition, a node group): the agent then re-discovers at once instead of on its timer.
        self.shape_changed = threading.Event()

    def handle(self, text: str) -> Handle:
        """The handle that ``str(handle)`` wrote (the agent's journal, after a restart); refused
        unless it names a work dir directly in this backend's root."""
        return Handle(self._work_dir_of(text))

    def _work_dir_of(self, text: str) -> Path:
        work_dir = Path(text)
        name = work_dir.name
        if work_dir.parent != self.work_root or not ATTEMPT_ID_RE.match(name) or name == "..":
            raise BackendError(f"{text!r} is not a handle of this backend ({self.work_root})")
        return work_dir

    def work_dir_for(self, attempt_id: str) -> Path:
        """Where the attempt with this id keeps its files; refuses ids that are not plain names."""
        if not ATTEMPT_ID_RE.match(attempt_id) or attempt_id in (".", ".."):
            raise BackendError(f"attempt id {attempt_id!r} is not a plain name ([A-Za-z0-9_.-])")
        return self.work_root / attempt_id

    @abc.abstractmethod
    def discover(self) -> list[PoolDecl]:
        """The pools this backend offers: the declared ones, else what it finds."""

    def rediscover(self) -> list[PoolDecl]:
        """The pools found anew, now (the cluster may have gained or lost a kind of node).

        Declared pools never change; a backend that finds its pools by looking at a cluster
        overrides this to look again, keeping what it found before if the cluster cannot be
        asked (it raises BackendError then).
        """
        return self.discover()

    @abc.abstractmethod
    def live(self) -> list[PoolLive]:
        """Each pool's free capacity, queue length and running count now."""

    @abc.abstractmethod
    def submit(self, job: Job) -> Handle:
        """Start (or queue) the attempt and return its handle; the same attempt twice → same
        handle, one run."""

    @abc.abstractmethod
    def poll(self, handle: Handle) -> JobStatus:
        """The attempt's real state now."""

    def poll_many(self, handles: Sequence[Handle]) -> list[JobStatus]:
        """The real state of each attempt now, in order: what the agent's loop calls with every
        attempt it holds. A backend whose scheduler lists all its jobs in one call answers them
        all from that one answer; by default, each is polled."""
        return [self.poll(h) for h in handles]

    def changed(self) -> set[Handle] | None:
        """The attempts whose state may have changed since the last call, without waiting, for
        a backend that is told of changes (the local backend: inotify on the runners' status
        files); None when it cannot tell, and the agent then polls every attempt it holds (the
        default: Slurm, Ray and Kubernetes are asked). The agent still polls everything now and
        then (`FULL_POLL_S` in agent/main.py), for what no event tells: a runner that died."""
        return None

    @abc.abstractmethod
    def cancel(self, handle: Handle) -> None:
        """Ask the attempt to stop; idempotent, and a no-op once it is final."""

    def logs(self, handle: Handle) -> list[ExecutorLog]:
        """The executor logs so far (exit codes, times, output tails); by default, as the
        attempt last recorded them."""
        return self.poll(handle).executor_logs

    def usage(self, handle: Handle) -> Usage | None:
        """Resources consumed so far, or None when nothing was measured yet; by default, as the
        attempt last recorded them (after each step, not continuously)."""
        return self.poll(handle).usage

    @abc.abstractmethod
    def forget(self, handle: Handle) -> None:
        """Free local resources of a final attempt whose state the hub acknowledged."""

    def remove_work_dir(self, handle: Handle) -> None:
        """Delete a forgotten attempt's work dir and everything in it (staged inputs, outputs,
        logs); BackendError naming what is left when that fails (a runner still writing: try
        again later). Never follows a symbolic link out of the dir, and makes read-only
        directories a task left writable so that they can go."""
        work_dir = handle.work_dir
        if work_dir.parent != self.work_root:
            raise BackendError(f"{work_dir} is not an attempt dir of {self.work_root}")
        remove_tree(work_dir)

    def remove_work_dirs(self, handles: Sequence[Handle]) -> list[BackendError | None]:
        """`remove_work_dir` for many forgotten attempts at once; per handle, None when its dir
        is gone (or kept on purpose), else the error that left it. One ``rm -rf`` removes them
        all first — in C, one process for the lot, where Python's rmtree cost ~3 ms of CPU per
        attempt dir (a profile of the agent at ~15 tasks/s) — and each dir still there goes the
        careful way (`remove_work_dir`: read-only directories made writable, a clear error)."""
        dirs = [str(h.work_dir) for h in handles if self._plainly_removable(h)]
        rm = shutil.which("rm")
        for i in range(0, len(dirs) if rm else 0, RM_ARGS):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                # Never follows a symbolic link (a link itself is removed, not its target).
                subprocess.run(
                    [rm, "-rf", "--", *dirs[i : i + RM_ARGS]],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    check=False,
                    timeout=RM_TIMEOUT_S,
                )
        out: list[BackendError | None] = []
        for h in handles:
            try:
                if os.path.lexists(h.work_dir):
                    self.remove_work_dir(h)
                out.append(None)
            except BackendError as exc:
                out.append(exc)
        return out

    def _plainly_removable(self, handle: Handle) -> bool:
        """Whether `remove_work_dirs` may delete this dir without asking `remove_work_dir` (a
        backend that keeps some dirs says no for those)."""
        return handle.work_dir.parent == self.work_root

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release what the backend holds for itself (helper processes); attempts keep running.
        The agent calls it once when it exits."""


def remove_tree(path: Path) -> None:
    """`shutil.rmtree(path)`, gone already counting as done, read-only directories made
    writable on the way; BackendError when something is left."""

    def retry(func: Callable[..., Any], failed: str, _exc: object) -> None:
        # A task may leave directories without write permission (as its owner, we may fix that).
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(failed), stat.S_IRWXU)
            if os.path.isdir(failed) and not os.path.islink(failed):
                os.chmod(failed, stat.S_IRWXU)
        try:
            func(failed)
        except FileNotFoundError:
            pass

    try:
        shutil.rmtree(path, onerror=retry)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise BackendError(f"cannot remove {path}: {exc}") from exc
