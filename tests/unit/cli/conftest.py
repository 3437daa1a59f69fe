"""An in-process stand-in for the hub's HTTP API, so the SDK and CLI can be tested without one.

`fake_hub_transport` is the only mock in these tests: it replaces the network boundary with a small
model of the documented `/v1` contract (errors as `{"error": {...}}`, idempotent task creation,
cursor pages newest first, signed resolution records). Tests against a real hub come later.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from cpnet.ident.keys import SigningKey, jwks
from cpnet.ident.records import sign_record

TOKEN = "cpn_test-token"
NOW = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)


def pool_json(pool_id: str = "cn.dev.acme.sz1.gpu1.i8", **overrides: Any) -> dict[str, Any]:
    """A PoolRecord as the hub would send it."""
    record = {
        "id": pool_id,
        "name": "gpu1",
        "site_id": "cn.dev.acme.sz1.i4",
        "site_name": "sz1",
        "provider_id": "cn.dev.acme.g1",
        "provider_name": "acme",
        "type": "intelligent",
        "region": {"code": "440300", "name": "Shenzhen", "lat": 22.5, "lon": 114.1},
        "hardware": {
            "cpu_model": "Xeon",
            "cpu_cores": 64,
            "memory_gb": 512,
            "accelerators": [{"model": "H100", "count": 8, "memory_gb": 80}],
        },
        "labels": {"rack": "a1"},
        "price": {"currency": "CNY", "cpu_core_hour": 0.05, "ram_gb_hour": 0, "gpu_hour": 12.0},
        "can_run_images": False,
        "endpoint": "",
        "total": {"cpu_cores": 64, "ram_gb": 512, "disk_gb": 0, "gpus": 8},
        "free": {"cpu_cores": 60, "ram_gb": 500, "disk_gb": 0, "gpus": 6},
        "reserved": {"cpu_cores": 4, "ram_gb": 12, "disk_gb": 0, "gpus": 2},
        "queue_length": 1,
        "running": 2,
        "online": True,
        "last_heartbeat": NOW.isoformat(),
        "created_at": NOW.isoformat(),
    }
    record.update(overrides)
    return record


def error(status: int, code: str, message: str, field: str | None = None) -> httpx.Response:
    """An error answer in the hub's one shape."""
    body: dict[str, Any] = {"code": code, "message": message}
    if field:
        body["field"] = field
    return httpx.Response(status, json={"error": body})


