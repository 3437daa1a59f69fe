"""The Kubernetes backend itself: each attempt one Job; submit, poll and cancel are
`ClusterBackend`'s, reconciled through `verdict` (see the package's doc)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, ClassVar

from cpnet.agent.backends.base import (
    BackendConfig,
    BackendError,
    Handle,
    Job,
    JobStatus,
    PoolCapacity,
    PoolLive,
)
from cpnet.agent.backends.cluster import ClusterBackend, Refused, Seen
from cpnet.agent.backends.kubernetes.api import KubeApi
from cpnet.agent.backends.kubernetes.manifest import (
    ATTEMPT_LABEL,
    POOL_LABEL,
    job_manifest,
    needs_staging,
    secret_env_files,
    secret_manifest,
    staging_payload,
    time_limit_s,
    unsupported,
)
from cpnet.agent.backends.kubernetes.names import label_value
from cpnet.agent.backends.kubernetes.options import KubernetesOptions
from cpnet.agent.backends.kubernetes.pools import (
    KubePool,
    capacity_of,
    group_nodes,
    node_ready,
    pod_request,
)
from cpnet.agent.backends.kubernetes.states import (
    container_statuses,
    executor_logs,
    image_error,
    latest_pod,
    usage_of,
    verdict,
)
from cpnet.agent.backends.runner_job import runner_settings, staging_env, staging_settings
from cpnet.agent.backends.workdir import status_from_record
from cpnet.agent.podstage import parse_result
from cpnet.agent.runner import (
    CANCEL_FILE,
    SECRETS_FILE,
    STATUS_FILE,
    new_record,
    read_status,
    write_json_atomic,
)
from cpnet.agent.staging import Transfer
from cpnet.tasks.model import ExecutorLog, Usage
from cpnet.tasks.states import State

JOB_FILE = "k8s_job"  # "namespace/name" of the attempt's Job, in its local dir
MANIFEST_FILE = "k8s_job.json"  # the Job as submitted


class KubernetesBackend(ClusterBackend):
    """Runs each attempt as one Kubernetes Job on the node pool named by its pool."""

    name: ClassVar[str] = "kubernetes"
    Options = KubernetesOptions
    options: KubernetesOptions
    id_file: ClassVar[str] = JOB_FILE
    scheduler: ClassVar[str] = "Kubernetes"

    def __init__(self, config: BackendConfig, api: KubeApi | None = None) -> None:
        super().__init__(config)
        self.api = api or KubeApi(self.options)

    # ---- pools ---------------------------------------------------------------------------------

    def _find_pools(self) -> list[KubePool]:
        """The declared pools (no node selector), else one pool per node pool."""
        if self.config.pools:
            return [KubePool(d, {}, ()) for d in self.config.pools]
        return self._group()

    def _group(self) -> list[KubePool]:
        return group_nodes(
            self.api.nodes(),
            pool_label=self.options.pool_label,
            pool_type=self.options.pool_type,
            gpu_resource=self.options.gpu_resource,
        )

    def live(self) -> list[PoolLive]:
        """Allocatable minus requests of unfinished pods, per pool; cpnet Jobs queued/running."""
        pools = self._cluster_pools()
        listed = self.api.nodes()
        nodes = {str((n.get("metadata") or {}).get("name")): n for n in listed}
        # membership now, so that nodes added or removed since discovery count (or stop counting)
        members = {
            p.decl.name: p.nodes
            for p in group_nodes(
                listed,
                pool_label=self.options.pool_label,
                pool_type=self.options.pool_type,
                gpu_resource=self.options.gpu_resource,
            )
        }
        used: dict[str, PoolCapacity] = {}
        for pod in self.api.active_pods():
            node = (pod.get("spec") or {}).get("nodeName")
            if node:
                used[node] = used.get(node, PoolCapacity()).plus(
                    pod_request(pod, self.options.gpu_resource)
                )
        jobs, pods = self._listing(fresh=True)
        result = []
        for pool in pools:
            if pool.nodes:
                free = PoolCapacity()
                for name in members.get(pool.decl.name, ()):
                    node = nodes.get(name)
                    if node is None or not node_ready(node):
                        continue
                    alloc = capacity_of(
                        (node.get("status") or {}).get("allocatable") or {},
                        self.options.gpu_resource,
                    )
                    free = free.plus(alloc.minus(used.get(name, PoolCapacity())))
                free = PoolCapacity(
                    round(free.cpu_cores, 3),
                    round(free.ram_gb, 3),
                    round(free.disk_gb, 3),
                    free.gpus,
                )
            else:
                free = pool.decl.total
            queued = running = 0
            value = label_value(pool.decl.name)
            for name, job in jobs.items():
                if ((job.get("metadata") or {}).get("labels") or {}).get(POOL_LABEL) != value:
                    continue
                state, _ = verdict(job, pods.get(name, []), False)
                if state is State.QUEUED:
                    queued += 1
                elif not state.terminal:
                    running += 1
            result.append(PoolLive(pool.decl.name, free, queued, running))
        return result

    def _list_jobs(self) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
        """cpnet's Jobs by name and their pods by Job name."""
        jobs = {str(j["metadata"]["name"]): j for j in self.api.jobs()}
        by_attempt = {
            ((j.get("metadata") or {}).get("labels") or {}).get(ATTEMPT_LABEL): n
            for n, j in jobs.items()
        }
        pods: dict[str, list[dict[str, Any]]] = {}
        for p in self.api.pods():
            labels = (p.get("metadata") or {}).get("labels") or {}
            owner = by_attempt.get(labels.get(ATTEMPT_LABEL)) or labels.get("job-name")
            if owner:
                pods.setdefault(str(owner), []).append(p)
        return jobs, pods

    def _listing_s(self) -> float:
        return self.options.cache_s

    # ---- attempts ------------------------------------------------------------------------------

    def _selector(self, pool_name: str) -> dict[str, str]:
        for p in self._cluster_pools():
            if p.decl.name == pool_name:
                return p.selector
        raise BackendError(f"no pool {pool_name!r} on this Kubernetes backend")

    def _launch(self, job: Job) -> str:
        """Create the attempt's Job once (an existing one of its name is the same Job, created
        before a crash), and its staging Secret; "namespace/name"."""
        o = self.options
        problem = unsupported(job.spec, o.runner_image)
        if problem is not None:
            raise Refused(problem)
        staged = bool(o.runner_image) and needs_staging(job.spec)
        try:
            files = self._staging_files(job) if staged else {}
            files |= self._secret_env(job)
            manifest = job_manifest(
                job,
                namespace=self.api.namespace,
                image=o.image,
                selector=self._selector(job.pool_name),
                gpu_resource=o.gpu_resource,
                deadline_s=time_limit_s(job.spec, o.default_time_limit_s),
                ttl_s=o.ttl_after_finished_s,
                service_account=o.service_account,
                runner_image=o.runner_image,
                staging_secret=o.staging_secret,
            )
            write_json_atomic(job.work_dir / MANIFEST_FILE, manifest)
            created = self.api.create_job(manifest)  # None: created before a crash; the same Job
            if files:
                self._create_secret(manifest, created, files)
        except (BackendError, ValueError) as exc:
            raise Refused(f"Kubernetes refused the Job: {exc}") from exc
        return f"{self.api.namespace}/{manifest['metadata']['name']}"

    def _staging_files(self, job: Job) -> dict[str, str]:
        settings = runner_settings(
            job.spec,
            max_stage_gb=self.options.max_stage_gb,
            grace_s=0.0,
            http_timeout_s=self.options.http_timeout_s,
            file_roots=self.options.file_roots,
            memory_limit_gb=None,
            private_tmp=False,
            staging=staging_settings(self.options, self.config.hub_url),
        )
        return staging_payload(job, settings, staging_env(self.options, self.config.hub_token))

    def _secret_env(self, job: Job) -> dict[str, str]:
        """The executors' secret env values, from the ``secrets.json`` the agent delivered into
        the attempt's work dir (read, then deleted): entries of the attempt's Secret, which the
        executor containers read by ``secretKeyRef``. ValueError when they did not arrive."""
        if not any(ex.secret_env for ex in job.spec.executors):
            return {}
        path = self.work_dir_for(job.attempt_id) / SECRETS_FILE
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError("the task's secrets did not arrive") from None
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
        return secret_env_files(job.spec, values)

    def _create_secret(
        self, manifest: dict[str, Any], created: dict[str, Any] | None, files: dict[str, str]
    ) -> None:
        """The attempt's staging Secret, owned by its Job (created after it, to know its uid:
        until it exists the pod waits for its volume). On failure the Job is deleted."""
        name = manifest["metadata"]["name"]
        job = created or self.api.get_job(name)
        if not job or not (job.get("metadata") or {}).get("uid"):
            raise BackendError(f"the Job {name} vanished before its staging Secret was made")
        try:
            self.api.create_secret(secret_manifest(name, self.api.namespace, job, files))
        except BackendError as exc:
            with contextlib.suppress(BackendError):
                self.api.delete_job(name)
            raise BackendError(f"cannot create the staging Secret: {exc}") from exc

    def _observe(self, handle: Handle, since: float) -> Seen:
        """The Job's and its pod's state (`verdict`); a final one brings the pods along."""
        name = _job_name_of(handle)
        jobs, pods = self._listing_with(lambda listed: name in listed[0], since)
        canceled = (handle.work_dir / CANCEL_FILE).exists()
        state, reason = verdict(jobs.get(name), pods.get(name, []), canceled)
        return Seen(state, reason, detail=pods.get(name, []))

    def _ended(self, handle: Handle, seen: Seen) -> JobStatus:
        name = _job_name_of(handle)
        return self._finish(handle.work_dir, name, seen.state, seen.reason, seen.detail)

    def _finish(
        self,
        work_dir: Path,
        name: str,
        state: State,
        reason: str | None,
        pods: list[dict[str, Any]],
    ) -> JobStatus:
        """Collect logs and usage of a final attempt and keep them in status.json."""
        pod = latest_pod(pods)
        texts: dict[str, str] = {}
        system_logs: list[str] = []
        if pod is not None:
            pod_name = str((pod.get("metadata") or {}).get("name"))
            for c in container_statuses(pod):
                cname = str(c.get("name"))
                try:
                    texts[cname] = self.api.log(pod_name, cname)
                except BackendError as exc:
                    system_logs.append(f"no log of {cname}: {exc}"[:4096])
        if image_error(pod) is not None:
            with contextlib.suppress(BackendError):
                self.api.delete_job(name)  # it would wait for its image forever
        results = {}
        for which in ("stage-in", "stage-out"):
            found = parse_result(texts.get(which, ""))
            if found is not None:
                results[which] = found
                lines = [rec_line(r) for r in found.get("staging") or []]
                system_logs += [line for line in lines if line]
                if found.get("error"):
                    system_logs.append(str(found["error"])[:4096])
                    if state is State.SYSTEM_ERROR:
                        reason = str(found["error"])
            elif texts.get(which):
                system_logs.append(f"{which}: {texts[which][-2000:]}")
        # The attempt's Secret (staging files, secret env values) is no longer needed; the Job's
        # owner GC backs this.
        with contextlib.suppress(BackendError):
            self.api.delete_secret(name)
        record = new_record(state, reason)
        record["executor_logs"] = [x.model_dump(mode="json") for x in executor_logs(pod, texts)]
        u = usage_of(pod)
        bytes_in = int((results.get("stage-in") or {}).get("bytes") or 0)
        bytes_out = int((results.get("stage-out") or {}).get("bytes") or 0)
        if results:
            u = (u or Usage()).model_copy(update={"bytes_in": bytes_in, "bytes_out": bytes_out})
        if state is State.COMPLETE:
            record["outputs"] = (results.get("stage-out") or {}).get("outputs") or []
        record["usage"] = u.model_dump(mode="json") if u else None
        record["system_logs"] = system_logs[:64]  # what the hub accepts
        record["staging"] = [  # per-transfer records, for the hub (status_from_record)
            r for found in results.values() for r in found.get("staging") or []
        ]
        with contextlib.suppress(OSError):
            write_json_atomic(work_dir / STATUS_FILE, record)
        return status_from_record(record)

    def _stop(self, handle: Handle) -> None:
        """Delete the Job (Background propagation: Kubernetes kills and removes its pod)."""
        self.api.delete_job(_job_name_of(handle), "Background")

    def logs(self, handle: Handle) -> list[ExecutorLog]:
        """Final logs from status.json, else the running containers' logs now."""
        record = read_status(handle.work_dir)
        if record is not None and State(record["state"]).terminal:
            return status_from_record(record).executor_logs
        _, pods = self._listing(fresh=True)
        pod = latest_pod(pods.get(_job_name_of(handle), []))
        if pod is None:
            return []
        pod_name = str((pod.get("metadata") or {}).get("name"))
        texts = {
            str(c.get("name")): self.api.log(pod_name, str(c.get("name")))
            for c in container_statuses(pod)
            if str(c.get("name")).startswith("ex-")
        }
        return executor_logs(pod, texts)

    def usage(self, handle: Handle) -> Usage | None:
        record = read_status(handle.work_dir)
        if record is not None and State(record["state"]).terminal:
            return status_from_record(record).usage
        _, pods = self._listing()
        return usage_of(latest_pod(pods.get(_job_name_of(handle), [])))

    def forget(self, handle: Handle) -> None:
        """Delete the finished Job (its pod goes with it); the local dir stays for inspection."""
        name = _job_name_of(handle)
        if name:
            with contextlib.suppress(BackendError):
                self.api.delete_job(name, "Background")


def _job_name_of(handle: Handle) -> str:
    """The Job's name in the handle's "namespace/name" ('' when none was created)."""
    return (handle.job_id or "").split("/", 1)[-1]


def rec_line(rec: Any) -> str:
    """A staging record (`staging.Transfer.to_dict`) as the runner's system-log line."""
    if not isinstance(rec, dict):
        return ""
    with contextlib.suppress(TypeError, ValueError):
        return Transfer(**rec).line()[:4096]
    return ""


__all__ = ["JOB_FILE", "MANIFEST_FILE", "KubernetesBackend"]
