"""What the backends that hand each attempt to a cluster's scheduler share: Slurm, Ray, Kubernetes.

`ClusterBackend` writes submit, poll and cancel once, as Parsl's ``ClusterProvider`` holds what
its schedulers share; a backend adds only what differs (Funnel's variation as data):

- `id_file` and `scheduler`: the file in the work dir naming the scheduler's job (``"none"``:
  refused), and the scheduler's name in reasons;
- a translate table from the scheduler's job states to the attempt's (`SLURM_STATES`,
  `RAY_STATES`; Kubernetes' `verdict` reads a Job and its pod);
- hooks: `_launch` (hand the job to the scheduler, or find the one an agent that crashed
  already handed it), `_observe` (the job's state now), `_stop` (ask the scheduler to stop it),
  `_ended` (settle a job that ended without the runner's word), `_settled` (a final record
  checked against the scheduler, by default taken as it is), `_find_pools` (the pools now).

**Reconcile.** Each poll compares what the attempt's work dir says (``status.json``, which the
runner writes) with what the scheduler says, and settles the difference; the scheduler's word
wins over this agent's bookkeeping (as in Funnel's reconcile loop):

=================  ========================================  ====================================
``status.json``    the scheduler's job (`Seen`)              poll reports
=================  ========================================  ====================================
final              (only `_settled` asks)                    the record
none / not final   none recorded at submit                   SYSTEM_ERROR "no <scheduler> job"
none / not final   cannot be asked now (``known=False``)     the runner's record, else QUEUED
none / not final   QUEUED                                    QUEUED, with the scheduler's reason
none / not final   INITIALIZING or RUNNING                   the runner's record, else the job's
none / not final   ended, or gone                            `_ended`: the scheduler's verdict,
                                                             written to status.json
=================  ========================================  ====================================

``status.json`` is read again after the scheduler answered, so a runner that finished meanwhile
wins. `poll_many` answers every attempt from one listing of the scheduler's jobs (where the
scheduler lists them: `_list_jobs`), cached for the backend's cache option; a job missing from a
listing older than the poll is looked for once in a fresh one.
"""

from __future__ import annotations

import abc
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from cpnet.agent.backends.base import (
    Backend,
    BackendConfig,
    BackendError,
    Handle,
    Job,
    JobStatus,
    PoolDecl,
)
from cpnet.agent.backends.workdir import begin_cancel, read_id_file, status_from_record
from cpnet.agent.runner import STATUS_FILE, new_record, read_status, write_atomic, write_json_atomic
from cpnet.tasks.states import State

REFUSED = "none"  # the id file's content when the scheduler (or the task) was refused


