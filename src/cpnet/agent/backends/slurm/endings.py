"""How the end of a Slurm job is written into its attempt's status.json: Slurm's own record of
the job, the fence for a runner that may outlive its job, and the final state a runner could not
record (it never ran, was killed hard, or died). See the package's doc, "When a node dies"."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from cpnet.agent.backends.base import JobStatus
from cpnet.agent.backends.slurm.states import map_final
from cpnet.agent.backends.slurm.transport import SlurmFinal
from cpnet.agent.backends.workdir import add_log, mtime, read_record, status_from_record
from cpnet.agent.runner import (
    FENCE_FILE,
    FENCED_FILE,
    STATUS_FILE,
    new_record,
    read_status,
    tail,
    write_atomic,
    write_json_atomic,
)
from cpnet.tasks.states import State

log = logging.getLogger(__name__)

# Left in a work dir whose runner never answered the fence (its node may come back with the
# runner still running): the backend does not remove such a dir (SlurmBackend.remove_work_dir).
UNANSWERED_FILE = "fence.unanswered"

SLURM_OUT = "slurm.out"  # the batch step's output, in the work dir
OUT_TAIL = 2048  # bytes of it quoted when an attempt ends SYSTEM_ERROR


def add_slurm_record(
    work_dir: Path, record: dict[str, Any], job_id: str, final: SlurmFinal, signalled: bool
) -> JobStatus:
    """Slurm's record of the job in the runner's final `record` (its elapsed time and CPUs go
    into the usage); when the runner took Slurm's signal for a cancel (`signalled`), Slurm's
    state decides the attempt's. Written back to status.json."""
    record["slurm"] = {
        "job_id": job_id,
        "state": final.state,
        "elapsed_s": final.elapsed_s,
        "cpus": final.cpus,
        "nodes": final.nodes,
    }
    if final.elapsed_s is not None:
        usage = dict(record.get("usage") or {})
        usage["wall_s"] = final.elapsed_s  # Slurm's own record of the job's run
        if final.cpus:
            usage["alloc_cpu_s"] = final.elapsed_s * final.cpus
        record["usage"] = usage
        add_log(
            record,
            f"slurm: job {job_id} {final.state or '?'}, elapsed {final.elapsed_s:.0f} s "
            f"on {final.cpus or '?'} CPU(s), nodes {final.nodes or '?'}",
        )
    if signalled:  # the runner's end came from Slurm's signal; Slurm knows better
        add_log(record, f"the runner recorded {record.get('state')}: {record.get('reason')}")
        state, reason = map_final(final.state, job_id, final.nodes)
        record["state"], record["reason"] = state.value, reason
    with contextlib.suppress(OSError):
        write_json_atomic(work_dir / STATUS_FILE, record)
    return status_from_record(record)


def fenced(work_dir: Path, job_id: str, slurm_state: str, wait_s: float) -> bool:
    """Leave the fence for a runner that may outlive its job; False while the attempt must
    wait for it: after a node failure, until the runner wrote its account of stopping or
    `wait_s` passed since the fence (a dead machine never answers)."""
    fence = work_dir / FENCE_FILE
    if not fence.exists():
        what = f"Slurm job {job_id} ended {slurm_state or 'without a record'}"
        if read_status(work_dir) is not None:
            log.warning("%s before its runner finished: fencing %s", what, work_dir)
        with contextlib.suppress(OSError):
            write_atomic(fence, what + "\n")
    if not slurm_state.startswith("NODE_FAIL") or read_status(work_dir) is None:
        return True  # slurmd killed the job's processes, or the runner never started
    account = read_record(work_dir / FENCED_FILE)
    if account is not None and State(account["state"]).terminal:
        return True
    return time.time() - mtime(fence) >= wait_s


def record_final(work_dir: Path, state: State, reason: str) -> JobStatus:
    """Record a final state the runner could not (it never ran, was killed, or died); a
    fenced runner's own account gives the executor logs and measured usage."""
    record = read_status(work_dir) or new_record(state)
    account = read_record(work_dir / FENCED_FILE)
    if account is not None:
        for key in ("executor_logs", "usage", "bytes_in", "system_logs"):
            record[key] = account.get(key, record.get(key))
        add_log(
            record,
            f"after the fence the runner recorded {account.get('state')}: {account.get('reason')}",
        )
    elif "NODE_FAIL" in reason and read_status(work_dir) is not None:
        add_log(record, "the runner did not answer the fence: its node may be gone")
        # Should the runner be alive after all, it must still find the fence: the work dir stays.
        with contextlib.suppress(OSError):
            write_atomic(work_dir / UNANSWERED_FILE, "the runner did not answer the fence\n")
    record["state"] = state.value
    record["reason"] = reason
    if state is State.SYSTEM_ERROR:
        text = tail(work_dir / SLURM_OUT, OUT_TAIL).strip()
        if text:
            add_log(record, f"{SLURM_OUT}: {text}")
    with contextlib.suppress(OSError):
        write_json_atomic(work_dir / STATUS_FILE, record)
    return status_from_record(record)


__all__ = ["SLURM_OUT", "UNANSWERED_FILE", "add_slurm_record", "fenced", "record_final"]
