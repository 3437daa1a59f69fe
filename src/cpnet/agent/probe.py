"""Calibration probes as real jobs on a pool, through the backend's own submit/poll API.

Node side: ``python -m cpnet.agent.probe --budget 20`` runs ``cpnet.measure.probes`` on the
machine it lands on (a Slurm node, the local host, ...) and prints one line of JSON, the
``ProbeReport``, as its last line of stdout.

Agent side: ``measure_pool`` submits that command as a job of the pool through ``Backend.submit``
(so on Slurm it is an ``sbatch`` job on a node of the partition, not a run on the agent's host),
polls it with ``Backend.poll`` until it ends, and reads the report from the executor's stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import time
import uuid
from pathlib import Path

from cpnet.agent.backends.base import Backend, BackendError, Job, PoolDecl
from cpnet.measure import probes
from cpnet.measure.vector import ProbeReport
from cpnet.tasks.model import Executor, Resources, TaskSpec
from cpnet.tasks.states import State

log = logging.getLogger(__name__)

# How long past its budget a probe job may take (queueing, interpreter and torch start-up).
GRACE_S = 120.0


class ProbeFailed(Exception):
    """A probe job that did not produce a report, with what happened."""


def probe_spec(pool: PoolDecl, budget_s: float, *, cores: float, torch_on_cpu: bool) -> TaskSpec:
    """The task a probe job runs: this interpreter, ``-m cpnet.agent.probe``, on one node."""
    command = [sys.executable, "-m", "cpnet.agent.probe", "--budget", f"{budget_s:g}"]
    if torch_on_cpu:
        command.append("--torch-on-cpu")
    return TaskSpec(
        name=f"cpnet-probe-{pool.name}",
        executors=[Executor(command=command, env={"PYTHONUNBUFFERED": "1"})],
        resources=Resources(
            cpu_cores=cores,
            ram_gb=0.0,  # no memory limit: the triad and torch need room, briefly
            gpus=1 if pool.total.gpus > 0 else 0,
            backend_parameters={"nodes": "1"},
        ),
        max_attempts=1,
        expected_runtime_s=budget_s + GRACE_S,
    )


def parse_report(stdout: str) -> ProbeReport:
    """The report on the last JSON line of a probe's stdout."""
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return ProbeReport.model_validate_json(line)
    raise ProbeFailed("the probe printed no report")


def measure_pool(
    backend: Backend,
    pool: PoolDecl,
    work_dir: Path,
    *,
    budget_s: float = probes.DEFAULT_BUDGET_S,
    cores: float | None = None,
    torch_on_cpu: bool = False,
    stop: object | None = None,
    keep_work_dir: bool = False,
) -> ProbeReport:
    """Run the probe as a job of ``pool`` and return its report (ProbeFailed if it fails).

    ``cores`` is what the job asks for (default: the pool's cores, at most this host's CPUs:
    right for the local backend; pass 1 for a cluster whose node size is unknown). ``stop`` may
    be a threading.Event that ends the wait early. The probe job's work dir is removed at the
    end unless ``keep_work_dir``.
    """
    if cores is None:
        cores = float(max(1, min(pool.total.cpu_cores, os.cpu_count() or 1)))
    attempt = f"probe-{uuid.uuid4().hex[:12]}"
    spec = probe_spec(pool, budget_s, cores=cores, torch_on_cpu=torch_on_cpu)
    handle = backend.submit(Job(attempt, attempt, pool.name, spec, work_dir / attempt))
    deadline = time.monotonic() + budget_s + GRACE_S
    try:
        while True:
            st = backend.poll(handle)
            if st.state.terminal:
                break
            if time.monotonic() > deadline or (stop is not None and stop.is_set()):  # type: ignore[attr-defined]
                backend.cancel(handle)
                raise ProbeFailed(f"the probe job did not end within {budget_s + GRACE_S:.0f} s")
            time.sleep(0.2)
        logs = st.executor_logs
        if st.state is not State.COMPLETE:
            tail = (logs[-1].stderr[-500:] if logs else "") or st.reason or ""
            raise ProbeFailed(f"the probe job ended {st.state.value}: {tail}")
        return parse_report(logs[-1].stdout if logs else "")
    finally:
        backend.forget(handle)
        try:
            if not keep_work_dir:
                backend.remove_work_dir(handle)
        except BackendError as exc:
            log.warning("probe %s: %s", attempt, exc)


def node_name() -> str:
    """This node's name: Slurm's for a batch job (several nodes may share one host), else the host.

    The runner gives executors a minimal environment, so ``SLURMD_NODENAME`` is looked up in
    the runner's (our parent's) environment too.
    """
    name = os.environ.get("SLURMD_NODENAME")
    if not name:
        try:
            raw = Path(f"/proc/{os.getppid()}/environ").read_bytes()
        except OSError:
            raw = b""
        for item in raw.split(b"\0"):
            key, _, value = item.partition(b"=")
            if key == b"SLURMD_NODENAME" and value:
                name = value.decode(errors="replace")
    return name or socket.gethostname()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run cpnet's calibration probes on this node.")
    ap.add_argument("--budget", type=float, default=probes.DEFAULT_BUDGET_S, help="seconds")
    ap.add_argument("--torch-on-cpu", action="store_true", help="run the torch path on the CPU")
    args = ap.parse_args(argv)
    from cpnet.agent import hostinfo

    report = probes.run(
        budget_s=args.budget,
        cpu_model=hostinfo.cpu_model(),
        host=node_name(),
        torch_on_cpu=args.torch_on_cpu,
    )
    print(json.dumps(report.model_dump(mode="json"), separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
