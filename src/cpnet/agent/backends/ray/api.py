"""`RayApi`: the Ray backend's one link to Ray, the dashboard's HTTP API and the Jobs API."""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

import httpx

from cpnet.agent.backends.base import (
    BackendError,
)

log = logging.getLogger(__name__)


class RayApi:
    """The dashboard's HTTP API (nodes, usage) and the Jobs API (``JobSubmissionClient``)."""

    def __init__(self, address: str, timeout_s: float = 30.0) -> None:
        self.address = address.rstrip("/")
        self.timeout_s = timeout_s
        if "://" not in self.address:
            self.address = "http://" + self.address
        self.http = httpx.Client(base_url=self.address, timeout=timeout_s)
        self._client: Any = None
        self._lock = threading.Lock()

    def close(self) -> None:
        self.http.close()

    def _get(self, path: str) -> Any:
        try:
            r = self.http.get(path)
        except httpx.HTTPError as exc:
            raise BackendError(f"Ray dashboard {self.address} unreachable: {exc}") from exc
        if r.status_code != 200:
            raise BackendError(f"Ray dashboard {path} → {r.status_code}: {r.text[:300]}")
        return r.json()

    def nodes(self) -> list[dict[str, Any]]:
        """Every node Ray knows (``/api/v0/nodes``: node_id, state, resources_total, labels)."""
        data = self._get("/api/v0/nodes?limit=10000&detail=true")
        return list(((data.get("data") or {}).get("result") or {}).get("result") or [])

    def usage_by_node(self) -> dict[str, dict[str, list[float]]]:
        """Node id → camel-cased resource → [used, total], from Ray's monitor."""
        data = self._get("/api/cluster_status")
        status = (data.get("data") or {}).get("clusterStatus") or {}
        report = status.get("loadMetricsReport") or {}
        return dict(report.get("usageByNode") or {})

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                try:
                    from ray.job_submission import JobSubmissionClient
                except ImportError as exc:
                    raise BackendError(
                        "the Ray backend needs Ray's job client: pip install 'cpnet[ray]'"
                    ) from exc
                try:
                    self._client = JobSubmissionClient(self.address)
                except Exception as exc:
                    raise BackendError(f"Ray Jobs API at {self.address}: {exc}") from exc
            return self._client

    def submit(self, **kwargs: Any) -> str:
        return str(self.client.submit_job(**kwargs))

    def info(self, submission_id: str) -> Any | None:
        """The job's details (status, message, start/end times), or None when Ray has no such
        job; BackendError when Ray cannot be asked."""
        try:
            return self.client.get_job_info(submission_id)
        except RuntimeError as exc:
            if "404" in str(exc) or "does not exist" in str(exc):
                return None
            raise BackendError(f"Ray job {submission_id}: {str(exc)[:300]}") from exc
        except Exception as exc:
            raise BackendError(f"Ray job {submission_id}: {str(exc)[:300]}") from exc

    def stop(self, submission_id: str) -> None:
        try:
            self.client.stop_job(submission_id)
        except Exception as exc:
            raise BackendError(f"stop of Ray job {submission_id}: {str(exc)[:300]}") from exc

    def logs(self, submission_id: str) -> str:
        try:
            return str(self.client.get_job_logs(submission_id))
        except Exception as exc:
            return f"(Ray could not give the job's log: {str(exc).splitlines()[-1][:200]})"

    def delete(self, submission_id: str) -> None:
        with contextlib.suppress(Exception):
            self.client.delete_job(submission_id)


__all__ = ["RayApi"]
