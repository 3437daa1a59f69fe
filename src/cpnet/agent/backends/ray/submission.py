"""The Ray job an attempt becomes (pure): its entrypoint, the resources it asks for, the nodes it
is pinned to."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from cpnet.agent.backends.runner_job import GIB, runner_command
from cpnet.tasks.model import TaskSpec

log = logging.getLogger(__name__)

NODE_ID_LABEL = "ray.io/node-id"
MAX_RAY_RESOURCES = 64


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


__all__ = ["entrypoint", "node_selector", "parse_ray_resources", "resource_request"]
