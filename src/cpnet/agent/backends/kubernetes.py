"""The Kubernetes backend: pools from nodes; each attempt is one ``batch/v1`` Job.

Talks to the API server only through the official ``kubernetes`` client (extra ``kubernetes``),
with responses read as plain JSON (``_preload_content=False``), so that the mapping below works on
the documented object shapes and is unit-tested on plain dicts.

**Pools.** Schedulable nodes (not cordoned, no ``NoSchedule``/``NoExecute`` taint other than the
GPU resource's own) are grouped by a node-pool label: the ``pool_label`` option when given, else
the first of ``cpnet.io/pool``, ``cloud.google.com/gke-nodepool``,
``eks.amazonaws.com/nodegroup``, ``kubernetes.azure.com/agentpool``, ``karpenter.sh/nodepool``
that a node carries; nodes with none form the pool ``default``. A pool's total is the sum of its
nodes' *allocatable* CPU, memory, ephemeral storage and GPUs (``nvidia.com/gpu`` or the
``gpu_resource`` option); its GPU model and memory come from GPU feature discovery's
``nvidia.com/gpu.product`` / ``nvidia.com/gpu.memory`` labels, its zones from
``topology.kubernetes.io/zone``. Free capacity (``live``) is allocatable minus the requests of
every pod bound to a ready pool node and not finished (all namespaces), floored at zero.

**Attempts.** An attempt becomes the Job ``cpnet-<attempt id, DNS-1123-safe>-<hash>`` in the
configured namespace, with ``backoffLimit: 0`` (the hub retries, not Kubernetes),
``restartPolicy: Never``, ``activeDeadlineSeconds`` from the task's ``time_limit_s`` backend
parameter (or the ``default_time_limit_s`` option), ``ttlSecondsAfterFinished`` as a backstop,
and a ``nodeSelector`` on the pool's label. Executors run **in sequence as containers of one
pod**: all but the last are init containers (Kubernetes runs those one by one, each only after the
previous one exited 0), the last is the pod's one container. Each container uses the executor's
``image``, else the ``image`` option, runs the executor's argv as its ``command`` (no shell unless
the executor redirects stdin/stdout/stderr or sets ``ignore_error``; then a constant ``sh -c``
script gets the argv as ``"$@"`` and the paths in environment variables, so no task field is ever
parsed by a shell), requests and is limited to the task's CPU, memory and GPUs, and mounts one
``emptyDir`` at ``/cpnet/work`` (the executors' shared work dir and default working directory).
A task with only inline ``content`` inputs has them written there first by a ``stage-in`` init
container (the default image's ``sh``; contents pass in environment variables, at most 64 KiB
each).

**Staging.** A task with URL inputs (``file``, ``http(s)``, ``s3``, ``cpnet://blobs/``) or any
outputs is staged by cpnet's own staging code (`cpnet.agent.staging`, as the runner does for the
other backends), run by `cpnet.agent.podstage` in the ``runner_image`` option's image (one with
cpnet installed): the ``stage-in`` init container places every input in the work dir, the
executors follow as init containers, and ``stage-out`` is the pod's one container. Kubernetes
starts a container only after the previous init container exited 0, so stage-out runs after the
last executor *succeeded* (``ignore_error`` executors always exit 0): exactly when the runner
stages outputs (it stages nothing after a failed executor or a cancel), so no "finally" container
(a wrapper or a native sidecar waiting for a marker) is needed, and none of the task's containers
has to run a cpnet process. The stage containers print their transfer records and a result line,
read from their logs by `_finish`: outputs with sha256 and size, ``bytes_in``/``bytes_out``, one
system-log line per transfer, and the staging error as the reason of a SYSTEM_ERROR.

Secrets never enter the Job's manifest: ``job.json`` (the inputs, outputs and staging settings:
URLs may carry credentials) and ``env.json`` (`runner_job.staging_env`: S3 keys, the hub staging
token) go into a Secret per attempt, named like the Job, created right after it with an
``ownerReference`` to it (so the garbage collector deletes it with the Job; the agent also deletes
it as soon as the attempt is final) and mounted read-only at ``/cpnet/staging`` into the stage
containers only (a secret volume: the pod waits until the Secret exists). The ``staging_secret``
option names an existing Secret whose keys the stage containers also get as environment variables
(``envFrom``; the agent's own credentials win). Without ``runner_image`` such a task ends
SYSTEM_ERROR at submit, with a reason naming the option, so the hub can place it elsewhere.

No task field reaches a name: the Job name and label values are derived (lower-cased, reduced to
``[a-z0-9-]``, truncated, plus a hash of the original); the task name, task id and full attempt id
travel in annotations.

**State.** Polls (`ClusterBackend`'s reconcile step) read the namespace's cpnet Jobs and Pods
(one list each, cached ``cache_s``, for all the attempts of one `poll_many`) and map them with
`verdict`, this backend's translate table:

==============================================================  ===============================
the Job and its pod                                             the attempt
==============================================================  ===============================
Job ``Complete``                                                COMPLETE
not complete, and cpnet canceled it (deleted the Job)           CANCELED
a container exited non-zero (``OOMKilled``: the memory limit)   EXECUTOR_ERROR, its exit code
``DeadlineExceeded``                                            EXECUTOR_ERROR, the time limit
an executor's image cannot be pulled (the Job is deleted)       EXECUTOR_ERROR
the runner_image cannot be pulled                               SYSTEM_ERROR
pod lost with its node, evicted, disrupted; Job gone, deleted   SYSTEM_ERROR
pod not scheduled (or no pod yet)                               QUEUED
pod bound, starting                                             INITIALIZING
an executor runs                                                RUNNING
==============================================================  ===============================

Executor logs are the containers' logs (stdout and stderr interleaved, as Kubernetes keeps them;
last 16 KiB), exit codes and start/finish times; usage is the wall time from the first container's
start to the last one's finish (CPU seconds are not measured: no metrics API is assumed). A final
result is written to ``status.json`` in the attempt's local dir ``work_root/<attempt_id>/`` (the
handle), so it survives the Job's deletion. ``cancel`` deletes the Job (``propagationPolicy:
Background``: its pod is killed), ``forget`` deletes a finished Job.

Options: `KubernetesOptions` (below), each typed and documented, with the staging ones (as for
the local backend; paths and endpoints as seen from inside the pod).

One agent per namespace: Jobs are found by the label ``app.kubernetes.io/managed-by=cpnet``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
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
from cpnet.agent.backends.options import (
    FLAG,
    PATHS,
    POOL_TYPE,
    TEXT,
    StagingOptions,
    option,
    seconds,
    whole_seconds,
)
from cpnet.agent.backends.runner_job import GIB, runner_settings, staging_env, staging_settings
from cpnet.agent.backends.workdir import status_from_record
from cpnet.agent.podstage import parse_result
from cpnet.agent.runner import (
    CANCEL_FILE,
    MAX_TAIL_CHARS,
    STATUS_FILE,
    new_record,
    read_status,
    write_json_atomic,
)
from cpnet.agent.staging import Transfer
from cpnet.tasks.model import ExecutorLog, TaskSpec, Usage
from cpnet.tasks.states import State

WORK_MOUNT = "/cpnet/work"
STAGING_MOUNT = "/cpnet/staging"  # the attempt's Secret (job.json, env.json), stage containers only
MAX_SECRET_BYTES = 900 * 1024  # a Secret holds at most 1 MiB; keep room for its metadata
STAGE_MIN_MEMORY = "512Mi"  # the memory limit of stage containers, at least (python + boto3)
DEFAULT_IMAGE = "python:3.12-slim"
DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"
JOB_FILE = "k8s_job"  # "namespace/name" of the attempt's Job, in its local dir
MANIFEST_FILE = "k8s_job.json"  # the Job as submitted
MANAGED_BY = "app.kubernetes.io/managed-by"
ATTEMPT_LABEL = "cpnet.io/attempt"
POOL_LABEL = "cpnet.io/pool"
ANNOTATION = "cpnet.io/"
POOL_LABELS = (
    "cpnet.io/pool",
    "cloud.google.com/gke-nodepool",
    "eks.amazonaws.com/nodegroup",
    "kubernetes.azure.com/agentpool",
    "karpenter.sh/nodepool",
)
ZONE_LABEL = "topology.kubernetes.io/zone"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"  # MiB, from GPU feature discovery
DEFAULT_POOL = "default"
LOG_TAIL_LINES = 2000  # of each container's log, cut to its last MAX_TAIL_CHARS characters
MAX_INLINE_BYTES = 64 * 1024  # one environment string must stay under Linux's 128 KiB
IGNORED_MARK = "cpnet: exit code "  # the ignore_error wrapper's last line: "... N ignored"

IMAGE_ERRORS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
# Pod-level reasons that mean the place failed, not the task.
SYSTEM_POD_REASONS = frozenset(
    {
        "NodeLost",
        "Evicted",
        "Shutdown",
        "NodeShutdown",
        "Terminated",
        "NodeAffinity",
        "UnexpectedAdmissionError",
        "Preempting",
        "OutOfcpu",
        "OutOfmemory",
    }
)


# ---- names, quantities and pools (pure) ------------------------------------------------------


def _digest(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:n]


def dns_label(text: str, max_len: int = 63) -> str:
    """`text` as a DNS-1123 label (``[a-z0-9]([-a-z0-9]*[a-z0-9])?``, at most `max_len`), with a
    hash of the original appended whenever anything had to change, so different inputs stay
    different. Never empty."""
    clean = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if clean == text and 0 < len(clean) <= max_len:
        return clean
    suffix = _digest(text)
    head = clean[: max_len - len(suffix) - 1].rstrip("-")
    return f"{head}-{suffix}" if head else f"x-{suffix}"


def job_name(attempt_id: str) -> str:
    """The Job name of an attempt: ``cpnet-`` + a DNS-1123 form of its id, at most 63 chars (so
    that it is also a valid label value and pod name prefix)."""
    return "cpnet-" + dns_label(attempt_id, 63 - len("cpnet-"))


def label_value(text: str) -> str:
    """`text` as a label value (at most 63 of ``[A-Za-z0-9_.-]``, alphanumeric at both ends),
    hashed when it had to change."""
    if re.fullmatch(r"([A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?", text):
        return text
    return dns_label(text)


def quantity(value: Any) -> Decimal:
    """A Kubernetes quantity (``500m``, ``2Gi``, ``1e3``, ``4``) as a Decimal; 0 when absent.
    BackendError on a malformed one."""
    if value is None or value == "":
        return Decimal(0)
    from kubernetes.utils.quantity import parse_quantity

    try:
        return Decimal(parse_quantity(value))
    except (ValueError, TypeError, InvalidOperation) as exc:
        raise BackendError(f"bad Kubernetes quantity {value!r}: {exc}") from exc


def capacity_of(resources: dict[str, Any], gpu_resource: str) -> PoolCapacity:
    """CPU cores, GiB of memory and ephemeral storage, and GPUs of a resource list."""
    return PoolCapacity(
        cpu_cores=float(quantity(resources.get("cpu"))),
        ram_gb=float(quantity(resources.get("memory")) / GIB),
        disk_gb=float(quantity(resources.get("ephemeral-storage")) / GIB),
        gpus=int(quantity(resources.get(gpu_resource))),
    )


def pod_request(pod: dict[str, Any], gpu_resource: str = DEFAULT_GPU_RESOURCE) -> PoolCapacity:
    """What a pod holds on its node, as the scheduler counts it: per resource, the larger of the
    largest init container request and the sum of the containers' requests (plus overhead)."""
    spec = pod.get("spec") or {}

    def req(c: dict[str, Any]) -> PoolCapacity:
        r = c.get("resources") or {}
        # a limit without a request counts as the request
        return capacity_of({**(r.get("limits") or {}), **(r.get("requests") or {})}, gpu_resource)

    main = PoolCapacity()
    for c in spec.get("containers") or []:
        main = main.plus(req(c))
    for c in spec.get("initContainers") or []:
        i = req(c)
        main = PoolCapacity(
            max(main.cpu_cores, i.cpu_cores),
            max(main.ram_gb, i.ram_gb),
            max(main.disk_gb, i.disk_gb),
            max(main.gpus, i.gpus),
        )
    return main.plus(capacity_of(spec.get("overhead") or {}, gpu_resource))


