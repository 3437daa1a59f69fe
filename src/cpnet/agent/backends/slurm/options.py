"""The Slurm backend's options (``--option K=V``), read once when the agent starts."""

from __future__ import annotations

from dataclasses import dataclass

from cpnet.agent.backends.options import (
    NAMES,
    POOL_TYPE,
    TEXT,
    StagingOptions,
    number,
    one_of,
    option,
    seconds,
)
from cpnet.agent.runner import DEFAULT_GRACE_S


@dataclass(frozen=True)
class SlurmOptions(StagingOptions):
    """Options of the Slurm backend, besides the staging ones (`StagingOptions`)."""

    transport: str = option("cli", one_of("cli", "rest"), "how to reach Slurm: cli or rest")
    slurm_conf: str | None = option(
        None, TEXT, "the SLURM_CONF for the Slurm clients (default: the agent's environment)"
    )
    pool_type: str = option("supercomputing", POOL_TYPE, "the type of discovered pools")
    executor_grace_s: float = option(
        DEFAULT_GRACE_S, seconds(), "seconds the runner gives a canceled executor before SIGKILL"
    )
    squeue_cache_s: float = option(1.0, seconds(), "how long one squeue answer serves polls")
    command_timeout_s: float = option(
        30.0, seconds(), "timeout of one Slurm client call (or slurmrestd request)"
    )
    time_limit_factor: float = option(
        0.0,
        number(),
        "--time is this × the task's expected_runtime_s (at least 1 minute, at most the "
        "partition's MaxTime); 0: no --time (the partition's DefaultTime applies), since "
        "expected_runtime_s is an estimate with a default of its own and a guess must not kill "
        "a long job",
    )
    settle_s: float = option(
        30.0,
        seconds(),
        "how long a finished runner's job may stay running in Slurm before its record is taken "
        "as is",
    )
    fence_poll_s: float = option(1.0, seconds(), "how often the runner looks for the fence")
    fence_wait_s: float | None = option(
        None,
        seconds(),
        "how long after a NODE_FAIL the attempt waits for the runner's word that it stopped "
        "before it is recorded final anyway (default executor_grace_s + 10)",
    )
    # transport = "rest" (rest.py)
    slurmrestd_url: str = option("", TEXT, "slurmrestd, e.g. http://slurm-head:6820 (rest)")
    slurm_user: str | None = option(
        None, TEXT, "the user the token belongs to (default: this process's user; rest)"
    )
    slurm_jwt: str | None = option(None, TEXT, "the slurmrestd token itself (rest)", secret=True)
    slurm_jwt_file: str | None = option(
        None,
        TEXT,
        "a file holding SLURM_JWT=... or the bare token, re-read on every request (rest)",
    )
    slurm_jwt_env: str = option(
        "SLURM_JWT", TEXT, "the environment variable holding the token (rest)"
    )
    slurm_api: str = option("v0.0.38", TEXT, "the OpenAPI version path (rest)")
    job_env: tuple[str, ...] = option(
        (), NAMES, "comma-separated agent environment variables the batch job also gets (rest)"
    )

    def __post_init__(self) -> None:
        if self.transport == "rest" and not self.slurmrestd_url.strip():
            raise ValueError("transport=rest needs the option slurmrestd_url")

    @property
    def fence_wait(self) -> float:
        """`fence_wait_s`, or its default: the runner's grace for its executor, plus 10 s."""
        return self.fence_wait_s if self.fence_wait_s is not None else self.executor_grace_s + 10


__all__ = ["SlurmOptions"]
