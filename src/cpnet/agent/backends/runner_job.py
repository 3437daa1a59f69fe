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
from cpnet.agent.backends.options import StagingOptions
from cpnet.agent.runner import HUB_TOKEN_ENV
from cpnet.tasks.model import TaskSpec

GIB = 1024**3


def runner_settings(
    spec: TaskSpec,
    *,
    max_stage_gb: float,
    grace_s: float,
    http_timeout_s: float,
    file_roots: tuple[str, ...] | None,
    memory_limit_gb: float | None,
    private_tmp: bool,
    staging: dict[str, Any] | None = None,
    images: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The `runner` block of job.json, shared by every backend that starts the runner."""
    disk = spec.resources.disk_gb
    return (staging or {}) | {
        "max_stage_bytes": int((disk if disk > 0 else max_stage_gb) * GIB),
        "grace_s": grace_s,
        "http_timeout_s": http_timeout_s,
        "file_roots": None if file_roots is None else list(file_roots),
        "memory_limit_gb": memory_limit_gb,
        "private_tmp": private_tmp,
        **(images or {}),
    }


def staging_settings(options: StagingOptions, hub_url: str) -> dict[str, Any]:
    """The staging part of job.json's runner block (nothing secret)."""
    # always written: a runner reading no list applies the strict SSRF rule anyway
    out: dict[str, Any] = {"allow_private_urls": list(options.allow_private_urls)}
    if options.max_file_gb is not None:
        out["max_file_bytes"] = int(options.max_file_gb * GIB)
    if options.s3_endpoint:
        out["s3_endpoint"] = options.s3_endpoint
    if options.s3_region:
        out["s3_region"] = options.s3_region
    if hub_url:
        out["hub_url"] = hub_url
    return out


def staging_env(options: StagingOptions, hub_token: str) -> dict[str, str]:
    """Credentials the runner needs for staging, for its environment (never written to job.json).

    Agent options win over the agent's own ``AWS_*`` environment, which the runner inherits.
    """
    env = {
        var: value
        for var, value in (
            ("AWS_ACCESS_KEY_ID", options.s3_access_key_id),
            ("AWS_SECRET_ACCESS_KEY", options.s3_secret_access_key),
            ("AWS_SESSION_TOKEN", options.s3_session_token),
        )
        if value
    }
    if hub_token:
        env[HUB_TOKEN_ENV] = hub_token
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
