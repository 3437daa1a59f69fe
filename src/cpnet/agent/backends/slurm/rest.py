"""The slurmrestd transport of the Slurm backend: Slurm's REST API (OpenAPI v0.0.38, the newest
that Slurm 22.05 serves) with a JWT, instead of the client commands.

Options (`SlurmOptions`, next to ``transport = "rest"``): ``slurmrestd_url`` (required),
``slurm_user``, the token (first found of ``slurm_jwt``, ``slurm_jwt_file``, the environment
variable named by ``slurm_jwt_env``), ``slurm_api``, and ``job_env``: agent environment
variables the batch job gets besides ``PATH``, ``PYTHONPATH`` (so the runner can import cpnet),
``LANG`` and ``SLURM_CONF``. A job submitted over REST gets only that environment (slurmrestd
has no ``--export=ALL``). The jobcomp log is a file on the controller, out of reach over HTTP: a
finished job's record comes from ``GET /job/{id}`` while the controller still knows it
(``MinJobAge``).
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Any

import httpx

from cpnet.agent.backends.base import BackendError
from cpnet.agent.backends.runner_job import runner_env
from cpnet.agent.backends.slurm.options import SlurmOptions
from cpnet.agent.backends.slurm.transport import (
    SlurmFinal,
    SlurmJobRequest,
    SlurmTransport,
    final_of_job,
)

BASE_ENV = ("PATH", "PYTHONPATH", "LANG", "SLURM_CONF")


class SlurmRest(SlurmTransport):
    """slurmrestd over HTTP with ``X-SLURM-USER-NAME`` / ``X-SLURM-USER-TOKEN``."""

    def __init__(
        self,
        url: str,
        user: str,
        token: str | None = None,
        token_file: str | None = None,
        token_env: str = "SLURM_JWT",
        api: str = "v0.0.38",
        timeout_s: float = 30.0,
        job_env: tuple[str, ...] = (),
        slurm_conf: str | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise BackendError(f"slurmrestd_url {url!r} must start with http:// or https://")
        self.base = f"{url.rstrip('/')}/slurm/{api}"
        self.user = user
        self.token, self.token_file, self.token_env = token, token_file, token_env
        self.client = httpx.Client(timeout=timeout_s)
        env = runner_env()
        if slurm_conf:
            env["SLURM_CONF"] = slurm_conf
        self.job_env = {k: env[k] for k in (*BASE_ENV, *job_env) if k in env}

    @classmethod
    def from_options(cls, options: SlurmOptions) -> SlurmRest:
        """The transport that the backend's options (``transport = "rest"``) describe."""
        return cls(
            options.slurmrestd_url.strip(),
            user=options.slurm_user or getpass.getuser(),
            token=options.slurm_jwt,
            token_file=options.slurm_jwt_file,
            token_env=options.slurm_jwt_env,
            api=options.slurm_api,
            timeout_s=options.command_timeout_s,
            job_env=options.job_env,
            slurm_conf=options.slurm_conf,
        )

    def export(self, env: dict[str, str]) -> None:
        self.job_env.update(env)

    def _token(self) -> str:
        if self.token:
            return self.token
        if self.token_file:
            try:
                text = Path(self.token_file).read_text().strip()
            except OSError as exc:
                raise BackendError(f"cannot read slurm_jwt_file: {exc}") from exc
            return text.removeprefix("SLURM_JWT=")
        token = os.environ.get(self.token_env, "").strip()
        if not token:
            raise BackendError(
                f"no slurmrestd token: set the option slurm_jwt or slurm_jwt_file, or "
                f"${self.token_env} (get one with `scontrol token username={self.user}`)"
            )
        return token

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One request; its JSON answer. BackendError on a transport error, an HTTP error, or
        errors slurmrestd reports in the answer."""
        headers = {"X-SLURM-USER-NAME": self.user, "X-SLURM-USER-TOKEN": self._token()}
        try:
            resp = self.client.request(method, self.base + path, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise BackendError(f"slurmrestd {method} {path}: {exc}") from exc
        try:
            data = resp.json()
        except ValueError:
            data = {}
        errors = [e for e in data.get("errors") or [] if isinstance(e, dict)]
        if resp.status_code >= 400 or errors:
            what = (
                "; ".join(str(e.get("error") or e.get("description") or e) for e in errors)
                or resp.text.strip()[:300]
            )
            raise BackendError(f"slurmrestd {method} {path}: HTTP {resp.status_code}: {what}")
        return data if isinstance(data, dict) else {}

    def nodes(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/nodes").get("nodes") or [])

    def partitions(self) -> dict[str, dict[str, Any]]:
        result = {}
        for p in self.call("GET", "/partitions").get("partitions") or []:
            max_time = p.get("max_time_limit")
            result[str(p.get("name"))] = {
                "state": str(p.get("state") or "UP").upper(),
                "max_time_min": max_time if isinstance(max_time, int) and max_time > 0 else None,
                "nodes": str(p.get("nodes") or ""),
            }
        return result

    def jobs(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/jobs").get("jobs") or [])

    def submit(self, request: SlurmJobRequest, script: Path) -> str:
        job: dict[str, Any] = {
            "name": request.name,
            "partition": request.partition,
            "current_working_directory": str(request.work_dir),
            "standard_output": str(request.output).replace("%", "%%"),
            "environment": self.job_env,
            "cpus_per_task": request.cpus_per_task,
            "no_requeue": True,  # v0.0.38 ignores "requeue": false; this one it honours
        }
        if request.mem_mb is not None:
            job["memory_per_node"] = request.mem_mb
        if request.gres:
            job["tres_per_node"] = f"gres:{request.gres}"
        if request.nodes is not None:
            job["nodes"] = request.nodes
        if request.ntasks is not None:
            job["tasks"] = request.ntasks
        if request.ntasks_per_node is not None:
            job["tasks_per_node"] = request.ntasks_per_node
        if request.time_min is not None:
            job["time_limit"] = request.time_min
        try:
            text = script.read_text()
        except OSError as exc:
            raise BackendError(f"cannot read the batch script {script}: {exc}") from exc
        data = self.call("POST", "/job/submit", {"script": text, "job": job})
        job_id = data.get("job_id")
        if job_id is None:
            raise BackendError(f"slurmrestd accepted the job but sent no job_id: {data}")
        return str(job_id)

    def cancel(self, job_id: str) -> None:
        self.call("DELETE", f"/job/{int(job_id)}")

    def final(self, job_id: str) -> SlurmFinal | None:
        try:
            jobs = self.call("GET", f"/job/{int(job_id)}").get("jobs") or []
        except BackendError:
            return None
        return final_of_job(jobs[0]) if jobs else None


__all__ = ["SlurmRest"]