def node_ready(node: dict[str, Any]) -> bool:
    """Ready, not cordoned."""
    if (node.get("spec") or {}).get("unschedulable"):
        return False
    conds = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


def node_usable(node: dict[str, Any], gpu_resource: str = DEFAULT_GPU_RESOURCE) -> bool:
    """Whether a cpnet pod can be placed there at all: no taint it does not tolerate."""
    for t in (node.get("spec") or {}).get("taints") or []:
        if t.get("effect") in ("NoSchedule", "NoExecute") and t.get("key") != gpu_resource:
            return False
    return True


def node_pool(node: dict[str, Any], pool_label: str | None) -> tuple[str, str | None]:
    """(pool name, label key selecting it or None) of one node."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    for key in (pool_label,) if pool_label else POOL_LABELS:
        if labels.get(key):
            return str(labels[key]), key
    return DEFAULT_POOL, None


@dataclass(frozen=True, slots=True)
class KubePool:
    """A discovered pool and how to place pods on it."""

    decl: PoolDecl
    selector: dict[str, str]  # nodeSelector (empty for the default pool)
    nodes: tuple[str, ...]


def group_nodes(
    nodes: Iterable[dict[str, Any]],
    *,
    pool_label: str | None = None,
    pool_type: str | None = None,
    gpu_resource: str = DEFAULT_GPU_RESOURCE,
) -> list[KubePool]:
    """Pools from a node list (see the module doc), sorted by name."""
    groups: dict[str, list[dict[str, Any]]] = {}
    keys: dict[str, str | None] = {}
    for node in nodes:
        if not node_usable(node, gpu_resource):
            continue
        name, key = node_pool(node, pool_label)
        groups.setdefault(name, []).append(node)
        keys[name] = key
    pools = []
    for name in sorted(groups):
        members = groups[name]
        total = PoolCapacity()
        for n in members:
            total = total.plus(
                capacity_of((n.get("status") or {}).get("allocatable") or {}, gpu_resource)
            )
        labels_of = [(n.get("metadata") or {}).get("labels") or {} for n in members]
        gpu_models = sorted(
            {str(lb[GPU_PRODUCT_LABEL]) for lb in labels_of if lb.get(GPU_PRODUCT_LABEL)}
        )
        gpu_mem = [
            float(lb[GPU_MEMORY_LABEL]) for lb in labels_of if _is_number(lb.get(GPU_MEMORY_LABEL))
        ]
        zones = sorted({str(lb[ZONE_LABEL]) for lb in labels_of if lb.get(ZONE_LABEL)})
        archs = sorted(
            {
                str(((n.get("status") or {}).get("nodeInfo") or {}).get("architecture") or "")
                for n in members
            }
            - {""}
        )
        labels = {"scheduler": "kubernetes", "node_pool": name}
        if zones:
            labels["zone"] = ",".join(zones)[:128]
        key = keys[name]
        pools.append(
            KubePool(
                decl=PoolDecl(
                    name=name,
                    type=pool_type or ("intelligent" if total.gpus else "general"),
                    total=PoolCapacity(
                        round(total.cpu_cores, 3),
                        round(total.ram_gb, 3),
                        round(total.disk_gb, 3),
                        total.gpus,
                    ),
                    cpu_model=archs[0] if archs else "unknown",
                    gpu_model=(gpu_models[0] if gpu_models else "gpu") if total.gpus else None,
                    gpu_memory_gb=round(min(gpu_mem) / 1024, 3) if gpu_mem and total.gpus else None,
                    labels=labels,
                    can_run_images=True,
                ),
                selector={key: name} if key else {},
                nodes=tuple(str((n.get("metadata") or {}).get("name")) for n in members),
            )
        )
    return pools


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


# ---- the Job manifest (pure) -----------------------------------------------------------------

# Constant shell pieces for executors that need redirection; paths come in env variables.
_REDIRECTS = (
    ("stdin", ' <"$CPNET_STDIN"'),
    ("stdout", ' >"$CPNET_STDOUT"'),
    ("stderr", ' 2>"$CPNET_STDERR"'),
)
_STAGE_IN = (
    'i=0; while [ "$i" -lt "$CPNET_INPUTS" ]; do '
    'eval "p=\\$CPNET_IN_${i}_PATH; d=\\$CPNET_IN_${i}_DATA"; '
    'mkdir -p "$(dirname "$p")" && printf %s "$d" > "$p" || exit 1; i=$((i+1)); done'
)


def _work_path(rel: str) -> str:
    return f"{WORK_MOUNT}/{rel.lstrip('/')}" if rel not in ("", ".") else WORK_MOUNT


def _mebibytes(gb: float) -> str:
    return f"{max(1, math.ceil(gb * 1024))}Mi"


def resources_for(spec: TaskSpec, gpu_resource: str) -> dict[str, Any]:
    """Requests and limits of each executor container (they run one at a time)."""
    r = spec.resources
    amounts: dict[str, str] = {"cpu": f"{max(1, math.ceil(r.cpu_cores * 1000))}m"}
    if r.ram_gb > 0:
        amounts["memory"] = _mebibytes(r.ram_gb)
    if r.disk_gb > 0:
        amounts["ephemeral-storage"] = _mebibytes(r.disk_gb)
    limits = dict(amounts)
    if r.gpus > 0:
        limits[gpu_resource] = str(r.gpus)
        amounts[gpu_resource] = str(r.gpus)
    return {"requests": amounts, "limits": limits}


def needs_staging(spec: TaskSpec) -> bool:
    """Whether `spec` has URL inputs or outputs (staged by cpnet in the runner image)."""
    return bool(spec.outputs) or any(inp.url is not None for inp in spec.inputs)


NO_RUNNER_IMAGE = (
    "set the kubernetes backend option runner_image to an image with cpnet installed "
    "(see docs/providers/kubernetes.md)"
)


def unsupported(spec: TaskSpec, runner_image: str | None = None) -> str | None:
    """Why this backend cannot run `spec` (with or without a `runner_image`), or None."""
    if needs_staging(spec):
        if runner_image:
            return None  # every input, inline ones too, goes through cpnet's staging
        for i, inp in enumerate(spec.inputs):
            if inp.url is not None:
                return f"input {i} ({inp.path}) has a URL: staging it needs {NO_RUNNER_IMAGE}"
        return f"the task has outputs: staging them needs {NO_RUNNER_IMAGE}"
    for i, inp in enumerate(spec.inputs):
        if len((inp.content or "").encode()) > MAX_INLINE_BYTES:
            return f"input {i} ({inp.path}) is larger than {MAX_INLINE_BYTES} bytes inline"
    return None


def staging_payload(job: Job, settings: dict[str, Any], env: dict[str, str]) -> dict[str, str]:
    """The files of the attempt's staging Secret: ``job.json`` (inputs, outputs, the runner
    settings) and ``env.json`` (credentials). ValueError when they would not fit in a Secret."""
    doc = {
        "attempt_id": job.attempt_id,
        "task_id": job.task_id,
        "spec": {
            "inputs": [i.model_dump(mode="json") for i in job.spec.inputs],
            "outputs": [o.model_dump(mode="json") for o in job.spec.outputs],
        },
        "runner": settings,
    }
    files = {
        "job.json": json.dumps(doc, separators=(",", ":")),
        "env.json": json.dumps(env, separators=(",", ":")),
    }
    size = sum(len(v.encode()) for v in files.values())
    if size > MAX_SECRET_BYTES:
        raise ValueError(
            f"the task's inputs and outputs take {size} bytes, over the {MAX_SECRET_BYTES} bytes "
            "a staging Secret may hold: put large inline inputs in the hub's blob store"
        )
    return files


def secret_manifest(
    name: str, namespace: str, owner: dict[str, Any], files: dict[str, str]
) -> dict[str, Any]:
    """The per-attempt Secret, owned by its Job (deleted with it by the garbage collector)."""
    meta = owner.get("metadata") or {}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": dict(meta.get("labels") or {}),
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": str(meta.get("name")),
                    "uid": str(meta.get("uid")),
                }
            ],
        },
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in files.items()},
    }


def time_limit_s(spec: TaskSpec, default: int | None) -> int | None:
    """``activeDeadlineSeconds``: the ``time_limit_s`` backend parameter, else `default`."""
    raw = spec.resources.backend_parameters.get("time_limit_s")
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"backend parameter time_limit_s={raw!r} is not a positive integer")
    return int(raw)


def job_manifest(
    job: Job,
    *,
    namespace: str,
    image: str,
    selector: dict[str, str],
    gpu_resource: str = DEFAULT_GPU_RESOURCE,
    deadline_s: int | None = None,
    ttl_s: int | None = None,
    service_account: str | None = None,
    runner_image: str | None = None,
    staging_secret: str | None = None,
) -> dict[str, Any]:
    """The ``batch/v1`` Job that runs `job` (see the module doc). With `runner_image`, a task
    that needs staging gets cpnet's stage-in and stage-out containers (`staging_secret`: an
    existing Secret whose keys they also get as environment variables)."""
    spec = job.spec
    name = job_name(job.attempt_id)
    labels = {
        MANAGED_BY: "cpnet",
        ATTEMPT_LABEL: label_value(job.attempt_id),
        POOL_LABEL: label_value(job.pool_name),
    }
    annotations = {
        ANNOTATION + "attempt-id": job.attempt_id,
        ANNOTATION + "task-id": job.task_id,
        ANNOTATION + "pool": job.pool_name,
        ANNOTATION + "task-name": spec.name or "",
    }
    mounts = [{"name": "work", "mountPath": WORK_MOUNT}]
    base_env = [
        {"name": "CPNET_TASK_ID", "value": job.task_id},
        {"name": "CPNET_ATTEMPT_ID", "value": job.attempt_id},
        {"name": "CPNET_WORK_DIR", "value": WORK_MOUNT},
        {"name": "HOME", "value": WORK_MOUNT},
    ]
    resources = resources_for(spec, gpu_resource)
    containers: list[dict[str, Any]] = []
    staged = bool(runner_image) and needs_staging(spec)
    volumes: list[dict[str, Any]] = [{"name": "work", "emptyDir": {}}]
    stage_out: dict[str, Any] | None = None
    if staged:
        volumes.append({"name": "staging", "secret": {"secretName": name, "defaultMode": 0o400}})
        limits = dict(resources["limits"])
        if quantity(limits.get("memory")) < quantity(STAGE_MIN_MEMORY):
            limits["memory"] = STAGE_MIN_MEMORY
        limits.pop(gpu_resource, None)
        requests = {k: v for k, v in resources["requests"].items() if k != gpu_resource}

        def stager(direction: str) -> dict[str, Any]:
            c: dict[str, Any] = {
                "name": f"stage-{direction}",
                "image": runner_image,
                "command": ["python", "-m", "cpnet.agent.podstage", direction],
                "env": [
                    {"name": "CPNET_WORK_DIR", "value": WORK_MOUNT},
                    {"name": "CPNET_STAGING_DIR", "value": STAGING_MOUNT},
                    {"name": "HOME", "value": WORK_MOUNT},
                ],
                "workingDir": WORK_MOUNT,
                "resources": {"requests": requests, "limits": limits},
                "volumeMounts": [
                    *mounts,
                    {"name": "staging", "mountPath": STAGING_MOUNT, "readOnly": True},
                ],
            }
            if staging_secret:
                c["envFrom"] = [{"secretRef": {"name": staging_secret}}]
            return c

        containers.append(stager("in"))
        if spec.outputs:
            stage_out = stager("out")
    elif spec.inputs:
        env = [{"name": "CPNET_INPUTS", "value": str(len(spec.inputs))}]
        for i, inp in enumerate(spec.inputs):
            env.append({"name": f"CPNET_IN_{i}_PATH", "value": _work_path(inp.path)})
            env.append({"name": f"CPNET_IN_{i}_DATA", "value": inp.content or ""})
        containers.append(
            {
                "name": "stage-in",
                "image": image,
                "command": ["sh", "-c", _STAGE_IN],
                "env": env,
                "workingDir": WORK_MOUNT,
                "resources": resources,
                "volumeMounts": mounts,
            }
        )
    for i, ex in enumerate(spec.executors):
        env = list(base_env)
        command = list(ex.command)
        redirects = [(f, piece) for f, piece in _REDIRECTS if getattr(ex, f)]
        if redirects or ex.ignore_error:
            script = '"$@"' + "".join(piece for _, piece in redirects)
            if ex.ignore_error:
                script += f'; c=$?; [ "$c" -eq 0 ] || echo "{IGNORED_MARK}$c ignored" >&2; exit 0'
            else:
                script = "exec " + script
            command = ["sh", "-c", script, "sh", *command]
            for f, _ in redirects:
                env.append({"name": f"CPNET_{f.upper()}", "value": _work_path(getattr(ex, f))})
        env += [{"name": k, "value": v} for k, v in ex.env.items()]
        containers.append(
            {
                "name": f"ex-{i}",
                "image": ex.image or image,
                "command": command,
                "workingDir": _work_path(ex.workdir or ""),
                "env": env,
                "resources": resources,
                "volumeMounts": mounts,
            }
        )
    if stage_out is not None:
        # the pod's one container: Kubernetes starts it only after every executor (an init
        # container) exited 0, so outputs are staged after success only, as the runner does
        containers.append(stage_out)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "volumes": volumes,
        "initContainers": containers[:-1],
        "containers": containers[-1:],
    }
    if selector:
        pod_spec["nodeSelector"] = dict(selector)
    # GPU nodes are often tainted with the GPU resource's name; the hub placed this task on the
    # pool on purpose, so it tolerates that taint (and only that one).
    pod_spec["tolerations"] = [{"key": gpu_resource, "operator": "Exists"}]
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    job_spec: dict[str, Any] = {
        "backoffLimit": 0,
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }
    if deadline_s:
        job_spec["activeDeadlineSeconds"] = int(deadline_s)
    if ttl_s is not None:
        job_spec["ttlSecondsAfterFinished"] = int(ttl_s)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": job_spec,
    }


# ---- what a Job and its pod mean (pure) -------------------------------------------------------


def _conditions(obj: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    conds = ((obj or {}).get("status") or {}).get("conditions") or []
    return {str(c.get("type")): c for c in conds if c.get("status") == "True"}


def container_statuses(pod: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The pod's container statuses in run order (init containers first, by spec order)."""
    if not pod:
        return []
    st = pod.get("status") or {}
    by_name = {
        str(c.get("name")): c
        for c in (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or [])
    }
    spec = pod.get("spec") or {}
    order = [
        str(c.get("name"))
        for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])
    ]
    return [by_name[n] for n in order if n in by_name] or list(by_name.values())


