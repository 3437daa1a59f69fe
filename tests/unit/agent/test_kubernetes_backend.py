"""The Kubernetes backend's pure parts: names, quantities, pools from nodes, the Job manifest, and
what Job and Pod states mean. The shell pieces it generates are run for real with hostile text."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cpnet.agent.backends import get_backend
from cpnet.agent.backends.base import (
    ATTEMPT_ID_RE,
    BackendConfig,
    BackendError,
    Job,
    PoolCapacity,
)
from cpnet.agent.backends.kubernetes import (
    KubernetesBackend,
    dns_label,
    group_nodes,
    job_manifest,
    job_name,
    label_value,
    pod_request,
    quantity,
    verdict,
)
from cpnet.agent.backends.kubernetes.manifest import (
    _STAGE_IN,
    ATTEMPT_LABEL,
    WORK_MOUNT,
    secret_env_files,
    secret_manifest,
    staging_payload,
    time_limit_s,
    unsupported,
)
from cpnet.agent.backends.kubernetes.pools import capacity_of
from cpnet.agent.backends.kubernetes.states import executor_logs, usage_of
from cpnet.agent.backends.runner_job import GIB
from cpnet.tasks.model import TaskSpec
from cpnet.tasks.states import State

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
HOSTILE = ["'; rm -rf / #", "$(touch /tmp/pwned)", "a\nb", "`id`", '"; echo x; "', "-leading"]


def test_registered() -> None:
    assert get_backend("kubernetes") is KubernetesBackend


# ---- names ----------------------------------------------------------------------------------


@given(st.from_regex(ATTEMPT_ID_RE, fullmatch=True))
def test_job_names_are_dns_labels_for_any_attempt_id(attempt_id: str) -> None:
    name = job_name(attempt_id)
    assert len(name) <= 63 and DNS_LABEL.match(name), name
    assert LABEL_VALUE.match(label_value(attempt_id))
    assert len(label_value(attempt_id)) <= 63


@given(st.text(max_size=300))
def test_any_text_becomes_a_valid_label(text: str) -> None:
    assert DNS_LABEL.match(dns_label(text)) and len(dns_label(text)) <= 63
    value = label_value(text)
    assert LABEL_VALUE.match(value) and len(value) <= 63


def test_names_that_differ_stay_different() -> None:
    ids = ["Att-1", "att-1", "att_1", "att.1", "a" * 128, "a" * 127 + "b", "att-1-"]
    names = {job_name(i) for i in ids}
    assert len(names) == len(ids)
    assert job_name("att-1") == "cpnet-att-1"  # clean ids are kept readable
    assert label_value("Att_1.x") == "Att_1.x"  # valid label values are kept as they are
    for text in HOSTILE:
        assert DNS_LABEL.match(dns_label(text))


# ---- quantities and requests ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", Decimal("0.5")),
        ("2", Decimal(2)),
        ("1.5", Decimal("1.5")),
        ("2Gi", Decimal(2 * GIB)),
        ("512Mi", Decimal(512 * 1024**2)),
        ("1G", Decimal(10**9)),
        ("1e3", Decimal(1000)),
        (None, Decimal(0)),
        (4, Decimal(4)),
    ],
)
def test_quantity(text: Any, value: Decimal) -> None:
    assert quantity(text) == value


@pytest.mark.parametrize("bad", ["abc", "1Qi", "--1"])
def test_bad_quantity_names_the_value(bad: str) -> None:
    with pytest.raises(BackendError, match=re.escape(repr(bad))):
        quantity(bad)


def test_capacity_of_allocatable() -> None:
    alloc = {"cpu": "3500m", "memory": "6Gi", "nvidia.com/gpu": "2", "ephemeral-storage": "10Gi"}
    assert capacity_of(alloc, "nvidia.com/gpu") == PoolCapacity(3.5, 6.0, 10.0, 2)
    assert capacity_of(alloc, "amd.com/gpu").gpus == 0


def _container(cpu: str | None = None, memory: str | None = None, limits: dict | None = None):
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v}
    return {"name": "c", "resources": {"requests": requests, "limits": limits or {}}}


def test_pod_request_takes_the_larger_of_init_max_and_container_sum() -> None:
    pod = {
        "spec": {
            "initContainers": [_container("2", "1Gi"), _container("500m", "3Gi")],
            "containers": [_container("1", "1Gi"), _container("500m", "512Mi")],
            "overhead": {"cpu": "100m"},
        }
    }
    got = pod_request(pod)
    assert got.cpu_cores == pytest.approx(2.1)  # init max 2 > sum 1.5, plus overhead
    assert got.ram_gb == pytest.approx(3.0)  # init max 3 > sum 1.5
    # a limit without a request counts as the request
    only_limit = {"spec": {"containers": [_container(limits={"cpu": "2", "nvidia.com/gpu": "1"})]}}
    assert pod_request(only_limit) == PoolCapacity(2.0, 0.0, 0.0, 1)


# ---- pools from nodes -----------------------------------------------------------------------


def _node(name: str, labels: dict | None = None, **kw: Any) -> dict[str, Any]:
    alloc = {"cpu": kw.get("cpu", "4"), "memory": kw.get("memory", "8Gi")}
    if kw.get("gpus"):
        alloc["nvidia.com/gpu"] = str(kw["gpus"])
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"taints": kw.get("taints", []), "unschedulable": kw.get("cordoned", False)},
        "status": {
            "allocatable": alloc,
            "conditions": [{"type": "Ready", "status": "True"}],
            "nodeInfo": {"architecture": kw.get("arch", "amd64")},
        },
    }


def test_group_nodes_by_pool_label_with_gpus_and_zones() -> None:
    gpu_labels = {
        "cloud.google.com/gke-nodepool": "a100",
        "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB",
        "nvidia.com/gpu.memory": "40960",
        "topology.kubernetes.io/zone": "z-b",
    }
    nodes = [
        _node("c1", {"cloud.google.com/gke-nodepool": "cpu", "topology.kubernetes.io/zone": "z-a"}),
        _node("c2", {"cloud.google.com/gke-nodepool": "cpu", "topology.kubernetes.io/zone": "z-b"}),
        _node(
            "g1",
            gpu_labels,
            cpu="16",
            memory="64Gi",
            gpus=4,
            taints=[{"key": "nvidia.com/gpu", "effect": "NoSchedule"}],
        ),
        _node("plain", cpu="2", memory="1Gi"),
        _node(
            "cp",
            {"cloud.google.com/gke-nodepool": "cpu"},
            taints=[{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}],
        ),
    ]
    pools = {p.decl.name: p for p in group_nodes(nodes)}
    assert sorted(pools) == ["a100", "cpu", "default"]
    cpu = pools["cpu"]
    assert cpu.nodes == ("c1", "c2")  # the tainted control-plane node is left out
    assert cpu.decl.total == PoolCapacity(8.0, 16.0, 0.0, 0)
    assert cpu.decl.type == "general" and cpu.decl.gpu_model is None
    assert cpu.decl.labels == {"scheduler": "kubernetes", "node_pool": "cpu", "zone": "z-a,z-b"}
    assert cpu.selector == {"cloud.google.com/gke-nodepool": "cpu"}
    gpu = pools["a100"]
    assert gpu.decl.type == "intelligent" and gpu.decl.total.gpus == 4
    assert gpu.decl.gpu_model == "NVIDIA-A100-SXM4-40GB" and gpu.decl.gpu_memory_gb == 40.0
    assert pools["default"].selector == {} and pools["default"].nodes == ("plain",)
    assert all(p.decl.can_run_images for p in pools.values())


def test_group_nodes_by_a_chosen_label_and_type() -> None:
    nodes = [_node("a", {"rack": "r1", "cpnet.io/pool": "x"}), _node("b", {"rack": "r2"})]
    pools = group_nodes(nodes, pool_label="rack", pool_type="supercomputing")
    assert [(p.decl.name, p.selector, p.decl.type) for p in pools] == [
        ("r1", {"rack": "r1"}, "supercomputing"),
        ("r2", {"rack": "r2"}, "supercomputing"),
    ]


# ---- the Job manifest -----------------------------------------------------------------------


def _job(spec: dict[str, Any], attempt_id: str = "att-1", pool: str = "cpu") -> Job:
    return Job(attempt_id, "task-1", pool, TaskSpec.model_validate(spec), Path("/nowhere"))


def _manifest(job: Job, **kw: Any) -> dict[str, Any]:
    return job_manifest(job, namespace="ns", image="img:1", selector={"pool": "cpu"}, **kw)


def test_manifest_runs_executors_in_sequence_with_resources() -> None:
    spec = {
        "name": "".join(HOSTILE),
        "executors": [
            {"command": ["echo", *HOSTILE], "env": {"A": "$(id)"}},
            {"command": ["python3", "-V"], "image": "python:3.12", "workdir": "sub"},
        ],
        "resources": {"cpu_cores": 1.5, "ram_gb": 2, "gpus": 1},
    }
    m = _manifest(_job(spec), deadline_s=30, ttl_s=60)
    assert m["apiVersion"] == "batch/v1" and m["kind"] == "Job"
    assert m["metadata"]["name"] == "cpnet-att-1"
    assert m["metadata"]["annotations"]["cpnet.io/task-name"] == spec["name"]
    assert all(LABEL_VALUE.match(v) for v in m["metadata"]["labels"].values())
    js = m["spec"]
    assert js["backoffLimit"] == 0 and js["activeDeadlineSeconds"] == 30
    assert js["ttlSecondsAfterFinished"] == 60
    pod = js["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["nodeSelector"] == {"pool": "cpu"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    [first] = pod["initContainers"]
    [last] = pod["containers"]
    assert first["name"] == "ex-0" and last["name"] == "ex-1"
    assert first["command"] == ["echo", *HOSTILE]  # argv as given, no shell
    assert first["image"] == "img:1" and last["image"] == "python:3.12"
    assert {"name": "A", "value": "$(id)"} in first["env"]
    assert last["workingDir"] == f"{WORK_MOUNT}/sub" and first["workingDir"] == WORK_MOUNT
    res = first["resources"]
    assert res["requests"] == {"cpu": "1500m", "memory": "2048Mi", "nvidia.com/gpu": "1"}
    assert res["limits"] == res["requests"]


def test_hostile_attempt_and_pool_names_stay_out_of_names() -> None:
    m = _manifest(_job({"executors": [{"command": ["true"]}]}, "A_b.C-" + "x" * 120, "gpu pool;x"))
    assert DNS_LABEL.match(m["metadata"]["name"]) and len(m["metadata"]["name"]) <= 63
    labels = m["metadata"]["labels"]
    assert all(LABEL_VALUE.match(v) and len(v) <= 63 for v in labels.values())
    assert m["metadata"]["annotations"]["cpnet.io/attempt-id"] == "A_b.C-" + "x" * 120
    assert labels[ATTEMPT_LABEL] == m["spec"]["template"]["metadata"]["labels"][ATTEMPT_LABEL]


def test_time_limit_comes_from_the_backend_parameter() -> None:
    spec = TaskSpec.model_validate(
        {
            "executors": [{"command": ["true"]}],
            "resources": {"backend_parameters": {"time_limit_s": "90"}},
        }
    )
    assert time_limit_s(spec, 10) == 90
    assert time_limit_s(TaskSpec.model_validate({"executors": [{"command": ["x"]}]}), 10) == 10
    bad = spec.model_copy(deep=True)
    bad.resources.backend_parameters["time_limit_s"] = "1; rm"
    with pytest.raises(ValueError, match="time_limit_s"):
        time_limit_s(bad, None)


def test_unsupported_inputs_and_outputs_are_named() -> None:
    url = TaskSpec.model_validate(
        {"executors": [{"command": ["x"]}], "inputs": [{"path": "a", "url": "http://h/a"}]}
    )
    option = "set the kubernetes backend option runner_image"
    assert f"input 0 (a) has a URL: staging it needs {option}" in (unsupported(url) or "")
    out = TaskSpec.model_validate(
        {"executors": [{"command": ["x"]}], "outputs": [{"path": "a", "url": "file:///tmp/a"}]}
    )
    assert f"the task has outputs: staging them needs {option}" in (unsupported(out) or "")
    big = TaskSpec.model_validate(
        {"executors": [{"command": ["x"]}], "inputs": [{"path": "a", "content": "x" * 70000}]}
    )
    assert "larger than" in (unsupported(big) or "")
    # with a runner image, cpnet stages them all (a big inline input too, with an output)
    assert unsupported(url, "cpnet:1") is None and unsupported(out, "cpnet:1") is None
    big_out = big.model_copy(update={"outputs": out.outputs})
    assert unsupported(big_out, "cpnet:1") is None


def test_staged_manifest_keeps_urls_and_secrets_in_the_secret() -> None:
    spec = {
        "executors": [{"command": ["a"]}, {"command": ["b"], "image": "tool:2"}],
        "inputs": [{"path": "/data/x", "url": "https://h/x?X-Amz-Signature=s3cr3t"}],
        "outputs": [{"path": "out", "url": "s3://b/out"}],
        "resources": {"cpu_cores": 1, "ram_gb": 0.25, "gpus": 1},
    }
    job = _job(spec)
    m = _manifest(job, runner_image="cpnet:1", staging_secret="site-s3")
    pod = m["spec"]["template"]["spec"]
    names = [(c["name"], c["image"]) for c in pod["initContainers"] + pod["containers"]]
    assert names == [("stage-in", "cpnet:1"), ("ex-0", "img:1"), ("ex-1", "tool:2"),
                     ("stage-out", "cpnet:1")]  # fmt: skip
    stage_in, stage_out = pod["initContainers"][0], pod["containers"][0]
    assert stage_in["command"] == ["python", "-m", "cpnet.agent.podstage", "in"]
    assert stage_out["command"][-1] == "out"
    items = [{"key": "job.json", "path": "job.json"}, {"key": "env.json", "path": "env.json"}]
    volume = {"secretName": m["metadata"]["name"], "defaultMode": 0o400, "items": items}
    assert {"name": "staging", "secret": volume} in pod["volumes"]
    for c in pod["initContainers"] + pod["containers"]:
        staged = c["name"].startswith("stage-")
        assert any(v["name"] == "staging" for v in c["volumeMounts"]) is staged
        assert ("envFrom" in c) is staged
    assert stage_in["envFrom"] == [{"secretRef": {"name": "site-s3"}}]
    # stage containers: no GPU, at least 512 MiB of memory to run python
    assert stage_in["resources"]["limits"] == {"cpu": "1000m", "memory": "512Mi"}
    assert "nvidia.com/gpu" not in stage_in["resources"]["requests"]
    assert "s3cr3t" not in json.dumps(m) and "s3://b/out" not in json.dumps(m)

    created = {"metadata": {**m["metadata"], "uid": "u-1"}}
    files = staging_payload(job, {"max_stage_bytes": 5}, {"CPNET_STAGING_TOKEN": "tok"})
    sec = secret_manifest(m["metadata"]["name"], "ns", created, files)
    assert sec["metadata"]["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "Job", "name": "cpnet-att-1", "uid": "u-1"}
    ]
    decoded = {k: json.loads(base64.b64decode(v)) for k, v in sec["data"].items()}
    assert decoded["env.json"] == {"CPNET_STAGING_TOKEN": "tok"}
    assert decoded["job.json"]["spec"]["inputs"][0]["url"].endswith("s3cr3t")
    assert decoded["job.json"]["runner"] == {"max_stage_bytes": 5}
    huge = _job({**spec, "inputs": [{"path": "a", "content": "x" * 200_000}] * 5})
    with pytest.raises(ValueError, match="staging Secret"):
        staging_payload(huge, {}, {})


def test_inline_only_tasks_keep_the_shell_stage_in_even_with_a_runner_image() -> None:
    spec = {"executors": [{"command": ["a"]}], "inputs": [{"path": "a", "content": "x"}]}
    pod = _manifest(_job(spec), runner_image="cpnet:1")["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["image"] == "img:1"
    assert [v["name"] for v in pod["volumes"]] == ["work"]


def _env(container: dict[str, Any], root: Path) -> dict[str, str]:
    env = {"PATH": os.environ["PATH"]}
    for e in container["env"]:
        env[e["name"]] = e["value"].replace(WORK_MOUNT, str(root))
    return env


def test_stage_in_writes_hostile_content_and_paths_literally(tmp_path: Path) -> None:
    content = "".join(HOSTILE) + "\n$HOME ${PATH} \\n %s %d\n"
    paths = ["in.txt", "dir with space/$(id).txt", "d/'q'\"`x`"]
    spec = {
        "executors": [{"command": ["true"]}],
        "inputs": [{"path": p, "content": content} for p in paths],
    }
    stage = _manifest(_job(spec))["spec"]["template"]["spec"]["initContainers"][0]
    assert stage["name"] == "stage-in" and stage["command"] == ["sh", "-c", _STAGE_IN]
    subprocess.run(
        stage["command"], env=_env(stage, tmp_path), cwd=tmp_path, check=True, timeout=30
    )
    for p in paths:
        assert (tmp_path / p).read_text() == content
    assert sorted(x.name for x in tmp_path.iterdir()) == ["d", "dir with space", "in.txt"]


def test_redirects_and_ignore_error_keep_argv_literal(tmp_path: Path) -> None:
    (tmp_path / "in $(id)").write_text("from stdin\n")
    spec = {
        "executors": [
            {
                "command": ["sh", "-c", 'cat; echo "$1"; echo err >&2; exit 7', "sh", *HOSTILE],
                "stdin": "in $(id)",
                "stdout": "out `id`.txt",
                "stderr": "err;x.txt",
                "ignore_error": True,
            },
            {"command": ["true"]},
        ]
    }
    ex0 = _manifest(_job(spec))["spec"]["template"]["spec"]["initContainers"][0]
    assert ex0["command"][:2] == ["sh", "-c"] and ex0["command"][3:] == [
        "sh",
        *spec["executors"][0]["command"],
    ]
    proc = subprocess.run(
        ex0["command"], env=_env(ex0, tmp_path), cwd=tmp_path, capture_output=True, timeout=30
    )
    assert proc.returncode == 0  # ignored
    assert (tmp_path / "out `id`.txt").read_text() == f"from stdin\n{HOSTILE[0]}\n"
    assert (tmp_path / "err;x.txt").read_text() == "err\n"
    # the exit code goes to the container's own stderr (its log), where executor_logs finds it
    assert proc.stderr == b"cpnet: exit code 7 ignored\n"
    assert not Path("/tmp/pwned").exists()


# ---- what Job and Pod states mean -------------------------------------------------------------


def _kjob(*conds: tuple[str, str], deadline: int | None = None, deleting: bool = False):
    meta: dict[str, Any] = {"name": "cpnet-a"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "metadata": meta,
        "spec": {"activeDeadlineSeconds": deadline} if deadline else {},
        "status": {"conditions": [{"type": t, "status": "True", "reason": r} for t, r in conds]},
    }


def _cstatus(name: str, **state: Any) -> dict[str, Any]:
    return {"name": name, "state": state}


def _pod(phase: str, containers: list[dict], node: str | None = "n1", **status: Any):
    names = [c["name"] for c in containers]
    return {
        "metadata": {"name": "p", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {
            "nodeName": node,
            "initContainers": [{"name": n} for n in names[:-1]],
            "containers": [{"name": n} for n in names[-1:]],
        },
        "status": {
            "phase": phase,
            "initContainerStatuses": containers[:-1],
            "containerStatuses": containers[-1:],
            **status,
        },
    }


def _term(
    code: int,
    reason: str = "Error",
    start: str = "2026-01-01T00:00:01Z",
    end: str = "2026-01-01T00:00:04Z",
):
    return {"exitCode": code, "reason": reason, "startedAt": start, "finishedAt": end}


FAILED = ("Failed", "BackoffLimitExceeded")


@pytest.mark.parametrize(
    ("job", "pods", "canceled", "state", "reason"),
    [
        (_kjob(("Complete", "CompletionsReached")), [], False, State.COMPLETE, None),
        (_kjob(("Complete", "x")), [], True, State.COMPLETE, None),
        (_kjob(), [], True, State.CANCELED, "deleted"),
        (None, [], True, State.CANCELED, "deleted"),
        (None, [], False, State.SYSTEM_ERROR, "vanished"),
        (_kjob(("Failed", "DeadlineExceeded"), deadline=5), [], False, State.EXECUTOR_ERROR,
         "DeadlineExceeded: ran longer than its time limit of 5 s"),
        (_kjob(FAILED), [_pod("Failed", [_cstatus("ex-0", terminated=_term(0)),
                                         _cstatus("ex-1", terminated=_term(3))])],
         False, State.EXECUTOR_ERROR, "executor 1 exited with code 3"),
        (_kjob(FAILED), [_pod("Failed", [_cstatus("ex-0", terminated=_term(137, "OOMKilled"))])],
         False, State.EXECUTOR_ERROR, "executor 0 was OOMKilled"),
        (_kjob(FAILED), [_pod("Failed", [_cstatus("ex-0", terminated=_term(137))],
                              conditions=[{"type": "DisruptionTarget", "status": "True",
                                           "reason": "DeletionByTaintManager"}])],
         False, State.SYSTEM_ERROR, "pod DeletionByTaintManager"),
        (_kjob(FAILED), [_pod("Failed", [], reason="NodeLost", message="node n1 lost")],
         False, State.SYSTEM_ERROR, "pod NodeLost: node n1 lost"),
        (_kjob(FAILED), [_pod("Failed", [], reason="Evicted", message="low on memory")],
         False, State.SYSTEM_ERROR, "pod Evicted"),
        (_kjob(FAILED), [], False, State.SYSTEM_ERROR, "its pod is gone"),
        (_kjob(FAILED), [_pod("Failed", [_cstatus("stage-in", terminated=_term(1))])],
         False, State.SYSTEM_ERROR, "stage-in exited 1"),
        (_kjob(), [], False, State.QUEUED, "waiting"),
        (_kjob(), [_pod("Pending", [], node=None, conditions=[
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": "0/3 nodes are available"}])],
         False, State.QUEUED, "0/3 nodes are available"),
        (_kjob(), [_pod("Pending", [_cstatus("ex-0", waiting={"reason": "ContainerCreating"})])],
         False, State.INITIALIZING, None),
        (_kjob(), [_pod("Pending", [_cstatus("ex-0", waiting={"reason": "ImagePullBackOff",
                                                              "message": "no such image"})])],
         False, State.EXECUTOR_ERROR, "executor 0: ImagePullBackOff: no such image"),
        (_kjob(), [_pod("Running", [_cstatus("ex-0", running={"startedAt": "x"})])],
         False, State.RUNNING, None),
        (_kjob(), [_pod("Pending", [_cstatus("stage-in", terminated=_term(0)),
                                    _cstatus("ex-0", running={"startedAt": "x"})])],
         False, State.RUNNING, None),
        (_kjob(), [_pod("Pending", [_cstatus("stage-in", waiting={"reason": "ErrImagePull"})])],
         False, State.SYSTEM_ERROR, "stage-in (runner_image): ErrImagePull"),
        (_kjob(FAILED), [_pod("Failed", [_cstatus("stage-out", terminated=_term(3))])],
         False, State.SYSTEM_ERROR, "stage-out exited 3"),
        (_kjob(deleting=True), [], False, State.SYSTEM_ERROR, "deleted by someone else"),
    ],
)  # fmt: skip
def test_verdict(job, pods, canceled, state: State, reason: str | None) -> None:
    got_state, got_reason = verdict(job, pods, canceled)
    assert got_state is state
    if reason is None:
        assert state is not State.COMPLETE or got_reason is None
    else:
        assert reason in (got_reason or ""), got_reason


def test_executor_logs_and_usage_from_container_states() -> None:
    pod = _pod(
        "Failed",
        [
            _cstatus("stage-in", terminated=_term(0, "Completed", end="2026-01-01T00:00:01Z")),
            _cstatus(
                "ex-0",
                terminated=_term(0, "Completed", "2026-01-01T00:00:01Z", "2026-01-01T00:00:02Z"),
            ),
            _cstatus(
                "ex-1",
                terminated=_term(0, "Completed", "2026-01-01T00:00:02Z", "2026-01-01T00:00:09Z"),
            ),
            _cstatus("ex-2", waiting={"reason": "PodInitializing"}),
        ],
    )
    texts = {"ex-0": "hello\n", "ex-1": "x\ncpnet: exit code 4 ignored\n", "ex-2": "never"}
    logs = executor_logs(pod, texts)
    assert [(x.exit_code, x.stdout) for x in logs] == [(0, "hello\n"), (4, texts["ex-1"])]
    assert logs[1].start_time is not None and logs[1].end_time is not None
    assert (logs[1].end_time - logs[1].start_time).total_seconds() == 7
    usage = usage_of(pod)
    assert usage is not None and usage.wall_s == 8.0  # stage-in start to ex-1 finish
    assert usage_of(None) is None


# ---- the opt-in real-cluster tests ------------------------------------------------------------


def test_real_cluster_tests_skip_without_a_kubeconfig_even_when_services_are_required() -> None:
    root = Path(__file__).resolve().parents[3]
    env = {k: v for k, v in os.environ.items() if k != "CPNET_TEST_KUBECONFIG"}
    env["CPNET_REQUIRE_SERVICES"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
         "tests/integration/test_kubernetes_real.py"],
        cwd=root, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "3 skipped" in proc.stdout and "set CPNET_TEST_KUBECONFIG" in proc.stdout


def test_agent_with_an_unreadable_kubeconfig_says_what_to_fix(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cpnet", "agent", "--hub", "http://127.0.0.1:9", "--token", "t",
         "--work-dir", str(tmp_path), "--backend", "kubernetes",
         "--option", f"kubeconfig={tmp_path / 'missing'}"],
        capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith(("CPNET_", "KUBECONFIG"))},
    )  # fmt: skip
    assert proc.returncode == 1
    assert "error: cannot load the Kubernetes configuration" in proc.stderr
    assert "check --backend kubernetes and its --option" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("cache_s", "soon", "is not a number"),
        ("ttl_after_finished_s", "5", "must be at least 60"),
        ("default_time_limit_s", "0", "must be at least 1"),
        ("request_timeout_s", "nan", "must be at least 1"),
        ("pool_type", "fast", "use one of"),
    ],
)
def test_bad_options_are_refused_before_reaching_the_cluster(
    tmp_path: Path, key: str, value: str, why: str
) -> None:
    options = {"kubeconfig": str(tmp_path / "missing"), key: value}
    with pytest.raises(BackendError, match=f"{key}={value!r}.*{why}"):
        KubernetesBackend(BackendConfig(work_root=tmp_path, options=options))


def test_secret_env_values_come_from_the_attempts_secret_by_reference() -> None:
    spec = {
        "executors": [
            {
                "command": ["a"],
                "env": {"API_KEY": "[secret]", "MODE": "x"},
                "secret_env": ["API_KEY"],
            },
            {"command": ["b"], "env": {"MODE": "y"}},
        ],
    }
    job = _job(spec)
    m = _manifest(job)
    pod = m["spec"]["template"]["spec"]
    ex0 = next(c for c in pod["initContainers"] + pod["containers"] if c["name"] == "ex-0")
    ex1 = next(c for c in pod["initContainers"] + pod["containers"] if c["name"] == "ex-1")
    ref = {"secretKeyRef": {"name": m["metadata"]["name"], "key": "ex0.API_KEY"}}
    assert {"name": "API_KEY", "valueFrom": ref} in ex0["env"]
    assert {"name": "MODE", "value": "x"} in ex0["env"]
    assert all("valueFrom" not in e for e in ex1["env"])
    assert secret_env_files(job.spec, {"0": {"API_KEY": "v4lue"}}) == {"ex0.API_KEY": "v4lue"}
    with pytest.raises(ValueError, match="API_KEY did not arrive"):
        secret_env_files(job.spec, {})
    # a data key is refused with what to do (the stage containers do not decrypt)
    keyed = job.spec.model_copy(update={"data_key": "[secret]"})
    assert "data key" in (unsupported(keyed, "cpnet:1") or "")
