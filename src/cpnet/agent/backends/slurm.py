"""The Slurm backend: one pool per partition; each attempt is one ``sbatch`` job running the runner.

Everything about an attempt lives in its work dir ``work_root/<attempt_id>/`` (the handle), as with
the local backend: ``job.json`` (what to run, read by ``python -m cpnet.agent.runner``),
``job.sh`` (the batch script: only ``exec <python> -m cpnet.agent.runner <work dir>``, both paths
``shlex``-quoted; no task field ever reaches it), ``slurm_job_id`` (the Slurm job id),
``slurm.out`` (the batch step's output), ``status.json`` (what the runner last recorded).

Jobs are named ``cpnet-<attempt_id>``, so a resubmission after a crash between ``sbatch`` and
writing ``slurm_job_id`` finds the job in ``squeue`` instead of starting it twice.

All talk to Slurm goes through a `SlurmTransport`: `SlurmCli` (``sinfo``/``squeue --json``,
``scontrol -o show partition``, ``sbatch``, ``scancel``, ``sacct -c``; argv lists only, never a
shell) or `SlurmRest` (slurmrestd with a JWT, in ``slurm_rest.py``).

Pools and live state come from Slurm itself: nodes, CPUs, memory, GRES GPUs (the GPU model is the
GRES type: ``gpu:a100:2``) per partition; free CPUs/memory/GPUs of usable nodes in UP partitions,
and the partition's whole queue (every user's pending and running jobs) in each heartbeat.

How a job ended: the runner's status.json, unless the runner was stopped by Slurm rather than by
cpnet (time limit → EXECUTOR_ERROR "time limit exceeded", node failure or preemption →
SYSTEM_ERROR so that the hub retries elsewhere); see `map_final`. Jobs are submitted
``--no-requeue``: retrying is the hub's job. Usage adds Slurm's own record of the job (the job
completion log via ``sacct -c``, else the controller's job record): ``wall_s`` is Slurm's elapsed
time and ``alloc_cpu_s`` elapsed × allocated CPUs; ``cpu_s`` and ``peak_rss_mb`` stay the
runner's measurement of the executors.

Options (all strings, in ``BackendConfig.options``):

- ``transport``: ``cli`` (default) or ``rest`` (then ``slurmrestd_url``, ``slurm_user``, and the
  token in ``slurm_jwt`` or the environment variable named by ``slurm_jwt_env``, default
  ``SLURM_JWT``; see slurm_rest.py)
- ``slurm_conf``: the ``SLURM_CONF`` for the Slurm clients (default: the agent's environment)
- ``pool_type``: the type of discovered pools (default ``supercomputing``)
- ``executor_grace_s``: seconds the runner gives a canceled executor before SIGKILL (default 5)
- ``max_stage_gb``: staging limit per direction when a task gives no ``disk_gb`` (default 10 GiB)
- ``http_timeout_s``: per network operation while staging (default 60)
- ``squeue_cache_s``: how long one ``squeue`` answer serves polls (default 1)
- ``command_timeout_s``: timeout of one Slurm client call (default 30)
- ``time_limit_factor``: ``--time`` is this × the task's ``expected_runtime_s`` (at least 1
  minute, at most the partition's MaxTime); default ``0``: no ``--time`` (the partition's
  DefaultTime applies), since ``expected_runtime_s`` is an estimate with a default of its own and
  a guess must not kill a long job
- ``settle_s``: how long a finished runner's job may stay running in Slurm before its record is
  taken as is (default 30)
- ``fence_poll_s``: how often the runner looks for the fence (default 1; see below)
- ``fence_wait_s``: how long after a NODE_FAIL the attempt waits for the runner's word that it
  stopped before it is recorded final anyway (default ``executor_grace_s`` + 10)

When a node dies: a job whose node stops answering ends NODE_FAIL once slurmctld gives up on the
node (``SlurmdTimeout``), but if only slurmd died, the job's slurmstepd, the runner and its
executor live on, unseen by Slurm, until slurmd comes back. So whenever Slurm ends a job the
runner had not finished, the backend leaves a fence (``fence`` in the work dir, which the node
shares): the runner watches for it, stops its executor as on a cancel, stages nothing out and
writes its account to ``status.fenced.json`` instead of status.json. After a NODE_FAIL the
attempt stays RUNNING until that account is there (or ``fence_wait_s`` passed: the machine is
really gone), so the hub's retry never runs beside the orphan; the record then takes the
orphan's executor logs and CPU time, Slurm's state and elapsed time.

A task's ``backend_parameters`` may set (each also as ``slurm.<key>``):

- ``nodes``: ``--nodes`` (a positive integer). The runner and the executors run on the first
  node (the batch host); executors see the job's ``SLURM_*`` variables, so ``srun`` in a command
  runs across the whole allocation. The result is the batch step's.
- ``time_limit_s``: the job's time limit in seconds (Slurm rounds up to whole minutes).

A task asking for more CPUs than the partition's largest node has (and no ``nodes``, no GPUs)
is spread over several nodes: ``--nodes=ceil(cpus / node CPUs) --ntasks=<cpus>
--cpus-per-task=1``, ``--mem`` divided among the nodes; its executors use ``srun`` to reach them.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import json
import logging
import math
import re
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
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
from cpnet.agent.backends.local import (
    begin_cancel,
    read_id_file,
    runner_env,
    runner_settings,
    staging_env,
    staging_settings,
    status_from_record,
)
from cpnet.agent.runner import (
    CANCEL_FILE,
    DEFAULT_GRACE_S,
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
log = logging.getLogger(__name__)
GRES_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
UNUSABLE = {"down", "drain", "drained", "draining", "fail", "failing", "future", "unknown"}


@dataclass(frozen=True, slots=True)
class SlurmJobRequest:
    """What the backend asks Slurm for one attempt, whatever the transport renders it as."""

    name: str
    partition: str
    work_dir: Path
    output: Path
    cpus_per_task: int
    mem_mb: int | None = None
    gres: str | None = None
    nodes: int | None = None
    ntasks: int | None = None  # set when the CPUs are spread over several nodes
    time_min: int | None = None

    def sbatch_args(self) -> list[str]:
        """The ``sbatch`` options (argv items, never shell text)."""
        args = [
            "--job-name",
            self.name,
            "--partition",
            self.partition,
            "--chdir",
            str(self.work_dir),
            "--output",
            str(self.output).replace("%", "%%"),
            "--cpus-per-task",
            str(self.cpus_per_task),
            # A node failure ends the attempt; the hub retries it elsewhere (never Slurm too).
            "--no-requeue",
        ]
        if self.mem_mb is not None:
            args += ["--mem", str(self.mem_mb)]
        if self.gres:
            args += ["--gres", self.gres]
        if self.nodes is not None:
            args += ["--nodes", str(self.nodes)]
        if self.ntasks is not None:
            args += ["--ntasks", str(self.ntasks)]
        if self.time_min is not None:
            args += ["--time", str(self.time_min)]
        return args


@dataclass(frozen=True, slots=True)
class SlurmFinal:
    """A finished job as Slurm recorded it (jobcomp file, or the controller's job record)."""

    state: str  # COMPLETED, FAILED, CANCELLED, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY, ...
    elapsed_s: float | None = None
    cpus: int | None = None
    nodes: str | None = None


class SlurmTransport(abc.ABC):
    """How the backend talks to Slurm: the CLI (`SlurmCli`) or slurmrestd (`SlurmRest`).

    Node and job dicts have the shape of ``sinfo --json`` / ``squeue --json`` (Slurm's OpenAPI
    data_parser v0.0.38, which slurmrestd answers with too).
    """

    @abc.abstractmethod
    def nodes(self) -> list[dict[str, Any]]:
        """Every node: name, partitions, cpus, idle_cpus, real_memory, alloc_memory, gres, ..."""

    @abc.abstractmethod
    def partitions(self) -> dict[str, dict[str, Any]]:
        """Each partition's ``state`` (UP, DOWN, DRAIN, INACTIVE) and ``max_time_min`` (None:
        unlimited)."""

    @abc.abstractmethod
    def jobs(self) -> list[dict[str, Any]]:
        """The jobs the controller knows (finished ones too, for ``MinJobAge``)."""

    @abc.abstractmethod
    def submit(self, request: SlurmJobRequest, script: Path) -> str:
        """Submit the batch script at `script`; the Slurm job id."""

    @abc.abstractmethod
    def cancel(self, job_id: str) -> None:
        """Cancel the job (Slurm signals its processes)."""

    @abc.abstractmethod
    def final(self, job_id: str) -> SlurmFinal | None:
        """How the finished job ended, from Slurm's records; None when not (yet) recorded."""


class SlurmCli(SlurmTransport):
    """The Slurm client commands; the only place this backend shells out (argv lists only).

    22.05 has ``--json`` for ``sinfo`` and ``squeue`` but not for ``scontrol``, so partitions
    come from ``scontrol -o show partition`` (one ``key=value`` line each), and finished jobs from
    the job completion log through ``sacct -c`` (no slurmdbd needed).
    """

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

    def nodes(self) -> list[dict[str, Any]]:
        return list(json.loads(self.run("sinfo", "--json")).get("nodes") or [])

    def partitions(self) -> dict[str, dict[str, Any]]:
        return parse_scontrol_partitions(self.run("scontrol", "-o", "show", "partition"))

    def jobs(self) -> list[dict[str, Any]]:
        return list(json.loads(self.run("squeue", "--json")).get("jobs") or [])

    def submit(self, request: SlurmJobRequest, script: Path) -> str:
        out = self.run("sbatch", "--parsable", *request.sbatch_args(), str(script))
        return out.strip().split(";")[0]

    def cancel(self, job_id: str) -> None:
        self.run("scancel", job_id)

    def final(self, job_id: str) -> SlurmFinal | None:
        try:
            out = self.run(
                "sacct", "-c", "-n", "-P", "-j", job_id, "-o", "state,elapsedraw,ncpus,nodelist"
            )
        except BackendError:
            return None
        return parse_sacct_line(out)


def parse_sacct_line(out: str) -> SlurmFinal | None:
    """The last record of ``sacct -c -n -P -o state,elapsedraw,ncpus,nodelist`` output."""
    lines = [x.strip() for x in out.splitlines() if x.strip()]
    if not lines:
        return None
    fields = [*lines[-1].split("|"), "", "", ""][:4]
    state = fields[0].split()[0] if fields[0].split() else ""
    if not state:
        return None
    return SlurmFinal(
        state=state,
        elapsed_s=float(fields[1]) if fields[1].isdigit() else None,
        cpus=int(fields[2]) if fields[2].isdigit() else None,
        nodes=fields[3] or None,
    )


def parse_scontrol_partitions(text: str) -> dict[str, dict[str, Any]]:
    """``scontrol -o show partition`` → {name: {"state", "max_time_min", "nodes"}}."""
    result: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        name = fields.get("PartitionName")
        if not name:
            continue
        result[name] = {
            "state": fields.get("State", "UP").upper(),
            "max_time_min": parse_slurm_minutes(fields.get("MaxTime", "UNLIMITED")),
            "nodes": fields.get("Nodes", ""),
        }
    return result


def parse_slurm_minutes(text: str) -> int | None:
    """Slurm's time format (``minutes``, ``[days-]hours:minutes:seconds``, ``UNLIMITED``) in
    whole minutes, rounded up as Slurm does; None for unlimited or unparsable."""
    text = text.strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not m:
        return None
    days = int(m.group(1) or 0)
    parts = [int(x) for x in m.groups()[1:] if x is not None]
    if m.group(1) is not None:  # days-hours[:minutes[:seconds]]
        parts += [0] * (3 - len(parts))
        h, mi, sec = parts
    elif len(parts) == 3:
        h, mi, sec = parts
    elif len(parts) == 2:  # minutes:seconds
        h, mi, sec = 0, parts[0], parts[1]
    else:
        h, mi, sec = 0, parts[0], 0
    return days * 1440 + h * 60 + mi + (1 if sec else 0)


def parse_gres(gres: str) -> dict[str | None, int]:
    """GPUs by model from a GRES string: ``gpu:a100:2(S:0-1),gpu:v100:1,mps:100`` →
    ``{"a100": 2, "v100": 1}``; ``gpu:4`` → ``{None: 4}``; ``(null)`` / ``""`` → ``{}``.
    Also reads ``gres_used`` strings (``gpu:a100:1(IDX:0),mps:0``)."""
    result: dict[str | None, int] = {}
    for item in re.split(r",(?![^(]*\))", gres or ""):
        parts = item.split("(")[0].strip().split(":")
        if parts[0] != "gpu" or len(parts) < 2:
            continue
        count_text = parts[-1]
        m = re.fullmatch(r"(\d+)([KMGT]?)", count_text)
        if not m:
            if len(parts) == 2:  # "gpu:a100" means one of that type
                result[parts[1]] = result.get(parts[1], 0) + 1
            continue
        count = (
            int(m.group(1))
            * {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}[m.group(2)]
        )
        model = parts[1] if len(parts) >= 3 and parts[1] else None
        result[model] = result.get(model, 0) + count
    return result


def _gres_gpus(gres: str) -> int:
    """GPU count from a node's GRES string such as ``gpu:a100:2(S:0-1),other:1``."""
    return sum(parse_gres(gres).values())


def _usable(node: dict[str, Any]) -> bool:
    state = str(node.get("state") or "").lower()
    flags = {str(f).lower() for f in node.get("state_flags") or []}
    return state.split("+")[0] not in UNUSABLE and not flags & UNUSABLE


def _job_state(job: dict[str, Any]) -> str:
    state = job.get("job_state")
    if isinstance(state, list):  # newer data_parser versions
        state = state[0] if state else ""
    return str(state or "")


def _queue_of(jobs: dict[str, dict[str, Any]], partition: str) -> tuple[int, int]:
    """(pending, running) jobs of every user in `partition`."""
    mine = [_job_state(j) for j in jobs.values() if partition in _job_partitions(j)]
    return (
        sum(1 for s in mine if s in PENDING_STATES),
        sum(1 for s in mine if s in RUNNING_STATES),
    )


def _job_partitions(job: dict[str, Any]) -> set[str]:
    """A job may be submitted to several partitions (``cpu,big``) until it starts."""
    return {p for p in str(job.get("partition") or "").split(",") if p}


class SlurmBackend(Backend):
    """Runs each attempt as one Slurm batch job on the partition named by its pool."""

    name: ClassVar[str] = "slurm"

    def __init__(self, config: BackendConfig, cli: SlurmTransport | None = None) -> None:
        super().__init__(config)
        self.work_root = config.work_root.resolve()
        self.work_root.mkdir(parents=True, exist_ok=True)
        opts = config.options
        self.cli = cli or make_transport(opts)
        self.pool_type = opts.get("pool_type", "supercomputing")
        self.executor_grace_s = float(opts.get("executor_grace_s", DEFAULT_GRACE_S))
        self.max_stage_bytes = int(float(opts.get("max_stage_gb", 10.0)) * GIB)
        self.http_timeout_s = float(opts.get("http_timeout_s", 60.0))
        self.squeue_cache_s = float(opts.get("squeue_cache_s", 1.0))
        self.staging = staging_settings(config)
        # The runner needs the staging credentials: sbatch passes the CLI transport's env to the
        # job, slurmrestd passes the REST transport's job_env.
        for name in ("env", "job_env"):
            if isinstance(getattr(self.cli, name, None), dict):
                getattr(self.cli, name).update(staging_env(config))
        self.time_limit_factor = float(opts.get("time_limit_factor", 0.0))
        self.settle_s = float(opts.get("settle_s", 30.0))
        self.fence_poll_s = float(opts.get("fence_poll_s", 1.0))
        self.fence_wait_s = float(opts.get("fence_wait_s", self.executor_grace_s + 10.0))
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
        pools = []
        for name in sorted(parts):
            nodes = parts[name]
            gpus: dict[str | None, int] = {}
            for n in nodes:
                for model, count in parse_gres(str(n.get("gres") or "")).items():
                    gpus[model] = gpus.get(model, 0) + count
            named = sorted((c, m) for m, c in gpus.items() if m)
            archs = sorted({str(n.get("architecture") or "") for n in nodes} - {""})
            labels = {"scheduler": "slurm", "partition": name}
            if len(named) > 1:
                labels["gpu_models"] = ",".join(sorted(m for _, m in named))
            max_time = self._parts.get(name, {}).get("max_time_min")
            if max_time is not None:
                labels["max_time_min"] = str(max_time)
            total_gpus = sum(gpus.values())
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
                        gpus=total_gpus,
                    ),
                    cpu_model=archs[0] if archs else "unknown",
                    # The GRES type names the model (gpu:a100:2); untyped GPUs stay "gpu".
                    gpu_model=(named[-1][1] if named else "gpu") if total_gpus else None,
                    gpu_memory_gb=None,
                    labels=labels,
                )
            )
        return pools

    def _nodes_by_partition(self, nodes: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        parts: dict[str, list[dict[str, Any]]] = {}
        for node in nodes:
            for p in node.get("partitions") or []:
                parts.setdefault(str(p), []).append(node)
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
                PoolLive(pool.name, PoolCapacity(), *_queue_of(jobs, pool.name))
                for pool in self.discover()
            ]
        with contextlib.suppress(BackendError):
            self._parts = self.cli.partitions()
        result = []
        for pool in self.discover():
            members = [n for n in nodes if pool.name in (n.get("partitions") or [])]
            up = self._parts.get(pool.name, {}).get("state", "UP") == "UP"
            usable = [n for n in members if _usable(n)] if up else []
            cpus = sum(int(n.get("idle_cpus") or 0) for n in usable)
            mem_mib = sum(
                max(0, int(n.get("real_memory") or 0) - int(n.get("alloc_memory") or 0))
                for n in usable
            )
            gpus = sum(
                max(
                    0,
                    _gres_gpus(str(n.get("gres") or ""))
                    - _gres_gpus(str(n.get("gres_used") or "")),
                )
                for n in usable
                if int(n.get("idle_cpus") or 0) > 0
            )
            free = PoolCapacity(
                cpu_cores=float(cpus),
                ram_gb=round(mem_mib / 1024, 3),
                disk_gb=pool.total.disk_gb if usable else 0.0,
                gpus=gpus,
            )
            result.append(
                PoolLive(pool.name, free if members else pool.total, *_queue_of(jobs, pool.name))
            )
        return result

    def _jobs(self, fresh: bool = False) -> dict[str, dict[str, Any]]:
        """Every job the controller knows, by Slurm job id (cached for `squeue_cache_s`)."""
        with self._lock:
            now = time.monotonic()
            if fresh or self._queue is None or now - self._queue[0] > self.squeue_cache_s:
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
        if self.time_limit_factor <= 0:
            return None
        minutes = max(1, math.ceil(job.spec.expected_runtime_s * self.time_limit_factor / 60))
        cap = self._parts.get(job.pool_name, {}).get("max_time_min")
        return min(minutes, cap) if cap else minutes

    def _runner_settings(self, spec: TaskSpec) -> dict[str, Any]:
        settings = runner_settings(
            spec,
            max_stage_bytes=self.max_stage_bytes,
            grace_s=self.executor_grace_s,
            http_timeout_s=self.http_timeout_s,
            file_roots=None,
            memory_limit_gb=None,  # Slurm enforces the job's memory
            private_tmp=False,
            staging=self.staging,
            images=self.images.to_runner(),
        )
        # Executors see the job's SLURM_* variables, so `srun` works across the allocation.
        settings["inherit_env_prefixes"] = ["SLURM_"]
        settings["fence_poll_s"] = self.fence_poll_s
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
        state = _job_state(job)
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
        if job is not None and _job_state(job) in PENDING_STATES | RUNNING_STATES:
            age = time.time() - _mtime(work_dir / STATUS_FILE)
            if age < self.settle_s:  # (no reason: it would outlive this moment in the hub)
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
            _add_log(
                record,
                f"slurm: job {job_id} {final.state or '?'}, elapsed {final.elapsed_s:.0f} s "
                f"on {final.cpus or '?'} CPU(s), nodes {final.nodes or '?'}",
            )
        if signalled:  # the runner took Slurm's signal for a cancel; Slurm knows better
            _add_log(record, f"the runner recorded CANCELED: {record.get('reason')}")
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
        account = _read_json(work_dir / FENCED_FILE)
        if account is not None and State(account["state"]).terminal:
            return True
        return time.time() - _mtime(fence) >= self.fence_wait_s

    def _final(self, work_dir: Path, state: State, reason: str) -> JobStatus:
        """Record a final state the runner could not (it never ran, was killed, or died); a
        fenced runner's own account gives the executor logs and measured usage."""
        record = read_status(work_dir) or new_record(state)
        account = _read_json(work_dir / FENCED_FILE)
        if account is not None:
            for key in ("executor_logs", "usage", "bytes_in", "system_logs"):
                record[key] = account.get(key, record.get(key))
            _add_log(
                record,
                f"after the fence the runner recorded {account.get('state')}: "
                f"{account.get('reason')}",
            )
        elif "NODE_FAIL" in reason and read_status(work_dir) is not None:
            _add_log(record, "the runner did not answer the fence: its node may be gone")
        record["state"] = state.value
        record["reason"] = reason
        if state is State.SYSTEM_ERROR:
            text = tail(work_dir / SLURM_OUT, OUT_TAIL).strip()
            if text:
                _add_log(record, f"{SLURM_OUT}: {text}")
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


