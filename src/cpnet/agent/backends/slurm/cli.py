"""The Slurm client commands as the Slurm backend's transport: ``sinfo``/``squeue --json``,
``scontrol -o show partition``, ``sbatch``, ``scancel``, ``sacct -c``; argv lists only, never a
shell. The only place the backend shells out."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from cpnet.agent.backends.base import BackendError
from cpnet.agent.backends.runner_job import runner_env
from cpnet.agent.backends.slurm.transport import SlurmFinal, SlurmJobRequest, SlurmTransport


class SlurmCli(SlurmTransport):
    """The Slurm client commands; the only place this backend shells out (argv lists only).

    22.05 has ``--json`` for ``sinfo`` and ``squeue`` but not for ``scontrol``, so partitions
    come from ``scontrol -o show partition`` (one ``key=value`` line each), and finished jobs from
    the job completion log through ``sacct -c`` (no slurmdbd needed).
    """

    def __init__(self, slurm_conf: str | None = None, timeout_s: float = 30.0) -> None:
        self.env = runner_env()
        if slurm_conf:
            self.env["SLURM_CONF"] = slurm_conf
        self.timeout_s = timeout_s

    def export(self, env: dict[str, str]) -> None:
        self.env.update(env)  # sbatch passes its own environment to the job

    def run(self, *argv: str) -> str:
        """stdout of one command; BackendError when it fails or cannot start."""
        try:
            proc = subprocess.run(
                list(argv),
                env=self.env,
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BackendError(f"{argv[0]}: {exc}") from exc
        if proc.returncode != 0:
            raise BackendError(f"{argv[0]} exit {proc.returncode}: {proc.stderr.strip()[:500]}")
        return proc.stdout

    def nodes(self) -> list[dict[str, Any]]:
        return list(json.loads(self.run("sinfo", "--json")).get("nodes") or [])

    def partitions(self) -> dict[str, dict[str, Any]]:
        return parse_scontrol_partitions(self.run("scontrol", "-o", "show", "partition"))

    def jobs(self) -> list[dict[str, Any]]:
        return list(json.loads(self.run("squeue", "--json")).get("jobs") or [])

    def submit(self, request: SlurmJobRequest, script: Path) -> str:
        out = self.run("sbatch", "--parsable", *request.sbatch_args(), str(script))
        return out.strip().split(";")[0]

    def cancel(self, job_id: str) -> None:
        self.run("scancel", job_id)

    def final(self, job_id: str) -> SlurmFinal | None:
        try:
            out = self.run(
                "sacct", "-c", "-n", "-P", "-j", job_id, "-o", "state,elapsedraw,ncpus,nodelist"
            )
        except BackendError:
            return None
        return parse_sacct_line(out)


def parse_sacct_line(out: str) -> SlurmFinal | None:
    """The last record of ``sacct -c -n -P -o state,elapsedraw,ncpus,nodelist`` output."""
    lines = [x.strip() for x in out.splitlines() if x.strip()]
    if not lines:
        return None
    fields = [*lines[-1].split("|"), "", "", ""][:4]
    state = fields[0].split()[0] if fields[0].split() else ""
    if not state:
        return None
    return SlurmFinal(
        state=state,
        elapsed_s=float(fields[1]) if fields[1].isdigit() else None,
        cpus=int(fields[2]) if fields[2].isdigit() else None,
        nodes=fields[3] or None,
    )


def parse_scontrol_partitions(text: str) -> dict[str, dict[str, Any]]:
    """``scontrol -o show partition`` → {name: {"state", "max_time_min", "nodes"}}."""
    result: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        name = fields.get("PartitionName")
        if not name:
            continue
        result[name] = {
            "state": fields.get("State", "UP").upper(),
            "max_time_min": parse_slurm_minutes(fields.get("MaxTime", "UNLIMITED")),
            "nodes": fields.get("Nodes", ""),
        }
    return result


def parse_slurm_minutes(text: str) -> int | None:
    """Slurm's time format (``minutes``, ``[days-]hours:minutes:seconds``, ``UNLIMITED``) in
    whole minutes, rounded up as Slurm does; None for unlimited or unparsable."""
    text = text.strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not m:
        return None
    days = int(m.group(1) or 0)
    parts = [int(x) for x in m.groups()[1:] if x is not None]
    if m.group(1) is not None:  # days-hours[:minutes[:seconds]]
        parts += [0] * (3 - len(parts))
        h, mi, sec = parts
    elif len(parts) == 3:
        h, mi, sec = parts
    elif len(parts) == 2:  # minutes:seconds
        h, mi, sec = 0, parts[0], parts[1]
    else:
        h, mi, sec = 0, parts[0], 0
    return days * 1440 + h * 60 + mi + (1 if sec else 0)


__all__ = ["SlurmCli", "parse_sacct_line", "parse_scontrol_partitions", "parse_slurm_minutes"]