@dataclass
class FakeHub:
    """A tiny model of the hub: enough state to answer the SDK's calls the way the contract says.

    `failures` holds exceptions to raise on the next requests (`("before", exc)` means the hub
    never saw the request, `("after", exc)` that it handled it and the answer was lost);
    `forced` maps a path to a response to return instead of the normal one.
    """

    tasks: list[dict[str, Any]] = field(default_factory=list)  # oldest first
    by_key: dict[str, str] = field(default_factory=dict)
    pools: list[dict[str, Any]] = field(default_factory=lambda: [pool_json()])
    requests: list[httpx.Request] = field(default_factory=list)
    failures: list[tuple[str, Exception]] = field(default_factory=list)
    forced: dict[str, httpx.Response] = field(default_factory=dict)
    # Each GET of a task moves it one step along this path (so wait() has something to wait for).
    progress: list[str] = field(default_factory=lambda: ["QUEUED", "RUNNING", "COMPLETE"])
    key: SigningKey = field(default_factory=SigningKey.generate)
    token: str = TOKEN

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        when, exc = self.failures.pop(0) if self.failures else (None, None)
        if when == "before":
            raise exc
        response = self.route(request)
        if when == "after":
            raise exc
        return response

    # -- routing --------------------------------------------------------------------------------

    def route(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        if path in self.forced:
            return self.forced[path]
        if path == "/v1/health":
            return httpx.Response(200, json={"status": "ok", "version": "0.1.0", "authority": "cn"})
        if path == "/.well-known/cpnet/keys.json":
            return httpx.Response(200, json=jwks([self.key]))
        if path.startswith("/v1/resolve/"):
            return self.resolve(path.removeprefix("/v1/resolve/"))
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return error(401, "unauthorized", "missing or unknown token")
        if path == "/v1/whoami":
            return httpx.Response(
                200, json={"token_id": "tok-1", "role": "user", "org_id": "o-1", "user_id": "u-1"}
            )
        if path == "/v1/pools" and method == "GET":
            return httpx.Response(200, json={"pools": self.pools})
        if path.startswith("/v1/pools/"):
            pool_id = path.removeprefix("/v1/pools/")
            found = [p for p in self.pools if p["id"] == pool_id]
            if not found:
                return error(404, "not_found", f"no pool {pool_id}")
            return httpx.Response(200, json=found[0])
        if path == "/v1/tasks" and method == "POST":
            return self.create(json.loads(request.content))
        if path == "/v1/tasks" and method == "GET":
            return self.page(request.url.params)
        if path.startswith("/v1/tasks/"):
            return self.task_route(method, path.removeprefix("/v1/tasks/").split("/"))
        return error(404, "not_found", f"no route {method} {path}")

    # -- tasks ----------------------------------------------------------------------------------

    def add_task(self, spec: dict[str, Any], state: str = "QUEUED") -> dict[str, Any]:
        n = len(self.tasks)
        moment = (NOW + timedelta(seconds=n)).isoformat()
        view = {
            "id": f"t-{n:04d}",
            "name": spec.get("name"),
            "state": state,
            "org_id": "o-1",
            "pool_id": None,
            "created_at": moment,
            "updated_at": moment,
            "tags": spec.get("tags", {}),
            "spec": spec,
            "attempts": [],
        }
        self.tasks.append(view)
        return view

    def create(self, spec: dict[str, Any]) -> httpx.Response:
        key = spec.get("idempotency_key")
        if key in self.by_key:
            return httpx.Response(200, json=self.find(self.by_key[key]))
        if not spec.get("executors"):
            return error(422, "invalid", "executors: at least one", field="executors")
        view = self.add_task(spec)
        if key:
            self.by_key[key] = view["id"]
        return httpx.Response(201, json=view)

    def find(self, task_id: str) -> dict[str, Any] | None:
        return next((t for t in self.tasks if t["id"] == task_id), None)

    def page(self, params: httpx.QueryParams) -> httpx.Response:
        newest_first = list(reversed(self.tasks))
        states = params.get_list("state")
        if states:
            newest_first = [t for t in newest_first if t["state"] in states]
        prefix = params.get("name_prefix")
        if prefix:
            newest_first = [t for t in newest_first if (t["name"] or "").startswith(prefix)]
        limit = int(params.get("limit", 100))
        start = int(params.get("cursor", 0))
        chunk = newest_first[start : start + limit]
        more = start + limit < len(newest_first)
        return httpx.Response(
            200, json={"tasks": chunk, "next_cursor": str(start + limit) if more else None}
        )

    def task_route(self, method: str, parts: list[str]) -> httpx.Response:
        view = self.find(parts[0])
        if view is None:
            return error(404, "not_found", f"no task {parts[0]}")
        tail = parts[1] if len(parts) > 1 else ""
        if method == "GET" and tail == "":
            if view["state"] in self.progress[:-1]:
                view["state"] = self.progress[self.progress.index(view["state"]) + 1]
                view["pool_id"] = self.pools[0]["id"]
            return httpx.Response(200, json=view)
        if method == "POST" and tail == "cancel":
            if view["state"] not in ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR"):
                view["state"] = "CANCELED"  # an ended task keeps its state, as the hub does
            return httpx.Response(200, json=view)
        if tail == "events":
            return httpx.Response(
                200,
                json={
                    "events": [
                        {"at": NOW.isoformat(), "from_state": None, "to_state": "QUEUED"},
                        {
                            "at": NOW.isoformat(),
                            "from_state": "QUEUED",
                            "to_state": view["state"],
                            "reason": "placed",
                            "attempt": 1,
                        },
                    ]
                },
            )
        if tail == "logs":
            return httpx.Response(200, json=self.logs(view))
        if tail == "explain":
            return httpx.Response(200, json=self.explanation(view))
        return error(404, "not_found", f"no route {method} {tail}")

    def logs(self, view: dict[str, Any]) -> dict[str, Any]:
        return {
            "task_id": view["id"],
            "attempts": [
                {
                    "attempt": 1,
                    "attempt_id": "a-1",
                    "pool_id": self.pools[0]["id"],
                    "state": "COMPLETE",
                    "executor_logs": [{"exit_code": 0, "stdout": "hi\n", "stderr": "warn\n"}],
                    "system_logs": ["staged 0 inputs"],
                }
            ],
        }

    def explanation(self, view: dict[str, Any]) -> dict[str, Any]:
        chosen = self.pools[0]["id"]
        return {
            "task_id": view["id"],
            "state": view["state"],
            "chosen_pool": chosen,
            "placements": [
                {
                    "pool_id": chosen,
                    "rank": 1,
                    "score": 0.9,
                    "expected_start_s": 5,
                    "hourly_price": 12.05,
                    "estimated_cost": 2.01,
                    "fits_now": True,
                    "reasons": ["fastest"],
                }
            ],
            "rejections": [{"pool_id": "cn.dev.other.x.y.g3", "reasons": ["needs 1 GPU, has 0"]}],
        }

    # -- identifiers ----------------------------------------------------------------------------

    def resolve(self, identifier: str) -> httpx.Response:
        if "!" in identifier:
            return error(400, "malformed", f"{identifier!r}: '!' is not allowed in an identifier")
        pool = next((p for p in self.pools if p["id"] == identifier), None)
        if pool is None:
            return error(404, "not_found", f"{identifier} is not registered")
        record = {"id": identifier, "kind": "pool", "owner": pool["provider_id"], "type": "i"}
        issued = datetime.now(UTC)
        return httpx.Response(200, json=sign_record(record, self.key, issued_at=issued, ttl_s=300))


@pytest.fixture
def fake_hub() -> FakeHub:
    return FakeHub()


@pytest.fixture
def fake_hub_transport(fake_hub: FakeHub) -> httpx.MockTransport:
    """The stand-in hub as an httpx transport (the HTTP boundary, nothing above it, is faked)."""
    return httpx.MockTransport(fake_hub.handler)


@pytest.fixture(autouse=True)
def isolated_config(tmp_path, monkeypatch) -> Iterator[Any]:
    """Keep every test away from the real ~/.config and from CPNET_* in the environment."""
    monkeypatch.setenv("CPNET_CONFIG", str(tmp_path / "config.toml"))
    for name in ("CPNET_HUB", "CPNET_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    yield tmp_path / "config.toml"


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch) -> None:
    """Retries pause for real between tries; tests need not wait."""
    monkeypatch.setattr("cpnet.client.BACKOFF_S", 0.0)
