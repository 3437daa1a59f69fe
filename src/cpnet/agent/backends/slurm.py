"""The Slurm backend: one pool per partition; each attempt is one ``sbatch`` job running the runner.

Everything about an attempt lives in its work dir ``work_root/<attempt_id>/`` (the handle), as with
the local backend: ``job.json`` (what to run, read by ``python -m cpnet.agent.runner``),
``job.sh`` (the batch script: only ``exec <python> -m cpnet.agent.runner <work dir>``, both paths
``shlex``-quoted; no task field ever reaches it), ``slurm_job_id`` (the Slurm job id),
``slurm.out`` (the batch step's output), ``status.json`` (what the runner last recorded).

Jobs are named ``cpnet-<attempt_id>``, so a resubmission after a crash between ``sbatch`` and
writing ``slurm_job_id`` finds the job in ``squeue`` instead of starting it twice.

All talk to Slurm goes through `SlurmCli` (``sinfo``/``squeue`` ``--json``, ``sbatch``,
``scancel``, ``sacct -c``), argv lists only, never a shell; a slurmrestd transport can replace it.

Options (all strings, in ``BackendConfig.options``):

- ``slurm_conf``: the ``SLURM_CONF`` for the Slurm clients (default: the agent's environment)
- ``pool_type``: the type of discovered pools (default ``supercomputing``)
- ``executor_grace_s``: seconds the runner gives a canceled executor before SIGKILL (default 5)
- ``max_stage_gb``: staging limit per direction when a task gives no ``disk_gb`` (default 10 GiB)
- ``http_timeout_s``: per network operation while staging (default 60)
- ``squeue_cache_s``: how long one ``squeue`` answer serves polls (default 1)
- ``command_timeout_s``: timeout of one Slurm client call (default 30)

A task's ``backend_parameters`` may set ``nodes`` (``--nodes``, a positive integer).
"""

from __future__ import annotations