def make_transport(opts: dict[str, str]) -> SlurmTransport:
    """The transport the options choose: ``transport = "cli"`` (default) or ``"rest"``."""
    kind = opts.get("transport", "cli")
    timeout_s = float(opts.get("command_timeout_s", 30.0))
    if kind == "cli":
        return SlurmCli(opts.get("slurm_conf") or None, timeout_s)
    if kind == "rest":
        from cpnet.agent.backends.slurm_rest import SlurmRest

        return SlurmRest.from_options(opts, timeout_s)
    raise BackendError(f"slurm option transport={kind!r} unknown; use 'cli' or 'rest'")


def _positive_int(params: dict[str, str], key: str) -> int | None:
    """Backend parameter `key` (or ``slurm.<key>``) as a positive integer, None when absent."""
    value = params.get(f"slurm.{key}", params.get(key))
    if value is None:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"backend parameter {key}={value!r} is not a positive integer")
    return int(value)


def final_of_job(job: dict[str, Any]) -> SlurmFinal | None:
    """A finished job's record as the controller (``squeue --json``) still holds it."""
    state = _job_state(job)
    if state in PENDING_STATES | RUNNING_STATES or not state:
        return None
    start, end = job.get("start_time"), job.get("end_time")
    elapsed = float(end - start) if isinstance(start, int) and isinstance(end, int) else None
    cpus = job.get("cpus")
    return SlurmFinal(
        state=state,
        elapsed_s=elapsed if elapsed is not None and elapsed >= 0 else None,
        cpus=int(cpus) if isinstance(cpus, int) else None,
        nodes=str(job.get("nodes") or "") or None,
    )


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON record another process wrote (atomically); None when absent or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _add_log(record: dict[str, Any], line: str) -> None:
    logs = record.setdefault("system_logs", [])
    if len(logs) < 64:
        logs.append(line[:4096])


def batch_script(work_dir: Path) -> str:
    """The batch script: runs the runner on `work_dir`; only the two quoted paths vary."""
    python = shlex.quote(sys.executable)
    return f"#!/bin/sh\nexec {python} -m cpnet.agent.runner {shlex.quote(str(work_dir))}\n"


def _read_id(work_dir: Path) -> str | None:
    return read_id_file(work_dir, JOB_ID_FILE)


__all__ = [
    "SlurmBackend",
    "SlurmCli",
    "SlurmFinal",
    "SlurmJobRequest",
    "SlurmTransport",
    "batch_script",
    "final_of_job",
    "map_final",
    "parse_gres",
    "parse_sacct_line",
    "parse_scontrol_partitions",
    "parse_slurm_minutes",
]
