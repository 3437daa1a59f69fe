"""Slurm's job states and what each means for an attempt: the Slurm backend's translate table."""

from __future__ import annotations

from typing import Any

from cpnet.tasks.states import State

# A Slurm job state (``squeue``'s ``job_state``, ``sacct``'s ``State``) → the attempt's state.
# For a job that ended while its runner recorded no end of its own (Slurm stopped it, or it never
# ran), the attempt's final state and why: failures of the machine (node failure, preemption,
# boot failure) are SYSTEM_ERROR, so that the hub retries the task elsewhere; the task's own
# limits (time, memory) are EXECUTOR_ERROR. A state not listed ended the job: SYSTEM_ERROR.
SLURM_STATES: dict[str, tuple[State, str]] = {
    "PENDING": (State.QUEUED, "pending"),
    "CONFIGURING": (State.QUEUED, "configuring"),
    "REQUEUED": (State.QUEUED, "requeued"),
    "RESIZING": (State.QUEUED, "resizing"),
    "SUSPENDED": (State.QUEUED, "suspended"),
    "RUNNING": (State.RUNNING, "running"),
    "COMPLETING": (State.RUNNING, "completing"),
    "STAGE_OUT": (State.RUNNING, "staging out"),
    "SIGNALING": (State.RUNNING, "signaling"),
    "TIMEOUT": (State.EXECUTOR_ERROR, "time limit exceeded"),
    "DEADLINE": (State.EXECUTOR_ERROR, "deadline reached"),
    "OUT_OF_MEMORY": (State.EXECUTOR_ERROR, "out of memory (Slurm's memory limit)"),
    "NODE_FAIL": (State.SYSTEM_ERROR, "node failure"),
    "BOOT_FAIL": (State.SYSTEM_ERROR, "node boot failure"),
    "PREEMPTED": (State.SYSTEM_ERROR, "preempted"),
    "CANCELLED": (State.SYSTEM_ERROR, "cancelled in Slurm, not by cpnet"),
    "FAILED": (State.SYSTEM_ERROR, "the batch script failed"),
    "COMPLETED": (State.SYSTEM_ERROR, "the runner was stopped before it finished"),
}
# States in which Slurm itself stopped a job for reasons of the cluster, not the task's.
SLURM_STOPPED = ("NODE_FAIL", "BOOT_FAIL", "PREEMPTED")
PENDING_STATES = {name for name, (state, _) in SLURM_STATES.items() if state is State.QUEUED}
RUNNING_STATES = {name for name, (state, _) in SLURM_STATES.items() if state is State.RUNNING}


def job_state(job: dict[str, Any]) -> str:
    """A job's state as ``squeue --json`` (or slurmrestd) gives it."""
    state = job.get("job_state")
    if isinstance(state, list):  # newer data_parser versions
        state = state[0] if state else ""
    return str(state or "")


def map_final(slurm_state: str, job_id: str, nodes: str | None = None) -> tuple[State, str]:
    """A finished Slurm job's state → the attempt's final state and a reason people can read
    (naming the job's `nodes` after a node failure)."""
    state = slurm_state.split()[0] if slurm_state.split() else ""
    what = SLURM_STATES.get(state)
    if what is None or not what[0].terminal:
        return State.SYSTEM_ERROR, f"Slurm job {job_id} ended {state or 'without a record'}"
    where = f" on {nodes}" if nodes and state in ("NODE_FAIL", "BOOT_FAIL") else ""
    return what[0], f"{what[1]}{where} (Slurm job {job_id} {state})"


__all__ = [
    "PENDING_STATES",
    "RUNNING_STATES",
    "SLURM_STATES",
    "SLURM_STOPPED",
    "job_state",
    "map_final",
]
