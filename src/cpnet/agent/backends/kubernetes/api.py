"""The Kubernetes API calls the backend makes, through the official client (its only link to the
cluster)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from cpnet.agent.backends.base import (
    BackendError,
)
from cpnet.agent.backends.kubernetes.manifest import MANAGED_BY
from cpnet.agent.backends.kubernetes.options import KubernetesOptions

LOG_TAIL_LINES = 2000  # of each container's log, cut to its last MAX_TAIL_CHARS characters


class KubeApi:
    """The few API calls this backend makes, answering plain JSON dicts (BackendError on failure,
    ``None`` for a 404 where that is an answer)."""

    def __init__(self, options: KubernetesOptions) -> None:
        try:
            from kubernetes import client, config
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise BackendError(
                "the kubernetes backend needs the kubernetes client: "
                "pip install 'cpnet[kubernetes]'"
            ) from exc
        self._client = client
        cfg = client.Configuration()
        namespace = options.namespace
        try:
            if options.in_cluster:
                config.load_incluster_config(client_configuration=cfg)
                if not namespace:
                    sa_ns = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
                    with contextlib.suppress(OSError):
                        namespace = sa_ns.read_text().strip()
            else:
                path = options.kubeconfig
                context = options.context
                config.load_kube_config(config_file=path, context=context, client_configuration=cfg)
                if not namespace:
                    with contextlib.suppress(Exception):
                        _, active = config.list_kube_config_contexts(config_file=path)
                        chosen = active
                        if context:
                            contexts, _ = config.list_kube_config_contexts(config_file=path)
                            chosen = next(c for c in contexts if c["name"] == context)
                        namespace = (chosen.get("context") or {}).get("namespace") or ""
        except Exception as exc:
            raise BackendError(f"cannot load the Kubernetes configuration: {exc}") from exc
        self.namespace = namespace or "default"
        self.timeout = options.request_timeout_s
        self.api = client.ApiClient(cfg)
        self.core = client.CoreV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)

    def _call(self, what: str, fn: Any, *args: Any, missing_ok: bool = False, **kw: Any) -> Any:
        try:
            resp = fn(*args, _preload_content=False, _request_timeout=self.timeout, **kw)
        except self._client.ApiException as exc:
            if missing_ok and exc.status == 404:
                return None
            body = (exc.body or b"")[:500]
            text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
            raise BackendError(
                f"Kubernetes {what}: HTTP {exc.status} {exc.reason}: {text}"
            ) from exc
        except Exception as exc:  # urllib3 transport errors and the like
            raise BackendError(f"Kubernetes {what}: {exc}") from exc
        data = resp.data
        if what.startswith("log"):
            return data.decode("utf-8", "replace")
        return json.loads(data) if data else {}

    def nodes(self) -> list[dict[str, Any]]:
        return self._call("list nodes", self.core.list_node).get("items") or []

    def active_pods(self) -> list[dict[str, Any]]:
        """Pods of every namespace that are not finished."""
        out = self._call(
            "list pods",
            self.core.list_pod_for_all_namespaces,
            field_selector="status.phase!=Succeeded,status.phase!=Failed",
        )
        return out.get("items") or []

    def jobs(self) -> list[dict[str, Any]]:
        out = self._call(
            "list jobs",
            self.batch.list_namespaced_job,
            self.namespace,
            label_selector=f"{MANAGED_BY}=cpnet",
        )
        return out.get("items") or []

    def pods(self) -> list[dict[str, Any]]:
        out = self._call(
            "list pods",
            self.core.list_namespaced_pod,
            self.namespace,
            label_selector=f"{MANAGED_BY}=cpnet",
        )
        return out.get("items") or []

    def create_job(self, manifest: dict[str, Any]) -> dict[str, Any] | None:
        """Create; the Job as created, None when a Job of that name exists already."""
        return self._create("job", self.batch.create_namespaced_job, manifest)

    def get_job(self, name: str) -> dict[str, Any] | None:
        return self._call(
            "get job", self.batch.read_namespaced_job, name, self.namespace, missing_ok=True
        )

    def create_secret(self, manifest: dict[str, Any]) -> dict[str, Any] | None:
        """Create; None when a Secret of that name exists already."""
        return self._create("secret", self.core.create_namespaced_secret, manifest)

    def delete_secret(self, name: str) -> None:
        self._call(
            "delete secret",
            self.core.delete_namespaced_secret,
            name,
            self.namespace,
            missing_ok=True,
        )

    def _create(self, what: str, fn: Any, manifest: dict[str, Any]) -> dict[str, Any] | None:
        try:
            resp = fn(
                self.namespace, manifest, _preload_content=False, _request_timeout=self.timeout
            )
        except self._client.ApiException as exc:
            if exc.status == 409:
                return None
            raise BackendError(
                f"Kubernetes create {what}: HTTP {exc.status} {exc.reason}: {str(exc.body)[:500]}"
            ) from exc
        except Exception as exc:
            raise BackendError(f"Kubernetes create {what}: {exc}") from exc
        return json.loads(resp.data or b"{}")

    def delete_job(self, name: str, policy: str = "Background") -> None:
        body = self._client.V1DeleteOptions(propagation_policy=policy)
        self._call(
            "delete job",
            self.batch.delete_namespaced_job,
            name,
            self.namespace,
            body=body,
            missing_ok=True,
        )

    def log(self, pod: str, container: str) -> str:
        out = self._call(
            "log",
            self.core.read_namespaced_pod_log,
            pod,
            self.namespace,
            container=container,
            tail_lines=LOG_TAIL_LINES,  # limitBytes would keep the log's head, not its end
            missing_ok=True,
        )
        return out or ""


__all__ = ["KubeApi"]
