"""What a Job and its pod mean for the attempt (pure): `verdict`, the Kubernetes backend's
translate table (see the package's doc), and the executor logs and usage a pod shows."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

from cpnet.agent.backends.kubernetes.manifest import IGNORED_MARK
from cpnet.agent.runner import (
    MAX_TAIL_CHARS,
)
from cpnet.tasks.model import ExecutorLog, Usage
from cpnet.tasks.states import State

IMAGE_ERRORS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
SYSTEM_POD_REASONS = frozenset(
    {
        "NodeLost",
        "Evicted",
        "Shutdown",
        "NodeShutdown",
        "Terminated",
        "NodeAffinity",
        "UnexpectedAdmissionError",
        "Preempting",
        "OutOfcpu",
        "OutOfmemory",
    }
)


def _conditions(obj: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    conds = ((obj or {}).get("status") or {}).get("conditions") or []
    return {str(c.get("type")): c for c in conds if c.get("status") == "True"}


def container_statuses(pod: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The pod's container statuses in run order (init containers first, by spec order)."""
    if not pod:
        return []
    st = pod.get("status") or {}
    by_name = {
        str(c.get("name")): c
        for c in (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or [])
    }
    spec = pod.get("spec") or {}
    order = [
        str(c.get("name"))
        for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])
    ]
    return [by_name[n] for n in order if n in by_name] or list(by_name.values())


