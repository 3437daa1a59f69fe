"""GA4GH TES v1.1 on a real hub with real agents, driven by py-tes (both client generations) and
checked response by response against the spec's own OpenAPI schemas."""

from __future__ import annotations

import copy
import importlib
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import yaml
from openapi_schema_validator import OAS30ReadValidator

from tests.integration.procs import AgentProc, HubProc, kill_runners, make_world, pool, wait_until

pytestmark = pytest.mark.integration

SPEC_FILE = Path(__file__).parent / "tes_spec" / "tes-1.1.0.openapi.yaml"
PYTES11 = Path(sys.prefix) / "pytes11"  # py-tes 1.1, installed there by `make venv`
BASE = "/ga4gh/tes/v1"
FINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}

# ---- the spec's schemas, made strict ------------------------------------------------------------

# tesServiceInfo extends GA4GH service-info's Service by an external $ref; this stand-in is that
# schema's required part (ga4gh-discovery/ga4gh-service-info v1.0.0), inlined to run offline.
STANDIN_SERVICE = {
    "type": "object",
    "required": ["id", "name", "type", "organization", "version"],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "type": {"$ref": "#/components/schemas/standin_ServiceType"},
        "description": {"type": "string"},
        "organization": {
            "type": "object",
            "required": ["name", "url"],
            "properties": {"name": {"type": "string"}, "url": {"type": "string"}},
        },
        "contactUrl": {"type": "string"},
        "documentationUrl": {"type": "string"},
        "createdAt": {"type": "string"},
        "updatedAt": {"type": "string"},
        "environment": {"type": "string"},
        "version": {"type": "string"},
    },
}
STANDIN_SERVICE_TYPE = {
    "type": "object",
    "required": ["group", "artifact", "version"],
    "properties": {
        "group": {"type": "string"},
        "artifact": {"type": "string"},
        "version": {"type": "string"},
    },
}


def _strict(node: Any) -> Any:
    """Every object schema with properties refuses fields the spec does not define."""
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items()}
        if "properties" in out and "additionalProperties" not in out and "allOf" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(x) for x in node]
    return node


def _schemas() -> dict[str, Any]:
    spec = yaml.safe_load(SPEC_FILE.read_text())
    schemas = copy.deepcopy(spec["components"]["schemas"])
    schemas["standin_ServiceType"] = STANDIN_SERVICE_TYPE
    # allOf cannot be made strict part by part: merge the parts of service-info into one object
    info_props = {
        **STANDIN_SERVICE["properties"],
        **schemas["tesServiceInfo"]["allOf"][1]["properties"],
    }
    info_props["type"] = {
        "allOf": [
            {"$ref": "#/components/schemas/standin_ServiceType"},
            {
                "properties": {"artifact": {"type": "string", "enum": ["tes"]}},
                "additionalProperties": True,  # the first part is the strict one
            },
        ]
    }
    schemas["tesServiceInfo"] = {
        "type": "object",
        "required": STANDIN_SERVICE["required"],
        "properties": info_props,
    }
    # The view parameter's MINIMAL: "ONLY the fields id, state" (so not tesTask's `executors`)
    schemas["tesTask_MINIMAL"] = {
        "type": "object",
        "required": ["id", "state"],
        "properties": {
            "id": {"type": "string"},
            "state": {"$ref": "#/components/schemas/tesState"},
        },
    }
    listing = copy.deepcopy(schemas["tesListTasksResponse"])
    listing["properties"]["tasks"]["items"] = {"$ref": "#/components/schemas/tesTask_MINIMAL"}
    schemas["tesListTasksResponse_MINIMAL"] = listing
    return _strict(schemas)


SCHEMAS = _schemas()


