"""The Ray backend's options (``--option K=V``), read once when the agent starts."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from cpnet.agent.backends.options import (
    ALLOW,
    FLAG,
    POOL_TYPE,
    TEXT,
    BackendOptions,
    cpu_count,
    gib,
    option,
    seconds,
)

log = logging.getLogger(__name__)

DEFAULT_GRACE_S = 2.0


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
    allow_private_urls: tuple[str, ...] = option(
        (),
        ALLOW,
        "CIDRs and host names that http(s) inputs and outputs may reach although loopback, "
        "link-local or private (default none; * allows every address)",
    )
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


__all__ = ["RayOptions"]