class Refused(Exception):
    """The attempt cannot run on this scheduler (it refused the job, or the task asks what it
    cannot give): the attempt ends SYSTEM_ERROR with `reason`, so the hub places it elsewhere."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Seen:
    """What the scheduler says of one attempt's job: its state (through the backend's translate
    table; a final state means the job ended or is gone) and why, with what the backend needs
    to settle it (`detail`: the scheduler's record). ``known=False``: it could not be asked."""

    state: State
    reason: str | None = None
    detail: Any = None
    known: bool = True


class ClusterBackend(Backend):
    """A backend that runs each attempt as one job of a cluster scheduler (see the module doc)."""

    id_file: ClassVar[str]
    scheduler: ClassVar[str]

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        self._lock = threading.RLock()
        self._pools: list[Any] | None = None
        self._listed: tuple[float, Any] | None = None  # (when, `_list_jobs`'s answer)

    # ---- hooks ---------------------------------------------------------------------------------

    @abc.abstractmethod
    def _find_pools(self) -> list[Any]:
        """The pools now (the declared ones, else what the cluster shows); BackendError when the
        cluster cannot be asked."""

    def _decl(self, pool: Any) -> PoolDecl:
        """The declaration of one of `_find_pools`'s pools."""
        return pool.decl  # type: ignore[no-any-return]

    @abc.abstractmethod
    def _launch(self, job: Job) -> str:
        """Hand `job` (its work dir made) to the scheduler once, or find the job an agent that
        crashed before writing `id_file` handed it; the scheduler's job id. Refused when it
        cannot run; BackendError when this agent cannot do its part (write its files)."""

    @abc.abstractmethod
    def _observe(self, handle: Handle, since: float) -> Seen:
        """The job's state now (from a listing taken after `since` when the job is not in an
        older one)."""

    @abc.abstractmethod
    def _stop(self, handle: Handle) -> None:
        """Ask the scheduler to stop the job (the runner records CANCELED)."""

    @abc.abstractmethod
    def _ended(self, handle: Handle, seen: Seen) -> JobStatus:
        """The job ended (or is gone) and the runner recorded no end: the scheduler's verdict,
        written to status.json (or, while the backend must still wait, a state that is not)."""

    def _settled(self, handle: Handle, record: dict[str, Any], since: float) -> JobStatus:
        """A final record, as the agent reports it (a backend may check it against the
        scheduler first)."""
        return status_from_record(record)

    def _list_jobs(self) -> Any:
        """Every job the scheduler knows, in one call (for backends that can list them)."""
        raise NotImplementedError

    def _listing_s(self) -> float:
        """How long one listing of the scheduler's jobs serves polls."""
        return 1.0

    # ---- pools ---------------------------------------------------------------------------------

    def _cluster_pools(self) -> list[Any]:
        with self._lock:
            if self._pools is None:
                self._pools = self._find_pools()
            return list(self._pools)

    def discover(self) -> list[PoolDecl]:
        """The pools found (or declared) first, kept until `rediscover`."""
        return [self._decl(p) for p in self._cluster_pools()]

    def rediscover(self) -> list[PoolDecl]:
        """The pools the cluster shows now (declared pools stay); BackendError: those found
        before stay."""
        if self.config.pools:
            return self.discover()
        found = self._find_pools()
        with self._lock:
            self._pools = found
        return [self._decl(p) for p in found]

    # ---- the scheduler's jobs, listed ----------------------------------------------------------

    def _listing(self, fresh: bool = False, since: float | None = None) -> Any:
        """The scheduler's jobs as one call listed them: at most `_listing_s` old, or taken
        after `since` (the start of this batch of polls), or `fresh`."""
        with self._lock:
            now, listed = time.monotonic(), self._listed
            if (
                fresh
                or listed is None
                or (now - listed[0] > self._listing_s() and (since is None or listed[0] < since))
            ):
                self._listed = listed = (now, self._list_jobs())
            return listed[1]

    def _listing_with(self, has: Callable[[Any], bool], since: float) -> Any:
        """The listing for a poll that began at `since`, fresh when `has` does not find the job
        in one taken before (the job may be newer than the listing)."""
        listed = self._listing(since=since)
        with self._lock:
            older = self._listed is None or self._listed[0] < since
        return listed if has(listed) or not older else self._listing(fresh=True)

    def _last_listing(self) -> Any | None:
        """The last listing taken, however old (None: none yet)."""
        with self._lock:
            return self._listed[1] if self._listed is not None else None

    # ---- attempts ------------------------------------------------------------------------------

    def handle(self, text: str) -> Handle:
        """The work dir's handle, with the job id recorded at submit."""
        work_dir = self._work_dir_of(text)
        return Handle(work_dir, self._job_id(work_dir))

    def _job_id(self, work_dir: Any) -> str | None:
        job_id = read_id_file(work_dir, self.id_file)
        return None if job_id == REFUSED else job_id

    def submit(self, job: Job) -> Handle:
        """Hand the attempt to the scheduler once; a refusal is a final SYSTEM_ERROR that `poll`
        reports. The handle is its work dir and the job id."""
        with self._lock:
            work_dir = self.work_dir_for(job.attempt_id)
            if read_id_file(work_dir, self.id_file) is not None:
                return Handle(work_dir, self._job_id(work_dir))
            try:
                work_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise BackendError(f"cannot create the work dir {work_dir}: {exc}") from exc
            try:
                job_id = self._launch(replace(job, work_dir=work_dir))
            except Refused as exc:
                write_json_atomic(
                    work_dir / STATUS_FILE, new_record(State.SYSTEM_ERROR, exc.reason)
                )
                write_atomic(work_dir / self.id_file, REFUSED + "\n")
                return Handle(work_dir)
            write_atomic(work_dir / self.id_file, job_id + "\n")
            self._listed = None  # the next poll looks for the new job
            return Handle(work_dir, job_id)

    def poll(self, handle: Handle) -> JobStatus:
        """The attempt's state: the runner's record reconciled with the scheduler's job."""
        return self.poll_many([handle])[0]

    def poll_many(self, handles: Sequence[Handle]) -> list[JobStatus]:
        """Every attempt's state, from one listing of the scheduler's jobs."""
        since = time.monotonic()
        return [self._reconcile(h, since) for h in handles]

    def _reconcile(self, handle: Handle, since: float) -> JobStatus:
        """One row of the module doc's table."""
        record = read_status(handle.work_dir)
        if record is not None and State(record["state"]).terminal:
            return self._settled(handle, record, since)
        if handle.job_id is None:
            return JobStatus(State.SYSTEM_ERROR, f"no {self.scheduler} job for {handle}")
        seen = self._observe(handle, since)
        record = read_status(handle.work_dir)  # the runner may have finished meanwhile
        if record is not None and State(record["state"]).terminal:
            return self._settled(handle, record, since)
        if not seen.known:
            return status_from_record(record) if record else JobStatus(State.QUEUED, seen.reason)
        if seen.state is State.QUEUED:
            return JobStatus(State.QUEUED, seen.reason)
        if not seen.state.terminal:
            return status_from_record(record) if record else JobStatus(seen.state, seen.reason)
        return self._ended(handle, seen)

    def cancel(self, handle: Handle) -> None:
        """Leave the runner's cancel marker and ask the scheduler to stop the job."""
        if not begin_cancel(handle.work_dir) or handle.job_id is None:
            return
        self._stop(handle)
        with self._lock:
            self._listed = None

    def forget(self, handle: Handle) -> None:
        """Nothing to free: the work dir stays for inspection."""


__all__ = ["REFUSED", "ClusterBackend", "Refused", "Seen"]
