"""The Ray backend's pure parts (status mapping, pools from node resources, free capacity,
resource requests, the entrypoint) and, against the dev Ray cluster, the backend object itself:
hostile strings never reach a shell, resubmission is idempotent, Ray's refusal is a clear
SYSTEM_ERROR."""

from __future__ import annotations

import json
import shlex
import sys
import time
import uuid
from pathlib import Path

import pytest

from cpnet.agent.backends import get_backend
from cpnet.agent.backends.base import BackendConfig, BackendError, Handle, Job, PoolCapacity
from cpnet.agent.backends.ray import (
    JOB_ID_FILE,
    RayApi,
    RayBackend,
    camel,
    derive_pools,
    entrypoint,
    free_capacity,
    node_selector,
    node_shape,
    parse_ray_resources,
    ray_state,
    resource_request,
)
from cpnet.agent.backends.runner_job import GIB
from cpnet.tasks.model import TaskSpec
from cpnet.tasks.states import State

HOSTILE = ["'; rm -rf / #", "$(touch /tmp/pwned-ray)", "a\nb", "`id`", '"; echo x; "']
HOSTILE_TEXT = "".join(HOSTILE)


def node(nid: str, state: str = "ALIVE", **resources: float) -> dict:
    """A node as ``/api/v0/nodes`` lists it."""
    res = {"node:127.0.0.1": 1.0, "object_store_memory": 1e8, **resources}
    return {"node_id": nid, "state": state, "resources_total": res, "labels": {}}


def spec(**resources: object) -> TaskSpec:
    return TaskSpec.model_validate(
        {"name": "t", "executors": [{"command": ["true"]}], "resources": resources}
    )


def test_registered() -> None:
    assert get_backend("ray") is RayBackend


@pytest.mark.parametrize(
    ("ray", "ours"),
    [
        ("PENDING", State.QUEUED),
        ("RUNNING", State.RUNNING),
        ("SUCCEEDED", State.COMPLETE),
        ("FAILED", State.SYSTEM_ERROR),
        ("STOPPED", State.CANCELED),
        ("JobStatus.STOPPED", State.CANCELED),
        ("SOMETHING_NEW", State.SYSTEM_ERROR),
    ],
)
def test_status_mapping(ray: str, ours: State) -> None:
    assert ray_state(ray) is ours


def test_node_shape_ignores_standard_and_node_resources() -> None:
    res = {
        "CPU": 8.0,
        "GPU": 2.0,
        "memory": 1e9,
        "object_store_memory": 1e8,
        "node:10.0.0.1": 1.0,
        "node:__internal_head__": 1.0,
        "accelerator_type:A100": 1.0,
        "nvme": 1.0,
        "fast": 4.0,
    }
    assert node_shape(res) == (("A100",), ("fast", "nvme"))
    assert node_shape({"CPU": 1.0, "memory": 1.0}) == ((), ())


def test_pools_one_per_shape_with_summed_capacity() -> None:
    nodes = [
        node("h", CPU=2, memory=4 * GIB, **{"node:__internal_head__": 1.0}),
        node("c2", CPU=4, memory=8 * GIB),
        node("f1", CPU=1, memory=2 * GIB, fast=2),
        node("g1", CPU=8, GPU=2, memory=16 * GIB, **{"accelerator_type:A100": 1.0}),
        node("g2", CPU=8, GPU=2, memory=16 * GIB, **{"accelerator_type:A100": 1.0}),
        node("plain-gpu", CPU=4, GPU=1, memory=8 * GIB, nvme=1),
        node("dead", state="DEAD", CPU=64, memory=64 * GIB, fast=9),
    ]
    pools = {p.decl.name: p.decl for p in derive_pools(nodes)}
    assert sorted(pools) == ["a100", "cpu", "fast", "nvme"]
    assert pools["cpu"].total == PoolCapacity(cpu_cores=6.0, ram_gb=12.0, disk_gb=0.0, gpus=0)
    assert pools["fast"].total == PoolCapacity(cpu_cores=1.0, ram_gb=2.0, disk_gb=0.0, gpus=0)
    assert pools["a100"].total == PoolCapacity(cpu_cores=16.0, ram_gb=32.0, disk_gb=0.0, gpus=4)
    assert pools["a100"].type == "intelligent" and pools["a100"].gpu_model == "A100"
    assert pools["cpu"].type == "general" and pools["cpu"].gpu_model is None
    assert pools["nvme"].gpu_model == "gpu" and pools["nvme"].total.gpus == 1
    assert pools["fast"].labels == {"scheduler": "ray", "ray_pool": "fast", "ray_resources": "fast"}
    assert pools["a100"].labels["accelerator_type"] == "A100"
    assert {p.type for p in pools.values()} == {"general", "intelligent"}
    assert {p.type for p in (x.decl for x in derive_pools(nodes, "edge"))} == {"edge"}


