"""The Kubernetes backend's options (``--option K=V``), read once when the agent starts."""

from __future__ import annotations

from dataclasses import dataclass

from cpnet.agent.backends.kubernetes.manifest import DEFAULT_IMAGE
from cpnet.agent.backends.kubernetes.pools import DEFAULT_GPU_RESOURCE
from cpnet.agent.backends.options import (
    FLAG,
    PATHS,
    POOL_TYPE,
    TEXT,
    StagingOptions,
    option,
    seconds,
    whole_seconds,
)


@dataclass(frozen=True)
class KubernetesOptions(StagingOptions):
    """Options of the Kubernetes backend, besides the staging ones (`StagingOptions`)."""

    kubeconfig: str | None = option(
        None, TEXT, "path of a kubeconfig (default: $KUBECONFIG or ~/.kube/config)"
    )
    in_cluster: bool = option(
        False, FLAG, "true uses the pod's service account instead of a kubeconfig"
    )
    context: str | None = option(None, TEXT, "kubeconfig context (default: its current context)")
    namespace: str = option(
        "", TEXT, "where Jobs go (default: the context's namespace, else default)"
    )
    image: str = option(
        DEFAULT_IMAGE, TEXT, "image for executors that name none and for inline stage-in"
    )
    runner_image: str | None = option(
        None,
        TEXT,
        "an image with cpnet installed, for staging (none: URL inputs and outputs are refused)",
    )
    staging_secret: str | None = option(
        None,
        TEXT,
        "an existing Secret in the namespace whose keys the stage containers get as environment "
        "variables (e.g. AWS_ACCESS_KEY_ID)",
    )
    file_roots: tuple[str, ...] | None = option(
        None, PATHS, "':'-separated directories file:// URLs may read or write (default: any)"
    )
    http_timeout_s: float = option(60.0, seconds(least=1), "per network operation while staging")
    pool_label: str | None = option(
        None, TEXT, "node label whose value names the pool (default: the well-known ones above)"
    )
    pool_type: str | None = option(
        None,
        POOL_TYPE,
        "type of discovered pools (default: intelligent with GPUs, else general)",
    )
    gpu_resource: str = option(DEFAULT_GPU_RESOURCE, TEXT, "extended resource name of GPUs")
    default_time_limit_s: int | None = option(
        None, whole_seconds(least=1), "activeDeadlineSeconds for tasks without time_limit_s"
    )
    # the agent must see a finished Job before Kubernetes deletes it
    ttl_after_finished_s: int = option(
        86400, whole_seconds(least=60), "ttlSecondsAfterFinished of Jobs"
    )
    service_account: str | None = option(
        None,
        TEXT,
        "service account of task pods (default: the namespace's default, with no token mounted)",
    )
    cache_s: float = option(
        1.0, seconds(least=0), "how long one list of Jobs and Pods serves polls"
    )
    request_timeout_s: float = option(30.0, seconds(least=1), "timeout of one API call")


__all__ = ["KubernetesOptions"]