def _no_nulls(value: Any, where: str = "") -> None:
    if value is None:
        raise AssertionError(f"null at {where or 'top'}")
    if isinstance(value, dict):
        for k, v in value.items():
            _no_nulls(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _no_nulls(v, f"{where}[{i}]")


def conforms(body: Any, schema: str) -> Any:
    """Assert `body` is valid for the spec's schema, with only spec fields and no nulls."""
    _no_nulls(body)
    root = {"$ref": f"#/components/schemas/{schema}", "components": {"schemas": SCHEMAS}}
    errors = sorted(OAS30ReadValidator(root).iter_errors(body), key=str)
    assert not errors, f"{schema}: " + "; ".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5]
    )
    return body


class Raw:
    """Plain HTTP against the TES endpoints; every 200 is checked against the spec."""

    def __init__(self, url: str, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url + BASE, headers=headers, timeout=30)

    def get(self, path: str, schema: str | None = None, **params: Any) -> httpx.Response:
        r = self.http.get(path, params=params)
        if r.status_code == 200 and schema:
            if (
                schema in ("tesTask", "tesListTasksResponse")
                and params.get("view", "MINIMAL") == "MINIMAL"
            ):
                schema += "_MINIMAL"  # the default view
            conforms(r.json(), schema)
        return r

    def post(self, path: str, body: Any, schema: str | None = None) -> httpx.Response:
        r = self.http.post(path, json=body)
        if r.status_code == 200 and schema:
            conforms(r.json(), schema)
        return r

    def task(self, tid: str, view: str = "FULL") -> dict[str, Any]:
        r = self.get(f"/tasks/{tid}", "tesTask", view=view)
        assert r.status_code == 200, r.text
        return r.json()

    def wait(self, tid: str, timeout: float = 60) -> dict[str, Any]:
        def final() -> dict[str, Any] | None:
            t = self.task(tid)
            return t if t["state"] in FINAL else None

        return wait_until(final, timeout, f"{tid} ends")


# ---- py-tes, both generations -------------------------------------------------------------------


def load_pytes(where: Path | None) -> ModuleType:
    """Import the `tes` package from `where` (None: the venv's) without disturbing the other."""
    saved = {k: m for k, m in sys.modules.items() if k == "tes" or k.startswith("tes.")}
    for k in saved:
        del sys.modules[k]
    if where is not None:
        sys.path.insert(0, str(where))
    try:
        mod = importlib.import_module("tes")
        for sub in ("client", "models", "utils"):
            setattr(mod, f"_{sub}", importlib.import_module(f"tes.{sub}"))
        return mod
    finally:
        if where is not None:
            sys.path.remove(str(where))
        for k in [k for k in sys.modules if k == "tes" or k.startswith("tes.")]:
            del sys.modules[k]
        sys.modules.update(saved)


@dataclass
class Net:
    hub: HubProc
    user: str
    other_user: str
    pools: dict[str, str]  # name -> pool id
    files: Path  # a directory outside /tmp for file:// inputs and outputs


@pytest.fixture
def net(hub: HubProc, agents: list[AgentProc]) -> Iterator[Net]:
    """Two sites: `img` accepts images (host execution allowed), `plain` runs no images.

    Work dirs live outside /tmp, so each attempt gets its private /tmp."""
    root = Path(tempfile.mkdtemp(prefix="cpnet-tes-", dir="/var/tmp"))
    world = make_world(hub, {"img": ("general", "440100"), "plain": ("general", "110000")})
    for name, opts in (
        ("img", {"allow_host_exec": "true", "container_runtime": "none"}),
        ("plain", {"container_runtime": "none"}),
    ):
        a = AgentProc(hub, world.site_tokens[name], root / f"agent-{name}", [pool(name, 4)])
        a.options = {**opts, "file_roots": str(root / "files")}
        a.start()
        agents.append(a)
    with hub.client() as admin:
        other = admin.create_org("globex")
        _, u2 = admin.create_user(other.id, "bob", role="user")
    user = hub.client(world.user_token)
    pools = wait_until(lambda: len(user.pools()) == 2 and user.pools(), 30, "two pools")
    (root / "files").mkdir()
    try:
        yield Net(hub, world.user_token, u2.token, {p.name: p.id for p in pools}, root / "files")
    finally:
        for a in agents:
            a.kill()
            kill_runners(a.work_dir)
        agents.clear()
        shutil.rmtree(root, ignore_errors=True)


