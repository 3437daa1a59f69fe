"""How the Slurm backend talks to Slurm, whatever carries it: the request it makes for one
attempt, the record of a finished job, and the transport interface that `cli.SlurmCli` (the
client commands) and `rest.SlurmRest` (slurmrestd) implement."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cpnet.agent.backends.slurm.states import PENDING_STATES, RUNNING_STATES, job_state


@dataclass(frozen=True, slots=True)
class SlurmJobRequest:
    """What the backend asks Slurm for one attempt, whatever the transport renders it as."""

    name: str
    partition: str
    work_dir: Path
    output: Path
    cpus_per_task: int
    mem_mb: int | None = None
    gres: str | None = None
    nodes: int | None = None
    ntasks: int | None = None  # set when the CPUs are spread over several nodes
    ntasks_per_node: int | None = None  # the task's backend parameter of that name
    time_min: int | None = None

    def sbatch_args(self) -> list[str]:
        """The ``sbatch`` options (argv items, never shell text)."""
        args = [
            "--job-name",
            self.name,
            "--partition",
            self.partition,
            "--chdir",
            str(self.work_dir),
            "--output",
            str(self.output).replace("%", "%%"),
            "--cpus-per-task",
            str(self.cpus_per_task),
            # A node failure ends the attempt; the hub retries it elsewhere (never Slurm too).
            "--no-requeue",
        ]
        if self.mem_mb is not None:
            args += ["--mem", str(self.mem_mb)]
        if self.gres:
            args += ["--gres", self.gres]
        if self.nodes is not None:
            args += ["--nodes", str(self.nodes)]
        if self.ntasks is not None:
            args += ["--ntasks", str(self.ntasks)]
        if self.ntasks_per_node is not None:
            args += ["--ntasks-per-node", str(self.ntasks_per_node)]
        if self.time_min is not None:
            args += ["--time", str(self.time_min)]
        return args


@dataclass(frozen=True, slots=True)
class SlurmFinal:
    """A finished job as Slurm recorded it (jobcomp file, or the controller's job record)."""

    state: str  # COMPLETED, FAILED, CANCELLED, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY, ...
    elapsed_s: float | None = None
    cpus: int | None = None
    nodes: str | None = None


class SlurmTransport(abc.ABC):
    """How the backend talks to Slurm: the CLI (`SlurmCli`) or slurmrestd (`SlurmRest`).

    Node and job dicts have the shape of ``sinfo --json`` / ``squeue --json`` (Slurm's OpenAPI
    data_parser v0.0.38, which slurmrestd answers with too).
    """

    @abc.abstractmethod
    def nodes(self) -> list[dict[str, Any]]:
        """Every node: name, partitions, cpus, idle_cpus, real_memory, alloc_memory, gres, ..."""

    @abc.abstractmethod
    def partitions(self) -> dict[str, dict[str, Any]]:
        """Each partition's ``state`` (UP, DOWN, DRAIN, INACTIVE) and ``max_time_min`` (None:
        unlimited)."""

    @abc.abstractmethod
    def jobs(self) -> list[dict[str, Any]]:
        """The jobs the controller knows (finished ones too, for ``MinJobAge``)."""

    @abc.abstractmethod
    def submit(self, request: SlurmJobRequest, script: Path) -> str:
        """Submit the batch script at `script`; the Slurm job id."""

    @abc.abstractmethod
    def cancel(self, job_id: str) -> None:
        """Cancel the job (Slurm signals its processes)."""

    @abc.abstractmethod
    def final(self, job_id: str) -> SlurmFinal | None:
        """How the finished job ended, from Slurm's records; None when not (yet) recorded."""

    def export(self, env: dict[str, str]) -> None:  # noqa: B027 - optional, a no-op by default
        """Give every job these environment variables too (the runner's staging credentials)."""


def final_of_job(job: dict[str, Any]) -> SlurmFinal | None:
    """A finished job's record as the controller (``squeue --json``) still holds it."""
    state = job_state(job)
    if state in PENDING_STATES | RUNNING_STATES or not state:
        return None
    start, end = job.get("start_time"), job.get("end_time")
    elapsed = float(end - start) if isinstance(start, int) and isinstance(end, int) else None
    cpus = job.get("cpus")
    return SlurmFinal(
        state=state,
        elapsed_s=elapsed if elapsed is not None and elapsed >= 0 else None,
        cpus=int(cpus) if isinstance(cpus, int) else None,
        nodes=str(job.get("nodes") or "") or None,
    )


__all__ = ["SlurmFinal", "SlurmJobRequest", "SlurmTransport", "final_of_job"]
