"""The Kubernetes backend end to end: a real hub, a real agent with ``backend = "kubernetes"``
and a kubeconfig pointing at the stand-in API server (tests/standin/kube_apiserver.py: no real
cluster can run here; its "kubelet" runs each container's command as a local process).

Nodes: ``cpu-1`` and ``cpu-2`` (2 CPUs, 4 GiB each, pool label ``cpu``; a foreign pod holds 500m
and 1 GiB on cpu-1) and ``gpu-1`` (8 CPUs, 32 GiB, 2 GPUs, tainted ``nvidia.com/gpu``, pool
``gpu``).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cpnet.agent.backends.base import BackendConfig, Job
from cpnet.agent.backends.kubernetes import KubernetesBackend
from cpnet.client import Client
from cpnet.tasks.model import TaskSpec, TaskView
from cpnet.tasks.states import State
from tests.integration.procs import AgentProc, HubProc, World, make_world, wait_until
from tests.standin.kube_apiserver import StandinKubeApiServer

pytestmark = pytest.mark.integration

NAMESPACE = "cpnet-jobs"
RUNNER_IMAGE = "registry.example/cpnet-runner:test"  # the stand-in runs it as this environment
ON_CPU = {"constraints": {"labels": {"node_pool": "cpu"}}, "max_attempts": 1}


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[StandinKubeApiServer]:
    server = StandinKubeApiServer(
        tmp_path / "standin-kube", namespace=NAMESPACE, runner_image=RUNNER_IMAGE
    )
    for name, zone in (("cpu-1", "zone-a"), ("cpu-2", "zone-b")):
        server.add_node(
            name,
            cpu="2",
            memory="4Gi",
            labels={"cpnet.io/pool": "cpu", "topology.kubernetes.io/zone": zone},
        )
    server.add_node(
        "gpu-1",
        cpu="8",
        memory="32Gi",
        gpus=2,
        labels={
            "cpnet.io/pool": "gpu",
            "nvidia.com/gpu.product": "NVIDIA-L4",
            "nvidia.com/gpu.memory": "23034",
        },
        taints=[{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}],
    )
    server.add_foreign_pod("cpu-1", cpu="500m", memory="1Gi")
    with server:
        yield server
    assert server.errors == []


@pytest.fixture
def kube_world(
    hub: HubProc, agents: list[AgentProc], tmp_path: Path, kube: StandinKubeApiServer
) -> World:
    world = make_world(hub, {"k8s": ("general", "440300")})
    agent = AgentProc(
        hub,
        world.site_tokens["k8s"],
        tmp_path / "agent-k8s",
        backend="kubernetes",
        options={
            "kubeconfig": str(kube.write_kubeconfig(tmp_path / "kubeconfig")),
            "cache_s": "0.2",
            "runner_image": RUNNER_IMAGE,
        },
    )
    agent.start()
    agents.append(agent)
    user = hub.client(world.user_token)
    wait_until(lambda: len(user.pools()) == 2, 60, "two Kubernetes pools")
    return world


def _job_pod(kube: StandinKubeApiServer, job: str) -> dict | None:
    with kube.lock:
        return next(
            (
                p
                for p in kube.pods.values()
                if p["metadata"].get("labels", {}).get("job-name") == job
            ),
            None,
        )


def _running_sleeper(user: Client, kube: StandinKubeApiServer) -> tuple[TaskView, str, dict]:
    """A task running `sleep 60` on the cpu pool: (task, its Job's name, its pod)."""
    t = user.submit({"name": "sleeper", "executors": [{"command": ["sleep", "60"]}], **ON_CPU})
    wait_until(lambda: user.task(t.id).state is State.RUNNING, 60, "sleeper running")
    [name] = kube.job_names()
    pod = wait_until(lambda: _job_pod(kube, name), 30, "the Job's pod")
    return t, name, pod


def test_nodes_are_live_pools_with_their_capacity(hub: HubProc, kube_world: World) -> None:
    user = hub.client(kube_world.user_token)
    by_name = {p.name: p for p in user.pools()}
    assert sorted(by_name) == ["cpu", "gpu"]
    cpu, gpu = by_name["cpu"], by_name["gpu"]
    assert (cpu.total.cpu_cores, cpu.total.ram_gb, cpu.total.gpus) == (4, 8, 0)
    assert cpu.type == "general"
    assert cpu.labels == {"scheduler": "kubernetes", "node_pool": "cpu", "zone": "zone-a,zone-b"}
    assert (gpu.total.cpu_cores, gpu.total.ram_gb, gpu.total.gpus) == (8, 32, 2)
    assert gpu.type == "intelligent" and gpu.can_run_images
    assert [(a.model, a.count) for a in gpu.hardware.accelerators] == [("NVIDIA-L4", 2)]
    # free = allocatable - requests of running pods (the foreign pod on cpu-1), from heartbeats
    free = wait_until(
        lambda: (c := _free(user, "cpu")) is not None and c.cpu_cores == 3.5 and c,
        30,
        "free capacity of the cpu pool",
    )
    assert free.ram_gb == 7


def test_task_completes_with_logs_and_a_failure_keeps_its_exit_code(
    hub: HubProc, kube_world: World, kube: StandinKubeApiServer
) -> None:
    user = hub.client(kube_world.user_token)
    hostile = "x'; rm -rf / #$(id)`id`\n"
    ok = user.submit(
        {
            "name": hostile,
            "executors": [
                {"command": ["sh", "-c", 'echo "first $1"; cat data/in.txt', "sh", hostile]},
                {"command": [sys.executable, "-c", "for i in range(20000): print(i)"]},
            ],
            "inputs": [{"path": "data/in.txt", "content": "inline $(id)\n"}],
            **ON_CPU,
        }
    )
    bad = user.submit(
        {"name": "fails", "executors": [{"command": ["sh", "-c", "echo no >&2; exit 3"]}], **ON_CPU}
    )
    done = user.wait(ok.id, timeout=90)
    assert done.state is State.COMPLETE, done.reason
    logs = done.attempts[-1].executor_logs
    assert logs[0].stdout == f"first {hostile}\ninline $(id)\n"
    # a long log comes back as its tail
    tail = logs[1].stdout
    assert tail.endswith("\n19998\n19999\n") and 8 * 1024 < len(tail) <= 16 * 1024
    assert [x.exit_code for x in logs] == [0, 0]
    failed = user.wait(bad.id, timeout=90)
    assert failed.state is State.EXECUTOR_ERROR
    assert failed.attempts[-1].reason == "executor 0 exited with code 3"
    assert [(x.exit_code, x.stdout) for x in failed.attempts[-1].executor_logs] == [(3, "no\n")]
    # the Jobs as created: safe names, backoffLimit 0, the attempt in a label and an annotation
    by_attempt = {j["metadata"]["annotations"]["cpnet.io/attempt-id"]: j for j in kube.created}
    job = by_attempt[done.attempts[-1].attempt_id]
    assert job["metadata"]["annotations"]["cpnet.io/task-name"] == hostile
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["template"]["spec"]["nodeSelector"] == {"cpnet.io/pool": "cpu"}
    assert [c["name"] for c in job["spec"]["template"]["spec"]["initContainers"]] == [
        "stage-in",
        "ex-0",
    ]


def _free(user, name: str):  # type: ignore[no-untyped-def]
    """The pool's free capacity, or None while it is not in discovery (a late heartbeat on a busy
    machine can take it offline for a moment: keep waiting rather than fail)."""
    pool = next((p for p in user.pools() if p.name == name), None)
    return None if pool is None else pool.free


def test_cancel_deletes_the_job(
    hub: HubProc, kube_world: World, kube: StandinKubeApiServer
) -> None:
    user = hub.client(kube_world.user_token)
    t, name, pod = _running_sleeper(user, kube)
    assert pod["status"]["phase"] == "Running"
    # the sleeper's pod requests 1 CPU and 0.5 GiB: the next heartbeats say so
    free = wait_until(
        lambda: (c := _free(user, "cpu")) is not None and c.cpu_cores == 2.5 and c,
        30,
        "the cpu pool's free capacity to drop by the sleeper's request",
    )
    assert free.ram_gb == 6.5
    user.cancel(t.id)
    assert user.wait(t.id, timeout=60).state is State.CANCELED
    assert (NAMESPACE, name, "Background") in kube.deletes
    assert kube.job_names() == [] and _job_pod(kube, name) is None
    with kube.lock:
        assert kube.procs == {}  # the sleep was killed


def test_oom_and_deadline_end_with_clear_reasons(hub: HubProc, kube_world: World) -> None:
    user = hub.client(kube_world.user_token)
    hog = "import time; b = bytearray(400 * 1024 * 1024); b[::4096] = b'x' * 102400; time.sleep(60)"
    oom = user.submit(
        {
            "name": "hog",
            "executors": [{"command": [sys.executable, "-c", hog]}],
            "resources": {"ram_gb": 0.125},
            **ON_CPU,
        }
    )
    late = user.submit(
        {
            "name": "late",
            "executors": [{"command": ["sleep", "60"]}],
            "resources": {"backend_parameters": {"time_limit_s": "2"}},
            **ON_CPU,
        }
    )
    o = user.wait(oom.id, timeout=90)
    assert o.state is State.EXECUTOR_ERROR
    assert o.attempts[-1].reason == ("executor 0 was OOMKilled: it used more memory than its limit")
    assert [x.exit_code for x in o.attempts[-1].executor_logs] == [137]
    d = user.wait(late.id, timeout=90)
    assert d.state is State.EXECUTOR_ERROR
    assert d.attempts[-1].reason == "DeadlineExceeded: ran longer than its time limit of 2 s"


def test_lost_node_is_a_system_error_and_bad_image_an_executor_error(
    hub: HubProc, kube_world: World, kube: StandinKubeApiServer
) -> None:
    user = hub.client(kube_world.user_token)
    t, _, pod = _running_sleeper(user, kube)
    node = pod["spec"]["nodeName"]
    kube.lose_node(node)
    lost = user.wait(t.id, timeout=60)
    assert lost.state is State.SYSTEM_ERROR
    assert lost.attempts[-1].reason is not None
    assert lost.attempts[-1].reason.startswith("pod DeletionByTaintManager: ")
    img = user.submit(
        {
            "name": "no image",
            "executors": [{"image": "standin.invalid/nope:1", "command": ["true"]}],
            **ON_CPU,
        }
    )
    bad = user.wait(img.id, timeout=60)
    assert bad.state is State.EXECUTOR_ERROR
    assert (bad.attempts[-1].reason or "").startswith("executor 0: ErrImagePull")
    # once the hub has their results, both Jobs are deleted (the one that could never start too)
    wait_until(lambda: kube.job_names() == [], 30, "the finished Jobs to be deleted")
    assert len(kube.deletes) == 2


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A plain HTTP server on a free port serving a directory: (base URL, the directory)."""
    root = tmp_path / "web"
    root.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _secret_files(secret: dict) -> dict[str, dict]:
    return {k: json.loads(base64.b64decode(v)) for k, v in secret["data"].items()}


def test_url_inputs_and_outputs_are_staged_in_the_runner_image(
    hub: HubProc,
    kube_world: World,
    kube: StandinKubeApiServer,
    web: tuple[str, Path],
    tmp_path: Path,
) -> None:
    user = hub.client(kube_world.user_token)
    base, root = web
    ref = b"reference over http\n" * 50
    (root / "ref.txt").write_bytes(ref)
    reads = tmp_path / "host-in" / "reads.txt"
    reads.parent.mkdir()
    reads.write_bytes(b"reads from a file URL\n")
    params = b"threshold=7\n"
    blob = user.put_blob(params)
    result_path = tmp_path / "host-out" / "result.txt"
    task = user.submit(
        {
            "name": "staged on kubernetes",
            "inputs": [
                {"path": "/data/reads.txt", "url": reads.as_uri()},
                {
                    "path": "ref.txt",
                    "url": f"{base}/ref.txt",
                    "sha256": hashlib.sha256(ref).hexdigest(),
                },
                {"path": "params.txt", "url": blob},
                {"path": "note.txt", "content": "inline\n"},
            ],
            "executors": [
                {
                    "command": [
                        "sh",
                        "-c",
                        "mkdir -p out && cat data/reads.txt ref.txt params.txt note.txt "
                        "> out/result.txt && printf small > small.txt",
                    ]
                }
            ],
            "outputs": [
                {"path": "out/result.txt", "url": result_path.as_uri()},
                {"path": "small.txt", "url": "cpnet://blobs/"},
            ],
            **ON_CPU,
        }
    )
    done = user.wait(task.id, timeout=120)
    assert done.state is State.COMPLETE, (done.reason, done.attempts[-1].system_logs)
    attempt = done.attempts[-1]
    expected = b"reads from a file URL\n" + ref + params + b"inline\n"
    assert result_path.read_bytes() == expected
    outs = {o.path: o for o in attempt.outputs}
    assert outs["out/result.txt"].sha256 == hashlib.sha256(expected).hexdigest()
    assert outs["out/result.txt"].size_bytes == len(expected)
    small_sha = hashlib.sha256(b"small").hexdigest()
    assert outs["small.txt"].url == f"cpnet://blobs/{small_sha}"
    assert user.get_blob(outs["small.txt"].url) == b"small"
    assert attempt.usage is not None
    assert attempt.usage.bytes_in == len(b"reads from a file URL\n" + ref + params + b"inline\n")
    assert attempt.usage.bytes_out == len(expected) + len(b"small")
    logs = "\n".join(attempt.system_logs)
    assert f"staged in ref.txt from {base}/ref.txt: {len(ref)} bytes" in logs
    assert f"staged out small.txt to cpnet://blobs/{small_sha}: 5 bytes" in logs
    # the stage containers' per-transfer records reach the hub (the full view)
    moved = user.task(task.id, full=True).attempts[-1].transfers or []
    assert [(t.direction, t.path, t.size_bytes, t.sha256_verified) for t in moved] == [
        ("in", "/data/reads.txt", len(b"reads from a file URL\n"), False),
        ("in", "ref.txt", len(ref), True),  # its sha256 was given
        ("in", "params.txt", len(params), True),  # a blob's address is its sha256
        ("in", "note.txt", len(b"inline\n"), False),
        ("out", "out/result.txt", len(expected), False),
        ("out", "small.txt", len(b"small"), True),  # the hub answered the same sha256
    ]

    # the pod: stage-in, the executor, then stage-out as its one container, in the runner image
    [job] = [
        j
        for j in kube.created
        if j["metadata"]["annotations"]["cpnet.io/attempt-id"] == attempt.attempt_id
    ]
    pod = job["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["stage-in", "ex-0"]
    assert [(c["name"], c["image"]) for c in pod["containers"]] == [("stage-out", RUNNER_IMAGE)]
    # secrets reach the pod through a Secret owned by the Job, never the Job's manifest
    token = kube_world.site_tokens["k8s"]
    assert token not in json.dumps(job) and reads.as_uri() not in json.dumps(job)
    [secret] = [s for s in kube.created_secrets if s["metadata"]["name"] == job["metadata"]["name"]]
    [owner] = secret["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"]) == ("Job", job["metadata"]["name"])
    files = _secret_files(secret)
    assert files["env.json"]["CPNET_STAGING_TOKEN"] == token
    assert files["job.json"]["spec"]["inputs"][0]["url"] == reads.as_uri()
    # staging is over: the Secret is gone (and the Job too, once the hub has the result)
    wait_until(lambda: not kube.secrets and not kube.job_names(), 30, "Secret and Job deleted")


def test_failed_executor_stages_nothing_out_and_a_canceled_job_takes_its_secret(
    hub: HubProc, kube_world: World, kube: StandinKubeApiServer, tmp_path: Path
) -> None:
    user = hub.client(kube_world.user_token)
    out = tmp_path / "never" / "out.txt"
    bad = user.submit(
        {
            "name": "fails after writing",
            "executors": [{"command": ["sh", "-c", "echo partial > out.txt; exit 4"]}],
            "outputs": [{"path": "out.txt", "url": out.as_uri()}],
            **ON_CPU,
        }
    )
    failed = user.wait(bad.id, timeout=90)
    # as the runner does for other backends: outputs are staged after success only
    assert failed.state is State.EXECUTOR_ERROR
    assert failed.attempts[-1].reason == "executor 0 exited with code 4"
    assert failed.attempts[-1].outputs == [] and not out.exists()

    # a Job deleted while running (cancel) takes its Secret with it (ownerReferences)
    t = user.submit(
        {
            "name": "staged sleeper",
            "executors": [{"command": ["sleep", "60"]}],
            "outputs": [{"path": "x", "url": (tmp_path / "x").as_uri()}],
            **ON_CPU,
        }
    )
    wait_until(lambda: user.task(t.id).state is State.RUNNING, 60, "sleeper running")
    wait_until(lambda: kube.secrets, 30, "its staging Secret")
    user.cancel(t.id)
    assert user.wait(t.id, timeout=60).state is State.CANCELED
    wait_until(lambda: not kube.secrets, 30, "the Secret collected with its Job")


def test_staging_without_runner_image_fails_at_submit_naming_the_option(
    kube: StandinKubeApiServer, tmp_path: Path
) -> None:
    backend = KubernetesBackend(
        BackendConfig(
            work_root=tmp_path / "work",
            options={"kubeconfig": str(kube.write_kubeconfig(tmp_path / "kubeconfig"))},
        )
    )
    spec = TaskSpec.model_validate(
        {
            "executors": [{"command": ["true"]}],
            "inputs": [{"path": "a", "url": "https://example.org/a"}],
        }
    )
    handle = backend.submit(Job("att-1", "task-1", "cpu", spec, tmp_path / "unused"))
    status = backend.poll(handle)
    assert status.state is State.SYSTEM_ERROR
    assert "set the kubernetes backend option runner_image" in (status.reason or "")
    assert kube.job_names() == [] and kube.created_secrets == []


def test_secret_env_values_reach_the_executor_through_the_attempts_secret(
    hub: HubProc, kube_world: World, kube: StandinKubeApiServer
) -> None:
    """A secret env value: the agent fetches it, puts it in the attempt's Secret, and the
    executor's container reads it by ``secretKeyRef``; the Job's manifest holds its name only,
    and the Secret goes when the attempt ends."""
    secret = "k8s-s3cr3t-Vq7"
    user = hub.client(kube_world.user_token)
    t = user.submit(
        {
            "executors": [
                {
                    "command": ["sh", "-c", 'printf %s "$API_KEY" | sha256sum; echo "m=$MODE"'],
                    "env": {"API_KEY": secret, "MODE": "plain"},
                    "secret_env": ["API_KEY"],
                }
            ],
            **ON_CPU,
        }
    )
    done = user.wait(t.id, timeout=90)
    assert done.state is State.COMPLETE, (done.reason, done.attempts[-1].system_logs)
    out = done.attempts[-1].executor_logs[-1].stdout
    assert out.startswith(hashlib.sha256(secret.encode()).hexdigest()) and "m=plain" in out
    [job] = [j for j in kube.created if j["metadata"]["annotations"]["cpnet.io/task-id"] == t.id]
    assert secret not in json.dumps(job)
    (ex,) = job["spec"]["template"]["spec"]["containers"]
    assert {"name": "API_KEY", "valueFrom": {"secretKeyRef": {
        "name": job["metadata"]["name"], "key": "ex0.API_KEY"}}} in ex["env"]  # fmt: skip
    [stored] = [s for s in kube.created_secrets if s["metadata"]["name"] == job["metadata"]["name"]]
    assert base64.b64decode(stored["data"]["ex0.API_KEY"]).decode() == secret
    wait_until(lambda: not kube.secrets, 30, "the attempt's Secret deleted")