def _pool_of(raw: Raw, tid: str) -> str:
    (log,) = raw.task(tid)["logs"]
    return log["metadata"]["cpnet.pool_id"]


@pytest.mark.parametrize("generation", ["0.4", "1.1"])
def test_pytes_end_to_end(net: Net, generation: str):
    if generation == "1.1" and not PYTES11.is_dir():
        pytest.fail(f"py-tes 1.1 missing at {PYTES11}: run `make venv`")
    tes = load_pytes(PYTES11 if generation == "1.1" else None)
    # py-tes 0.4 appends /v1/tasks to the URL it gets; 1.1 finds /ga4gh/tes/v1 itself
    url = net.hub.url + ("/ga4gh/tes" if generation == "0.4" else "")
    client = tes.HTTPClient(url, token=net.user)
    raw = Raw(net.hub.url, net.user)
    info = client.get_service_info()
    assert "file://" in info.storage

    src = net.files / "in-by-url.txt"
    src.write_text("by url\n")
    out_url = f"file://{net.files}/result.txt"
    ok = client.create_task(
        tes.Task(
            name=f"tes-ok-{generation}",
            tags={"wf": "w1", "kind": "ok"},
            inputs=[
                tes.Input(path="/tmp/inline.txt", content="inline\n"),
                tes.Input(path="/tmp/url.txt", url=f"file://{src}"),
            ],
            outputs=[tes.Output(path="/tmp/result.txt", url=out_url)],
            executors=[
                tes.Executor(image="alpine", command=["cat", "inline.txt", "url.txt"],
                             workdir="/tmp", stdout="/tmp/result.txt"),
                tes.Executor(image="alpine", command=["wc", "-l"], workdir="/tmp",
                             stdin="/tmp/result.txt", env={"LC_ALL": "C"}),
            ],
            resources=tes.Resources(cpu_cores=1, ram_gb=0.5),
        )
    )  # fmt: skip
    ok_id = ok if isinstance(ok, str) else ok.id
    bad_id = _id(
        client.create_task(
            tes.Task(
                name=f"tes-bad-{generation}",
                tags={"wf": "w1", "kind": "bad"},
                executors=[
                    tes.Executor(image="alpine", command=["sh", "-c", "echo no >&2; exit 3"])
                ],
            )
        )
    )  # fmt: skip
    slow_id = _id(
        client.create_task(
            tes.Task(name=f"slow-{generation}", tags={"wf": "w2"},
                     executors=[tes.Executor(image="alpine", command=["sleep", "300"])])
        )
    )  # fmt: skip

    # GetTask in every view, through the client
    t = raw.wait(ok_id)
    assert t["state"] == "COMPLETE", t
    minimal = client.get_task(ok_id, view="MINIMAL")
    assert (minimal.id, minimal.state, minimal.executors) == (ok_id, "COMPLETE", None)
    basic = client.get_task(ok_id, view="BASIC")
    assert basic.name == f"tes-ok-{generation}" and basic.tags == {"wf": "w1", "kind": "ok"}
    assert [i.content for i in basic.inputs] == [None, None]  # BASIC omits input content
    (blog,) = basic.logs
    assert [x.exit_code for x in blog.logs] == [0, 0] and blog.logs[0].stdout is None
    assert blog.system_logs is None
    full = client.get_task(ok_id, view="FULL")
    assert full.inputs[0].content == "inline\n"
    (flog,) = full.logs
    assert flog.logs[1].stdout.strip() == "2"  # wc -l over the two staged inputs
    assert any("ran on the host, not in image 'alpine'" in x for x in flog.system_logs)
    (olog,) = flog.outputs
    assert (olog.url, olog.path, int(olog.size_bytes)) == (out_url, "/tmp/result.txt", 14)
    assert (net.files / "result.txt").read_text() == "inline\nby url\n"
    assert _pool_of(raw, ok_id) == net.pools["img"]  # the pool without images never got it

    # a failing executor
    t = raw.wait(bad_id)
    assert t["state"] == "EXECUTOR_ERROR"
    bad = client.get_task(bad_id, view="FULL")
    assert bad.logs[0].logs[0].exit_code == 3 and bad.logs[0].logs[0].stderr == "no\n"

    # cancel
    wait_until(lambda: raw.task(slow_id, "MINIMAL")["state"] == "RUNNING", 60, "slow runs")
    assert client.cancel_task(slow_id) is None or True  # 0.4 returns the (empty) response
    assert raw.wait(slow_id)["state"] == "CANCELED"

    if generation == "1.1":  # ignore_error is TES 1.1 (py-tes 0.4's Executor has no such field)
        ign = _id(
            client.create_task(
                tes.Task(
                    name="ignore",
                    executors=[
                        tes.Executor(image="alpine", command=["sh", "-c", "exit 1"],
                                     ignore_error=True),
                        tes.Executor(image="alpine", command=["echo", "after"]),
                    ],
                )
            )
        )  # fmt: skip
        assert raw.wait(ign)["state"] == "COMPLETE"
        got = client.get_task(ign, view="FULL")
        assert [x.exit_code for x in got.logs[0].logs] == [1, 0]
        assert got.executors[0].ignore_error is True

    # ListTasks with paging, through the client: every task exactly once, newest first
    seen: list[str] = []
    token = None
    while True:
        page = client.list_tasks(view="BASIC", page_size=1, page_token=token)
        seen += [x.id for x in page.tasks]
        assert all(x.executors for x in page.tasks)
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) and {ok_id, bad_id, slow_id} <= set(seen)

    # the filters py-tes has no arguments for, parsed by py-tes' own unmarshal
    def listed(**params: Any) -> list[str]:
        r = raw.get("/tasks", "tesListTasksResponse", **params)
        assert r.status_code == 200, r.text
        return [x.id for x in tes.unmarshal(r.json(), tes._models.ListTasksResponse).tasks]

    assert listed(name_prefix="tes-") == [bad_id, ok_id]
    assert listed(state="EXECUTOR_ERROR") == [bad_id]
    assert listed(state="UNKNOWN") == []
    assert listed(tag_key=["wf", "kind"], tag_value=["w1", "ok"]) == [ok_id]
    assert listed(tag_key="kind") == [bad_id, ok_id]  # key only: any value
    assert listed(tag_key=["wf"], tag_value=[""]) == [slow_id, bad_id, ok_id]
    assert listed(tag_key="wf", tag_value="w2", view="FULL") == [slow_id]


