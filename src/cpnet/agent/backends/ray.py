"""The Ray backend: pools from a Ray cluster's nodes; each attempt is one Ray Job running the
runner.

Pools. Every ALIVE node has a *shape*: its accelerator types (``accelerator_type:<T>``
resources) and its custom resources (anything but ``CPU``, ``GPU``, ``memory``,
``object_store_memory``, ``node:*`` and ``accelerator_type:*``). Nodes of one shape form one
pool, named after the shape: the lower-cased accelerator types and custom resource names joined
by ``-`` (``a100``, ``fast``, ``a100-nvme``), or ``gpu`` / ``cpu`` for nodes with neither (with
or without GPUs). A pool's total is the sum of its nodes' ``CPU``, ``memory`` (GiB) and ``GPU``;
its labels say ``scheduler=ray``, ``ray_pool=<name>`` and, when any, ``ray_resources`` (the custom
resource names, ``,``-joined) and ``accelerator_type``. Pools follow the cluster: nodes of a known
shape that join later add capacity at once, and when the live nodes' shapes no longer match the
pools (a node of a new shape joined, or the last node of a shape left) `live` signals
``shape_changed``, the agent calls `rediscover` and registers the new set of pools (a pool whose
nodes all left goes offline at the hub and keeps its identifier). Free capacity comes from Ray
itself: per node, total − used from the dashboard's cluster status (refreshed by Ray's monitor every
few seconds), summed over the pool's live nodes, so work that others run on the cluster is counted
too.

Attempts. Everything about an attempt lives in ``work_root/<attempt_id>/`` (the handle), as for
the local and Slurm backends: ``job.json`` (read by ``python -m cpnet.agent.runner``),
``ray_job_id`` (the Ray submission id, ``cpnet-<attempt_id>``), ``status.json`` (what the
runner last recorded). The Ray job's entrypoint is only ``exec <python> -m cpnet.agent.runner
<work dir>``, both ``shlex``-quoted: no task field ever reaches a shell. So executors, staging,
exit codes, per-executor logs and usage (wall, CPU, peak RSS) are the runner's, exactly as on the
other backends; the work root must therefore be on a filesystem that the agent and every Ray node
share (as with Slurm), and the runner's Python (option ``python``) must exist on every node. The
job asks Ray for the task's resources (``entrypoint_num_cpus`` = ``cpu_cores``,
``entrypoint_num_gpus`` = ``gpus``, ``entrypoint_memory`` = ``ram_gb``, ``entrypoint_resources``
= the task's ``backend_parameters["ray_resources"]``, a JSON object such as ``{"fast": 1}``) and
is pinned to the live nodes of its pool with the label selector ``ray.io/node-id in (...)``
(Ray >= 2.49 on the cluster). A resubmission after a crash finds the job by its submission id
instead of starting it twice. Cancel writes the ``cancel`` file and calls ``stop_job`` (Ray
sends SIGTERM to the runner and its executors, then SIGKILL after ``RAY_JOB_STOP_WAIT_TIME_S``,
3 s by default; the runner records CANCELED). Ray's job states map (`RAY_STATES`, applied by
`ClusterBackend`'s reconcile step) as PENDING → QUEUED, RUNNING → RUNNING (or the runner's
INITIALIZING while it stages), SUCCEEDED → the runner's final state, FAILED → SYSTEM_ERROR
(Ray's message and log tail in the reason and system logs) and STOPPED → CANCELED, whenever the
runner recorded no final state of its own.

All talk to Ray goes through `RayApi`: the dashboard's HTTP API for nodes and usage, and
``ray.job_submission.JobSubmissionClient`` (the Jobs API, same address) for jobs.

Options: `RayOptions` (below), each typed and documented. ``ray start --block`` stops the whole
local head (``ray_local``) when any Ray process of it dies; the agent then logs why (the tail of
Ray's own log) and starts a new head. Jobs of the dead head end SYSTEM_ERROR ("Ray has no job"),
so the hub runs them again.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import httpx

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
from cpnet.agent.backends.options import (
    FLAG,
    POOL_TYPE,
    TEXT,
    BackendOptions,
    cpu_count,
    gib,
    option,
    seconds,
)
from cpnet.agent.backends.runner_job import GIB, runner_command, runner_env, runner_settings
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
DEFAULT_GRACE_S = 2.0
NODE_ID_LABEL = "ray.io/node-id"
MAX_RAY_RESOURCES = 64

# Resources every node has, or that name a node or an accelerator: not part of a pool's shape.
STANDARD = {"CPU", "GPU", "memory", "object_store_memory"}
ACCEL_PREFIX = "accelerator_type:"

# Ray job status → the state it means when the runner left no final state of its own.
RAY_STATES: dict[str, State] = {
    "PENDING": State.QUEUED,
    "RUNNING": State.RUNNING,
    "SUCCEEDED": State.COMPLETE,
    "FAILED": State.SYSTEM_ERROR,
    "STOPPED": State.CANCELED,
}


def ray_state(status: str) -> State:
    """Our state for a Ray job status (an unknown status is a SYSTEM_ERROR)."""
    return RAY_STATES.get(str(status).split(".")[-1].upper(), State.SYSTEM_ERROR)


# ---- pure parts: shapes, pools, free capacity, resource requests -------------------------------


def _custom(name: str) -> bool:
    return name not in STANDARD and not name.startswith(("node:", ACCEL_PREFIX))


def node_shape(resources: dict[str, float]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(accelerator types, custom resource names) of a node, each sorted: its pool's key."""
    accels = sorted(r[len(ACCEL_PREFIX) :] for r in resources if r.startswith(ACCEL_PREFIX))
    custom = sorted(r for r in resources if _custom(r))
    return tuple(accels), tuple(custom)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def pool_name(shape: tuple[tuple[str, ...], tuple[str, ...]], has_gpus: bool) -> str:
    """``a100``, ``fast``, ``a100-nvme`` ...; ``gpu`` or ``cpu`` for nodes of no special shape."""
    accels, custom = shape
    parts = [_slug(a) for a in accels] + [_slug(c) for c in custom]
    if not parts:
        return "gpu" if has_gpus else "cpu"
    return "-".join(parts)[:128]


