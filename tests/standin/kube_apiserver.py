"""A stand-in Kubernetes API server, for testing the Kubernetes backend where no cluster can run.

No kube-apiserver, kubelet, kind, k3s or kwok can run on our machines, and no container can start
(see ENGINES.md), so the Kubernetes backend's integration tests talk to this: a real HTTP server
(``http.server`` on a free loopback port, one thread per request) that the official ``kubernetes``
Python client reaches through an ordinary kubeconfig (``write_kubeconfig``), speaking the JSON
shapes of the Kubernetes API for the few endpoints the backend uses:

- ``GET /api/v1/nodes``
- ``GET /api/v1/pods`` (all namespaces; ``fieldSelector`` on ``status.phase`` with ``=``/``!=``)
- ``GET /api/v1/namespaces/{ns}/pods`` (``labelSelector`` ``k=v`` terms, comma-joined)
- ``GET /api/v1/namespaces/{ns}/pods/{name}/log`` (``container``, ``tailLines``, ``limitBytes``)
- ``GET|POST /apis/batch/v1/namespaces/{ns}/jobs`` and ``GET|DELETE .../jobs/{name}``
  (``propagationPolicy`` from the delete body is recorded in ``deletes``)
- ``GET|POST /api/v1/namespaces/{ns}/secrets`` and ``GET|DELETE .../secrets/{name}`` (every
  Secret as posted is kept in ``created_secrets``; the current ones in ``secrets``)
- ``GET /version``

What it models:

- **Objects in memory**: Nodes (added by the test with ``add_node``: allocatable CPU, memory, GPUs,
  labels, taints, readiness), Jobs, and the Pods the "job controller" creates for them (one per
  Job, named ``<job>-<5 chars>``, labelled ``job-name`` / ``batch.kubernetes.io/job-name`` plus the
  template's labels). Creating a Job whose name or label values are not valid (DNS-1123 names,
  label value syntax) or whose containers have invalid names is refused with 422, a duplicate
  name with 409, as the real server does.
- **Scheduling**: a pending pod is bound to the first ready, schedulable node that matches its
  ``nodeSelector``, tolerates its ``NoSchedule``/``NoExecute`` taints and has room (allocatable
  minus the requests of bound unfinished pods, with the init-container max rule); otherwise it stays
  ``Pending`` with ``PodScheduled=False`` reason ``Unschedulable``, and is retried.
- **A "kubelet"**: a bound pod's init containers run one at a time, then its one container, each
  as a **local subprocess** of its ``command`` + ``args`` (no container: the **image is not used**
  and the process sees the host's files, with only the container's ``env`` plus the host's
  ``PATH``). ``emptyDir`` volumes are per-pod temporary directories; a ``mountPath`` at the start
  of ``workingDir``, an env value or an argument is rewritten to that directory. stdout and stderr
  go to one log per container. Container states (``waiting``/``running``/``terminated`` with
  ``exitCode``, ``reason`` ``Completed``/``Error``/``OOMKilled``, ``startedAt``/``finishedAt``),
  pod phases and the Job's ``active``/``succeeded``/``failed`` counts and ``Complete``/``Failed``
  conditions follow Kubernetes' rules for ``restartPolicy: Never`` and ``backoffLimit: 0``.
- **Limits**: a container whose process group's resident memory exceeds its memory limit is
  SIGKILLed and reported ``OOMKilled`` (exit 137), as the cgroup OOM killer would; a Job past its
  ``activeDeadlineSeconds`` has its pod killed and fails with reason ``DeadlineExceeded``.
- **Secrets**: a ``secret`` volume is a per-pod temporary directory holding one file per key of
  the Secret's ``data`` (base64-decoded, mode 0400); until the Secret exists the pod stays
  ``Pending`` with no container started (the kubelet retries mounting); a volume's ``items``
  mount only the keys they list. ``envFrom`` ``secretRef`` adds the Secret's keys to the
  container's environment, and an env ``valueFrom.secretKeyRef`` one key (the container waits
  for its Secret). Deleting a Job deletes the
  Secrets whose ``ownerReferences`` name its uid (the garbage collector).
- **The runner image**: a container whose image is the ``runner_image`` given to the stand-in is
  meant to be an image with cpnet installed; its command runs in **this Python environment**
  (which has cpnet): the directory of ``sys.executable`` leads its ``PATH`` (so ``python`` is
  this interpreter) and cpnet's source is on its ``PYTHONPATH``. Nothing else of the host's
  environment is passed.
- **Faults on demand**: ``lose_node(name)`` makes a node NotReady and fails its pods with a
  ``DisruptionTarget`` condition (what the taint manager does when a node is lost); an image named
  ``standin.invalid/...`` never pulls (``ErrImagePull``, then ``ImagePullBackOff``).

What it does not model: authentication and RBAC (any token is accepted), watches, resource
versions and optimistic concurrency, ``ttlSecondsAfterFinished``, Foreground deletion's
finalizers (every delete removes the Job and kills its pods at once; the policy is only
recorded), CPU limits (only requests count for scheduling), container images and isolation,
restarts, any API group or endpoint not listed above, and real timing: it is a test tool, not a
simulator.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from kubernetes.utils.quantity import parse_quantity

import cpnet

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
TICK_S = 0.05
PAGE = os.sysconf("SC_PAGE_SIZE")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _q(value: Any) -> Decimal:
    return Decimal(parse_quantity(value)) if value not in (None, "") else Decimal(0)


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _matches(labels: dict[str, str], selector: str | None) -> bool:
    for term in (selector or "").split(","):
        if not term:
            continue
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


def _pod_requests(pod: dict[str, Any]) -> dict[str, Decimal]:
    spec = pod["spec"]
    out: dict[str, Decimal] = {}
    for c in spec.get("containers") or []:
        for k, v in ((c.get("resources") or {}).get("requests") or {}).items():
            out[k] = out.get(k, Decimal(0)) + _q(v)
    for c in spec.get("initContainers") or []:
        for k, v in ((c.get("resources") or {}).get("requests") or {}).items():
            out[k] = max(out.get(k, Decimal(0)), _q(v))
    return out


def _group_rss(pgid: int) -> int:
    """Resident bytes of every process in process group `pgid`."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5 (pgrp) is index 2 after the command
            total += int(fields[21]) * PAGE  # field 24 (rss)
    return total