def _id(created: Any) -> str:
    return created if isinstance(created, str) else created.id


def test_responses_errors_auth_and_tenants(net: Net):
    raw = Raw(net.hub.url, net.user)
    info = raw.get("/service-info", "tesServiceInfo")
    assert info.status_code == 200
    assert info.json()["type"] == {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"}
    assert "cpnet.gpus" in info.json()["tesResources_backend_parameters"]

    body = {
        "name": "shape",
        "description": "every field",
        "inputs": [{"path": "/tmp/a", "content": "x", "name": "a", "streamable": True}],
        "outputs": [{"path": "/tmp/a", "url": f"file://{net.files}/a", "type": "FILE"}],
        "executors": [{"image": "alpine", "command": ["true"], "workdir": "/tmp"}],
        "volumes": ["/vol/x"],
        "tags": {"t": "1"},
        "resources": {
            "cpu_cores": 1,
            "ram_gb": 0.25,
            "zones": ["44"],
            "backend_parameters": {"cpnet.objective": "cheapest", "VmSize": "big"},
        },
    }
    r = raw.post("/tasks", body, "tesCreateTaskResponse")
    assert r.status_code == 200, r.text
    tid = r.json()["id"]
    t = raw.wait(tid)
    assert t["state"] == "COMPLETE", t
    assert t["resources"]["backend_parameters"] == {"cpnet.objective": "cheapest"}
    assert t["resources"]["zones"] == ["44"] and t["inputs"][0]["streamable"] is True
    assert "'VmSize' is not supported" in t["logs"][0]["system_logs"][0]
    assert _pool_of(raw, tid) == net.pools["img"]  # zone 44 and the image: only `img` fits
    for view in ("MINIMAL", "BASIC", "FULL"):
        raw.get("/tasks", "tesListTasksResponse", view=view)
        raw.get(f"/tasks/{tid}", "tesTask", view=view)
    assert raw.post(f"/tasks/{tid}:cancel", None, "tesCancelTaskResponse").json() == {}

    # bad requests: 400 naming the field
    cases = [
        ({"executors": [{"command": ["x"]}]}, "executors.0.image"),
        ({"executors": [{"image": "a", "command": ["x"]}], "colour": 1}, "colour"),
        (
            {
                "executors": [{"image": "a", "command": ["x"]}],
                "resources": {
                    "backend_parameters": {"VmSize": "x"},
                    "backend_parameters_strict": True,
                },
            },
            "resources.backend_parameters.VmSize",
        ),
        (
            {
                "executors": [{"image": "a", "command": ["x"]}],
                "resources": {
                    "backend_parameters": {
                        "cpnet.reference_pool": "cn.dev.nope.p0",
                        "cpnet.reference_runtime_s": "60",
                    }
                },
            },
            "resources.backend_parameters.cpnet.reference_pool",
        ),
    ]  # fmt: skip
    for bad, field in cases:
        r = raw.post("/tasks", bad)
        assert (r.status_code, r.json()["error"]["field"]) == (400, field), r.text
    assert raw.http.post("/tasks", content=b"{nope").status_code == 400
    for params, field in (
        ({"view": "ALL"}, "view"),
        ({"state": "DONE"}, "state"),
        ({"page_size": 5000}, "page_size"),
        ({"page_token": "zzz"}, "page_token"),
    ):
        r = raw.get("/tasks", **params)
        assert (r.status_code, r.json()["error"]["field"]) == (400, field), r.text

    # the same bearer tokens; another organisation's task does not exist for you
    assert Raw(net.hub.url, None).get("/tasks").status_code == 401
    other = Raw(net.hub.url, net.other_user)
    assert other.get(f"/tasks/{tid}").status_code == 404
    assert other.post(f"/tasks/{tid}:cancel", None).status_code == 404
    assert other.get("/tasks", "tesListTasksResponse").json() == {"tasks": []}
    assert raw.get("/tasks/tsk_nope").status_code == 404


def test_image_tasks_wait_for_a_pool_that_runs_images(net: Net):
    """The only pool in the allowed region runs no images: the task stays QUEUED, and the
    scheduler's explanation says why."""
    raw = Raw(net.hub.url, net.user)
    body = {
        "executors": [{"image": "alpine", "command": ["true"]}],
        "resources": {"zones": ["110000"]},
    }
    tid = raw.post("/tasks", body).json()["id"]
    plain = {"executors": [{"image": "", "command": ["true"]}], "resources": {"zones": ["11"]}}
    no_image = raw.post("/tasks", plain).json()["id"]
    assert raw.wait(no_image)["state"] == "COMPLETE"  # the plain pool works for plain tasks
    assert _pool_of(raw, no_image) == net.pools["plain"]
    reasons = net.hub.client(net.user).explain(tid)["rejections"]
    by_pool = {r["pool_id"]: " ".join(r["reasons"]) for r in reasons}
    assert "needs container image 'alpine', pool runs no images" in by_pool[net.pools["plain"]]
    assert raw.task(tid, "MINIMAL")["state"] == "QUEUED"