def test_pool_names_are_unique_and_stable() -> None:
    nodes = [node("a", CPU=1, **{"Fast": 1.0}), node("b", CPU=1, fast=1.0)]
    names = [p.decl.name for p in derive_pools(nodes)]
    assert sorted(names) == ["fast", "fast-2"]
    assert names == [p.decl.name for p in derive_pools(list(reversed(nodes)))]
    gpu_only = derive_pools([node("g", CPU=1, GPU=1)])
    assert [p.decl.name for p in gpu_only] == ["gpu"]


def test_free_capacity_from_usage_by_node() -> None:
    nodes = [
        node("c1", CPU=2, memory=4 * GIB),
        node("c2", CPU=4, memory=8 * GIB),
        node("f1", CPU=1, memory=2 * GIB, fast=2),
    ]
    cpu = next(p for p in derive_pools(nodes) if p.decl.name == "cpu")
    usage = {
        "c1": {"CPU": [1.5, 2.0], "memory": [GIB, 4 * GIB], "objectStoreMemory": [0, 1e8]},
        # c2 not reported yet: counted as idle
        "f1": {"CPU": [1.0, 1.0]},
    }
    assert free_capacity(cpu, nodes, usage) == PoolCapacity(
        cpu_cores=4.5, ram_gb=11.0, disk_gb=0.0, gpus=0
    )
    # A node that died is no longer part of the pool's free capacity.
    nodes[1]["state"] = "DEAD"
    assert free_capacity(cpu, nodes, usage).cpu_cores == 0.5


def test_camel_matches_the_dashboard_spelling() -> None:
    assert camel("object_store_memory") == "objectStoreMemory"
    assert camel("node:__internal_head__") == "node:InternalHead"
    assert camel("CPU") == "CPU"


