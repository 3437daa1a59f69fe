"""The Kubernetes backend against a real cluster: opt-in, never run by default or in CI here.

No cluster can run on our machines, so these tests run only when ``CPNET_TEST_KUBECONFIG`` names
a kubeconfig; without it they skip, also under ``CPNET_REQUIRE_SERVICES=1`` (a real cluster is not
one of the services CI is required to have). docs/providers/kubernetes.md says how to run them
against kind, k3s or a cloud cluster. Settings (environment):

- ``CPNET_TEST_KUBECONFIG``: the kubeconfig (required to run)
- ``CPNET_TEST_K8S_CONTEXT``: its context (default: the current one)
- ``CPNET_TEST_K8S_NAMESPACE``: an existing namespace the kubeconfig's user may create Jobs in
  (default ``cpnet-test``)
- ``CPNET_TEST_K8S_IMAGE``: a small image with ``sh``, ``echo`` and ``sleep`` (default
  ``busybox:1.36``)
- ``CPNET_TEST_K8S_POOL_LABEL``: the node label that names pools, if not a well-known one
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from cpnet.tasks.states import State
from tests.integration.procs import AgentProc, HubProc, World, make_world, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.real_k8s]

KUBECONFIG = os.environ.get("CPNET_TEST_KUBECONFIG", "").strip()
CONTEXT = os.environ.get("CPNET_TEST_K8S_CONTEXT", "").strip()
NAMESPACE = os.environ.get("CPNET_TEST_K8S_NAMESPACE", "").strip() or "cpnet-test"
IMAGE = os.environ.get("CPNET_TEST_K8S_IMAGE", "").strip() or "busybox:1.36"
POOL_LABEL = os.environ.get("CPNET_TEST_K8S_POOL_LABEL", "").strip()
SKIP_REASON = (
    "opt-in real-cluster test: set CPNET_TEST_KUBECONFIG (see docs/providers/kubernetes.md)"
)


@pytest.fixture(scope="module")
def kube_api() -> Iterator[tuple[object, object]]:
    """(CoreV1Api, BatchV1Api) for the test cluster; skips (never fails) when not opted in."""
    if not KUBECONFIG:
        pytest.skip(SKIP_REASON)  # deliberately not need_service: opt-in, not a CI service
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(KUBECONFIG, context=CONTEXT or None, client_configuration=cfg)
    api = client.ApiClient(cfg)
    yield client.CoreV1Api(api), client.BatchV1Api(api)
    api.close()


@pytest.fixture
def real_world(
    kube_api: tuple[object, object], hub: HubProc, agents: list[AgentProc], tmp_path: Path
) -> World:
    world = make_world(hub, {"k8s": ("general", "440300")})
    options = {"kubeconfig": KUBECONFIG, "namespace": NAMESPACE, "image": IMAGE}
    if CONTEXT:
        options["context"] = CONTEXT
    if POOL_LABEL:
        options["pool_label"] = POOL_LABEL
    agent = AgentProc(
        hub, world.site_tokens["k8s"], tmp_path / "agent", backend="kubernetes", options=options
    )
    agent.start()
    agents.append(agent)
    user = hub.client(world.user_token)
    wait_until(lambda: user.pools(), 120, "the cluster's pools")
    return world


def _cpu(q: str) -> Decimal:
    from kubernetes.utils.quantity import parse_quantity

    return Decimal(parse_quantity(q))


def test_pools_add_up_to_the_schedulable_nodes(
    kube_api: tuple[object, object], real_world: World, hub: HubProc
) -> None:
    core, _ = kube_api
    nodes = core.list_node().items  # type: ignore[attr-defined]
    usable = [
        n
        for n in nodes
        if not any(
            t.effect in ("NoSchedule", "NoExecute") and t.key != "nvidia.com/gpu"
            for t in n.spec.taints or []
        )
    ]
    want = sum(_cpu(n.status.allocatable["cpu"]) for n in usable)
    pools = hub.client(real_world.user_token).pools()
    assert sum(Decimal(str(p.total.cpu_cores)) for p in pools) == pytest.approx(want)
    assert all(p.labels["scheduler"] == "kubernetes" for p in pools)


def test_tasks_complete_fail_and_hit_the_deadline(real_world: World, hub: HubProc) -> None:
    user = hub.client(real_world.user_token)
    common = {"resources": {"cpu_cores": 0.1, "ram_gb": 0.0625}, "max_attempts": 1}
    ok = user.submit(
        {"name": "hello; $(id)", "executors": [{"command": ["echo", "hello $(id)"]}], **common}
    )
    bad = user.submit({"executors": [{"command": ["sh", "-c", "exit 3"]}], **common})
    late = user.submit(
        {
            "executors": [{"command": ["sleep", "300"]}],
            **common,
            "resources": {**common["resources"], "backend_parameters": {"time_limit_s": "5"}},
        }
    )
    done = user.wait(ok.id, timeout=300)
    assert done.state is State.COMPLETE, done.reason
    assert done.attempts[-1].executor_logs[0].stdout == "hello $(id)\n"
    failed = user.wait(bad.id, timeout=300)
    assert failed.state is State.EXECUTOR_ERROR
    assert [x.exit_code for x in failed.attempts[-1].executor_logs] == [3]
    timed_out = user.wait(late.id, timeout=300)
    assert timed_out.state is State.EXECUTOR_ERROR
    assert (timed_out.attempts[-1].reason or "").startswith("DeadlineExceeded")


def test_cancel_deletes_the_job(
    kube_api: tuple[object, object], real_world: World, hub: HubProc
) -> None:
    _, batch = kube_api
    user = hub.client(real_world.user_token)
    t = user.submit(
        {
            "executors": [{"command": ["sleep", "300"]}],
            "resources": {"cpu_cores": 0.1, "ram_gb": 0.0625},
        }
    )
    wait_until(lambda: user.task(t.id).state is State.RUNNING, 300, "the task running")
    attempt = user.task(t.id).attempts[-1].attempt_id

    def ours() -> list[object]:
        jobs = batch.list_namespaced_job(  # type: ignore[attr-defined]
            NAMESPACE, label_selector="app.kubernetes.io/managed-by=cpnet"
        ).items
        return [j for j in jobs if j.metadata.annotations.get("cpnet.io/attempt-id") == attempt]

    assert len(ours()) == 1
    user.cancel(t.id)
    assert user.wait(t.id, timeout=120).state is State.CANCELED
    wait_until(lambda: not ours(), 120, "the Job to be deleted")
