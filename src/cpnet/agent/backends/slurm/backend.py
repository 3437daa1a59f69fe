"""The Slurm backend itself: submit, poll, cancel of attempts as batch jobs, through a
`SlurmTransport` (see the package's doc)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

from cpnet.agent.backends.base import (
    Backend,
    BackendConfig,
    BackendError,
    Job,
    JobStatus,
    PoolCapacity,
    PoolDecl,
    PoolLive,
)
from cpnet.agent.backends.runner_job import (
    runner_command,
    runner_settings,
    staging_env,
    staging_settings,
)
from cpnet.agent.backends.slurm.cli import SlurmCli
from cpnet.agent.backends.slurm.options import SlurmOptions
from cpnet.agent.backends.slurm.partitions import (
    nodes_by_partition,
    partition_free,
    partition_pool,
    queue_of,
)
from cpnet.agent.backends.slurm.rest import SlurmRest
from cpnet.agent.backends.slurm.transport import (
    PENDING_STATES,
    RUNNING_STATES,
    SlurmFinal,
    SlurmJobRequest,
    SlurmTransport,
    final_of_job,
    job_state,
)
from cpnet.agent.backends.workdir import (
    add_log,
    begin_cancel,
    mtime,
    read_id_file,
    read_record,
    status_from_record,
)
from cpnet.agent.runner import (
    CANCEL_FILE,
    FENCE_FILE,
    FENCED_FILE,
    JOB_FILE,
    STATUS_FILE,
    new_record,
    read_status,
    tail,
    write_atomic,
    write_json_atomic,
)
from cpnet.tasks.model import ExecutorLog, TaskSpec, Usage
from cpnet.tasks.states import State

log = logging.getLogger(__name__)

JOB_PREFIX = "cpnet-"
JOB_ID_FILE = "slurm_job_id"
SCRIPT_FILE = "job.sh"
SLURM_OUT = "slurm.out"
OUT_TAIL = 2048
GRES_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class SlurmBackend(Backend):
    """Runs each attempt as one Slurm batch job on the partition named by its pool."""

    name: ClassVar[str] = "slurm"
    Options = SlurmOptions
    options: SlurmOptions

    def __init__(self, config: BackendConfig, cli: SlurmTransport | None = None) -> None:
        super().__init__(config)
        self.work_root = config.work_root.resolve()
        self.work_root.mkdir(parents=True, exist_ok=True)
        self.cli = cli or make_transport(self.options)
        # The runner needs the staging credentials, in its job's environment.
        self.cli.export(staging_env(self.options, config.hub_token))
        self._lock = threading.RLock()
        self._pools: list[PoolDecl] | None = None
        self._parts: dict[str, dict[str, Any]] = {}
        self._node_cpus: dict[str, int] = {}  # the largest node's CPUs, per partition
        self._queue: tuple[float, dict[str, dict[str, Any]]] | None = None

    def work_dir_for(self, attempt_id: str) -> Path:
        return self.work_root / super().work_dir_for(attempt_id).name

    # ---- pools ---------------------------------------------------------------------------------

    def discover(self) -> list[PoolDecl]:
        """The declared pools (named like partitions), else one pool per partition."""
        with self._lock:
            if self._pools is None:
                self._pools = list(self.config.pools or self._partitions())
            return list(self._pools)

    def rediscover(self) -> list[PoolDecl]:
        """The partitions now (a partition added or removed, nodes joined); declared pools stay."""
        if self.config.pools:
            return self.discover()
        found = self._partitions()  # BackendError: the pools found before stay
        with self._lock:
            self._pools = found
        return list(found)

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
            jobs = self._jobs(fresh=True)
        except BackendError as exc:
            log.warning("Slurm does not answer, reporting no free capacity: %s", exc)
            jobs = self._queue[1] if self._queue is not None else {}
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

    def _jobs(self, fresh: bool = False) -> dict[str, dict[str, Any]]:
        """Every job the controller knows, by Slurm job id (cached for `squeue_cache_s`)."""
        with self._lock:
            now = time.monotonic()
            if fresh or self._queue is None or now - self._queue[0] > self.options.squeue_cache_s:
                self._queue = (now, {str(j.get("job_id")): j for j in self.cli.jobs()})
            return self._queue[1]

    def _find(self, job_id: str) -> dict[str, Any] | None:
        job = self._jobs().get(job_id)
        if job is None:  # maybe newer than the cached answer
            job = self._jobs(fresh=True).get(job_id)
        return job

    # ---- attempts ------------------------------------------------------------------------------

    def submit(self, job: Job) -> str:
        """Write job.json and the batch script, submit it once; the handle is the work dir."""
        with self._lock:
            work_dir = self.work_dir_for(job.attempt_id)
            handle = str(work_dir)
            if _read_id(work_dir) is not None:
                return handle
            job_name = JOB_PREFIX + job.attempt_id
            for jid, j in self._jobs(fresh=True).items():
                # submitted before writing slurm_job_id (by this agent: same name and work dir)
                if j.get("name") == job_name and j.get("current_working_directory") == handle:
                    write_atomic(work_dir / JOB_ID_FILE, jid + "\n")
                    return handle
            data: dict[str, Any] = Job(
                job.attempt_id, job.task_id, job.pool_name, job.spec, work_dir
            ).to_dict()
            data["runner"] = self._runner_settings(job.spec)
            script = work_dir / SCRIPT_FILE
            try:
                work_dir.mkdir(parents=True, exist_ok=True)
                write_json_atomic(work_dir / JOB_FILE, data)
                write_atomic(script, batch_script(work_dir))
                script.chmod(0o700)
            except OSError as exc:
                raise BackendError(f"cannot create the work dir {work_dir}: {exc}") from exc
            try:
                request = self.job_request(job, job_name, work_dir)
                job_id = self.cli.submit(request, script)
            except (BackendError, ValueError) as exc:
                record = new_record(State.SYSTEM_ERROR, f"Slurm refused the job: {exc}")
                write_json_atomic(work_dir / STATUS_FILE, record)
                write_atomic(work_dir / JOB_ID_FILE, "none\n")
                return handle
            write_atomic(work_dir / JOB_ID_FILE, job_id + "\n")
            self._queue = None
            return handle

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
        ntasks = None
        widest = self._node_cpus.get(job.pool_name, 0)
        if nodes is None and r.gpus == 0 and widest and cpus > widest:
            # More CPUs than any one node has (the pool's total allowed it): spread them, one
            # task per CPU on as few nodes as can hold them; --mem is per node.
            nodes, ntasks = math.ceil(cpus / widest), cpus
            mem_mb = math.ceil(mem_mb / nodes) if mem_mb else None
        return SlurmJobRequest(
            name=job_name,
            partition=job.pool_name,
            work_dir=work_dir,
            output=work_dir / SLURM_OUT,
            cpus_per_task=1 if ntasks else cpus,
            mem_mb=mem_mb,
            gres=gres,
            nodes=nodes,
            ntasks=ntasks,
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

    def poll(self, handle: str) -> JobStatus:
        """status.json when final (unless Slurm, not cpnet, stopped the runner); else the Slurm
        job's state (and the runner's progress)."""
        work_dir = self._work_dir_of(handle)
        record = read_status(work_dir)
        if record is not None and State(record["state"]).terminal:
            return self._settled(work_dir, record)
        job_id = _read_id(work_dir)
        if job_id is None:
            return JobStatus(State.SYSTEM_ERROR, f"no Slurm job for {handle}")
        job = self._find(job_id)
        record = read_status(work_dir)  # the runner may have finished meanwhile
        if record is not None and State(record["state"]).terminal:
            return self._settled(work_dir, record)
        if job is None:
            return self._ended(work_dir, job_id, None)
        state = job_state(job)
        if state in PENDING_STATES:
            why = job.get("state_reason") or ""
            return JobStatus(State.QUEUED, f"Slurm job {job_id} {state.lower()} ({why})")
        if state in RUNNING_STATES:
            if record is not None:
                return status_from_record(record)
            return JobStatus(State.RUNNING, f"Slurm job {job_id} running")
        return self._ended(work_dir, job_id, state)

    def _settled(self, work_dir: Path, record: dict[str, Any]) -> JobStatus:
        """A final record, checked against Slurm once the job has left it: a runner that ended
        CANCELED although cpnet never asked was stopped by Slurm (time limit, node failure, an
        admin's scancel), and Slurm's reason wins; Slurm's elapsed time and CPUs go into the
        usage. While Slurm still runs the job (the runner is exiting) this reports RUNNING, for
        at most `settle_s` after the runner's last write."""
        if record.get("slurm") is not None:
            return status_from_record(record)
        job_id = _read_id(work_dir)
        if job_id is None or job_id == "none":
            return status_from_record(record)
        signalled = (
            record["state"] == State.CANCELED.value and not (work_dir / CANCEL_FILE).exists()
        )
        job = self._find(job_id)
        if job is not None and job_state(job) in PENDING_STATES | RUNNING_STATES:
            age = time.time() - mtime(work_dir / STATUS_FILE)
            if age < self.options.settle_s:  # (no reason: it would outlive this moment in the hub)
                return dataclasses.replace(
                    status_from_record(record), state=State.RUNNING, reason=None
                )
            if signalled:  # Slurm never settled: do not blame the task or report a cancel
                return self._record_final(work_dir, record, job_id, SlurmFinal(""), True)
            return status_from_record(record)
        final = self.cli.final(job_id) or (final_of_job(job) if job is not None else None)
        if final is None:
            if not signalled:
                return status_from_record(record)
            final = SlurmFinal(state="")
        return self._record_final(work_dir, record, job_id, final, signalled)

    def _record_final(
        self,
        work_dir: Path,
        record: dict[str, Any],
        job_id: str,
        final: SlurmFinal,
        signalled: bool,
    ) -> JobStatus:
        record["slurm"] = {
            "job_id": job_id,
            "state": final.state,
            "elapsed_s": final.elapsed_s,
            "cpus": final.cpus,
            "nodes": final.nodes,
        }
        if final.elapsed_s is not None:
            usage = dict(record.get("usage") or {})
            usage["wall_s"] = final.elapsed_s  # Slurm's own record of the job's run
            if final.cpus:
                usage["alloc_cpu_s"] = final.elapsed_s * final.cpus
            record["usage"] = usage
            add_log(
                record,
                f"slurm: job {job_id} {final.state or '?'}, elapsed {final.elapsed_s:.0f} s "
                f"on {final.cpus or '?'} CPU(s), nodes {final.nodes or '?'}",
            )
        if signalled:  # the runner took Slurm's signal for a cancel; Slurm knows better
            add_log(record, f"the runner recorded CANCELED: {record.get('reason')}")
            state, reason = map_final(final.state, job_id, final.nodes)
            record["state"], record["reason"] = state.value, reason
        with contextlib.suppress(OSError):
            write_json_atomic(work_dir / STATUS_FILE, record)
        return status_from_record(record)

    def _ended(self, work_dir: Path, job_id: str, state: str | None) -> JobStatus:
        """The job ended in Slurm but the runner recorded no final state (it never ran, was
        killed hard, or died): record Slurm's verdict."""
        # Whatever ended the job, a runner still alive must stop (its node may have lost only
        # slurmd, which would have killed it); after a node failure, wait for its word. (The
        # controller's state decides while it knows the job: no sacct call per poll meanwhile.)
        if state and not self._fenced(work_dir, job_id, state):
            return JobStatus(State.RUNNING)  # (no reason: it would outlive this moment)
        job = self._find(job_id)
        final = self.cli.final(job_id) or (final_of_job(job) if job is not None else None)
        if final is None or not final.state:
            final = SlurmFinal(state=state or "")
        if not self._fenced(work_dir, job_id, final.state):
            return JobStatus(State.RUNNING)
        if not final.state:
            return self._final(work_dir, State.SYSTEM_ERROR, "Slurm job vanished")
        mapped, reason = map_final(final.state, job_id, final.nodes)
        if final.state.startswith("CANCELLED") and (work_dir / CANCEL_FILE).exists():
            mapped, reason = State.CANCELED, f"Slurm job {job_id} cancelled"
        status = self._final(work_dir, mapped, reason)
        record = read_status(work_dir)
        if record is None:
            return status
        return self._record_final(work_dir, record, job_id, final, signalled=False)

    def _fenced(self, work_dir: Path, job_id: str, slurm_state: str) -> bool:
        """Leave the fence for a runner that may outlive its job; False while the attempt must
        wait for it: after a node failure, until the runner wrote its account of stopping or
        `fence_wait_s` passed since the fence (a dead machine never answers)."""
        fence = work_dir / FENCE_FILE
        if not fence.exists():
            what = f"Slurm job {job_id} ended {slurm_state or 'without a record'}"
            if read_status(work_dir) is not None:
                log.warning("%s before its runner finished: fencing %s", what, work_dir)
            with contextlib.suppress(OSError):
                write_atomic(fence, what + "\n")
        if not slurm_state.startswith("NODE_FAIL") or read_status(work_dir) is None:
            return True  # slurmd killed the job's processes, or the runner never started
        account = read_record(work_dir / FENCED_FILE)
        if account is not None and State(account["state"]).terminal:
            return True
        return time.time() - mtime(fence) >= self.options.fence_wait

    def _final(self, work_dir: Path, state: State, reason: str) -> JobStatus:
        """Record a final state the runner could not (it never ran, was killed, or died); a
        fenced runner's own account gives the executor logs and measured usage."""
        record = read_status(work_dir) or new_record(state)
        account = read_record(work_dir / FENCED_FILE)
        if account is not None:
            for key in ("executor_logs", "usage", "bytes_in", "system_logs"):
                record[key] = account.get(key, record.get(key))
            add_log(
                record,
                f"after the fence the runner recorded {account.get('state')}: "
                f"{account.get('reason')}",
            )
        elif "NODE_FAIL" in reason and read_status(work_dir) is not None:
            add_log(record, "the runner did not answer the fence: its node may be gone")
        record["state"] = state.value
        record["reason"] = reason
        if state is State.SYSTEM_ERROR:
            text = tail(work_dir / SLURM_OUT, OUT_TAIL).strip()
            if text:
                add_log(record, f"{SLURM_OUT}: {text}")
        with contextlib.suppress(OSError):
            write_json_atomic(work_dir / STATUS_FILE, record)
        return status_from_record(record)

    def cancel(self, handle: str) -> None:
        """Cancel the Slurm job (Slurm sends the runner SIGTERM; it records CANCELED)."""
        work_dir = self._work_dir_of(handle)
        if not begin_cancel(work_dir):
            return
        job_id = _read_id(work_dir)
        if job_id is None or job_id == "none":
            return
        try:
            self.cli.cancel(job_id)
        except BackendError:
            if self._find(job_id) is not None:
                raise
        with self._lock:
            self._queue = None

    def logs(self, handle: str) -> list[ExecutorLog]:
        return self.poll(handle).executor_logs

    def usage(self, handle: str) -> Usage | None:
        return self.poll(handle).usage

    def forget(self, handle: str) -> None:
        """Nothing to free: the work dir stays for inspection."""


def map_final(slurm_state: str, job_id: str, nodes: str | None = None) -> tuple[State, str]:
    """A finished Slurm job's state → the attempt's final state and a reason people can read
    (naming the job's `nodes` after a node failure).

    Failures of the machine (node failure, preemption, boot failure) are SYSTEM_ERROR, so the
    hub retries the task elsewhere; the task's own limits (time, memory) are EXECUTOR_ERROR.
    """
    state = slurm_state.split()[0] if slurm_state.split() else ""
    what = {
        "TIMEOUT": (State.EXECUTOR_ERROR, "time limit exceeded"),
        "DEADLINE": (State.EXECUTOR_ERROR, "deadline reached"),
        "OUT_OF_MEMORY": (State.EXECUTOR_ERROR, "out of memory (Slurm's memory limit)"),
        "NODE_FAIL": (State.SYSTEM_ERROR, "node failure"),
        "BOOT_FAIL": (State.SYSTEM_ERROR, "node boot failure"),
        "PREEMPTED": (State.SYSTEM_ERROR, "preempted"),
        "CANCELLED": (State.SYSTEM_ERROR, "cancelled in Slurm, not by cpnet"),
        "FAILED": (State.SYSTEM_ERROR, "the batch script failed"),
        "COMPLETED": (State.SYSTEM_ERROR, "the runner was stopped before it finished"),
    }.get(state)
    if what is None:
        return State.SYSTEM_ERROR, f"Slurm job {job_id} ended {state or 'without a record'}"
    where = f" on {nodes}" if nodes and state in ("NODE_FAIL", "BOOT_FAIL") else ""
    return what[0], f"{what[1]}{where} (Slurm job {job_id} {state})"


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


def _read_id(work_dir: Path) -> str | None:
    return read_id_file(work_dir, JOB_ID_FILE)
