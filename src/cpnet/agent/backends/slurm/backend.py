"""The Slurm backend itself: each attempt one batch job, through a `SlurmTransport` (see the
package's doc); submit, poll and cancel are `ClusterBackend`'s, reconciled through
`SLURM_STATES`."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import re
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

from cpnet.agent.backends.base import (
    BackendConfig,
    BackendError,
    Handle,
    Job,
    JobStatus,
    PoolCapacity,
    PoolDecl,
    PoolLive,
)
from cpnet.agent.backends.cluster import ClusterBackend, Refused, Seen
from cpnet.agent.backends.runner_job import (
    runner_command,
    runner_settings,
    staging_env,
    staging_settings,
)
from cpnet.agent.backends.slurm.cli import SlurmCli
from cpnet.agent.backends.slurm.endings import (
    SLURM_OUT,
    UNANSWERED_FILE,
    add_slurm_record,
    fenced,
    record_final,
)
from cpnet.agent.backends.slurm.options import SlurmOptions
from cpnet.agent.backends.slurm.partitions import (
    nodes_by_partition,
    partition_free,
    partition_pool,
    queue_of,
)
from cpnet.agent.backends.slurm.rest import SlurmRest
from cpnet.agent.backends.slurm.states import (
    PENDING_STATES,
    RUNNING_STATES,
    SLURM_STATES,
    SLURM_STOPPED,
    job_state,
    map_final,
)
from cpnet.agent.backends.slurm.transport import (
    SlurmFinal,
    SlurmJobRequest,
    SlurmTransport,
    final_of_job,
)
from cpnet.agent.backends.workdir import mtime, status_from_record
from cpnet.agent.runner import (
    CANCEL_FILE,
    JOB_FILE,
    STATUS_FILE,
    read_status,
    write_atomic,
    write_json_atomic,
)
from cpnet.tasks.model import TaskSpec
from cpnet.tasks.states import State

log = logging.getLogger(__name__)

JOB_PREFIX = "cpnet-"
JOB_ID_FILE = "slurm_job_id"
SCRIPT_FILE = "job.sh"
GRES_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class SlurmBackend(ClusterBackend):
    """Runs each attempt as one Slurm batch job on the partition named by its pool."""

    name: ClassVar[str] = "slurm"
    Options = SlurmOptions
    options: SlurmOptions
    id_file: ClassVar[str] = JOB_ID_FILE
    scheduler: ClassVar[str] = "Slurm"

    def __init__(self, config: BackendConfig, cli: SlurmTransport | None = None) -> None:
        super().__init__(config)
        self.cli = cli or make_transport(self.options)
        # The runner needs the staging credentials, in its job's environment.
        self.cli.export(staging_env(self.options, config.hub_token))
        self._parts: dict[str, dict[str, Any]] = {}
        self._node_cpus: dict[str, int] = {}  # the largest node's CPUs, per partition

    # ---- pools ---------------------------------------------------------------------------------

    def _find_pools(self) -> list[PoolDecl]:
        """The declared pools (named like partitions), else one pool per partition."""
        return list(self.config.pools or self._partitions())

    def _decl(self, pool: PoolDecl) -> PoolDecl:
        return pool

    def _partitions(self) -> list[PoolDecl]:
        parts = self._nodes_by_partition(self.cli.nodes())
        with contextlib.suppress(BackendError):
            self._parts = self.cli.partitions()
        return [
            partition_pool(name, parts[name], self._parts.get(name, {}), self.options.pool_type)
            for name in sorted(parts)
        ]

    def _nodes_by_partition(self, nodes: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        parts = nodes_by_partition(nodes)
        with self._lock:
            self._node_cpus = {
                name: max(int(n.get("cpus") or 0) for n in members)
                for name, members in parts.items()
            }
        return parts

    def live(self) -> list[PoolLive]:
        """From Slurm itself: free CPUs, memory and GPUs of each partition's usable nodes (none
        while the partition is not UP), and its whole queue (every user's pending and running
        jobs, not only cpnet's). While the controller does not answer: no free capacity, the
        last queue seen (the heartbeat still goes out, so the hub does not take the site for
        lost and move its running tasks, which Slurm keeps running)."""
        try:
            nodes = self.cli.nodes()
            self._nodes_by_partition(nodes)
            jobs = self._listing(fresh=True)
        except BackendError as exc:
            log.warning("Slurm does not answer, reporting no free capacity: %s", exc)
            jobs = self._last_listing() or {}
            return [
                PoolLive(pool.name, PoolCapacity(), *queue_of(jobs, pool.name))
                for pool in self.discover()
            ]
        with contextlib.suppress(BackendError):
            self._parts = self.cli.partitions()
        return [
            PoolLive(
                pool.name,
                partition_free(pool, nodes, self._parts.get(pool.name, {})),
                *queue_of(jobs, pool.name),
            )
            for pool in self.discover()
        ]

    # ---- the controller's jobs -----------------------------------------------------------------

    def _list_jobs(self) -> dict[str, dict[str, Any]]:
        """Every job the controller knows (every user's), by Slurm job id."""
        return {str(j.get("job_id")): j for j in self.cli.jobs()}

    def _listing_s(self) -> float:
        return self.options.squeue_cache_s

    def _find(self, job_id: str, since: float) -> dict[str, Any] | None:
        """The job in the controller's listing (a fresh one when an older one lacks it)."""
        jobs = self._listing_with(lambda jobs: job_id in jobs, since)
        return jobs.get(job_id)  # type: ignore[no-any-return]

    # ---- attempts ------------------------------------------------------------------------------

    def _launch(self, job: Job) -> str:
        """Write job.json and the batch script, and ``sbatch`` it (unless this agent did)."""
        work_dir = job.work_dir
        job_name = JOB_PREFIX + job.attempt_id
        for jid, j in self._listing(fresh=True).items():
            # submitted before writing slurm_job_id (by this agent: same name and work dir)
            if j.get("name") == job_name and j.get("current_working_directory") == str(work_dir):
                return str(jid)
        data: dict[str, Any] = job.to_dict()
        data["runner"] = self._runner_settings(job.spec)
        script = work_dir / SCRIPT_FILE
        try:
            write_json_atomic(work_dir / JOB_FILE, data)
            write_atomic(script, batch_script(work_dir))
            script.chmod(0o700)
        except OSError as exc:
            raise BackendError(f"cannot create the work dir {work_dir}: {exc}") from exc
        try:
            return self.cli.submit(self.job_request(job, job_name, work_dir), script)
        except (BackendError, ValueError) as exc:
            raise Refused(f"Slurm refused the job: {exc}") from exc

    def job_request(self, job: Job, job_name: str, work_dir: Path) -> SlurmJobRequest:
        """What to ask Slurm for; ValueError names a bad backend parameter."""
        r = job.spec.resources
        gres = None
        if r.gpus > 0:
            model = r.gpu_model
            if model and not GRES_NAME_RE.fullmatch(model):
                raise ValueError(f"gpu_model {model!r} is not a GRES type name")
            gres = f"gpu:{model}:{r.gpus}" if model else f"gpu:{r.gpus}"
        cpus = max(1, math.ceil(r.cpu_cores - 1e-9))
        mem_mb = max(1, math.ceil(r.ram_gb * 1024)) if r.ram_gb > 0 else None
        nodes = _positive_int(r.backend_parameters, "nodes")
        per_node = _positive_int(r.backend_parameters, "ntasks_per_node")
        ntasks = None
        cpus_per_task = cpus
        widest = self._node_cpus.get(job.pool_name, 0)
        if per_node is not None:
            # Slurm tasks (MPI ranks) on each node: the task's CPUs are shared among them all,
            # --mem is per node. Executors start the ranks with `srun` (or an MPI launcher).
            nodes = nodes or 1
            ntasks = nodes * per_node
            if cpus < ntasks:
                raise ValueError(
                    f"backend parameter ntasks_per_node={per_node} on {nodes} node(s) makes "
                    f"{ntasks} tasks, more than the {cpus} cpu_cores asked: ask for at least "
                    f"{ntasks} cpu_cores (one per task)"
                )
            cpus_per_task = cpus // ntasks
            mem_mb = math.ceil(mem_mb / nodes) if mem_mb else None
        elif nodes is None and r.gpus == 0 and widest and cpus > widest:
            # More CPUs than any one node has (the pool's total allowed it): spread them, one
            # task per CPU on as few nodes as can hold them; --mem is per node.
            nodes, ntasks, cpus_per_task = math.ceil(cpus / widest), cpus, 1
            mem_mb = math.ceil(mem_mb / nodes) if mem_mb else None
        return SlurmJobRequest(
            name=job_name,
            partition=job.pool_name,
            work_dir=work_dir,
            output=work_dir / SLURM_OUT,
            cpus_per_task=cpus_per_task,
            mem_mb=mem_mb,
            gres=gres,
            nodes=nodes,
            ntasks=ntasks,
            ntasks_per_node=per_node,
            time_min=self._time_limit_min(job),
        )

    def _time_limit_min(self, job: Job) -> int | None:
        """``--time`` in minutes: the task's ``time_limit_s`` backend parameter if given, else
        ``time_limit_factor`` × its expected runtime capped at the partition's MaxTime; Slurm
        counts whole minutes, so at least 1. None (no ``--time``) when the factor is 0."""
        explicit = _positive_int(job.spec.resources.backend_parameters, "time_limit_s")
        if explicit is not None:
            return max(1, math.ceil(explicit / 60))
        factor = self.options.time_limit_factor
        if factor <= 0:
            return None
        minutes = max(1, math.ceil(job.spec.expected_runtime_s * factor / 60))
        cap = self._parts.get(job.pool_name, {}).get("max_time_min")
        return min(minutes, cap) if cap else minutes

    def _runner_settings(self, spec: TaskSpec) -> dict[str, Any]:
        o = self.options
        settings = runner_settings(
            spec,
            max_stage_gb=o.max_stage_gb,
            grace_s=o.executor_grace_s,
            http_timeout_s=o.http_timeout_s,
            file_roots=None,
            memory_limit_gb=None,  # Slurm enforces the job's memory
            private_tmp=False,
            staging=staging_settings(o, self.config.hub_url),
            images=self.images.to_runner(),
        )
        # Executors see the job's SLURM_* variables, so `srun` works across the allocation.
        settings["inherit_env_prefixes"] = ["SLURM_"]
        settings["fence_poll_s"] = o.fence_poll_s
        return settings

    def _observe(self, handle: Handle, since: float) -> Seen:
        """The job's state in ``squeue`` (`SLURM_STATES`); gone once the controller forgot it."""
        job_id = str(handle.job_id)
        job = self._find(job_id, since)
        if job is None:
            return Seen(State.SYSTEM_ERROR)
        state = job_state(job)
        ours = SLURM_STATES.get(state, (State.SYSTEM_ERROR, ""))[0]
        if ours is State.QUEUED:
            why = job.get("state_reason") or ""
            return Seen(ours, f"Slurm job {job_id} {state.lower()} ({why})")
        if ours is State.RUNNING:
            return Seen(ours, f"Slurm job {job_id} running")
        return Seen(State.SYSTEM_ERROR, detail=job)

    def _settled(self, handle: Handle, record: dict[str, Any], since: float) -> JobStatus:
        """A final record, checked against Slurm once the job has left it: a runner that ended
        CANCELED although cpnet never asked was stopped by Slurm (time limit, node failure, an
        admin's scancel), and Slurm's reason wins; Slurm's elapsed time and CPUs go into the
        usage. While Slurm still runs the job (the runner is exiting) this reports RUNNING, for
        at most `settle_s` after the runner's last write."""
        work_dir, job_id = handle.work_dir, handle.job_id
        if record.get("slurm") is not None or job_id is None:
            return status_from_record(record)
        signalled = (
            record["state"] == State.CANCELED.value and not (work_dir / CANCEL_FILE).exists()
        )
        job = self._find(job_id, since)
        if job is not None and job_state(job) in PENDING_STATES | RUNNING_STATES:
            age = time.time() - mtime(work_dir / STATUS_FILE)
            if age < self.options.settle_s:  # (no reason: it would outlive this moment in the hub)
                return dataclasses.replace(
                    status_from_record(record), state=State.RUNNING, reason=None
                )
            if signalled:  # Slurm never settled: do not blame the task or report a cancel
                return add_slurm_record(work_dir, record, job_id, SlurmFinal(""), True)
            return status_from_record(record)
        final = self.cli.final(job_id) or (final_of_job(job) if job is not None else None)
        if final is None:
            if not signalled:
                return status_from_record(record)
            final = SlurmFinal(state="")
        if not signalled and _stopped_by_slurm(work_dir, record, final.state):
            signalled = True  # the executor died of the signal Slurm sent its node's jobs
        return add_slurm_record(work_dir, record, job_id, final, signalled)

    def _ended(self, handle: Handle, seen: Seen) -> JobStatus:
        """The job ended in Slurm (or the controller forgot it) but the runner recorded no final
        state (it never ran, was killed hard, or died): record Slurm's verdict."""
        work_dir, job_id, job = handle.work_dir, str(handle.job_id), seen.detail
        state = job_state(job) if job is not None else None
        wait_s = self.options.fence_wait
        # Whatever ended the job, a runner still alive must stop (its node may have lost only
        # slurmd, which would have killed it); after a node failure, wait for its word. (The
        # controller's state decides while it knows the job: no sacct call per poll meanwhile.)
        if state and not fenced(work_dir, job_id, state, wait_s):
            return JobStatus(State.RUNNING)  # (no reason: it would outlive this moment)
        final = self.cli.final(job_id) or (final_of_job(job) if job is not None else None)
        if final is None or not final.state:
            final = SlurmFinal(state=state or "")
        if not fenced(work_dir, job_id, final.state, wait_s):
            return JobStatus(State.RUNNING)
        if not final.state:
            return record_final(work_dir, State.SYSTEM_ERROR, "Slurm job vanished")
        mapped, reason = map_final(final.state, job_id, final.nodes)
        if final.state.startswith("CANCELLED") and (work_dir / CANCEL_FILE).exists():
            mapped, reason = State.CANCELED, f"Slurm job {job_id} cancelled"
        status = record_final(work_dir, mapped, reason)
        record = read_status(work_dir)
        if record is None:
            return status
        return add_slurm_record(work_dir, record, job_id, final, signalled=False)

    def _plainly_removable(self, handle: Handle) -> bool:
        return (
            super()._plainly_removable(handle) and not (handle.work_dir / UNANSWERED_FILE).exists()
        )

    def remove_work_dir(self, handle: Handle) -> None:
        """Remove it, unless its runner never answered the fence: should the node come back
        with that runner still running, the fence in this dir is what stops it."""
        if (handle.work_dir / UNANSWERED_FILE).exists():
            log.warning(
                "keeping %s: its runner did not answer the fence and may still be running on "
                "a node Slurm lost; remove the dir once the node is back or gone for good",
                handle.work_dir,
            )
            return
        super().remove_work_dir(handle)

    def _stop(self, handle: Handle) -> None:
        """``scancel`` (Slurm sends the runner SIGTERM; it records CANCELED)."""
        job_id = str(handle.job_id)
        try:
            self.cli.cancel(job_id)
        except BackendError:
            if self._find(job_id, time.monotonic()) is not None:
                raise


def make_transport(options: SlurmOptions) -> SlurmTransport:
    """The transport the options choose: ``transport = "cli"`` (default) or ``"rest"``."""
    if options.transport == "rest":
        return SlurmRest.from_options(options)
    return SlurmCli(options.slurm_conf, options.command_timeout_s)


def _positive_int(params: dict[str, str], key: str) -> int | None:
    """Backend parameter `key` (or ``slurm.<key>``) as a positive integer, None when absent."""
    value = params.get(f"slurm.{key}", params.get(key))
    if value is None:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"backend parameter {key}={value!r} is not a positive integer")
    return int(value)


def batch_script(work_dir: Path) -> str:
    """The batch script: runs the runner on `work_dir`; only the two quoted paths vary."""
    return f"#!/bin/sh\n{runner_command(sys.executable, work_dir)}\n"


SIGNAL_EXITS = frozenset({128 + 15, 128 + 9, -15, -9})  # SIGTERM, SIGKILL as exit codes


def _stopped_by_slurm(work_dir: Path, record: dict[str, Any], slurm_state: str) -> bool:
    """The runner recorded an executor failure, but the executor was killed by a signal (not by
    cpnet: no cancel file) in a job Slurm ended for a node failure or preemption: Slurm sent
    that signal, so Slurm's verdict (a system error, retried) is the attempt's. On a node
    going down the executor can die of slurmd's SIGTERM before the runner takes it as a cancel."""
    if record.get("state") != State.EXECUTOR_ERROR.value or (work_dir / CANCEL_FILE).exists():
        return False
    if not slurm_state.startswith(SLURM_STOPPED):
        return False
    logs = record.get("executor_logs") or []
    return bool(logs) and logs[-1].get("exit_code") in SIGNAL_EXITS