def latest_pod(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest pod of a Job (there is one with backoffLimit 0, unless one was replaced)."""
    if not pods:
        return None
    return max(pods, key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp") or ""))


def _executor_index(name: str) -> str:
    return name[3:] if name.startswith("ex-") else name


def pod_failure(pod: dict[str, Any] | None, job: dict[str, Any] | None) -> tuple[State, str]:
    """Why a pod (of a failed Job) failed: the place (SYSTEM_ERROR) or the task (EXECUTOR_ERROR)."""
    if pod is None:
        why = _conditions(job).get("Failed") or {}
        return State.SYSTEM_ERROR, (
            f"Kubernetes Job failed ({why.get('reason') or 'unknown'}) and its pod is gone"
        )
    st = pod.get("status") or {}
    reason = str(st.get("reason") or "")
    message = str(st.get("message") or "")
    disrupted = _conditions(pod).get("DisruptionTarget")
    if reason in SYSTEM_POD_REASONS or disrupted:
        why = reason or str((disrupted or {}).get("reason") or "DisruptionTarget")
        text = message or str((disrupted or {}).get("message") or "")
        return State.SYSTEM_ERROR, f"pod {why}" + (f": {text}" if text else "")
    if reason == "DeadlineExceeded":
        return State.EXECUTOR_ERROR, deadline_reason(job)
    for c in container_statuses(pod):
        term = (c.get("state") or {}).get("terminated") or {}
        code = term.get("exitCode")
        if term and code not in (0, None):
            which = _executor_index(str(c.get("name")))
            if term.get("reason") == "OOMKilled":
                return State.EXECUTOR_ERROR, (
                    f"executor {which} was OOMKilled: it used more memory than its limit"
                )
            if which in ("stage-in", "stage-out"):
                return State.SYSTEM_ERROR, f"{which} exited {code}"
            return State.EXECUTOR_ERROR, f"executor {which} exited with code {code}"
    return State.SYSTEM_ERROR, f"pod failed ({reason or 'no reason given'})" + (
        f": {message}" if message else ""
    )


def deadline_reason(job: dict[str, Any] | None) -> str:
    limit = ((job or {}).get("spec") or {}).get("activeDeadlineSeconds")
    return (
        f"DeadlineExceeded: ran longer than its time limit of {limit} s"
        if limit
        else ("DeadlineExceeded: ran longer than its time limit")
    )


def image_error(pod: dict[str, Any] | None) -> tuple[str, dict[str, Any]] | None:
    """(executor, waiting state) of a container that cannot start (its image cannot be pulled,
    its configuration is refused): it would wait forever."""
    for c in container_statuses(pod):
        waiting = (c.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in IMAGE_ERRORS:
            return _executor_index(str(c.get("name"))), waiting
    return None


def verdict(
    job: dict[str, Any] | None, pods: list[dict[str, Any]], canceled: bool
) -> tuple[State, str | None]:
    """The attempt's state from its Job and pods (None: the Job is gone)."""
    conds = _conditions(job)
    pod = latest_pod(pods)
    if "Complete" in conds or "SuccessCriteriaMet" in conds:
        return State.COMPLETE, None
    if canceled:
        return State.CANCELED, "canceled: the Kubernetes Job was deleted"
    if job is None:
        return State.SYSTEM_ERROR, "the Kubernetes Job vanished"
    failed = conds.get("Failed") or conds.get("FailureTarget")
    if failed:
        if failed.get("reason") == "DeadlineExceeded":
            return State.EXECUTOR_ERROR, deadline_reason(job)
        return pod_failure(pod, job)
    if (job.get("metadata") or {}).get("deletionTimestamp"):
        return State.SYSTEM_ERROR, "the Kubernetes Job is being deleted by someone else"
    if pod is None:
        return State.QUEUED, "waiting for the Job's pod"
    st = pod.get("status") or {}
    phase = st.get("phase")
    if phase == "Failed":
        return pod_failure(pod, job)
    stuck = image_error(pod)
    if stuck is not None:
        which, waiting = stuck
        if which.startswith("stage-"):  # the site's runner image, not the task's
            text = f"{which} (runner_image): {waiting.get('reason')}"
            return State.SYSTEM_ERROR, text + (
                f": {waiting['message']}" if waiting.get("message") else ""
            )
        text = f"executor {which}: {waiting.get('reason')}"
        return State.EXECUTOR_ERROR, text + (
            f": {waiting['message']}" if waiting.get("message") else ""
        )
    started = any(
        str(c.get("name")).startswith("ex-")
        and ((c.get("state") or {}).get("running") or (c.get("state") or {}).get("terminated"))
        for c in container_statuses(pod)
    )
    if phase == "Pending" and started:
        return State.RUNNING, None  # an executor runs as an init container (the pod is Pending)
    if phase == "Pending":
        scheduled = next(
            (c for c in st.get("conditions") or [] if c.get("type") == "PodScheduled"), None
        )
        if not (pod.get("spec") or {}).get("nodeName") or (
            scheduled is not None and scheduled.get("status") != "True"
        ):
            why = (scheduled or {}).get("message") or "waiting for a node"
            return State.QUEUED, f"pod pending: {why}"
        return State.INITIALIZING, "pod starting"
    return State.RUNNING, None


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return None


def executor_logs(pod: dict[str, Any] | None, texts: dict[str, str]) -> list[ExecutorLog]:
    """One log per executor container that started: times, exit code, log tail (`texts` by
    container name)."""
    logs = []
    for c in container_statuses(pod):
        name = str(c.get("name"))
        if not name.startswith("ex-"):
            continue
        state = c.get("state") or {}
        term = state.get("terminated") or {}
        run = state.get("running") or {}
        if not term and not run:
            continue
        text = texts.get(name, "")
        code = term.get("exitCode") if term else None
        last = text.rstrip("\n").rsplit("\n", 1)[-1]
        if code == 0 and last.startswith(IGNORED_MARK) and last.endswith(" ignored"):
            with contextlib.suppress(ValueError):
                code = int(last[len(IGNORED_MARK) : -len(" ignored")])
        logs.append(
            ExecutorLog(
                start_time=_time(term.get("startedAt") or run.get("startedAt")),
                end_time=_time(term.get("finishedAt")),
                exit_code=code,
                stdout=text[-MAX_TAIL_CHARS:],
                stderr="",
            )
        )
    return logs


def usage_of(pod: dict[str, Any] | None) -> Usage | None:
    """Wall time from the first container's start to the last one's finish."""
    starts, ends = [], []
    for c in container_statuses(pod):
        state = c.get("state") or {}
        term = state.get("terminated") or {}
        start = _time(term.get("startedAt") or (state.get("running") or {}).get("startedAt"))
        if start:
            starts.append(start)
        end = _time(term.get("finishedAt"))
        if end:
            ends.append(end)
    if not starts:
        return None
    end = max(ends) if ends else None
    wall = (end - min(starts)).total_seconds() if end else 0.0
    return Usage(wall_s=max(0.0, wall))


# ---- the API ----------------------------------------------------------------------------------


class KubeApi:
    """The few API calls this backend makes, answering plain JSON dicts (BackendError on failure,
    ``None`` for a 404 where that is an answer)."""

    def __init__(self, options: KubernetesOptions) -> None:
        try:
            from kubernetes import client, config
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise BackendError(
                "the kubernetes backend needs the kubernetes client: "
                "pip install 'cpnet[kubernetes]'"
            ) from exc
        self._client = client
        cfg = client.Configuration()
        namespace = options.namespace
        try:
            if options.in_cluster:
                config.load_incluster_config(client_configuration=cfg)
                if not namespace:
                    sa_ns = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
                    with contextlib.suppress(OSError):
                        namespace = sa_ns.read_text().strip()
            else:
                path = options.kubeconfig
                context = options.context
                config.load_kube_config(config_file=path, context=context, client_configuration=cfg)
                if not namespace:
                    with contextlib.suppress(Exception):
                        _, active = config.list_kube_config_contexts(config_file=path)
                        chosen = active
                        if context:
                            contexts, _ = config.list_kube_config_contexts(config_file=path)
                            chosen = next(c for c in contexts if c["name"] == context)
                        namespace = (chosen.get("context") or {}).get("namespace") or ""
        except Exception as exc:
            raise BackendError(f"cannot load the Kubernetes configuration: {exc}") from exc
        self.namespace = namespace or "default"
        self.timeout = options.request_timeout_s
        self.api = client.ApiClient(cfg)
        self.core = client.CoreV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)

    def _call(self, what: str, fn: Any, *args: Any, missing_ok: bool = False, **kw: Any) -> Any:
        try:
            resp = fn(*args, _preload_content=False, _request_timeout=self.timeout, **kw)
        except self._client.ApiException as exc:
            if missing_ok and exc.status == 404:
                return None
            body = (exc.body or b"")[:500]
            text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
            raise BackendError(
                f"Kubernetes {what}: HTTP {exc.status} {exc.reason}: {text}"
            ) from exc
        except Exception as exc:  # urllib3 transport errors and the like
            raise BackendError(f"Kubernetes {what}: {exc}") from exc
        data = resp.data
        if what.startswith("log"):
            return data.decode("utf-8", "replace")
        return json.loads(data) if data else {}

    def nodes(self) -> list[dict[str, Any]]:
        return self._call("list nodes", self.core.list_node).get("items") or []

    def active_pods(self) -> list[dict[str, Any]]:
        """Pods of every namespace that are not finished."""
        out = self._call(
            "list pods",
            self.core.list_pod_for_all_namespaces,
            field_selector="status.phase!=Succeeded,status.phase!=Failed",
        )
        return out.get("items") or []

    def jobs(self) -> list[dict[str, Any]]:
        out = self._call(
            "list jobs",
            self.batch.list_namespaced_job,
            self.namespace,
            label_selector=f"{MANAGED_BY}=cpnet",
        )
        return out.get("items") or []

    def pods(self) -> list[dict[str, Any]]:
        out = self._call(
            "list pods",
            self.core.list_namespaced_pod,
            self.namespace,
            label_selector=f"{MANAGED_BY}=cpnet",
        )
        return out.get("items") or []

    def create_job(self, manifest: dict[str, Any]) -> dict[str, Any] | None:
        """Create; the Job as created, None when a Job of that name exists already."""
        return self._create("job", self.batch.create_namespaced_job, manifest)

    def get_job(self, name: str) -> dict[str, Any] | None:
        return self._call(
            "get job", self.batch.read_namespaced_job, name, self.namespace, missing_ok=True
        )

    def create_secret(self, manifest: dict[str, Any]) -> dict[str, Any] | None:
        """Create; None when a Secret of that name exists already."""
        return self._create("secret", self.core.create_namespaced_secret, manifest)

    def delete_secret(self, name: str) -> None:
        self._call(
            "delete secret",
            self.core.delete_namespaced_secret,
            name,
            self.namespace,
            missing_ok=True,
        )

    def _create(self, what: str, fn: Any, manifest: dict[str, Any]) -> dict[str, Any] | None:
        try:
            resp = fn(
                self.namespace, manifest, _preload_content=False, _request_timeout=self.timeout
            )
        except self._client.ApiException as exc:
            if exc.status == 409:
                return None
            raise BackendError(
                f"Kubernetes create {what}: HTTP {exc.status} {exc.reason}: {str(exc.body)[:500]}"
            ) from exc
        except Exception as exc:
            raise BackendError(f"Kubernetes create {what}: {exc}") from exc
        return json.loads(resp.data or b"{}")

    def delete_job(self, name: str, policy: str = "Background") -> None:
        body = self._client.V1DeleteOptions(propagation_policy=policy)
        self._call(
            "delete job",
            self.batch.delete_namespaced_job,
            name,
            self.namespace,
            body=body,
            missing_ok=True,
        )

    def log(self, pod: str, container: str) -> str:
        out = self._call(
            "log",
            self.core.read_namespaced_pod_log,
            pod,
            self.namespace,
            container=container,
            tail_lines=LOG_TAIL_LINES,  # limitBytes would keep the log's head, not its end
            missing_ok=True,
        )
        return out or ""