@dataclass(frozen=True, slots=True)
class RayPool:
    """A discovered pool: its declaration and the node shape that defines it."""

    decl: PoolDecl
    shape: tuple[tuple[str, ...], tuple[str, ...]]


def _alive(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [n for n in nodes if str(n.get("state", "")).upper() == "ALIVE"]


def _total(node: dict[str, Any]) -> dict[str, float]:
    return {str(k): float(v) for k, v in (node.get("resources_total") or {}).items()}


def derive_pools(nodes: list[dict[str, Any]], pool_type: str | None = None) -> list[RayPool]:
    """One pool per distinct shape of the ALIVE nodes (``/api/v0/nodes`` entries), by name.

    Two shapes whose names collide (after lower-casing) get ``-2``, ``-3`` ... suffixes, in the
    order of their sorted shapes, so names are stable while the cluster is.
    """
    groups: dict[tuple[tuple[str, ...], tuple[str, ...]], list[dict[str, float]]] = {}
    for node in _alive(nodes):
        res = _total(node)
        groups.setdefault(node_shape(res), []).append(res)
    pools: list[RayPool] = []
    taken: set[str] = set()
    for shape in sorted(groups):
        members = groups[shape]
        gpus = int(sum(r.get("GPU", 0.0) for r in members) + 1e-9)
        name = base = pool_name(shape, gpus > 0)
        n = 1
        while name in taken:
            n += 1
            name = f"{base}-{n}"
        taken.add(name)
        accels, custom = shape
        labels = {"scheduler": "ray", "ray_pool": name}
        if custom:
            labels["ray_resources"] = ",".join(custom)[:128]
        if accels:
            labels["accelerator_type"] = ",".join(accels)[:128]
        pools.append(
            RayPool(
                decl=PoolDecl(
                    name=name,
                    type=pool_type or ("intelligent" if gpus else "general"),
                    total=PoolCapacity(
                        cpu_cores=float(sum(r.get("CPU", 0.0) for r in members)),
                        ram_gb=round(sum(r.get("memory", 0.0) for r in members) / GIB, 3),
                        disk_gb=0.0,
                        gpus=gpus,
                    ),
                    cpu_model="unknown",
                    gpu_model=accels[0] if accels else ("gpu" if gpus else None),
                    gpu_memory_gb=None,
                    labels=labels,
                ),
                shape=shape,
            )
        )
    return pools


def members(pool: RayPool, nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ALIVE nodes of `pool`'s shape."""
    return [n for n in _alive(nodes) if node_shape(_total(n)) == pool.shape]


def camel(name: str) -> str:
    """A resource name as the dashboard's cluster status spells it (``ray.dashboard.utils.
    to_camel_case``: ``object_store_memory`` → ``objectStoreMemory``)."""
    head, *rest = name.split("_")
    return head + "".join(x.title() for x in rest)


def free_capacity(
    pool: RayPool, nodes: list[dict[str, Any]], usage: dict[str, dict[str, list[float]]]
) -> PoolCapacity:
    """Total − used of CPU, memory and GPU over the pool's live nodes; `usage` is the dashboard's
    ``usageByNode`` (node id → camel-cased resource → [used, total]); a node it does not list yet
    counts as idle. Never more than the pool's declared total."""
    cpu = mem = gpu = 0.0
    for node in members(pool, nodes):
        res = _total(node)
        used = usage.get(str(node.get("node_id")), {})

        def free(name: str, res: dict[str, float] = res, used: dict = used) -> float:
            pair = used.get(camel(name)) or [0.0, 0.0]
            return max(0.0, res.get(name, 0.0) - float(pair[0]))

        cpu += free("CPU")
        mem += free("memory")
        gpu += free("GPU")
    total = pool.decl.total
    return PoolCapacity(
        cpu_cores=min(total.cpu_cores, round(cpu, 4)),
        ram_gb=min(total.ram_gb, round(mem / GIB, 3)),
        disk_gb=0.0,
        gpus=min(total.gpus, int(gpu + 1e-9)),
    )


def parse_ray_resources(text: str | None) -> dict[str, float]:
    """The task's ``backend_parameters["ray_resources"]``: a JSON object of resource name →
    non-negative number; ValueError saying what is wrong."""
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        raise ValueError(
            f'backend parameter ray_resources={text[:80]!r} is not JSON (e.g. {{"fast": 1}})'
        ) from None
    if not isinstance(data, dict) or len(data) > MAX_RAY_RESOURCES:
        raise ValueError(
            f"backend parameter ray_resources must be a JSON object of at most "
            f"{MAX_RAY_RESOURCES} resource names to numbers"
        )
    out: dict[str, float] = {}
    for key, value in data.items():
        if not isinstance(key, str) or not key or len(key) > 128:
            raise ValueError(f"ray_resources: resource name {key!r} must be 1-128 characters")
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            raise ValueError(f"ray_resources[{key!r}] = {value!r} is not a non-negative number")
        if key in ("CPU", "GPU", "memory"):
            raise ValueError(
                f"ray_resources: ask {key} through the task's resources, not ray_resources"
            )
        out[key] = float(value)
    return out


def resource_request(spec: TaskSpec) -> dict[str, Any]:
    """The ``submit_job`` keyword arguments that reserve the task's resources on Ray."""
    r = spec.resources
    request: dict[str, Any] = {"entrypoint_num_cpus": float(r.cpu_cores)}
    if r.gpus > 0:
        request["entrypoint_num_gpus"] = float(r.gpus)
    if r.ram_gb > 0:
        request["entrypoint_memory"] = max(1, math.ceil(r.ram_gb * GIB))
    extra = parse_ray_resources(r.backend_parameters.get("ray_resources"))
    if extra:
        request["entrypoint_resources"] = extra
    return request


def node_selector(node_ids: list[str]) -> dict[str, str]:
    """The label selector that pins a job to these nodes."""
    return {NODE_ID_LABEL: "in({})".format(",".join(sorted(node_ids)))}


def entrypoint(python: str, work_dir: Path) -> str:
    """The job's shell command: runs the runner on `work_dir`; only the two quoted paths vary."""
    return runner_command(python, work_dir)


# ---- the one place that talks to Ray -----------------------------------------------------------


class RayApi:
    """The dashboard's HTTP API (nodes, usage) and the Jobs API (``JobSubmissionClient``)."""

    def __init__(self, address: str, timeout_s: float = 30.0) -> None:
        self.address = address.rstrip("/")
        self.timeout_s = timeout_s
        if "://" not in self.address:
            self.address = "http://" + self.address
        self.http = httpx.Client(base_url=self.address, timeout=timeout_s)
        self._client: Any = None
        self._lock = threading.Lock()

    def close(self) -> None:
        self.http.close()

    def _get(self, path: str) -> Any:
        try:
            r = self.http.get(path)
        except httpx.HTTPError as exc:
            raise BackendError(f"Ray dashboard {self.address} unreachable: {exc}") from exc
        if r.status_code != 200:
            raise BackendError(f"Ray dashboard {path} → {r.status_code}: {r.text[:300]}")
        return r.json()

    def nodes(self) -> list[dict[str, Any]]:
        """Every node Ray knows (``/api/v0/nodes``: node_id, state, resources_total, labels)."""
        data = self._get("/api/v0/nodes?limit=10000&detail=true")
        return list(((data.get("data") or {}).get("result") or {}).get("result") or [])

    def usage_by_node(self) -> dict[str, dict[str, list[float]]]:
        """Node id → camel-cased resource → [used, total], from Ray's monitor."""
        data = self._get("/api/cluster_status")
        status = (data.get("data") or {}).get("clusterStatus") or {}
        report = status.get("loadMetricsReport") or {}
        return dict(report.get("usageByNode") or {})

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                try:
                    from ray.job_submission import JobSubmissionClient
                except ImportError as exc:
                    raise BackendError(
                        "the Ray backend needs Ray's job client: pip install 'cpnet[ray]'"
                    ) from exc
                try:
                    self._client = JobSubmissionClient(self.address)
                except Exception as exc:
                    raise BackendError(f"Ray Jobs API at {self.address}: {exc}") from exc
            return self._client

    def submit(self, **kwargs: Any) -> str:
        return str(self.client.submit_job(**kwargs))

    def info(self, submission_id: str) -> Any | None:
        """The job's details (status, message, start/end times), or None when Ray has no such
        job; BackendError when Ray cannot be asked."""
        try:
            return self.client.get_job_info(submission_id)
        except RuntimeError as exc:
            if "404" in str(exc) or "does not exist" in str(exc):
                return None
            raise BackendError(f"Ray job {submission_id}: {str(exc)[:300]}") from exc
        except Exception as exc:
            raise BackendError(f"Ray job {submission_id}: {str(exc)[:300]}") from exc

    def stop(self, submission_id: str) -> None:
        try:
            self.client.stop_job(submission_id)
        except Exception as exc:
            raise BackendError(f"stop of Ray job {submission_id}: {str(exc)[:300]}") from exc

    def logs(self, submission_id: str) -> str:
        try:
            return str(self.client.get_job_logs(submission_id))
        except Exception as exc:
            return f"(Ray could not give the job's log: {str(exc).splitlines()[-1][:200]})"

    def delete(self, submission_id: str) -> None:
        with contextlib.suppress(Exception):
            self.client.delete_job(submission_id)


# ---- a private local head (--ray-local) --------------------------------------------------------


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """The local head's ``ray start`` gets SIGTERM when the agent dies, even by SIGKILL."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class LocalHead:
    """``ray start --head --block`` on loopback with free ports, in a session of its own."""

    def __init__(self, cpus: int | None = None, timeout_s: float = 120.0) -> None:
        self.cpus = cpus
        ray_bin = Path(sys.executable).with_name("ray")
        if not ray_bin.exists():
            raise BackendError(f"--ray-local needs the ray command ({ray_bin} is missing)")
        self.temp_dir = tempfile.mkdtemp(prefix="cpnet-ray-")
        gcs, dash, client, nm, om, a1, a2, rt, mx = _free_ports(9)
        self.address = f"http://127.0.0.1:{dash}"
        argv = [
            str(ray_bin),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={gcs}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            f"--ray-client-server-port={client}",
            f"--node-manager-port={nm}",
            f"--object-manager-port={om}",
            f"--dashboard-agent-listen-port={a1}",
            f"--dashboard-agent-grpc-port={a2}",
            f"--runtime-env-agent-port={rt}",
            f"--metrics-export-port={mx}",
            f"--temp-dir={self.temp_dir}",
            "--disable-usage-stats",
        ]
        if cpus is not None:
            argv.append(f"--num-cpus={cpus}")
        env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0")
        self.log_path = Path(self.temp_dir) / "ray-start.log"
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self._finalizer = weakref.finalize(self, LocalHead._stop, self.proc, self.temp_dir)
        log.info("starting a local Ray head (pid %d, Jobs API %s)", self.proc.pid, self.address)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                self.close()
                raise BackendError(f"the local Ray head exited: {self.log_tail()}")
            try:
                nodes = RayApi(self.address, 5.0).nodes()
                if _alive(nodes):
                    break
            except BackendError:
                pass
            if time.monotonic() > deadline:
                self.close()
                raise BackendError(f"the local Ray head did not answer in {timeout_s:g} s")
            time.sleep(0.3)

    def log_tail(self) -> str:
        """Why the head stopped: Ray's record of the processes that exited unexpectedly, or
        else the end of ``ray start``'s output (colour codes removed)."""
        exits = Path(self.temp_dir) / "session_latest" / "logs" / "ray_process_exit.log"
        for path in (exits, self.log_path):
            with contextlib.suppress(OSError):
                text = _ANSI.sub("", path.read_text(errors="replace")).strip()
                if text:
                    return text[-LOG_TAIL:]
        return ""

    def close(self) -> None:
        self._finalizer()

    @staticmethod
    def _stop(proc: subprocess.Popen[bytes], temp_dir: str) -> None:
        """SIGTERM ``ray start`` (it drains and stops its processes); SIGKILL what is left of its
        session after 30 s; remove the temp dir."""
        sid = proc.pid
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while _session_members(sid) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in _session_members(sid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _session_members(sid: int) -> list[int]:
    from cpnet.agent import hostinfo

    return list(hostinfo.session_members(sid))


# ---- the backend -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Seen:
    """The last answer about one Ray job, and when it came."""

    at: float
    pool: str
    status: str  # Ray's status name, "" when Ray has no such job


@dataclass(frozen=True)
class RayOptions(BackendOptions):
    """Options of the Ray backend."""

    ray_address: str = option(
        "", TEXT, "the Jobs API (dashboard) address, e.g. http://127.0.0.1:8265"
    )
    ray_local: bool = option(
        False,
        FLAG,
        "true starts a private local Ray head for this agent (free loopback ports, its own temp "
        "dir) and stops it when the agent exits",
    )
    ray_local_cpus: int | None = option(None, cpu_count(), "the CPU count of the local head")
    python: str = option(
        "", TEXT, "the interpreter that runs the runner on the Ray nodes (default: the agent's)"
    )
    pool_type: str | None = option(
        None,
        POOL_TYPE,
        "the type of every discovered pool (default: intelligent for pools with GPUs, else "
        "general)",
    )
    executor_grace_s: float = option(
        DEFAULT_GRACE_S,
        seconds(),
        "seconds the runner gives a canceled executor before SIGKILL (below Ray's 3 s stop wait)",
    )
    max_stage_gb: float = option(
        10.0, gib(), "staging limit per direction when a task gives no disk_gb"
    )
    http_timeout_s: float = option(60.0, seconds(), "per network operation while staging")
    poll_cache_s: float = option(1.0, seconds(), "how long one answer about a Ray job serves polls")
    request_timeout_s: float = option(30.0, seconds(), "timeout of one request to the dashboard")
    delete_jobs: bool = option(
        False,
        FLAG,
        "true deletes a finished Ray job (and Ray's copy of its logs) once the hub has its final "
        "state (default: keep it, as the work dir is kept)",
    )

    def __post_init__(self) -> None:
        if self.ray_local and self.ray_address.strip():
            raise ValueError("give either ray_address or ray_local, not both")


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
        if not _alive(nodes):
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
        if self.config.pools or not _alive(nodes):
            return
        with self._lock:
            known = {p.shape for p in self._pools or []}
        if {node_shape(_total(n)) for n in _alive(nodes)} != known:
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


__all__ = [
    "LocalHead",
    "RayApi",
    "RayBackend",
    "derive_pools",
    "entrypoint",
    "free_capacity",
    "node_shape",
    "ray_state",
    "resource_request",
]