def latest_pod(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest pod of a Job (there is one with backoffLimit 0, unless one was replaced)."""
    if not pods:
        return None
    return max(pods, key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp") or ""))


def _executor_index(name: str) -> str:
    return name[3:] if name.startswith("ex-") else name


def pod_failure(pod: dict[str, Any] | None, job: dict[str, Any] | None) -> tuple[State, str]:
    """Why a pod (of a failed Job) failed: the place (SYSTEM_ERROR) or the task (EXECUTOR_ERROR)."""
    if pod is None:
        why = _conditions(job).get("Failed") or {}
        return State.SYSTEM_ERROR, (
            f"Kubernetes Job failed ({why.get('reason') or 'unknown'}) and its pod is gone"
        )
    st = pod.get("status") or {}
    reason = str(st.get("reason") or "")
    message = str(st.get("message") or "")
    disrupted = _conditions(pod).get("DisruptionTarget")
    if reason in SYSTEM_POD_REASONS or disrupted:
        why = reason or str((disrupted or {}).get("reason") or "DisruptionTarget")
        text = message or str((disrupted or {}).get("message") or "")
        return State.SYSTEM_ERROR, f"pod {why}" + (f": {text}" if text else "")
    if reason == "DeadlineExceeded":
        return State.EXECUTOR_ERROR, deadline_reason(job)
    for c in container_statuses(pod):
        term = (c.get("state") or {}).get("terminated") or {}
        code = term.get("exitCode")
        if term and code not in (0, None):
            which = _executor_index(str(c.get("name")))
            if term.get("reason") == "OOMKilled":
                return State.EXECUTOR_ERROR, (
                    f"executor {which} was OOMKilled: it used more memory than its limit"
                )
            if which in ("stage-in", "stage-out"):
                return State.SYSTEM_ERROR, f"{which} exited {code}"
            return State.EXECUTOR_ERROR, f"executor {which} exited with code {code}"
    return State.SYSTEM_ERROR, f"pod failed ({reason or 'no reason given'})" + (
        f": {message}" if message else ""
    )


def deadline_reason(job: dict[str, Any] | None) -> str:
    limit = ((job or {}).get("spec") or {}).get("activeDeadlineSeconds")
    return (
        f"DeadlineExceeded: ran longer than its time limit of {limit} s"
        if limit
        else ("DeadlineExceeded: ran longer than its time limit")
    )


def image_error(pod: dict[str, Any] | None) -> tuple[str, dict[str, Any]] | None:
    """(executor, waiting state) of a container that cannot start (its image cannot be pulled,
    its configuration is refused): it would wait forever."""
    for c in container_statuses(pod):
        waiting = (c.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in IMAGE_ERRORS:
            return _executor_index(str(c.get("name"))), waiting
    return None


def verdict(
    job: dict[str, Any] | None, pods: list[dict[str, Any]], canceled: bool
) -> tuple[State, str | None]:
    """The attempt's state from its Job and pods (None: the Job is gone)."""
    conds = _conditions(job)
    pod = latest_pod(pods)
    if "Complete" in conds or "SuccessCriteriaMet" in conds:
        return State.COMPLETE, None
    if canceled:
        return State.CANCELED, "canceled: the Kubernetes Job was deleted"
    if job is None:
        return State.SYSTEM_ERROR, "the Kubernetes Job vanished"
    failed = conds.get("Failed") or conds.get("FailureTarget")
    if failed:
        if failed.get("reason") == "DeadlineExceeded":
            return State.EXECUTOR_ERROR, deadline_reason(job)
        return pod_failure(pod, job)
    if (job.get("metadata") or {}).get("deletionTimestamp"):
        return State.SYSTEM_ERROR, "the Kubernetes Job is being deleted by someone else"
    if pod is None:
        return State.QUEUED, "waiting for the Job's pod"
    st = pod.get("status") or {}
    phase = st.get("phase")
    if phase == "Failed":
        return pod_failure(pod, job)
    stuck = image_error(pod)
    if stuck is not None:
        which, waiting = stuck
        if which.startswith("stage-"):  # the site's runner image, not the task's
            text = f"{which} (runner_image): {waiting.get('reason')}"
            return State.SYSTEM_ERROR, text + (
                f": {waiting['message']}" if waiting.get("message") else ""
            )
        text = f"executor {which}: {waiting.get('reason')}"
        return State.EXECUTOR_ERROR, text + (
            f": {waiting['message']}" if waiting.get("message") else ""
        )
    started = any(
        str(c.get("name")).startswith("ex-")
        and ((c.get("state") or {}).get("running") or (c.get("state") or {}).get("terminated"))
        for c in container_statuses(pod)
    )
    if phase == "Pending" and started:
        return State.RUNNING, None  # an executor runs as an init container (the pod is Pending)
    if phase == "Pending":
        scheduled = next(
            (c for c in st.get("conditions") or [] if c.get("type") == "PodScheduled"), None
        )
        if not (pod.get("spec") or {}).get("nodeName") or (
            scheduled is not None and scheduled.get("status") != "True"
        ):
            why = (scheduled or {}).get("message") or "waiting for a node"
            return State.QUEUED, f"pod pending: {why}"
        return State.INITIALIZING, "pod starting"
    return State.RUNNING, None


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return None


def executor_logs(pod: dict[str, Any] | None, texts: dict[str, str]) -> list[ExecutorLog]:
    """One log per executor container that started: times, exit code, log tail (`texts` by
    container name)."""
    logs = []
    for c in container_statuses(pod):
        name = str(c.get("name"))
        if not name.startswith("ex-"):
            continue
        state = c.get("state") or {}
        term = state.get("terminated") or {}
        run = state.get("running") or {}
        if not term and not run:
            continue
        text = texts.get(name, "")
        code = term.get("exitCode") if term else None
        last = text.rstrip("\n").rsplit("\n", 1)[-1]
        if code == 0 and last.startswith(IGNORED_MARK) and last.endswith(" ignored"):
            with contextlib.suppress(ValueError):
                code = int(last[len(IGNORED_MARK) : -len(" ignored")])
        logs.append(
            ExecutorLog(
                start_time=_time(term.get("startedAt") or run.get("startedAt")),
                end_time=_time(term.get("finishedAt")),
                exit_code=code,
                stdout=text[-MAX_TAIL_CHARS:],
                stderr="",
            )
        )
    return logs


def usage_of(pod: dict[str, Any] | None) -> Usage | None:
    """Wall time from the first container's start to the last one's finish."""
    starts, ends = [], []
    for c in container_statuses(pod):
        state = c.get("state") or {}
        term = state.get("terminated") or {}
        start = _time(term.get("startedAt") or (state.get("running") or {}).get("startedAt"))
        if start:
            starts.append(start)
        end = _time(term.get("finishedAt"))
        if end:
            ends.append(end)
    if not starts:
        return None
    end = max(ends) if ends else None
    wall = (end - min(starts)).total_seconds() if end else 0.0
    return Usage(wall_s=max(0.0, wall))


__all__ = [
    "container_statuses",
    "executor_logs",
    "image_error",
    "latest_pod",
    "pod_failure",
    "usage_of",
    "verdict",
]