# ---- the backend ------------------------------------------------------------------------------


@dataclass(frozen=True)
class KubernetesOptions(StagingOptions):
    """Options of the Kubernetes backend, besides the staging ones (`StagingOptions`)."""

    kubeconfig: str | None = option(
        None, TEXT, "path of a kubeconfig (default: $KUBECONFIG or ~/.kube/config)"
    )
    in_cluster: bool = option(
        False, FLAG, "true uses the pod's service account instead of a kubeconfig"
    )
    context: str | None = option(None, TEXT, "kubeconfig context (default: its current context)")
    namespace: str = option(
        "", TEXT, "where Jobs go (default: the context's namespace, else default)"
    )
    image: str = option(
        DEFAULT_IMAGE, TEXT, "image for executors that name none and for inline stage-in"
    )
    runner_image: str | None = option(
        None,
        TEXT,
        "an image with cpnet installed, for staging (none: URL inputs and outputs are refused)",
    )
    staging_secret: str | None = option(
        None,
        TEXT,
        "an existing Secret in the namespace whose keys the stage containers get as environment "
        "variables (e.g. AWS_ACCESS_KEY_ID)",
    )
    file_roots: tuple[str, ...] | None = option(
        None, PATHS, "':'-separated directories file:// URLs may read or write (default: any)"
    )
    http_timeout_s: float = option(60.0, seconds(least=1), "per network operation while staging")
    pool_label: str | None = option(
        None, TEXT, "node label whose value names the pool (default: the well-known ones above)"
    )
    pool_type: str | None = option(
        None,
        POOL_TYPE,
        "type of discovered pools (default: intelligent with GPUs, else general)",
    )
    gpu_resource: str = option(DEFAULT_GPU_RESOURCE, TEXT, "extended resource name of GPUs")
    default_time_limit_s: int | None = option(
        None, whole_seconds(least=1), "activeDeadlineSeconds for tasks without time_limit_s"
    )
    # the agent must see a finished Job before Kubernetes deletes it
    ttl_after_finished_s: int = option(
        86400, whole_seconds(least=60), "ttlSecondsAfterFinished of Jobs"
    )
    service_account: str | None = option(
        None,
        TEXT,
        "service account of task pods (default: the namespace's default, with no token mounted)",
    )
    cache_s: float = option(
        1.0, seconds(least=0), "how long one list of Jobs and Pods serves polls"
    )
    request_timeout_s: float = option(30.0, seconds(least=1), "timeout of one API call")