def test_resource_request_translates_the_task() -> None:
    assert resource_request(spec(cpu_cores=0.5, ram_gb=0)) == {"entrypoint_num_cpus": 0.5}
    req = resource_request(
        spec(cpu_cores=2, ram_gb=1.5, gpus=1, backend_parameters={"ray_resources": '{"fast": 1}'})
    )
    assert req == {
        "entrypoint_num_cpus": 2.0,
        "entrypoint_num_gpus": 1.0,
        "entrypoint_memory": int(1.5 * GIB),
        "entrypoint_resources": {"fast": 1.0},
    }


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{fast: 1}", "not JSON"),
        ("[1]", "JSON object"),
        ('{"fast": -1}', "non-negative"),
        ('{"fast": "1"}', "non-negative"),
        ('{"fast": true}', "non-negative"),
        ('{"CPU": 1}', "task's resources"),
        ('{"": 1}', "1-128"),
    ],
)
def test_bad_ray_resources_are_refused_with_the_reason(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_ray_resources(text)


def test_node_selector_pins_to_the_nodes() -> None:
    assert node_selector(["b", "a"]) == {"ray.io/node-id": "in(a,b)"}


def test_entrypoint_quotes_the_paths_only(tmp_path: Path) -> None:
    work_dir = tmp_path / "it's $(touch /tmp/pwned-ray) `id`; echo x" / "a1"
    python = "/opt/py thon/bin/python3"
    cmd = entrypoint(python, work_dir)
    assert shlex.split(cmd) == ["exec", python, "-m", "cpnet.agent.runner", str(work_dir)]


def test_backend_needs_an_address(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="--ray-address"):
        RayBackend(BackendConfig(work_root=tmp_path))
    with pytest.raises(BackendError, match="not both"):
        RayBackend(
            BackendConfig(
                work_root=tmp_path, options={"ray_address": "http://x:1", "ray_local": "true"}
            )
        )


def test_unreachable_dashboard_is_a_clear_error(tmp_path: Path) -> None:
    from services import free_port

    api = RayApi(f"127.0.0.1:{free_port()}", timeout_s=2)
    backend = RayBackend(BackendConfig(work_root=tmp_path), api=api)
    with pytest.raises(BackendError, match="unreachable"):
        backend.discover()


# ---- against the dev Ray cluster ---------------------------------------------------------------


def _wait_final(backend: RayBackend, handle: Handle, timeout: float = 90.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (status := backend.poll(handle)).final:
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    return status


@pytest.mark.integration
@pytest.mark.ray
def test_hostile_strings_never_reach_a_shell(ray_address: str, tmp_path: Path) -> None:
    pwned = Path("/tmp/pwned-ray")
    pwned.unlink(missing_ok=True)
    root = tmp_path / "root '; $(touch pwned-ray) `id` #"
    backend = RayBackend(BackendConfig(work_root=root, options={"ray_address": ray_address}))
    task = TaskSpec.model_validate(
        {
            "name": HOSTILE_TEXT.replace("\n", " "),
            "executors": [
                {"command": ["printf", "%s|", *HOSTILE]},
                {
                    "command": ["sh", "-c", 'printf "%s" "$HOSTILE"'],
                    "env": {"HOSTILE": HOSTILE_TEXT},
                },
            ],
        }
    )
    aid = f"att-hostile-{uuid.uuid4().hex[:8]}"  # the dev cluster outlives test runs
    handle = backend.submit(Job(aid, "task-1", "cpu", task, Path("/ignored")))
    work_dir = Path(handle)
    assert (work_dir / JOB_ID_FILE).read_text().strip() == f"cpnet-{aid}"
    # A new backend instance (an agent restart) finds the job instead of starting it twice,
    # even when the crash came between Ray's answer and writing ray_job_id.
    (work_dir / JOB_ID_FILE).unlink()
    again = RayBackend(BackendConfig(work_root=root, options={"ray_address": ray_address}))
    assert again.submit(Job(aid, "task-1", "cpu", task, Path("/ignored"))) == handle
    assert (work_dir / JOB_ID_FILE).read_text().strip() == f"cpnet-{aid}"
    # Another agent (another work root) cannot take over that submission id.
    other = RayBackend(
        BackendConfig(work_root=tmp_path / "other", options={"ray_address": ray_address})
    )
    refused = other.poll(other.submit(Job(aid, "task-1", "cpu", task, Path("/ignored"))))
    assert refused.state is State.SYSTEM_ERROR and "another agent" in str(refused.reason)
    status = _wait_final(backend, handle)
    assert status.state is State.COMPLETE, (status.reason, status.system_logs)
    assert status.executor_logs[0].stdout == "".join(f"{s}|" for s in HOSTILE)
    assert status.executor_logs[1].stdout == HOSTILE_TEXT
    assert status.usage is not None and status.usage.wall_s > 0
    deadline = time.monotonic() + 60  # the runner's verdict comes a moment before Ray's
    while not ((info := backend.api.info(f"cpnet-{aid}")) and info.status.is_terminal()):
        assert time.monotonic() < deadline, info
        time.sleep(0.2)
    assert str(info.status.value) == "SUCCEEDED"
    # The shell ran exactly the quoted command: the runner with the work dir, nothing else.
    assert shlex.split(info.entrypoint) == [
        "exec",
        sys.executable,
        "-m",
        "cpnet.agent.runner",
        str(work_dir),
    ]
    assert not pwned.exists()
    assert not list(tmp_path.rglob("pwned-ray"))
    backend.close()


@pytest.mark.integration
@pytest.mark.ray
def test_refusals_are_system_errors_with_the_reason(ray_address: str, tmp_path: Path) -> None:
    backend = RayBackend(BackendConfig(work_root=tmp_path, options={"ray_address": ray_address}))
    bad = spec(backend_parameters={"ray_resources": "{nope"})
    aid = f"att-bad-{uuid.uuid4().hex[:8]}"
    status = backend.poll(backend.submit(Job(aid, "t", "cpu", bad, Path("/x"))))
    assert status.state is State.SYSTEM_ERROR and "not JSON" in (status.reason or "")
    nopool = f"att-nopool-{uuid.uuid4().hex[:8]}"
    status = backend.poll(backend.submit(Job(nopool, "t", "nope", spec(), Path("/x"))))
    assert status.state is State.SYSTEM_ERROR and "no Ray pool named 'nope'" in str(status.reason)
    assert backend.api.info(f"cpnet-{aid}") is None  # nothing reached Ray
    backend.close()


@pytest.mark.integration
@pytest.mark.ray
def test_pools_match_what_ray_reports(ray_address: str, tmp_path: Path) -> None:
    backend = RayBackend(BackendConfig(work_root=tmp_path, options={"ray_address": ray_address}))
    nodes = [n for n in backend.api.nodes() if n["state"] == "ALIVE"]
    pools = {p.name: p for p in backend.discover()}
    assert sorted(pools) == ["cpu", "fast"]
    fast = [n["resources_total"] for n in nodes if "fast" in n["resources_total"]]
    plain = [n["resources_total"] for n in nodes if "fast" not in n["resources_total"]]
    assert pools["fast"].total.cpu_cores == sum(r["CPU"] for r in fast) == 1
    assert pools["cpu"].total.cpu_cores == sum(r["CPU"] for r in plain) == 2
    assert pools["cpu"].total.ram_gb == round(sum(r["memory"] for r in plain) / GIB, 3)
    live = {p.name: p for p in backend.live()}
    assert live["fast"].free.cpu_cores <= 1 and live["cpu"].free.cpu_cores <= 2
    assert json.dumps(pools["fast"].labels) == json.dumps(
        {"scheduler": "ray", "ray_pool": "fast", "ray_resources": "fast"}
    )
    backend.close()


def test_live_reports_nothing_free_while_ray_is_unreachable(tmp_path: Path) -> None:
    """Pools found while Ray answered stay listed, with nothing free, once it stops answering."""
    from services import free_port

    nodes = [node("c1", CPU=2, memory=4 * GIB), node("f1", CPU=1, memory=GIB, fast=1)]
    api = RayApi(f"127.0.0.1:{free_port()}", timeout_s=2)
    backend = RayBackend(BackendConfig(work_root=tmp_path), api=api)
    backend._pools = derive_pools(nodes)  # as discovered before Ray went away
    live = {p.name: p for p in backend.live()}
    assert sorted(live) == ["cpu", "fast"]
    assert all(p.free == PoolCapacity() for p in live.values())