class StandinKubeApiServer:
    """The stand-in API server (see the module doc). Use as a context manager or start()/stop()."""

    def __init__(
        self, root: Path, namespace: str = "cpnet", runner_image: str | None = None
    ) -> None:
        self.root = Path(root)
        self.runner_image = runner_image
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.created_secrets: list[dict[str, Any]] = []
        self.root.mkdir(parents=True, exist_ok=True)
        self.namespace = namespace
        self.lock = threading.RLock()
        self.nodes: dict[str, dict[str, Any]] = {}
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.procs: dict[tuple[str, str], subprocess.Popen[bytes]] = {}
        self.killed: dict[tuple[str, str], str] = {}  # pod -> why its process was killed
        self.deletes: list[tuple[str, str, str | None]] = []  # (ns, job, propagationPolicy)
        self.created: list[dict[str, Any]] = []  # every Job as posted
        self.errors: list[str] = []  # the stand-in's own failures (a test should assert none)
        self.stopping = threading.Event()
        self.httpd: ThreadingHTTPServer | None = None
        self.threads: list[threading.Thread] = []

    # ---- life ----

    @property
    def url(self) -> str:
        assert self.httpd is not None
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> StandinKubeApiServer:
        server = self

        class Handler(_Handler):
            standin = server

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        for target in (self.httpd.serve_forever, self._control_loop):
            t = threading.Thread(target=target, daemon=True, name="standin-kube")
            t.start()
            self.threads.append(t)
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
        with self.lock:
            for key in list(self.procs):
                self._kill(key, "server stopped")
        for t in self.threads:
            t.join(timeout=10)

    def __enter__(self) -> StandinKubeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def write_kubeconfig(self, path: Path, context: str = "standin") -> Path:
        """A kubeconfig whose current context points at this server and namespace."""
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": "standin", "user": {"token": "standin-token"}}],
            "contexts": [
                {
                    "name": context,
                    "context": {
                        "cluster": "standin",
                        "user": "standin",
                        "namespace": self.namespace,
                    },
                }
            ],
            "current-context": context,
        }
        path.write_text(json.dumps(cfg, indent=1))  # JSON is YAML
        return path

    # ---- the test's levers ----

    def add_node(
        self,
        name: str,
        *,
        cpu: str = "4",
        memory: str = "8Gi",
        gpus: int = 0,
        labels: dict[str, str] | None = None,
        taints: list[dict[str, str]] | None = None,
        ready: bool = True,
        architecture: str = "amd64",
    ) -> dict[str, Any]:
        alloc = {"cpu": cpu, "memory": memory, "ephemeral-storage": "100Gi", "pods": "110"}
        if gpus:
            alloc["nvidia.com/gpu"] = str(gpus)
        node = {
            "kind": "Node",
            "apiVersion": "v1",
            "metadata": {
                "name": name,
                "uid": secrets.token_hex(8),
                "creationTimestamp": _now(),
                "labels": {"kubernetes.io/hostname": name, **(labels or {})},
            },
            "spec": {"taints": list(taints or [])},
            "status": {
                "capacity": dict(alloc),
                "allocatable": alloc,
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                "nodeInfo": {
                    "architecture": architecture,
                    "operatingSystem": "linux",
                    "bootID": name,
                    "machineID": name,
                    "systemUUID": name,
                    "containerRuntimeVersion": "standin://0",
                    "kernelVersion": os.uname().release,
                    "kubeProxyVersion": "v1.31.0-standin",
                    "kubeletVersion": "v1.31.0-standin",
                    "osImage": "stand-in (no containers)",
                },
            },
        }
        with self.lock:
            self.nodes[name] = node
        return node

    def add_foreign_pod(self, node: str, *, cpu: str, memory: str, namespace: str = "other") -> str:
        """A running pod that is not cpnet's, holding `cpu`/`memory` on `node`."""
        name = f"foreign-{secrets.token_hex(3)}"
        pod = {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "creationTimestamp": _now(),
                "labels": {"app": "not-cpnet"},
            },
            "spec": {
                "nodeName": node,
                "containers": [
                    {"name": "c", "resources": {"requests": {"cpu": cpu, "memory": memory}}}
                ],
            },
            "status": {"phase": "Running"},
        }
        with self.lock:
            self.pods[(namespace, name)] = pod
        return name

    def lose_node(self, name: str) -> None:
        """The node stops answering: NotReady, and its pods fail as disrupted."""
        with self.lock:
            node = self.nodes[name]
            node["status"]["conditions"] = [{"type": "Ready", "status": "Unknown"}]
            for key, pod in self.pods.items():
                if pod["spec"].get("nodeName") != name or pod["status"]["phase"] in (
                    "Succeeded",
                    "Failed",
                ):
                    continue
                self._kill(key, "node lost")
                pod["status"]["conditions"] = [
                    *pod["status"].get("conditions", []),
                    {
                        "type": "DisruptionTarget",
                        "status": "True",
                        "reason": "DeletionByTaintManager",
                        "message": f"Taint manager: deleting due to NoExecute taint "
                        f"node.kubernetes.io/unreachable on {name}",
                    },
                ]
                self._pod_failed(key, None, None)

    def job_names(self) -> list[str]:
        with self.lock:
            return sorted(n for (_, n) in self.jobs)

    # ---- API ----

    def handle(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        with self.lock:
            if method == "GET" and parts == ["version"]:
                return 200, {"major": "1", "minor": "31", "gitVersion": "v1.31.0-standin"}
            if method == "GET" and parts == ["api", "v1", "nodes"]:
                return 200, self._list("NodeList", list(self.nodes.values()))
            if method == "GET" and parts == ["api", "v1", "pods"]:
                return 200, self._list("PodList", self._pods(None, query))
            if parts[:3] == ["api", "v1", "namespaces"] and len(parts) >= 5 and parts[4] == "pods":
                ns = parts[3]
                if method == "GET" and len(parts) == 5:
                    return 200, self._list("PodList", self._pods(ns, query))
                if method == "GET" and len(parts) == 7 and parts[6] == "log":
                    return self._log(ns, parts[5], query)
            if parts[:3] == ["api", "v1", "namespaces"] and parts[4:5] == ["secrets"]:
                return self._secret_call(method, parts[3], parts[5:], body)
            if parts[:4] == ["apis", "batch", "v1", "namespaces"] and len(parts) >= 6:
                ns = parts[4]
                if parts[5] == "jobs" and len(parts) == 6:
                    if method == "GET":
                        items = [
                            j
                            for (n, _), j in self.jobs.items()
                            if n == ns
                            and _matches(
                                j["metadata"].get("labels") or {}, query.get("labelSelector")
                            )
                        ]
                        return 200, self._list("JobList", items, "batch/v1")
                    if method == "POST":
                        return self._create_job(ns, body)
                if parts[5] == "jobs" and len(parts) == 7:
                    key = (ns, parts[6])
                    if key not in self.jobs:
                        return 404, _status(404, "NotFound", f'jobs.batch "{parts[6]}" not found')
                    if method == "GET":
                        return 200, self.jobs[key]
                    if method == "DELETE":
                        return self._delete_job(key, body)
            return 404, _status(404, "NotFound", f"the stand-in does not serve {method} {path}")

    def _list(self, kind: str, items: list[dict[str, Any]], api: str = "v1") -> dict[str, Any]:
        return {
            "kind": kind,
            "apiVersion": api,
            "metadata": {"resourceVersion": str(time.time_ns())},
            "items": json.loads(json.dumps(items)),
        }

    def _pods(self, ns: str | None, query: dict[str, str]) -> list[dict[str, Any]]:
        out = []
        for (n, _), pod in self.pods.items():
            if ns is not None and n != ns:
                continue
            if not _matches(pod["metadata"].get("labels") or {}, query.get("labelSelector")):
                continue
            ok = True
            for term in (query.get("fieldSelector") or "").split(","):
                if not term:
                    continue
                neg = "!=" in term
                key, value = term.split("!=" if neg else "=", 1)
                have = pod["status"].get("phase") if key == "status.phase" else None
                if key == "spec.nodeName":
                    have = pod["spec"].get("nodeName")
                if (have == value) == neg:
                    ok = False
            if ok:
                out.append(pod)
        return out

    def _log(self, ns: str, pod: str, query: dict[str, str]) -> tuple[int, Any]:
        if (ns, pod) not in self.pods:
            return 404, _status(404, "NotFound", f'pods "{pod}" not found')
        container = query.get("container") or ""
        path = self.root / "logs" / ns / pod / f"{container}.log"
        data = path.read_bytes() if path.is_file() else b""
        if query.get("tailLines"):
            data = b"".join(data.splitlines(keepends=True)[-int(query["tailLines"]) :])
        if query.get("limitBytes"):
            data = data[: int(query["limitBytes"])]
        return 200, data

    def _invalid(self, job: dict[str, Any]) -> str | None:
        meta = job.get("metadata") or {}
        name = str(meta.get("name") or "")
        if not name or len(name) > 63 or not DNS_LABEL.match(name):
            return f"metadata.name: Invalid value: {name!r}: must be a DNS-1123 label of <= 63"
        tmpl = (job.get("spec") or {}).get("template") or {}
        for where, labels in (
            ("metadata.labels", meta.get("labels") or {}),
            ("spec.template.metadata.labels", (tmpl.get("metadata") or {}).get("labels") or {}),
        ):
            for k, v in labels.items():
                if len(str(v)) > 63 or not LABEL_VALUE.match(str(v)):
                    return f"{where}: Invalid value: {v!r}: a valid label must be <= 63 chars"
                if not DNS_SUBDOMAIN.match(str(k).split("/")[-1].lower()):
                    return f"{where}: Invalid key: {k!r}"
        spec = tmpl.get("spec") or {}
        containers = (spec.get("initContainers") or []) + (spec.get("containers") or [])
        if not spec.get("containers"):
            return "spec.template.spec.containers: Required value"
        for c in containers:
            if not DNS_LABEL.match(str(c.get("name") or "")):
                return f"containers.name: Invalid value: {c.get('name')!r}"
        if spec.get("restartPolicy") not in ("Never", "OnFailure"):
            return "spec.template.spec.restartPolicy: Unsupported value"
        return None

    def _create_job(self, ns: str, job: dict[str, Any]) -> tuple[int, Any]:
        name = str((job.get("metadata") or {}).get("name") or "")
        if (ns, name) in self.jobs:
            return 409, _status(409, "AlreadyExists", f'jobs.batch "{name}" already exists')
        problem = self._invalid(job)
        if problem:
            return 422, _status(422, "Invalid", f'Job.batch "{name}" is invalid: {problem}')
        self.created.append(json.loads(json.dumps(job)))
        uid = secrets.token_hex(16)
        job = json.loads(json.dumps(job))
        job["metadata"].update(
            {"namespace": ns, "uid": uid, "creationTimestamp": _now(), "resourceVersion": "1"}
        )
        job["status"] = {"active": 1, "startTime": _now(), "startMono": time.monotonic()}
        self.jobs[(ns, name)] = job
        tmpl = job["spec"]["template"]
        pod_name = f"{name}-{secrets.token_hex(3)[:5]}"
        labels = {
            **((tmpl.get("metadata") or {}).get("labels") or {}),
            "job-name": name,
            "batch.kubernetes.io/job-name": name,
            "controller-uid": uid,
        }
        self.pods[(ns, pod_name)] = {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {
                "name": pod_name,
                "namespace": ns,
                "uid": secrets.token_hex(16),
                "creationTimestamp": _now(),
                "labels": labels,
                "ownerReferences": [{"kind": "Job", "name": name, "uid": uid}],
            },
            "spec": json.loads(json.dumps(tmpl["spec"])),
            "status": {
                "phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "False"}],
            },
        }
        out = json.loads(json.dumps(job))
        out["status"].pop("startMono", None)
        return 201, out

    def _secret_call(self, method: str, ns: str, rest: list[str], body: Any) -> tuple[int, Any]:
        if not rest and method == "GET":
            items = [v for (n, _), v in self.secrets.items() if n == ns]
            return 200, self._list("SecretList", items)
        if not rest and method == "POST":
            name = str(((body or {}).get("metadata") or {}).get("name") or "")
            if not DNS_SUBDOMAIN.match(name) or len(name) > 253:
                return 422, _status(422, "Invalid", f"Secret {name!r}: metadata.name invalid")
            if (ns, name) in self.secrets:
                return 409, _status(409, "AlreadyExists", f'secrets "{name}" already exists')
            self.created_secrets.append(json.loads(json.dumps(body)))
            secret = json.loads(json.dumps(body))
            secret["metadata"].update(
                {"namespace": ns, "uid": secrets.token_hex(16), "creationTimestamp": _now()}
            )
            self.secrets[(ns, name)] = secret
            return 201, secret
        if len(rest) == 1 and method in ("GET", "DELETE"):
            key = (ns, rest[0])
            if key not in self.secrets:
                return 404, _status(404, "NotFound", f'secrets "{rest[0]}" not found')
            if method == "GET":
                return 200, self.secrets[key]
            self.secrets.pop(key)
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        return 404, _status(404, "NotFound", f"the stand-in does not serve {method} secrets")

    def _delete_job(self, key: tuple[str, str], body: Any) -> tuple[int, Any]:
        policy = (body or {}).get("propagationPolicy") if isinstance(body, dict) else None
        self.deletes.append((key[0], key[1], policy))
        job = self.jobs.pop(key)
        uid = job["metadata"]["uid"]
        for skey, secret in list(self.secrets.items()):  # the garbage collector
            owners = secret["metadata"].get("ownerReferences") or []
            if skey[0] == key[0] and any(o.get("uid") == uid for o in owners):
                del self.secrets[skey]
        for pkey, pod in list(self.pods.items()):
            if (
                pkey[0] == key[0]
                and (pod["metadata"].get("labels") or {}).get("job-name") == key[1]
            ):
                self._kill(pkey, "deleted")
                del self.pods[pkey]
        job["metadata"]["deletionTimestamp"] = _now()
        return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success", "details": {}}

    # ---- controllers ----

    def _control_loop(self) -> None:
        while not self.stopping.wait(TICK_S):
            with self.lock:
                try:
                    self._schedule()
                    self._enforce()
                except Exception as exc:  # a stand-in bug: keep going, and let the test see it
                    self.errors.append(f"control loop: {exc!r}")

    def _free(self, node: str) -> dict[str, Decimal]:
        free = {k: _q(v) for k, v in self.nodes[node]["status"]["allocatable"].items()}
        for pod in self.pods.values():
            if pod["spec"].get("nodeName") == node and pod["status"]["phase"] not in (
                "Succeeded",
                "Failed",
            ):
                for k, v in _pod_requests(pod).items():
                    free[k] = free.get(k, Decimal(0)) - v
        return free

    def _fits(self, node: dict[str, Any], pod: dict[str, Any]) -> bool:
        spec = pod["spec"]
        if (node.get("spec") or {}).get("unschedulable"):
            return False
        if not any(
            c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"]
        ):
            return False
        labels = node["metadata"].get("labels") or {}
        if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
            return False
        tolerated = {t.get("key") for t in spec.get("tolerations") or []}
        for t in node["spec"].get("taints") or []:
            if t.get("effect") in ("NoSchedule", "NoExecute") and t.get("key") not in tolerated:
                return False
        free = self._free(node["metadata"]["name"])
        return all(free.get(k, Decimal(0)) >= v for k, v in _pod_requests(pod).items() if v)

    def _schedule(self) -> None:
        for key, pod in list(self.pods.items()):
            if pod["spec"].get("nodeName") or pod["status"]["phase"] != "Pending":
                continue
            node = next((n for n in self.nodes.values() if self._fits(n, pod)), None)
            if node is None:
                pod["status"]["conditions"] = [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": f"0/{len(self.nodes)} nodes are available: "
                        "insufficient resources or no matching node.",
                    }
                ]
                continue
            pod["spec"]["nodeName"] = node["metadata"]["name"]
            pod["status"]["conditions"] = [{"type": "PodScheduled", "status": "True"}]
            pod["status"]["startTime"] = _now()
            t = threading.Thread(target=self._kubelet, args=(key,), daemon=True)
            t.start()

    def _enforce(self) -> None:
        """activeDeadlineSeconds of Jobs, memory limits of running containers."""
        for (ns, name), job in self.jobs.items():
            limit = job["spec"].get("activeDeadlineSeconds")
            if not limit or any(
                c["type"] in ("Complete", "Failed") for c in job["status"].get("conditions", [])
            ):
                continue
            if time.monotonic() - job["status"]["startMono"] > float(limit):
                for pkey, pod in self.pods.items():
                    if pkey[0] == ns and _labels(pod).get("job-name") == name:
                        self._kill(pkey, "deadline")
                        if pod["status"]["phase"] not in ("Succeeded", "Failed"):
                            pod["status"]["phase"] = "Failed"
                            pod["status"]["reason"] = "DeadlineExceeded"
                            pod["status"]["message"] = (
                                "Pod was active on the node longer than the specified deadline"
                            )
                self._job_done((ns, name), "Failed", "DeadlineExceeded")
        for key, proc in list(self.procs.items()):
            pod = self.pods.get(key)
            if pod is None or proc.poll() is not None:
                continue
            name = getattr(proc, "container", "")
            spec = next(
                (
                    c
                    for c in (pod["spec"].get("initContainers") or [])
                    + pod["spec"].get("containers", [])
                    if c["name"] == name
                ),
                None,
            )
            limit = _q((((spec or {}).get("resources") or {}).get("limits") or {}).get("memory"))
            if limit and _group_rss(proc.pid) > limit:
                self._kill(key, "OOMKilled")

    def _kill(self, key: tuple[str, str], why: str) -> None:
        proc = self.procs.get(key)
        if proc is not None and proc.poll() is None:
            self.killed[key] = why
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    def _job_of(self, pod: dict[str, Any]) -> tuple[str, str]:
        """(namespace, Job name) of a Job's pod; a pod of no Job maps to no Job."""
        return pod["metadata"]["namespace"], _labels(pod).get("job-name", "")

    def _job_done(self, key: tuple[str, str], kind: str, reason: str) -> None:
        job = self.jobs.get(key)
        if job is None or any(
            c["type"] in ("Complete", "Failed") for c in job["status"].get("conditions", [])
        ):
            return
        st = job["status"]
        st["active"] = 0
        st["succeeded" if kind == "Complete" else "failed"] = 1
        t = _now()
        first = "SuccessCriteriaMet" if kind == "Complete" else "FailureTarget"
        st["conditions"] = [
            {"type": first, "status": "True", "reason": reason, "lastTransitionTime": t},
            {"type": kind, "status": "True", "reason": reason, "lastTransitionTime": t},
        ]
        if kind == "Complete":
            st["completionTime"] = t

    def _pod_failed(self, key: tuple[str, str], reason: str | None, message: str | None) -> None:
        pod = self.pods[key]
        pod["status"]["phase"] = "Failed"
        if reason:
            pod["status"]["reason"] = reason
        if message:
            pod["status"]["message"] = message
        self._job_done(self._job_of(pod), "Failed", "BackoffLimitExceeded")

    # ---- the kubelet: runs one pod's containers in order ----

    def _kubelet(self, key: tuple[str, str]) -> None:
        with self.lock:
            pod = self.pods.get(key)
            if pod is None:
                return
            spec = json.loads(json.dumps(pod["spec"]))
            volumes = {}
            for v in spec.get("volumes") or []:
                if "emptyDir" in v:
                    d = Path(tempfile.mkdtemp(prefix=f"{key[1]}-{v['name']}-", dir=self.root))
                    volumes[v["name"]] = d
        for v in spec.get("volumes") or []:
            if "secret" in v:
                items = v["secret"].get("items")
                keys = None if items is None else {i["key"]: i["path"] for i in items}
                d = self._mount_secret(key, str(v["secret"].get("secretName")), v["name"], keys)
                if d is None:
                    return
                volumes[v["name"]] = d
        with self.lock:
            pod = self.pods.get(key)
            if pod is None:
                return
            inits = spec.get("initContainers") or []
            mains = spec.get("containers") or []
            pod["status"]["initContainerStatuses"] = [_waiting(c, "PodInitializing") for c in inits]
            pod["status"]["containerStatuses"] = [_waiting(c, "PodInitializing") for c in mains]
        for i, c in enumerate(inits + mains):
            field = "initContainerStatuses" if i < len(inits) else "containerStatuses"
            idx = i if i < len(inits) else i - len(inits)
            code = self._run_container(key, c, field, idx, volumes)
            if code is None:  # gone, killed from outside, or can never start
                return
            if code != 0:
                with self.lock:
                    if key in self.pods and self.pods[key]["status"]["phase"] != "Failed":
                        self._pod_failed(key, None, None)
                return
        with self.lock:
            pod = self.pods.get(key)
            if pod is not None and pod["status"]["phase"] not in ("Failed",):
                pod["status"]["phase"] = "Succeeded"
                self._job_done(self._job_of(pod), "Complete", "CompletionsReached")

    def _mount_secret(
        self, key: tuple[str, str], name: str, volume: str, items: dict[str, str] | None = None
    ) -> Path | None:
        """A directory with the Secret's keys as files (only `items`' keys, at their paths, when
        given), once it exists (None: the pod is gone)."""
        while not self.stopping.is_set():
            with self.lock:
                if key not in self.pods:
                    return None
                secret = self.secrets.get((key[0], name))
                if secret is not None:
                    d = Path(tempfile.mkdtemp(prefix=f"{key[1]}-{volume}-", dir=self.root))
                    for k, v in (secret.get("data") or {}).items():
                        if items is not None and k not in items:
                            continue
                        path = d / (items[k] if items is not None else k)
                        path.write_bytes(base64.b64decode(v))
                        path.chmod(0o400)
                    return d
            time.sleep(TICK_S)
        return None

    def _secret_value(self, key: tuple[str, str], ref: dict[str, Any]) -> str | None:
        """An env ``valueFrom.secretKeyRef``, once its Secret exists (the kubelet retries a
        container whose Secret is missing); None: the pod is gone."""
        while not self.stopping.is_set():
            with self.lock:
                if key not in self.pods:
                    return None
                secret = self.secrets.get((key[0], str(ref.get("name"))))
                if secret is not None:
                    return base64.b64decode(secret["data"][ref["key"]]).decode()
            time.sleep(TICK_S)
        return None

    def _run_container(
        self,
        key: tuple[str, str],
        c: dict[str, Any],
        field: str,
        idx: int,
        volumes: dict[str, Path],
    ) -> int | None:
        mounts = {
            m["mountPath"].rstrip("/"): volumes[m["name"]]
            for m in c.get("volumeMounts") or []
            if m["name"] in volumes
        }

        def local(text: str) -> str:
            for mount, d in mounts.items():
                if text == mount or text.startswith(mount + "/"):
                    return str(d) + text[len(mount) :]
            return text

        from_secrets: dict[str, str] = {}  # env valueFrom.secretKeyRef, once the Secret exists
        for e in c.get("env") or []:
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            if ref is not None:
                value = self._secret_value(key, ref)
                if value is None:
                    return None
                from_secrets[e["name"]] = value

        with self.lock:
            pod = self.pods.get(key)
            if pod is None or pod["status"]["phase"] == "Failed":
                return None
            statuses = pod["status"][field]
            if str(c.get("image") or "").startswith("standin.invalid/"):
                statuses[idx] = _waiting(
                    c, "ErrImagePull", f'failed to pull image "{c["image"]}": not found'
                )
                pod["status"]["phase"] = "Pending"
                threading.Timer(
                    0.5,
                    self._backoff,
                    args=(key, field, idx, c),
                ).start()
                return None
            argv = [local(a) for a in (c.get("command") or []) + (c.get("args") or [])]
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
            if self.runner_image and c.get("image") == self.runner_image:
                # an image with cpnet installed: this environment, which has cpnet
                env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env["PATH"]))
                env["PYTHONPATH"] = str(Path(cpnet.__file__).resolve().parent.parent)
            for ref in c.get("envFrom") or []:
                sname = (ref.get("secretRef") or {}).get("name")
                data = (self.secrets.get((key[0], str(sname))) or {}).get("data") or {}
                env.update({k: base64.b64decode(v).decode() for k, v in data.items()})
            env.update({e["name"]: local(str(e.get("value", ""))) for e in c.get("env") or []})
            env.update(from_secrets)
            cwd = Path(local(c.get("workingDir") or "/"))
            log_path = self.root / "logs" / key[0] / key[1] / f"{c['name']}.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            started = _now()
            try:
                cwd.mkdir(parents=True, exist_ok=True)
                with log_path.open("wb") as log:
                    proc = subprocess.Popen(
                        argv,
                        cwd=cwd,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
            except OSError as exc:
                statuses[idx] = _waiting(c, "RunContainerError", str(exc))
                return None
            proc.container = c["name"]  # type: ignore[attr-defined]
            self.procs[key] = proc
            statuses[idx] = {**_base(c), "state": {"running": {"startedAt": started}}}
            statuses[idx]["started"] = True
            if field == "containerStatuses" or idx == 0:
                pod["status"]["phase"] = "Running" if field == "containerStatuses" else "Pending"
        code = proc.wait()
        with self.lock:
            self.procs.pop(key, None)
            why = self.killed.pop(key, None)
            pod = self.pods.get(key)
            if pod is None:
                return None
            exit_code = 128 + -code if code < 0 else code
            reason = "Completed" if exit_code == 0 else "Error"
            if why == "OOMKilled":
                reason = "OOMKilled"
            pod["status"][field][idx] = {
                **_base(c),
                "state": {
                    "terminated": {
                        "exitCode": exit_code,
                        "reason": reason,
                        "startedAt": started,
                        "finishedAt": _now(),
                    }
                },
            }
            if why in ("deadline", "node lost", "deleted", "server stopped"):
                return None
            return exit_code

    def _backoff(self, key: tuple[str, str], field: str, idx: int, c: dict[str, Any]) -> None:
        with self.lock:
            pod = self.pods.get(key)
            if pod is not None and pod["status"]["phase"] == "Pending":
                pod["status"][field][idx] = _waiting(
                    c, "ImagePullBackOff", f'Back-off pulling image "{c["image"]}"'
                )


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def _base(c: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": c["name"],
        "image": c.get("image") or "",
        "imageID": "",
        "ready": False,
        "restartCount": 0,
    }


def _waiting(c: dict[str, Any], reason: str, message: str | None = None) -> dict[str, Any]:
    waiting: dict[str, Any] = {"reason": reason}
    if message:
        waiting["message"] = message
    return {**_base(c), "state": {"waiting": waiting}}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    standin: StandinKubeApiServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self, method: str) -> None:
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            code, out = 400, _status(400, "BadRequest", "body is not JSON")
        else:
            code, out = self.standin.handle(method, url.path, query, body)
        if isinstance(out, bytes):
            data, ctype = out, "text/plain"
        else:
            data, ctype = json.dumps(out).encode(), "application/json"
        self.send_response(code)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")