class KubernetesBackend(ClusterBackend):
    """Runs each attempt as one Kubernetes Job on the node pool named by its pool."""

    name: ClassVar[str] = "kubernetes"
    Options = KubernetesOptions
    options: KubernetesOptions
    id_file: ClassVar[str] = JOB_FILE
    scheduler: ClassVar[str] = "Kubernetes"

    def __init__(self, config: BackendConfig, api: KubeApi | None = None) -> None:
        super().__init__(config)
        self.api = api or KubeApi(self.options)

    # ---- pools ---------------------------------------------------------------------------------

    def _find_pools(self) -> list[KubePool]:
        """The declared pools (no node selector), else one pool per node pool."""
        if self.config.pools:
            return [KubePool(d, {}, ()) for d in self.config.pools]
        return self._group()

    def _group(self) -> list[KubePool]:
        return group_nodes(
            self.api.nodes(),
            pool_label=self.options.pool_label,
            pool_type=self.options.pool_type,
            gpu_resource=self.options.gpu_resource,
        )

    def live(self) -> list[PoolLive]:
        """Allocatable minus requests of unfinished pods, per pool; cpnet Jobs queued/running."""
        pools = self._cluster_pools()
        listed = self.api.nodes()
        nodes = {str((n.get("metadata") or {}).get("name")): n for n in listed}
        # membership now, so that nodes added or removed since discovery count (or stop counting)
        members = {
            p.decl.name: p.nodes
            for p in group_nodes(
                listed,
                pool_label=self.options.pool_label,
                pool_type=self.options.pool_type,
                gpu_resource=self.options.gpu_resource,
            )
        }
        used: dict[str, PoolCapacity] = {}
        for pod in self.api.active_pods():
            node = (pod.get("spec") or {}).get("nodeName")
            if node:
                used[node] = used.get(node, PoolCapacity()).plus(
                    pod_request(pod, self.options.gpu_resource)
                )
        jobs, pods = self._listing(fresh=True)
        result = []
        for pool in pools:
            if pool.nodes:
                free = PoolCapacity()
                for name in members.get(pool.decl.name, ()):
                    node = nodes.get(name)
                    if node is None or not node_ready(node):
                        continue
                    alloc = capacity_of(
                        (node.get("status") or {}).get("allocatable") or {},
                        self.options.gpu_resource,
                    )
                    free = free.plus(alloc.minus(used.get(name, PoolCapacity())))
                free = PoolCapacity(
                    round(free.cpu_cores, 3),
                    round(free.ram_gb, 3),
                    round(free.disk_gb, 3),
                    free.gpus,
                )
            else:
                free = pool.decl.total
            queued = running = 0
            value = label_value(pool.decl.name)
            for name, job in jobs.items():
                if ((job.get("metadata") or {}).get("labels") or {}).get(POOL_LABEL) != value:
                    continue
                state, _ = verdict(job, pods.get(name, []), False)
                if state is State.QUEUED:
                    queued += 1
                elif not state.terminal:
                    running += 1
            result.append(PoolLive(pool.decl.name, free, queued, running))
        return result

    def _list_jobs(self) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
        """cpnet's Jobs by name and their pods by Job name."""
        jobs = {str(j["metadata"]["name"]): j for j in self.api.jobs()}
        by_attempt = {
            ((j.get("metadata") or {}).get("labels") or {}).get(ATTEMPT_LABEL): n
            for n, j in jobs.items()
        }
        pods: dict[str, list[dict[str, Any]]] = {}
        for p in self.api.pods():
            labels = (p.get("metadata") or {}).get("labels") or {}
            owner = by_attempt.get(labels.get(ATTEMPT_LABEL)) or labels.get("job-name")
            if owner:
                pods.setdefault(str(owner), []).append(p)
        return jobs, pods

    def _listing_s(self) -> float:
        return self.options.cache_s

    # ---- attempts ------------------------------------------------------------------------------

    def _selector(self, pool_name: str) -> dict[str, str]:
        for p in self._cluster_pools():
            if p.decl.name == pool_name:
                return p.selector
        raise BackendError(f"no pool {pool_name!r} on this Kubernetes backend")

    def _launch(self, job: Job) -> str:
        """Create the attempt's Job once (an existing one of its name is the same Job, created
        before a crash), and its staging Secret; "namespace/name"."""
        o = self.options
        problem = unsupported(job.spec, o.runner_image)
        if problem is not None:
            raise Refused(problem)
        staged = bool(o.runner_image) and needs_staging(job.spec)
        try:
            files = self._staging_files(job) if staged else None
            manifest = job_manifest(
                job,
                namespace=self.api.namespace,
                image=o.image,
                selector=self._selector(job.pool_name),
                gpu_resource=o.gpu_resource,
                deadline_s=time_limit_s(job.spec, o.default_time_limit_s),
                ttl_s=o.ttl_after_finished_s,
                service_account=o.service_account,
                runner_image=o.runner_image,
                staging_secret=o.staging_secret,
            )
            write_json_atomic(job.work_dir / MANIFEST_FILE, manifest)
            created = self.api.create_job(manifest)  # None: created before a crash; the same Job
            if files is not None:
                self._create_secret(manifest, created, files)
        except (BackendError, ValueError) as exc:
            raise Refused(f"Kubernetes refused the Job: {exc}") from exc
        return f"{self.api.namespace}/{manifest['metadata']['name']}"

    def _staging_files(self, job: Job) -> dict[str, str]:
        settings = runner_settings(
            job.spec,
            max_stage_gb=self.options.max_stage_gb,
            grace_s=0.0,
            http_timeout_s=self.options.http_timeout_s,
            file_roots=self.options.file_roots,
            memory_limit_gb=None,
            private_tmp=False,
            staging=staging_settings(self.options, self.config.hub_url),
        )
        return staging_payload(job, settings, staging_env(self.options, self.config.hub_token))

    def _create_secret(
        self, manifest: dict[str, Any], created: dict[str, Any] | None, files: dict[str, str]
    ) -> None:
        """The attempt's staging Secret, owned by its Job (created after it, to know its uid:
        until it exists the pod waits for its volume). On failure the Job is deleted."""
        name = manifest["metadata"]["name"]
        job = created or self.api.get_job(name)
        if not job or not (job.get("metadata") or {}).get("uid"):
            raise BackendError(f"the Job {name} vanished before its staging Secret was made")
        try:
            self.api.create_secret(secret_manifest(name, self.api.namespace, job, files))
        except BackendError as exc:
            with contextlib.suppress(BackendError):
                self.api.delete_job(name)
            raise BackendError(f"cannot create the staging Secret: {exc}") from exc

    def _observe(self, handle: Handle, since: float) -> Seen:
        """The Job's and its pod's state (`verdict`); a final one brings the pods along."""
        name = _job_name_of(handle)
        jobs, pods = self._listing_with(lambda listed: name in listed[0], since)
        canceled = (handle.work_dir / CANCEL_FILE).exists()
        state, reason = verdict(jobs.get(name), pods.get(name, []), canceled)
        return Seen(state, reason, detail=pods.get(name, []))

    def _ended(self, handle: Handle, seen: Seen) -> JobStatus:
        name = _job_name_of(handle)
        return self._finish(handle.work_dir, name, seen.state, seen.reason, seen.detail)

    def _finish(
        self,
        work_dir: Path,
        name: str,
        state: State,
        reason: str | None,
        pods: list[dict[str, Any]],
    ) -> JobStatus:
        """Collect logs and usage of a final attempt and keep them in status.json."""
        pod = latest_pod(pods)
        texts: dict[str, str] = {}
        system_logs: list[str] = []
        if pod is not None:
            pod_name = str((pod.get("metadata") or {}).get("name"))
            for c in container_statuses(pod):
                cname = str(c.get("name"))
                try:
                    texts[cname] = self.api.log(pod_name, cname)
                except BackendError as exc:
                    system_logs.append(f"no log of {cname}: {exc}"[:4096])
        if image_error(pod) is not None:
            with contextlib.suppress(BackendError):
                self.api.delete_job(name)  # it would wait for its image forever
        results = {}
        for which in ("stage-in", "stage-out"):
            found = parse_result(texts.get(which, ""))
            if found is not None:
                results[which] = found
                lines = [rec_line(r) for r in found.get("staging") or []]
                system_logs += [line for line in lines if line]
                if found.get("error"):
                    system_logs.append(str(found["error"])[:4096])
                    if state is State.SYSTEM_ERROR:
                        reason = str(found["error"])
            elif texts.get(which):
                system_logs.append(f"{which}: {texts[which][-2000:]}")
        if results:  # staging ran: its Secret is no longer needed (the Job's owner GC backs this)
            with contextlib.suppress(BackendError):
                self.api.delete_secret(name)
        record = new_record(state, reason)
        record["executor_logs"] = [x.model_dump(mode="json") for x in executor_logs(pod, texts)]
        u = usage_of(pod)
        bytes_in = int((results.get("stage-in") or {}).get("bytes") or 0)
        bytes_out = int((results.get("stage-out") or {}).get("bytes") or 0)
        if results:
            u = (u or Usage()).model_copy(update={"bytes_in": bytes_in, "bytes_out": bytes_out})
        if state is State.COMPLETE:
            record["outputs"] = (results.get("stage-out") or {}).get("outputs") or []
        record["usage"] = u.model_dump(mode="json") if u else None
        record["system_logs"] = system_logs[:64]  # what the hub accepts
        record["staging"] = [  # per-transfer records, for the hub (status_from_record)
            r for found in results.values() for r in found.get("staging") or []
        ]
        with contextlib.suppress(OSError):
            write_json_atomic(work_dir / STATUS_FILE, record)
        return status_from_record(record)

    def _stop(self, handle: Handle) -> None:
        """Delete the Job (Background propagation: Kubernetes kills and removes its pod)."""
        self.api.delete_job(_job_name_of(handle), "Background")

    def logs(self, handle: Handle) -> list[ExecutorLog]:
        """Final logs from status.json, else the running containers' logs now."""
        record = read_status(handle.work_dir)
        if record is not None and State(record["state"]).terminal:
            return status_from_record(record).executor_logs
        _, pods = self._listing(fresh=True)
        pod = latest_pod(pods.get(_job_name_of(handle), []))
        if pod is None:
            return []
        pod_name = str((pod.get("metadata") or {}).get("name"))
        texts = {
            str(c.get("name")): self.api.log(pod_name, str(c.get("name")))
            for c in container_statuses(pod)
            if str(c.get("name")).startswith("ex-")
        }
        return executor_logs(pod, texts)

    def usage(self, handle: Handle) -> Usage | None:
        record = read_status(handle.work_dir)
        if record is not None and State(record["state"]).terminal:
            return status_from_record(record).usage
        _, pods = self._listing()
        return usage_of(latest_pod(pods.get(_job_name_of(handle), [])))

    def forget(self, handle: Handle) -> None:
        """Delete the finished Job (its pod goes with it); the local dir stays for inspection."""
        name = _job_name_of(handle)
        if name:
            with contextlib.suppress(BackendError):
                self.api.delete_job(name, "Background")


def _job_name_of(handle: Handle) -> str:
    """The Job's name in the handle's "namespace/name" ('' when none was created)."""
    return (handle.job_id or "").split("/", 1)[-1]


def rec_line(rec: Any) -> str:
    """A staging record (`staging.Transfer.to_dict`) as the runner's system-log line."""
    if not isinstance(rec, dict):
        return ""
    with contextlib.suppress(TypeError, ValueError):
        return Transfer(**rec).line()[:4096]
    return ""


__all__ = [
    "KubeApi",
    "KubernetesBackend",
    "KubernetesOptions",
    "dns_label",
    "group_nodes",
    "job_manifest",
    "job_name",
    "label_value",
    "pod_request",
    "quantity",
    "verdict",
]