import contextlib
import json
import math
import shlex
import subprocess
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
from cpnet.agent.backends.local import runner_env, runner_settings, status_from_record
from cpnet.agent.runner import (
    CANCEL_FILE,
    DEFAULT_GRACE_S,
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

JOB_PREFIX = "cpnet-"
JOB_ID_FILE = "slurm_job_id"
SCRIPT_FILE = "job.sh"
SLURM_OUT = "slurm.out"
GIB = 1024**3
OUT_TAIL = 2048

PENDING_STATES = {"PENDING", "CONFIGURING", "REQUEUED", "RESIZING", "SUSPENDED"}
RUNNING_STATES = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"}
CANCELED_STATES = {"CANCELLED"}
# Node states (sinfo's lower-case first word) whose CPUs cannot take jobs.
UNUSABLE = {"down", "drain", "drained", "draining", "fail", "failing", "future", "unknown"}


class SlurmCli:
    """Runs the Slurm client commands; the only place this backend shells out."""

    def __init__(self, slurm_conf: str | None = None, timeout_s: float = 30.0) -> None:
        self.env = runner_env()
        if slurm_conf:
            self.env["SLURM_CONF"] = slurm_conf
        self.timeout_s = timeout_s

    def run(self, *argv: str) -> str:
        """stdout of one command; BackendError when it fails or cannot start."""
        try:
            proc = subprocess.run(
                list(argv),
                env=self.env,
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BackendError(f"{argv[0]}: {exc}") from exc
        if proc.returncode != 0:
            raise BackendError(f"{argv[0]} exit {proc.returncode}: {proc.stderr.strip()[:500]}")
        return proc.stdout

    def sinfo(self) -> list[dict[str, Any]]:
        """The nodes ``sinfo --json`` lists."""
        return list(json.loads(self.run("sinfo", "--json")).get("nodes") or [])

    def squeue(self) -> list[dict[str, Any]]:
        """The jobs ``squeue --json`` lists (finished ones too, while Slurm still knows them)."""
        return list(json.loads(self.run("squeue", "--json")).get("jobs") or [])

    def sbatch(self, args: list[str], script: Path) -> str:
        """Submit `script`; the Slurm job id."""
        out = self.run("sbatch", "--parsable", *args, str(script))
        return out.strip().split(";")[0]

    def scancel(self, job_id: str) -> None:
        self.run("scancel", job_id)

    def sacct_state(self, job_id: str) -> str | None:
        """The job's final state from the jobcomp file (``sacct -c``), if recorded."""
        try:
            out = self.run("sacct", "-c", "-n", "-P", "-j", job_id, "-o", "state")
        except BackendError:
            return None
        lines = [x.strip() for x in out.splitlines() if x.strip()]
        return lines[-1] if lines else None


def _gres_gpus(gres: str) -> int:
    """GPU count from a node's GRES string such as ``gpu:a100:2(S:0-1),other:1``."""
    total = 0
    for item in (gres or "").split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and len(parts) >= 2:
            with contextlib.suppress(ValueError):
                total += int(parts[-1])
    return total


def _usable(node: dict[str, Any]) -> bool:
    state = str(node.get("state") or "").lower()
    flags = {str(f).lower() for f in node.get("state_flags") or []}
    return state.split("+")[0] not in UNUSABLE and not flags & UNUSABLE


def _job_state(job: dict[str, Any]) -> str:
    state = job.get("job_state")
    if isinstance(state, list):  # newer data_parser versions
        state = state[0] if state else ""
    return str(state or "")


class SlurmBackend(Backend):
    """Runs each attempt as one Slurm batch job on the partition named by its pool."""

    name: ClassVar[str] = "slurm"

    def __init__(self, config: BackendConfig, cli: SlurmCli | None = None) -> None:
        super().__init__(config)
        self.work_root = config.work_root.resolve()
        self.work_root.mkdir(parents=True, exist_ok=True)
        opts = config.options
        self.cli = cli or SlurmCli(
            opts.get("slurm_conf") or None, float(opts.get("command_timeout_s", 30.0))
        )
        self.pool_type = opts.get("pool_type", "supercomputing")
        self.executor_grace_s = float(opts.get("executor_grace_s", DEFAULT_GRACE_S))
        self.max_stage_bytes = int(float(opts.get("max_stage_gb", 10.0)) * GIB)
        self.http_timeout_s = float(opts.get("http_timeout_s", 60.0))
        self.squeue_cache_s = float(opts.get("squeue_cache_s", 1.0))
        self._lock = threading.RLock()
        self._pools: list[PoolDecl] | None = None
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

    def _partitions(self) -> list[PoolDecl]:
        parts: dict[str, list[dict[str, Any]]] = {}
        for node in self.cli.sinfo():
            for p in node.get("partitions") or []:
                parts.setdefault(str(p), []).append(node)
        pools = []
        for name in sorted(parts):
            nodes = parts[name]
            gpus = sum(_gres_gpus(str(n.get("gres") or "")) for n in nodes)
            archs = sorted({str(n.get("architecture") or "") for n in nodes} - {""})
            pools.append(
                PoolDecl(
                    name=name,
                    type=self.pool_type,
                    total=PoolCapacity(
                        cpu_cores=float(sum(int(n.get("cpus") or 0) for n in nodes)),
                        ram_gb=round(sum(int(n.get("real_memory") or 0) for n in nodes) / 1024, 3),
                        disk_gb=round(
                            sum(int(n.get("temporary_disk") or 0) for n in nodes) / 1024, 3
                        ),
                        gpus=gpus,
                    ),
                    cpu_model=archs[0] if archs else "unknown",
                    gpu_model="gpu" if gpus else None,
                    gpu_memory_gb=None,
                    labels={"scheduler": "slurm", "partition": name},
                )
            )
        return pools

    def live(self) -> list[PoolLive]:
        """Free CPUs and memory of each partition's usable nodes; cpnet jobs queued/running."""
        nodes = self.cli.sinfo()
        jobs = self._jobs(fresh=True)
        result = []
        for pool in self.discover():
            members = [n for n in nodes if pool.name in (n.get("partitions") or [])]
            cpus = sum(int(n.get("idle_cpus") or 0) for n in members if _usable(n))
            mem_mib = sum(
                max(0, int(n.get("real_memory") or 0) - int(n.get("alloc_memory") or 0))
                for n in members
                if _usable(n)
            )
            mine = [j for j in jobs.values() if j.get("partition") == pool.name]
            free = PoolCapacity(
                cpu_cores=float(cpus),
                ram_gb=round(mem_mib / 1024, 3),
                disk_gb=pool.total.disk_gb,
                gpus=pool.total.gpus if cpus else 0,
            )
            result.append(
                PoolLive(
                    name=pool.name,
                    free=free if members else pool.total,
                    queue_length=sum(1 for j in mine if _job_state(j) in PENDING_STATES),
                    running=sum(1 for j in mine if _job_state(j) in RUNNING_STATES),
                )
            )
        return result

    def _jobs(self, fresh: bool = False) -> dict[str, dict[str, Any]]:
        """cpnet's jobs in squeue by Slurm job id (cached for `squeue_cache_s`)."""
        with self._lock:
            now = time.monotonic()
            if fresh or self._queue is None or now - self._queue[0] > self.squeue_cache_s:
                jobs = {
                    str(j.get("job_id")): j
                    for j in self.cli.squeue()
                    if str(j.get("name") or "").startswith(JOB_PREFIX)
                }
                self._queue = (now, jobs)
            return self._queue[1]

    def _find(self, job_id: str) -> dict[str, Any] | None:
        job = self._jobs().get(job_id)
        if job is None:  # maybe newer than the cached answer
            job = self._jobs(fresh=True).get(job_id)
        return job

    # ---- attempts ------------------------------------------------------------------------------

    def submit(self, job: Job) -> str:
        """Write job.json and the batch script, ``sbatch`` it once; the handle is the work dir."""
        with self._lock:
            work_dir = self.work_dir_for(job.attempt_id)
            handle = str(work_dir)
            if _read_id(work_dir) is not None:
                return handle
            job_name = JOB_PREFIX + job.attempt_id
            for jid, j in self._jobs(fresh=True).items():
                if j.get("name") == job_name:  # submitted before writing slurm_job_id
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
                args = self._sbatch_args(job, job_name, work_dir)
                job_id = self.cli.sbatch(args, script)
            except (BackendError, ValueError) as exc:
                record = new_record(State.SYSTEM_ERROR, f"sbatch refused the job: {exc}")
                write_json_atomic(work_dir / STATUS_FILE, record)
                write_atomic(work_dir / JOB_ID_FILE, "none\n")
                return handle
            write_atomic(work_dir / JOB_ID_FILE, job_id + "\n")
            self._queue = None
            return handle

    def _sbatch_args(self, job: Job, job_name: str, work_dir: Path) -> list[str]:
        r = job.spec.resources
        args = [
            "--job-name",
            job_name,
            "--partition",
            job.pool_name,
            "--chdir",
            str(work_dir),
            "--output",
            str(work_dir / SLURM_OUT).replace("%", "%%"),
            "--cpus-per-task",
            str(max(1, math.ceil(r.cpu_cores - 1e-9))),
        ]
        if r.ram_gb > 0:
            args += ["--mem", str(max(1, math.ceil(r.ram_gb * 1024)))]
        if r.gpus > 0:
            args += ["--gres", f"gpu:{r.gpus}"]
        nodes = r.backend_parameters.get("nodes")
        if nodes is not None:
            if not nodes.isdigit() or int(nodes) < 1:
                raise ValueError(f"backend parameter nodes={nodes!r} is not a positive integer")
            args += ["--nodes", str(int(nodes))]
        return args

    def _runner_settings(self, spec: TaskSpec) -> dict[str, Any]:
        return runner_settings(
            spec,
            max_stage_bytes=self.max_stage_bytes,
            grace_s=self.executor_grace_s,
            http_timeout_s=self.http_timeout_s,
            file_roots=None,
            memory_limit_gb=None,  # Slurm enforces the job's memory
            private_tmp=False,
            images=self.images.to_runner(),
        )

    def poll(self, handle: str) -> JobStatus:
        """status.json when final; else the Slurm job's state (and the runner's progress)."""
        work_dir = self._work_dir_of(handle)
        record = read_status(work_dir)
        if record is not None and State(record["state"]).terminal:
            return status_from_record(record)
        job_id = _read_id(work_dir)
        if job_id is None:
            return JobStatus(State.SYSTEM_ERROR, f"no Slurm job for {handle}")
        job = self._find(job_id)
        record = read_status(work_dir)  # the runner may have finished meanwhile
        if record is not None and State(record["state"]).terminal:
            return status_from_record(record)
        if job is None:
            state = self.cli.sacct_state(job_id)
            return self._final(
                work_dir,
                State.CANCELED if state and state.startswith("CANCELLED") else State.SYSTEM_ERROR,
                f"Slurm job {job_id} ended {state}" if state else "Slurm job vanished",
            )
        state = _job_state(job)
        if state in PENDING_STATES:
            why = job.get("state_reason") or ""
            return JobStatus(State.QUEUED, f"Slurm job {job_id} {state.lower()} ({why})")
        if state in RUNNING_STATES:
            if record is not None:
                return status_from_record(record)
            return JobStatus(State.RUNNING, f"Slurm job {job_id} running")
        if state in CANCELED_STATES:
            return self._final(work_dir, State.CANCELED, f"Slurm job {job_id} cancelled")
        return self._final(work_dir, State.SYSTEM_ERROR, f"Slurm job {job_id} ended {state}")

    def _final(self, work_dir: Path, state: State, reason: str) -> JobStatus:
        """Record a final state the runner could not (it never ran, was killed, or died)."""
        record = read_status(work_dir) or new_record(state)
        record["state"] = state.value
        record["reason"] = reason
        if state is State.SYSTEM_ERROR:
            text = tail(work_dir / SLURM_OUT, OUT_TAIL).strip()
            if text:
                record.setdefault("system_logs", []).append(f"{SLURM_OUT}: {text}")
        with contextlib.suppress(OSError):
            write_json_atomic(work_dir / STATUS_FILE, record)
        return status_from_record(record)

    def cancel(self, handle: str) -> None:
        """``scancel`` the job (Slurm sends the runner SIGTERM; it records CANCELED)."""
        work_dir = self._work_dir_of(handle)
        record = read_status(work_dir)
        if record is not None and State(record["state"]).terminal:
            return
        with contextlib.suppress(OSError):
            write_atomic(work_dir / CANCEL_FILE, "")
        job_id = _read_id(work_dir)
        if job_id is None:
            return
        try:
            self.cli.scancel(job_id)
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

    def _work_dir_of(self, handle: str) -> Path:
        work_dir = Path(handle)
        if work_dir.parent != self.work_root:
            raise BackendError(f"handle {handle!r} is not a work dir of this backend")
        return work_dir


def batch_script(work_dir: Path) -> str:
    """The batch script: runs the runner on `work_dir`; only the two quoted paths vary."""
    python = shlex.quote(sys.executable)
    return f"#!/bin/sh\nexec {python} -m cpnet.agent.runner {shlex.quote(str(work_dir))}\n"


def _read_id(work_dir: Path) -> str | None:
    """The Slurm job id recorded at submit ("none" when sbatch refused), else None."""
    try:
        text = (work_dir / JOB_ID_FILE).read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return text or None


__all__ = ["SlurmBackend", "SlurmCli", "batch_script"]
