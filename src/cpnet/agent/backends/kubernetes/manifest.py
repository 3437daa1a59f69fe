"""The ``batch/v1`` Job that runs an attempt, and its staging Secret (pure)."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

from cpnet.agent.backends.base import (
    Job,
)
from cpnet.agent.backends.kubernetes.names import job_name, label_value
from cpnet.agent.backends.kubernetes.pools import DEFAULT_GPU_RESOURCE, quantity
from cpnet.tasks.model import Executor, TaskSpec

WORK_MOUNT = "/cpnet/work"
STAGING_MOUNT = "/cpnet/staging"  # the attempt's Secret (job.json, env.json), stage containers only
MAX_SECRET_BYTES = 900 * 1024  # a Secret holds at most 1 MiB; keep room for its metadata
STAGE_MIN_MEMORY = "512Mi"  # the memory limit of stage containers, at least (python + boto3)
DEFAULT_IMAGE = "python:3.12-slim"
MANAGED_BY = "app.kubernetes.io/managed-by"
ATTEMPT_LABEL = "cpnet.io/attempt"
POOL_LABEL = "cpnet.io/pool"
ANNOTATION = "cpnet.io/"
MAX_INLINE_BYTES = 64 * 1024  # one environment string must stay under Linux's 128 KiB
IGNORED_MARK = "cpnet: exit code "  # the ignore_error wrapper's last line: "... N ignored"


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
    if spec.data_key is not None:
        return (
            "the task has a data key: the Kubernetes backend does not decrypt inputs or encrypt "
            "outputs yet; run it on a local, Slurm or Ray pool"
        )
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


STAGING_FILES = ("job.json", "env.json")  # the staging Secret's keys the stage containers see


def secret_env_key(i: int, name: str) -> str:
    """The attempt Secret's key for executor `i`'s secret env value `name` (env names are
    ``[A-Za-z_][A-Za-z0-9_]*``: a valid Secret key as they are)."""
    return f"ex{i}.{name}"


def secret_env_files(spec: TaskSpec, values: dict[str, dict[str, str]]) -> dict[str, str]:
    """The attempt Secret's entries for the executors' secret env values (`values`: the
    delivered ``secrets.json``, by executor index); ValueError naming an executor whose values
    did not arrive."""
    out: dict[str, str] = {}
    for i, ex in enumerate(spec.executors):
        got = values.get(str(i)) or {}
        for name in ex.secret_env:
            if name not in (ex.env or {}):
                continue
            if name not in got:
                raise ValueError(f"executor {i}'s secret value {name} did not arrive")
            out[secret_env_key(i, name)] = str(got[name])
    size = sum(len(v.encode()) for v in out.values())
    if size > MAX_SECRET_BYTES:
        raise ValueError(f"the task's secret env values take {size} bytes, over {MAX_SECRET_BYTES}")
    return out


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


def _work_mount() -> list[dict[str, Any]]:
    """Every container's volume mounts: the shared work dir."""
    return [{"name": "work", "mountPath": WORK_MOUNT}]


def stage_container(
    direction: str,
    runner_image: str,
    resources: dict[str, Any],
    gpu_resource: str,
    staging_secret: str | None,
) -> dict[str, Any]:
    """cpnet's ``stage-in`` or ``stage-out`` container (`direction`): the task's CPU and memory,
    at least `STAGE_MIN_MEMORY`, no GPU; the attempt's Secret mounted read-only."""
    limits = dict(resources["limits"])
    if quantity(limits.get("memory")) < quantity(STAGE_MIN_MEMORY):
        limits["memory"] = STAGE_MIN_MEMORY
    limits.pop(gpu_resource, None)
    requests = {k: v for k, v in resources["requests"].items() if k != gpu_resource}
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
            *_work_mount(),
            {"name": "staging", "mountPath": STAGING_MOUNT, "readOnly": True},
        ],
    }
    if staging_secret:
        c["envFrom"] = [{"secretRef": {"name": staging_secret}}]
    return c


def inline_stage_in(spec: TaskSpec, image: str, resources: dict[str, Any]) -> dict[str, Any]:
    """The ``stage-in`` container that writes inline inputs with `image`'s ``sh``: a constant
    script, the paths and contents in environment variables."""
    env = [{"name": "CPNET_INPUTS", "value": str(len(spec.inputs))}]
    for i, inp in enumerate(spec.inputs):
        env.append({"name": f"CPNET_IN_{i}_PATH", "value": _work_path(inp.path)})
        env.append({"name": f"CPNET_IN_{i}_DATA", "value": inp.content or ""})
    return {
        "name": "stage-in",
        "image": image,
        "command": ["sh", "-c", _STAGE_IN],
        "env": env,
        "workingDir": WORK_MOUNT,
        "resources": resources,
        "volumeMounts": _work_mount(),
    }


def executor_container(
    i: int,
    ex: Executor,
    job: Job,
    image: str,
    resources: dict[str, Any],
    secret_name: str | None = None,
) -> dict[str, Any]:
    """Executor `i`'s container: its argv as the command, through a constant ``sh -c`` script
    (the argv as ``"$@"``, the paths in environment variables) only when it redirects a stream
    or ignores errors. Its secret env values come from the attempt's Secret `secret_name`
    (``secretKeyRef``): the manifest holds only their names."""
    env = [
        {"name": "CPNET_TASK_ID", "value": job.task_id},
        {"name": "CPNET_ATTEMPT_ID", "value": job.attempt_id},
        {"name": "CPNET_WORK_DIR", "value": WORK_MOUNT},
        {"name": "HOME", "value": WORK_MOUNT},
    ]
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
    for k, v in ex.env.items():
        if secret_name and k in ex.secret_env:
            ref = {"name": secret_name, "key": secret_env_key(i, k)}
            env.append({"name": k, "valueFrom": {"secretKeyRef": ref}})
        else:
            env.append({"name": k, "value": v})
    return {
        "name": f"ex-{i}",
        "image": ex.image or image,
        "command": command,
        "workingDir": _work_path(ex.workdir or ""),
        "env": env,
        "resources": resources,
        "volumeMounts": _work_mount(),
    }


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
    resources = resources_for(spec, gpu_resource)
    containers: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = [{"name": "work", "emptyDir": {}}]
    stage_out: dict[str, Any] | None = None
    if runner_image and needs_staging(spec):
        # only the staging files: the executors' secret env values stay out of these containers
        items = [{"key": k, "path": k} for k in STAGING_FILES]
        secret = {"secretName": name, "defaultMode": 0o400, "items": items}
        volumes.append({"name": "staging", "secret": secret})
        stage = (runner_image, resources, gpu_resource, staging_secret)
        containers.append(stage_container("in", *stage))
        if spec.outputs:
            stage_out = stage_container("out", *stage)
    elif spec.inputs:
        containers.append(inline_stage_in(spec, image, resources))
    secret_name = name if any(ex.secret_env for ex in spec.executors) else None
    containers += [
        executor_container(i, ex, job, image, resources, secret_name)
        for i, ex in enumerate(spec.executors)
    ]
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


__all__ = [
    "ATTEMPT_LABEL",
    "DEFAULT_IMAGE",
    "MANAGED_BY",
    "POOL_LABEL",
    "WORK_MOUNT",
    "job_manifest",
    "needs_staging",
    "resources_for",
    "secret_manifest",
    "staging_payload",
    "time_limit_s",
    "unsupported",
]
