"""GA4GH TES v1.1 ⇄ cpnet tasks: the request models and a pure mapping both ways.

The TES router is a thin shell over this module and the native store: a TES task becomes a
``TaskSpec`` (``to_spec``), and a ``TaskView`` becomes a TES task (``to_tes``) in the view the
client asked for. Nothing a TES client sends is lost: every TES field has a home in ``TaskSpec``
(they share names), and cpnet's own wishes travel in ``resources.backend_parameters`` under the
``cpnet.*`` keys of ``BACKEND_PARAMETERS`` (keys are case-insensitive, as the spec says).

Pure: plain data in, plain data out, no I/O.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cpnet.errors import Invalid
from cpnet.measure.scu import PROFILES
from cpnet.tasks import secrets
from cpnet.tasks.model import (
    MAX_ARG_CHARS,
    MAX_CONTENT_BYTES,
    MAX_EXECUTORS,
    MAX_FILES,
    AttemptView,
    Executor,
    FileType,
    Input,
    Output,
    Resources,
    TaskSpec,
    TaskView,
)

# ---- the TES request document ------------------------------------------------------------------

Str = Annotated[str, Field(max_length=4096)]
Arg = Annotated[str, Field(max_length=MAX_ARG_CHARS)]


class _Tes(BaseModel):
    """TES request objects: unknown fields are refused (400 naming them), nulls are absent."""

    model_config = ConfigDict(extra="forbid")


class TesExecutor(_Tes):
    image: Str
    command: list[Arg] = Field(min_length=1, max_length=1024)
    workdir: Str | None = None
    stdin: Str | None = None
    stdout: Str | None = None
    stderr: Str | None = None
    env: dict[Annotated[str, Field(max_length=256)], Arg] | None = None
    ignore_error: bool | None = None


class TesInput(_Tes):
    name: Str | None = None
    description: Str | None = None
    url: Str | None = None
    path: Str
    type: FileType | None = None
    content: Annotated[str, Field(max_length=MAX_CONTENT_BYTES)] | None = None
    streamable: bool | None = None


class TesOutput(_Tes):
    name: Str | None = None
    description: Str | None = None
    url: Str
    path: Str
    path_prefix: Str | None = None
    type: FileType | None = None


class TesResources(_Tes):
    cpu_cores: int | None = Field(default=None, ge=1, le=4096)
    preemptible: bool | None = None
    ram_gb: float | None = Field(default=None, ge=0, le=65536)
    disk_gb: float | None = Field(default=None, ge=0, le=1_000_000)
    zones: list[Annotated[str, Field(max_length=256)]] | None = Field(default=None, max_length=64)
    backend_parameters: dict[Annotated[str, Field(max_length=256)], Str] | None = None
    backend_parameters_strict: bool | None = None


class TesTask(_Tes):
    """A CreateTask body. The read-only fields (id, state, logs, creation_time) are accepted
    and ignored: clients that echo a task document back must not be refused for it."""

    id: Str | None = None
    state: Str | None = None
    name: Str | None = None
    description: Annotated[str, Field(max_length=16 * 1024)] | None = None
    inputs: list[TesInput] | None = Field(default=None, max_length=MAX_FILES)
    outputs: list[TesOutput] | None = Field(default=None, max_length=MAX_FILES)
    resources: TesResources | None = None
    executors: list[TesExecutor] = Field(min_length=1, max_length=MAX_EXECUTORS)
    volumes: list[Str] | None = Field(default=None, max_length=64)
    tags: dict[Annotated[str, Field(max_length=256)], Str] | None = None
    logs: list[Any] | None = None
    creation_time: Str | None = None


class View(StrEnum):
    MINIMAL = "MINIMAL"
    BASIC = "BASIC"
    FULL = "FULL"


# ---- backend_parameters: cpnet's own wishes --------------------------------------------------


def _csv(v: str) -> list[str]:
    return [x.strip() for x in v.split(",") if x.strip()]


def _pairs(v: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in _csv(v):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"{item!r} is not KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def _show_pairs(d: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in d.items())


def _num(v: float) -> str:
    """A number as the shortest text that reads back to the same float."""
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def _flag(v: str) -> bool:
    """ "true" or "false" (any case), as TES backend_parameters carry booleans."""
    word = v.strip().lower()
    if word not in ("true", "false"):
        raise ValueError("must be true or false")
    return word == "true"


def _show_flag(v: bool) -> str:
    return "true" if v else "false"


def _deadline(v: str) -> str:
    datetime.fromisoformat(v.replace("Z", "+00:00"))  # ValueError when not RFC 3339
    return v


def _nonneg(v: str) -> str:
    if not float(v) >= 0 or math.isinf(float(v)):
        raise ValueError("must be a number >= 0")
    return v


def _one_of(*allowed: str) -> Callable[[str], str]:
    def check(v: str) -> str:
        if v not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return v

    return check


# Keys that set a native TaskSpec field: key → (path in the spec dict, parse, show).
NATIVE_KEYS: dict[str, tuple[tuple[str, ...], Callable[[str], Any], Callable[[Any], str]]] = {
    "cpnet.cpu_cores": (("resources", "cpu_cores"), float, _num),
    "cpnet.gpus": (("resources", "gpus"), int, str),
    "cpnet.gpu_model": (("resources", "gpu_model"), str, str),
    "cpnet.regions": (("constraints", "regions"), _csv, ",".join),
    "cpnet.providers": (("constraints", "providers"), _csv, ",".join),
    "cpnet.pool_types": (("constraints", "pool_types"), _csv, ",".join),
    "cpnet.labels": (("constraints", "labels"), _pairs, _show_pairs),
    "cpnet.max_attempts": (("max_attempts",), int, str),
    "cpnet.expected_runtime_s": (("expected_runtime_s",), float, _num),
    "cpnet.idempotency_key": (("idempotency_key",), str, str),
    "cpnet.keep_work_dir": (("keep_work_dir",), _flag, _show_flag),
    # the task's work in standard compute units (docs/compute-unit.md): native `work`
    "cpnet.scu_hours": (("work", "scu_hours"), float, _num),
    "cpnet.reference_pool": (("work", "reference_pool"), str, str),
    "cpnet.reference_runtime_s": (("work", "reference_runtime_s"), float, _num),
}
WORK_KEYS = ("cpnet.scu_hours", "cpnet.reference_pool", "cpnet.reference_runtime_s")
# Keys kept as given in resources.backend_parameters (checked here; read by the scheduler's
# later stages, shown back to the client unchanged).
KEPT_KEYS: dict[str, Callable[[str], str]] = {
    # with an amount of work (WORK_KEYS) the profile is work.profile, else it is kept here
    "cpnet.profile": _one_of(*PROFILES),
    "cpnet.objective": _one_of("fastest", "cheapest", "balanced", "greenest"),
    "cpnet.deadline": _deadline,
    "cpnet.budget": _nonneg,
}
BACKEND_PARAMETERS = tuple(sorted([*NATIVE_KEYS, *KEPT_KEYS]))

_DEFAULTS = TaskSpec(executors=[Executor(command=["true"])]).model_dump(mode="json")


# TES has no field for a data key or encrypted inputs (docs/tes.md): tags carry them. The key's
# tag is taken out of the tags (the hub seals it as data_key and shows "[secret]").
DATA_KEY_TAG = "cpnet.data_key"
ENCRYPTED_INPUTS_TAG = "cpnet.encrypted_inputs"  # input paths, comma-separated


def _get(d: dict[str, Any], path: tuple[str, ...]) -> Any:
    for p in path:
        d = (d or {}).get(p)
    return d


def _set(d: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for p in path[:-1]:
        d = d.setdefault(p, {})
    d[path[-1]] = value


# ---- TES → cpnet -----------------------------------------------------------------------------


def _field_of(loc: tuple) -> str:
    return ".".join(str(x) for x in loc)


def parse(body: dict[str, Any]) -> TesTask:
    """Validate a CreateTask body; Invalid (400) naming the first bad field."""
    try:
        return TesTask.model_validate(body)
    except ValidationError as exc:
        e = exc.errors()[0]
        where = _field_of(tuple(e.get("loc", ()))) or "body"
        raise Invalid(f"{where}: {e.get('msg', 'invalid')}", field=where) from None


def to_spec(task: TesTask) -> tuple[TaskSpec, list[str]]:
    """The TaskSpec for a TES task, and warnings about ignored backend_parameters.

    Raises Invalid (400) naming the field: an unsupported backend_parameters key when
    backend_parameters_strict is true, a bad value for a cpnet key, anything TaskSpec refuses.
    """
    r = task.resources or TesResources()
    spec: dict[str, Any] = {"executors": []}
    for key in ("name", "description", "volumes", "tags"):
        value = getattr(task, key)
        if value is not None:
            spec[key] = value
    for ex in task.executors:
        e = ex.model_dump(exclude_none=True)
        if not e["image"]:
            del e["image"]  # "" is how cpnet shows a native task without an image
        spec["executors"].append(e)
    secret_tag = (task.tags or {}).get(secrets.TES_TAG)
    if secret_tag is not None:  # TES has no secret marker: a tag names the secret variables
        names = secrets.tes_names(secret_tag)
        for e in spec["executors"]:
            e["secret_env"] = [n for n in names if n in (e.get("env") or {})]
        unused = [n for n in names if not any(n in (e.get("env") or {}) for e in spec["executors"])]
        if unused:
            raise Invalid(
                f"tag {secrets.TES_TAG} names {unused[0]!r}, which no executor's env sets",
                field=f"tags.{secrets.TES_TAG}",
            )
    tags = dict(task.tags or {})
    if DATA_KEY_TAG in tags:  # the key is not kept as a tag: it becomes the sealed data_key
        spec["data_key"] = tags.pop(DATA_KEY_TAG)
        spec["tags"] = tags
    encrypted = set(secrets.tes_names(tags.get(ENCRYPTED_INPUTS_TAG, "")))
    unknown = sorted(encrypted - {i.path for i in task.inputs or ()})
    if unknown:
        raise Invalid(
            f"tag {ENCRYPTED_INPUTS_TAG} names {unknown[0]!r}, which is no input's path",
            field=f"tags.{ENCRYPTED_INPUTS_TAG}",
        )
    if task.inputs:
        spec["inputs"] = []
        for i in task.inputs:
            d = i.model_dump(exclude_none=True)
            if i.path in encrypted:
                d["encrypted"] = True
            if d.get("content"):  # "If content is not empty, url must be ignored."
                d.pop("url", None)
            elif "url" in d:
                d.pop("content", None)
            spec["inputs"].append(d)
    if task.outputs:
        spec["outputs"] = [o.model_dump(exclude_none=True) for o in task.outputs]
    res: dict[str, Any] = {}
    for key in ("preemptible", "ram_gb", "disk_gb", "zones", "backend_parameters_strict"):
        value = getattr(r, key)
        if value is not None:
            res[key] = value
    if r.cpu_cores is not None:
        res["cpu_cores"] = float(r.cpu_cores)
    spec["resources"] = res
    kept: dict[str, str] = {}
    warnings: list[str] = []
    given = {k.strip().lower() for k in r.backend_parameters or {}}
    has_work = any(k in given for k in WORK_KEYS)
    for raw_key, value in (r.backend_parameters or {}).items():
        key = raw_key.strip().lower()
        where = f"resources.backend_parameters.{raw_key}"
        try:
            if key in NATIVE_KEYS:
                path, read, _show = NATIVE_KEYS[key]
                _set(spec, path, read(value))
            elif key == "cpnet.profile" and has_work:
                _set(spec, ("work", "profile"), KEPT_KEYS[key](value))
            elif key in KEPT_KEYS:
                kept[key] = KEPT_KEYS[key](value)
            elif r.backend_parameters_strict:
                raise Invalid(
                    f"{where}: unsupported key {raw_key!r} (backend_parameters_strict is true); "
                    f"supported keys: {', '.join(BACKEND_PARAMETERS)}",
                    field=where,
                )
            else:
                warnings.append(
                    f"backend_parameters key {raw_key!r} is not supported and was ignored "
                    f"(supported: {', '.join(BACKEND_PARAMETERS)})"
                )
        except ValueError as exc:
            raise Invalid(f"{where}: {exc}", field=where) from None
    if kept:
        res["backend_parameters"] = kept
    try:
        return TaskSpec.model_validate(spec), warnings
    except ValidationError as exc:
        e = exc.errors()[0]
        where = _tes_field(tuple(e.get("loc", ())))
        raise Invalid(f"{where}: {e.get('msg', 'invalid')}", field=where) from None


def _tes_field(loc: tuple) -> str:
    """A TaskSpec error location as the TES field a client sent."""
    parts = [str(x) for x in loc]
    if parts[:1] == ["constraints"] and len(parts) > 1:
        parts = ["resources.backend_parameters", f"cpnet.{parts[1]}"]
    if parts[:1] == ["work"]:
        parts = ["resources.backend_parameters", f"cpnet.{parts[1]}" if len(parts) > 1 else ""]
        parts = [p for p in parts if p]
    if parts and parts[0] in ("max_attempts", "expected_runtime_s", "idempotency_key"):
        parts = ["resources.backend_parameters", f"cpnet.{parts[0]}"]
    if parts[:2] in (["resources", "gpus"], ["resources", "gpu_model"]):
        parts = ["resources.backend_parameters", f"cpnet.{parts[1]}"]
    return ".".join(parts) or "body"


# ---- cpnet → TES -----------------------------------------------------------------------------


def _time(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


# Fields shown only when they differ from the spec's default: TES 1.0 clients (py-tes 0.4, which
# snakemake-executor-plugin-tes needs) refuse fields they do not know, and these arrived in 1.1.
def _lean(d: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None and not (k in keys and not v)}


def executor_to_tes(e: Executor) -> dict[str, Any]:
    # secret_env is cpnet's (TES marks secrets with the cpnet.secret_env tag, kept in tags)
    d = _lean(e.model_dump(mode="json", exclude={"secret_env"}), "env", "ignore_error")
    d["image"] = e.image or ""
    return d


def input_to_tes(i: Input, view: View) -> dict[str, Any]:
    # encrypted is cpnet's (TES marks it with the cpnet.encrypted_inputs tag)
    d = _lean(i.model_dump(mode="json", exclude={"sha256", "encrypted"}), "streamable")
    if view is not View.FULL:
        d.pop("content", None)
    return d


def output_to_tes(o: Output) -> dict[str, Any]:
    return _drop_none(o.model_dump(mode="json"))


def resources_to_tes(spec: TaskSpec) -> dict[str, Any]:
    r: Resources = spec.resources
    out: dict[str, Any] = {
        "cpu_cores": max(1, math.ceil(r.cpu_cores)),
        "preemptible": r.preemptible,
        "ram_gb": r.ram_gb,
        "disk_gb": r.disk_gb,
    }
    if r.zones:
        out["zones"] = list(r.zones)
    params: dict[str, str] = dict(r.backend_parameters)
    whole = spec.model_dump(mode="json")
    if spec.work is not None:
        params["cpnet.profile"] = spec.work.profile
    for key, (path, _read, show) in NATIVE_KEYS.items():
        if path[0] == "work" and spec.work is None:
            continue
        value = _get(whole, path)
        if key == "cpnet.cpu_cores":
            if not float(value).is_integer():
                params[key] = show(value)
        elif value != _get(_DEFAULTS, path) and value not in (None, [], {}):
            params[key] = show(value)
    if params:
        out["backend_parameters"] = dict(sorted(params.items()))
    if r.backend_parameters_strict:
        out["backend_parameters_strict"] = True
    return out


def task_log(a: AttemptView, view: View, warnings: list[str]) -> dict[str, Any]:
    """One attempt as a tesTaskLog."""
    logs = []
    for x in a.executor_logs:
        if x.exit_code is None:
            continue  # still running: tesExecutorLog requires an exit code, so not shown yet
        e = _drop_none(
            {
                "start_time": _time(x.start_time),
                "end_time": _time(x.end_time),
                "exit_code": x.exit_code,
            }
        )
        if view is View.FULL:
            e["stdout"], e["stderr"] = x.stdout, x.stderr
        logs.append(e)
    metadata = {
        "cpnet.attempt": str(a.attempt),
        "cpnet.attempt_id": a.attempt_id,
        "cpnet.pool_id": a.pool_id,
        "cpnet.site_id": a.site_id,
        "cpnet.state": a.state.value,
    }
    if a.reason:
        metadata["cpnet.reason"] = a.reason
    if a.usage is not None:
        for k, v in a.usage.model_dump().items():
            metadata[f"cpnet.usage.{k}"] = _num(v)
    # TES metadata is a map of strings: progress and transfer records as JSON text.
    if a.progress is not None:
        metadata["cpnet.progress"] = a.progress.model_dump_json(exclude_none=True)
    if view is View.FULL and a.transfers:
        metadata["cpnet.transfers"] = json.dumps([t.model_dump(mode="json") for t in a.transfers])
    if view is View.FULL and a.transfers_omitted:
        metadata["cpnet.transfers_omitted"] = str(a.transfers_omitted)
    out: dict[str, Any] = {
        "logs": logs,
        "metadata": metadata,
        "outputs": [
            {"url": o.url, "path": o.path, "size_bytes": str(o.size_bytes)} for o in a.outputs
        ],
    }
    if a.start_time is not None:
        out["start_time"] = _time(a.start_time)
    if a.end_time is not None:
        out["end_time"] = _time(a.end_time)
    if view is View.FULL:
        out["system_logs"] = [*warnings, *a.system_logs]
    return out


def spec_to_tes(spec: TaskSpec, view: View = View.FULL) -> dict[str, Any]:
    """The TES task document of a spec (without the server's id/state/logs)."""
    out: dict[str, Any] = {}
    if spec.name is not None:
        out["name"] = spec.name
    if spec.description is not None:
        out["description"] = spec.description
    if spec.inputs:
        out["inputs"] = [input_to_tes(i, view) for i in spec.inputs]
    if spec.outputs:
        out["outputs"] = [output_to_tes(o) for o in spec.outputs]
    out["resources"] = resources_to_tes(spec)
    out["executors"] = [executor_to_tes(e) for e in spec.executors]
    if spec.volumes:
        out["volumes"] = list(spec.volumes)
    tags = dict(spec.tags)
    if spec.data_key is not None:  # "[secret]" once the hub has it
        tags[DATA_KEY_TAG] = spec.data_key
    encrypted = [i.path for i in spec.inputs if i.encrypted]
    if encrypted and ENCRYPTED_INPUTS_TAG not in tags:  # a native task, shown over TES
        tags[ENCRYPTED_INPUTS_TAG] = ",".join(encrypted)
    if tags:
        out["tags"] = tags
    return out


def to_tes(view_: TaskView, view: View, warnings: list[str] | None = None) -> dict[str, Any]:
    """A task as the TES client asked to see it (MINIMAL: id and state only)."""
    out: dict[str, Any] = {"id": view_.id, "state": view_.state.value}
    if view is View.MINIMAL:
        return out
    out.update(spec_to_tes(view_.spec, view))
    out["logs"] = [task_log(a, view, warnings or []) for a in view_.attempts]
    out["creation_time"] = view_.created_at.isoformat()
    return out


def tag_filter(keys: list[str], values: list[str]) -> list[tuple[str, str | None]]:
    """Zip tag_key with tag_value as the spec says; a missing or empty value matches any value."""
    if len(values) > len(keys):
        raise Invalid("more tag_value than tag_key parameters", field="tag_value")
    out: list[tuple[str, str | None]] = []
    for n, key in enumerate(keys):
        value = values[n] if n < len(values) else ""
        out.append((key, value or None))
    return out


def tags_match(tags: dict[str, str], wanted: list[tuple[str, str | None]]) -> bool:
    """Whether a task's tags pass the filter (every key present; equal value where given)."""
    return all(k in tags and (v is None or tags[k] == v) for k, v in wanted)


__all__ = [
    "BACKEND_PARAMETERS",
    "TesTask",
    "View",
    "parse",
    "spec_to_tes",
    "tag_filter",
    "tags_match",
    "to_spec",
    "to_tes",
]
