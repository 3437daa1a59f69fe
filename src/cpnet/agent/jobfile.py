"""The runner's view of ``job.json`` and of the records it writes to ``status.json``.

The runner is a fresh interpreter per attempt, so what it imports is paid once per task:
pydantic alone costs more than the rest of the runner. These plain dataclasses mirror just the
parts of ``cpnet.tasks.model`` the runner and staging use. The spec in ``job.json`` was already
validated as a ``TaskSpec`` by the hub and by the agent, so ``from_dict`` only checks types, so
that a damaged file fails with ValueError instead of odd behaviour later; path safety stays with
``staging.task_path``. The ``to_dict`` methods produce exactly what the pydantic models'
``model_dump(mode="json")`` produces, since the local backend reads status.json back into them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

TYPE_CHECKING = False  # not typing's: importing typing would cost every runner start
if TYPE_CHECKING:
    from typing import Any

# The same value as cpnet.tasks.model.MAX_TAIL_CHARS, which cannot be imported without pydantic;
# ExecutorLog there refuses stdout/stderr tails longer than twice this.
MAX_TAIL_CHARS = 16 * 1024


class FileType(StrEnum):
    """Whether an input or output is one file or a directory tree.

    Equal to ``cpnet.tasks.model.FileType`` members of the same value (both are str), so staging
    code comparing with ``==`` works on either.
    """

    FILE = "FILE"
    DIRECTORY = "DIRECTORY"


# ---- reading the spec ----------------------------------------------------------------------------


def _str(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{key!r} must be a string, not {type(value).__name__}")
    return value


def _opt_str(data: dict[str, Any], key: str) -> str | None:
    return None if data.get(key) is None else _str(data, key)


def _bool(data: dict[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"{key!r} must be true or false, not {type(value).__name__}")
    return value


def _objects(data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = data.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ValueError(f"{key!r} must be a list of objects")
    return value


def _file_type(data: dict[str, Any]) -> FileType:
    return FileType(data.get("type") or FileType.FILE)  # ValueError on an unknown type


@dataclass(frozen=True, slots=True)
class Executor:
    """One command to run (mirrors ``cpnet.tasks.model.Executor``)."""

    command: list[str]
    image: str | None = None
    workdir: str | None = None
    stdin: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    ignore_error: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Executor:
        """The executor in a dumped TaskSpec; ValueError when a field has the wrong type."""
        command = data.get("command")
        if not command or not isinstance(command, list):
            raise ValueError("'command' must be a non-empty list")
        if not all(isinstance(a, str) for a in command):
            raise ValueError("'command' must hold only strings")
        env = data.get("env") or {}
        if not isinstance(env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env.items()
        ):
            raise ValueError("'env' must map strings to strings")
        return cls(
            command=list(command),
            image=_opt_str(data, "image"),
            workdir=_opt_str(data, "workdir"),
            stdin=_opt_str(data, "stdin"),
            stdout=_opt_str(data, "stdout"),
            stderr=_opt_str(data, "stderr"),
            env=dict(env),
            ignore_error=_bool(data, "ignore_error"),
        )


@dataclass(frozen=True, slots=True)
class Input:
    """A file to place in the work dir (mirrors ``cpnet.tasks.model.Input``)."""

    path: str
    url: str | None = None
    content: str | None = None
    type: FileType = FileType.FILE
    sha256: str | None = None
    name: str | None = None
    encrypted: bool = False  # under the task's data key: decrypted on arrival

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Input:
        """The input in a dumped TaskSpec; ValueError when a field has the wrong type."""
        return cls(
            path=_str(data, "path"),
            url=_opt_str(data, "url"),
            content=_opt_str(data, "content"),
            type=_file_type(data),
            sha256=_opt_str(data, "sha256"),
            name=_opt_str(data, "name"),
            encrypted=_bool(data, "encrypted"),
        )


@dataclass(frozen=True, slots=True)
class Output:
    """A file to copy out of the work dir (mirrors ``cpnet.tasks.model.Output``)."""

    path: str
    url: str
    path_prefix: str | None = None
    type: FileType = FileType.FILE
    name: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Output:
        """The output in a dumped TaskSpec; ValueError when a field has the wrong type."""
        return cls(
            path=_str(data, "path"),
            url=_str(data, "url"),
            path_prefix=_opt_str(data, "path_prefix"),
            type=_file_type(data),
            name=_opt_str(data, "name"),
        )


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What the runner needs of a TaskSpec: executors, inputs, outputs (resources are the
    backend's business; staging limits come in job.json's ``runner`` settings)."""

    executors: list[Executor]
    inputs: list[Input] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        """The spec part of job.json (a ``TaskSpec.model_dump(mode="json")``); unknown fields
        are ignored, a field of the wrong type raises ValueError naming it."""
        if not isinstance(data, dict):
            raise ValueError("the spec must be an object")
        parts: list[tuple[str, Any]] = [
            ("executors", Executor),
            ("inputs", Input),
            ("outputs", Output),
        ]
        built: dict[str, Any] = {}
        for key, kind in parts:
            items = []
            for i, item in enumerate(_objects(data, key)):
                try:
                    items.append(kind.from_dict(item))
                except ValueError as exc:
                    raise ValueError(f"spec {key}[{i}]: {exc}") from None
            built[key] = items
        if not built["executors"]:
            raise ValueError("the spec has no executors")
        return cls(**built)


# ---- writing status.json -------------------------------------------------------------------------


def _json_time(t: datetime | None) -> str | None:
    """A datetime as pydantic writes it in JSON mode: ISO 8601, UTC spelled ``Z``."""
    if t is None:
        return None
    text = t.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


@dataclass(frozen=True, slots=True)
class ExecutorLog:
    """What one executor did (mirrors ``cpnet.tasks.model.ExecutorLog``)."""

    start_time: datetime | None = None
    end_time: datetime | None = None
    exit_code: int | None = None
    stdout: str = ""  # tail
    stderr: str = ""  # tail

    def to_dict(self) -> dict[str, Any]:
        """The record as ``ExecutorLog.model_dump(mode="json")`` writes it."""
        return {
            "start_time": _json_time(self.start_time),
            "end_time": _json_time(self.end_time),
            "exit_code": self.exit_code,
            "stdout": self.stdout,
            "stderr": self.stderr,
        }


@dataclass(frozen=True, slots=True)
class OutputFileLog:
    """One output as written (mirrors ``cpnet.tasks.model.OutputFileLog``)."""

    url: str
    path: str
    size_bytes: int
    sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The record as ``OutputFileLog.model_dump(mode="json")`` writes it."""
        return {
            "url": self.url,
            "path": self.path,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
        }


@dataclass(frozen=True, slots=True)
class Usage:
    """Resources the attempt consumed (mirrors ``cpnet.tasks.model.Usage``)."""

    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0
    alloc_cpu_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The record as ``Usage.model_dump(mode="json")`` writes it (floats stay floats)."""
        return {
            "wall_s": float(self.wall_s),
            "cpu_s": float(self.cpu_s),
            "peak_rss_mb": float(self.peak_rss_mb),
            "bytes_in": int(self.bytes_in),
            "bytes_out": int(self.bytes_out),
            "alloc_cpu_s": float(self.alloc_cpu_s),
        }
