"""The Ray backend itself: each attempt one Ray Job; submit, poll and cancel are `ClusterBackend`'s,
reconciled through `RAY_STATES` (see the package's doc)."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from cpnet.agent.backends.base import (
    BackendConfig,
    BackendError,
    Handle,
    Job,
    JobStatus,
    PoolLive,
)
from cpnet.agent.backends.cluster import ClusterBackend, Refused, Seen
from cpnet.agent.backends.ray.api import RayApi
from cpnet.agent.backends.ray.head import LocalHead
from cpnet.agent.backends.ray.options import RayOptions
from cpnet.agent.backends.ray.pools import (
    RayPool,
    alive,
    derive_pools,
    free_capacity,
    members,
    node_shape,
    totals,
)
from cpnet.agent.backends.ray.states import ray_state
from cpnet.agent.backends.ray.submission import entrypoint, node_selector, resource_request
from cpnet.agent.backends.runner_job import runner_env, runner_settings
from cpnet.agent.backends.workdir import status_from_record
from cpnet.agent.runner import (
    JOB_FILE,
    STATUS_FILE,
    new_record,
    read_status,
    write_json_atomic,
)
from cpnet.tasks.model import TaskSpec
from cpnet.tasks.states import State

log = logging.getLogger(__name__)

JOB_PREFIX = "cpnet-"
JOB_ID_FILE = "ray_job_id"
LOG_TAIL = 2048  # characters of Ray's job log quoted when a job fails without a runner verdict


@dataclass(slots=True)
class _Seen:
    """The last answer about one Ray job, and when it came."""

    at: float
    pool: str
    status: str  # Ray's status name, "" when Ray has no such job


class RayBackend(ClusterBackend):
    """Runs each attempt as one Ray Job on the nodes of its pool."""

    name: ClassVar[str] = "ray"
    Options = RayOptions
    options: RayOptions
    id_file: ClassVar[str] = JOB_ID_FILE
    scheduler: ClassVar[str] = "Ray"

    def __init__(self, config: BackendConfig, api: RayApi | None = None) -> None:
        super().__init__(config)
        o = self.options
        self.head: LocalHead | None = None
        self._head_stop = threading.Event()
        self._head_restarting = threading.Event()  # quiets "unreachable" while a new head starts
        address = o.ray_address.strip()
        if api is None:
            if o.ray_local:
                self.head = LocalHead(o.ray_local_cpus)
                address = self.head.address
                self._head_stop = threading.Event()
                threading.Thread(target=self._supervise_head, name="ray-head", daemon=True).start()
            if not address:
                raise BackendError(
                    "the Ray backend needs the cluster's Jobs API address: --ray-address "
                    "http://HEAD:8265 (option ray_address), or --ray-local to start a head here"
                )
            api = RayApi(address, o.request_timeout_s)
        self.api = api
        self.python = o.python or sys.executable
        self._seen: dict[str, _Seen] = {}  # submission id → last answer

    def close(self) -> None:
        """Stop the local head, if this backend started one."""
        self._head_stop.set()
        self.api.close()
        with self._lock:
            head = self.head
        if head is not None:
            head.close()

    def _supervise_head(self) -> None:
        """Keep the local head alive: when its ``ray start --block`` exits, log why and start a
        new one. The new head's processes are children of this long-lived thread, so their
        parent-death signal fires only when the agent exits."""
        while not self._head_stop.is_set():
            with self._lock:
                head = self.head
            if head is None:
                return
            code = head.proc.wait()
            if self._head_stop.is_set():
                return
            log.error(
                "the local Ray head exited (code %s); starting a new one. Ray said:\n%s",
                code,
                head.log_tail(),
            )
            self._head_restarting.set()
            head.close()
            while not self._head_stop.is_set():
                try:
                    new = LocalHead(head.cpus)
                except BackendError as exc:
                    log.error("%s; trying again in 5 s", exc)
                    self._head_stop.wait(5.0)
                    continue
                with self._lock:  # the old client is left to threads still using it
                    self.api = RayApi(new.address, self.api.timeout_s)
                    self.head = new
                self._head_restarting.clear()
                if self._head_stop.is_set():  # closed while starting: close() saw the old head
                    new.close()
                log.info("the new local Ray head answers at %s", new.address)
                break

    # ---- pools ---------------------------------------------------------------------------------

    def _find_pools(self) -> list[RayPool]:
        """One pool per node shape of the cluster (see the module doc), or the declared ones
        (named like the shapes they stand for)."""
        nodes = self.api.nodes()
        if not alive(nodes):
            raise BackendError(f"the Ray cluster at {self.api.address} has no live node")
        found = derive_pools(nodes, self.options.pool_type)
        if self.config.pools:  # declared pools keep their names; shapes by name
            by_name = {p.decl.name: p for p in found}
            found = [
                RayPool(d, by_name[d.name].shape if d.name in by_name else ((), ()))
                for d in self.config.pools
            ]
        return found

    def _notice_shapes(self, nodes: list[dict[str, Any]]) -> None:
        """Signal a re-discovery when the live nodes' shapes are no longer the pools' shapes."""
        if self.config.pools or not alive(nodes):
            return
        with self._lock:
            known = {p.shape for p in self._pools or []}
        if {node_shape(totals(n)) for n in alive(nodes)} != known:
            self.shape_changed.set()

    def live(self) -> list[PoolLive]:
        """Free capacity from Ray's own usage; cpnet's jobs pending and running per pool. While
        Ray cannot be asked, every pool reports nothing free (the heartbeat still goes out, so
        the hub keeps the site and its running attempts)."""
        try:
            nodes = self.api.nodes()
            usage = self.api.usage_by_node()
        except BackendError as exc:
            if not self._head_restarting.is_set():
                log.warning("%s: reporting no free capacity", exc)
            nodes, usage = [], {}
        self._notice_shapes(nodes)
        with self._lock:
            seen = list(self._seen.values())
        result = []
        for pool in self._cluster_pools():
            mine = [s for s in seen if s.pool == pool.decl.name]
            result.append(
                PoolLive(
                    name=pool.decl.name,
                    free=free_capacity(pool, nodes, usage),
                    queue_length=sum(1 for s in mine if s.status == "PENDING"),
                    running=sum(1 for s in mine if s.status == "RUNNING"),
                )
            )
        return result

    # ---- attempts ------------------------------------------------------------------------------

    def _launch(self, job: Job) -> str:
        """Write job.json and submit the Ray job, unless Ray has it (an agent that crashed
        submitted it); its submission id."""
        work_dir = job.work_dir
        sid = JOB_PREFIX + job.attempt_id
        known = self.api.info(sid)
        if known is not None:
            if (known.metadata or {}).get("cpnet_work_dir") != str(work_dir):
                raise Refused(f"Ray already has a job {sid} that another agent submitted")
            return sid  # submitted before a crash
        data: dict[str, Any] = job.to_dict()
        data["runner"] = self._runner_settings(job.spec)
        try:
            write_json_atomic(work_dir / JOB_FILE, data)
        except OSError as exc:
            raise BackendError(f"cannot write {work_dir / JOB_FILE}: {exc}") from exc
        try:
            kwargs = self._submit_args(job, sid, work_dir)
        except ValueError as exc:
            raise Refused(str(exc)) from exc
        try:
            self.api.submit(**kwargs)
        except Exception as exc:
            try:
                known = self.api.info(sid) is not None  # did it get through after all?
            except BackendError:
                known = False
            if not known:
                raise Refused(f"Ray refused the job: {str(exc)[:500]}") from exc
        self._seen[sid] = _Seen(time.monotonic(), job.pool_name, "PENDING")
        return sid

    def _submit_args(self, job: Job, sid: str, work_dir: Path) -> dict[str, Any]:
        pool = next((p for p in self._cluster_pools() if p.decl.name == job.pool_name), None)
        if pool is None:
            raise ValueError(f"no Ray pool named {job.pool_name!r} at this agent")
        ids = [str(n["node_id"]) for n in members(pool, self.api.nodes())]
        if not ids:
            raise ValueError(f"pool {job.pool_name!r} has no live Ray node now")
        src = runner_env().get("PYTHONPATH", "")
        return {
            "entrypoint": entrypoint(self.python, work_dir),
            "submission_id": sid,
            "runtime_env": {"env_vars": {"PYTHONPATH": src}},
            "metadata": {
                "cpnet_attempt": job.attempt_id,
                "cpnet_task": job.task_id,
                "cpnet_pool": job.pool_name,
                "cpnet_work_dir": str(work_dir),
            },
            "entrypoint_label_selector": node_selector(ids),
            **resource_request(job.spec),
        }

    def _runner_settings(self, spec: TaskSpec) -> dict[str, Any]:
        return runner_settings(
            spec,
            max_stage_gb=self.options.max_stage_gb,
            grace_s=self.options.executor_grace_s,
            http_timeout_s=self.options.http_timeout_s,
            file_roots=None,
            memory_limit_gb=None,  # Ray accounts the job's memory; its OOM killer enforces
            private_tmp=False,
            staging={"allow_private_urls": list(self.options.allow_private_urls)},
        )

    def _info(self, sid: str, work_dir: Path, fresh: bool = False) -> tuple[str, Any | None]:
        """(Ray status name, details or None) — cached for `poll_cache_s` while not final."""
        with self._lock:
            seen = self._seen.get(sid)
            if (
                not fresh
                and seen is not None
                and seen.status in ("PENDING", "RUNNING")
                and time.monotonic() - seen.at < self.options.poll_cache_s
            ):
                return seen.status, None
        info = self.api.info(sid)
        status = "" if info is None else str(getattr(info.status, "value", info.status))
        with self._lock:
            pool = seen.pool if seen is not None else _pool_of(work_dir)
            self._seen[sid] = _Seen(time.monotonic(), pool, status)
        return status, info

    def poll_many(self, handles: Sequence[Handle]) -> list[JobStatus]:
        """status.json when final; else the Ray job's state (and the runner's progress)."""
        statuses = super().poll_many(handles)
        with self._lock:  # final: no longer pending or running in live()'s counts
            for handle, status in zip(handles, statuses, strict=True):
                if status.final and handle.job_id is not None:
                    self._seen.pop(handle.job_id, None)
        return statuses

    def _observe(self, handle: Handle, since: float) -> Seen:
        """The Ray job's status (`RAY_STATES`); while Ray cannot be asked, not known."""
        sid = str(handle.job_id)
        try:
            status, info = self._info(sid, handle.work_dir)
        except BackendError as exc:  # Ray unreachable now: report what the runner said
            log.warning("%s", exc)
            return Seen(State.QUEUED, f"Ray job {sid}: {exc}", known=False)
        state = ray_state(status)
        if state is State.QUEUED:
            return Seen(state, f"Ray job {sid} pending")
        if state is State.RUNNING:
            return Seen(State.INITIALIZING, f"Ray job {sid} starting the runner")
        return Seen(state, detail=(status, info))

    def _ended(self, handle: Handle, seen: Seen) -> JobStatus:
        """The Ray job ended (or Ray has none) without the runner's verdict: Ray's, recorded."""
        work_dir, sid = handle.work_dir, str(handle.job_id)
        status, info = seen.detail
        if status == "":
            return self._final(work_dir, State.SYSTEM_ERROR, f"Ray has no job {sid}", None, sid)
        if info is None:
            _, info = self._info(sid, work_dir, fresh=True)
        message = str(getattr(info, "message", "") or "").strip()
        if seen.state is State.CANCELED:
            return self._final(work_dir, State.CANCELED, f"Ray job {sid} stopped", info, sid)
        if seen.state is State.COMPLETE:
            reason = (
                f"Ray job {sid} succeeded but the runner recorded no final state (is the work "
                "root on a filesystem every Ray node shares?)"
            )
        else:
            reason = f"Ray job {sid} {status.lower()}: {message.splitlines()[0] if message else ''}"
        return self._final(work_dir, State.SYSTEM_ERROR, reason.strip(), info, sid)

    def _final(
        self, work_dir: Path, state: State, reason: str, info: Any | None, sid: str
    ) -> JobStatus:
        """Record a final state the runner could not (it never ran, was killed, or died)."""
        record = read_status(work_dir) or new_record(state)
        record["state"] = state.value
        record["reason"] = reason[:1000]
        start, end = getattr(info, "start_time", None), getattr(info, "end_time", None)
        if start and end and not (record.get("usage") or {}).get("wall_s"):
            usage = dict(record.get("usage") or {})
            usage["wall_s"] = max(0.0, (int(end) - int(start)) / 1000)
            record["usage"] = usage
        if state is State.SYSTEM_ERROR:
            text = self.api.logs(sid).strip()
            if text:
                record.setdefault("system_logs", []).append(f"ray job log: {text[-LOG_TAIL:]}")
        with contextlib.suppress(OSError):
            write_json_atomic(work_dir / STATUS_FILE, record)
        return status_from_record(record)

    def _stop(self, handle: Handle) -> None:
        """``stop_job`` (Ray sends the runner SIGTERM; it records CANCELED)."""
        sid = str(handle.job_id)
        try:
            self.api.stop(sid)
        except BackendError:
            status, _ = self._info(sid, handle.work_dir, fresh=True)
            if status in ("PENDING", "RUNNING"):
                raise
        with self._lock:
            self._seen.pop(sid, None)

    def forget(self, handle: Handle) -> None:
        """Drop what this instance remembers; delete the Ray job when `delete_jobs` is set."""
        sid = handle.job_id
        if sid is None:
            return
        with self._lock:
            self._seen.pop(sid, None)
        if self.options.delete_jobs:
            self.api.delete(sid)


def _pool_of(work_dir: Path) -> str:
    with contextlib.suppress(OSError, ValueError):
        return str(json.loads((work_dir / JOB_FILE).read_text()).get("pool_name", ""))
    return ""


__all__ = ["JOB_ID_FILE", "JOB_PREFIX", "RayBackend"]
