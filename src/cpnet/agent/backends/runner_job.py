"""What a backend gives the runner it starts (``python -m cpnet.agent.runner <work dir>``),
wherever that runs: the ``runner`` block of job.json, the runner's environment, its command.

Shared by every backend that runs the runner (local, Slurm, Ray) and by the Kubernetes backend's
stage containers, which read the same staging settings.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

import cpnet
from cpnet.agent.backends.base import BackendConfig
from cpnet.agent.runner import HUB_TOKEN_ENV
from cpnet.tasks.model import TaskSpec

GIB = 1024**3


def runner_settings(
    spec: TaskSpec,
    *,
    max_stage_bytes: int,
    grace_s: float,
    http_timeout_s: float,
    file_roots: Any,
    memory_limit_gb: float | None,
    private_tmp: bool,
    staging: dict[str, Any] | None = None,
    images: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The `runner` block of job.json, shared by every backend that starts the runner."""
    disk = spec.resources.disk_gb
    return (staging or {}) | {
        "max_stage_bytes": int(disk * GIB) if disk > 0 else max_stage_bytes,
        "grace_s": grace_s,
        "http_timeout_s": http_timeout_s,
        "file_roots": file_roots,
        "memory_limit_gb": memory_limit_gb,
        "private_tmp": private_tmp,
        **(images or {}),
    }


def staging_settings(config: BackendConfig) -> dict[str, Any]:
    """The staging part of job.json's runner block, from the agent's options (nothing secret)."""
    opts = config.options
    out: dict[str, Any] = {}
    if opts.get("max_file_gb"):
        out["max_file_bytes"] = int(float(opts["max_file_gb"]) * GIB)
    for key in ("s3_endpoint", "s3_region"):
        if opts.get(key):
            out[key] = opts[key]
    if config.hub_url:
        out["hub_url"] = config.hub_url
    return out


def staging_env(config: BackendConfig) -> dict[str, str]:
    """Credentials the runner needs for staging, for its environment (never written to job.json).

    Agent options win over the agent's own ``AWS_*`` environment, which the runner inherits.
    """
    opts = config.options
    names = {
        "s3_access_key_id": "AWS_ACCESS_KEY_ID",
        "s3_secret_access_key": "AWS_SECRET_ACCESS_KEY",
        "s3_session_token": "AWS_SESSION_TOKEN",
    }
    env = {var: opts[key] for key, var in names.items() if opts.get(key)}
    if config.hub_token:
        env[HUB_TOKEN_ENV] = config.hub_token
    return env


def runner_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The agent's environment (with `extra` laid on top), with this very cpnet (wherever it was
    loaded from) importable."""
    env = dict(os.environ) | (extra or {})
    src_root = str(Path(cpnet.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src_root, env.get("PYTHONPATH")) if p)
    return env


def runner_command(python: str, work_dir: Path) -> str:
    """The shell command that runs the runner on `work_dir` (a Slurm batch script's line, a Ray
    job's entrypoint): only the two ``shlex``-quoted paths vary, no task field ever reaches it."""
    return f"exec {shlex.quote(python)} -m cpnet.agent.runner {shlex.quote(str(work_dir))}"


__all__ = ["runner_command", "runner_env", "runner_settings", "staging_env", "staging_settings"]
