"""The SDK against the real hub: typed results, errors, retries, cursors, configuration."""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from cpnet.client import (
    DEFAULT_HUB,
    BadRequest,
    Client,
    Conflict,
    CpnetError,
    HubUnavailable,
    NotFound,
    Unauthorized,
    WaitTimeout,
    load_jwks,
)
from cpnet.registry.model import PoolRecord
from cpnet.tasks.model import TaskEvent, TaskSpec, TaskView
from cpnet.tasks.states import State

from .conftest import STAYS_QUEUED, FaultyNetworkTransport, Net, Tenant, gate_command


@pytest.fixture
def client(tenant: Tenant) -> Iterator[Client]:
    with tenant.client() as c:
        yield c


@pytest.fixture
def tap() -> FaultyNetworkTransport:
    """Forwards to the real hub and records the requests (add faults to inject network errors)."""
    return FaultyNetworkTransport()


@pytest.fixture
def tapped(tenant: Tenant, tap: FaultyNetworkTransport) -> Iterator[Client]:
    """The tenant's client, sending through `tap`."""
    with tenant.client(transport=tap) as c:
        yield c


def body(request: httpx.Request) -> dict:
    return json.loads(request.content)


def queued(name: str | None = None, **spec) -> dict:
    """A task spec that stays QUEUED (no pool meets its constraints)."""
    return {"name": name, "executors": [{"command": ["true"]}], **STAYS_QUEUED, **spec}


def task_ids(c: Client) -> list[str]:
    return [t.id for t in c.iter_tasks()]


# ---- typed results ----------------------------------------------------------------------------


def test_submit_returns_a_task_view_and_sends_the_token(tenant: Tenant, tapped, tap):
    view = tapped.submit({"name": "hello", "executors": [{"command": ["echo", "hi"]}]})
    assert isinstance(view, TaskView)
    assert view.state is State.QUEUED
    assert view.spec.executors[0].command == ["echo", "hi"]
    assert view.org_id == tenant.world.org_id  # the hub filed it under the token's organisation
    assert tap.requests[0].headers["Authorization"] == f"Bearer {tenant.token}"


def test_pools_are_pool_records_and_filters_select_on_the_hub(net: Net, tapped, tap):
    pools = tapped.pools(
        type="intelligent",
        region="44",
        accelerator="h100",
        min_gpus=2,
        labels={"rack": "a1", "zone": "b"},
        online="any",
    )
    assert [type(p) for p in pools] == [PoolRecord]
    assert [p.id for p in pools] == [net.pool_ids["gpu1"]]
    assert pools[0].hardware.gpus == 8
    params = tap.requests[0].url.params
    assert params.get_list("label") == ["rack=a1", "zone=b"]
    assert params["online"] == "any"
    assert "min_cores" not in params
    # Each filter really filters: change any one and the GPU pool drops out.
    assert tapped.pools(labels={"zone": "c"}) == []
    assert tapped.pools(accelerator="a100") == []
    assert tapped.pools(region="11") == []
    assert tapped.pools(min_gpus=9) == []
    assert [p.name for p in tapped.pools(type="general")] == ["cpu"]


def test_pools_default_to_online_only(net: Net, tapped, tap):
    pools = tapped.pools()
    assert tap.requests[0].url.params["online"] == "true"
    assert sorted(p.id for p in pools) == sorted(net.pool_ids.values())
    assert all(p.online for p in pools)


def test_events_are_typed(client):
    task = client.submit(queued())
    events = client.events(task.id)
    assert events and all(isinstance(e, TaskEvent) for e in events)
    assert (events[0].from_state, events[0].to_state) == (None, State.QUEUED)


ORDER = [State.QUEUED, State.INITIALIZING, State.RUNNING, State.COMPLETE]


def test_wait_polls_until_terminal_and_reports_each_view(client, tmp_path: Path):
    gate = tmp_path / "gate"
    task = client.submit({"executors": [{"command": gate_command(gate)}]})
    seen: list[State] = []

    def update(view: TaskView) -> None:
        seen.append(view.state)
        if view.state is State.RUNNING:
            gate.touch()  # the task ends only once wait() has shown it RUNNING

    done = client.wait(task.id, timeout=60, poll=0.05, on_update=update)
    assert done.state is State.COMPLETE
    assert State.RUNNING in seen and seen[-1] is State.COMPLETE
    assert all(not s.terminal for s in seen[:-1])
    assert seen == sorted(seen, key=ORDER.index)  # never backwards


def test_wait_times_out_with_a_cpnet_error(client):
    task = client.submit(queued())
    with pytest.raises(WaitTimeout) as caught:
        client.wait(task.id, timeout=0.3, poll=0.05)
    assert isinstance(caught.value, CpnetError)
    assert "QUEUED" in caught.value.message


def test_a_bad_spec_is_refused_before_it_is_sent(tapped, tap):
    with pytest.raises(BadRequest) as caught:
        tapped.submit({"executors": [{"command": ["x"], "stdout": "../escape"}]})
    assert caught.value.field == "executors.0.stdout"
    assert tap.requests == []


# ---- errors -----------------------------------------------------------------------------------


def _refused(net: Net, tenant: Tenant, status: int) -> None:
    """Make the real hub answer `status`."""
    user = tenant.client()
    if status == 400:
        user.pools(labels=["novalue"])  # a label without '='
    elif status == 401:
        Client(tenant.url, "cpn_wrong").pools()
    elif status == 403:
        user.create_org("not-mine")  # users may not create organisations
    elif status == 404:
        user.task("tsk_nope")
    elif status == 409:
        net.hub.client().create_org("acme")  # the shared provider's organisation has it
    elif status == 413:
        net.hub.client().create_org("x" * 2_000_000)  # over the hub's body limit
    elif status == 422:
        user.pools(min_gpus=-1)


@pytest.mark.parametrize(
    ("status", "cls", "code", "field"),
    [
        (400, BadRequest, "invalid", "label"),
        (401, Unauthorized, "unauthorized", None),
        (403, Unauthorized, "forbidden", None),
        (404, NotFound, "not_found", "task_id"),
        (409, Conflict, "conflict", "name"),
        (413, BadRequest, "too_large", "body"),
        (422, BadRequest, "validation_error", "min_gpus"),
    ],
)
def test_error_statuses_map_to_exception_classes(net, tenant, status, cls, code, field):
    with pytest.raises(cls) as caught:
        _refused(net, tenant, status)
    err = caught.value
    assert type(err) is cls
    assert (err.status, err.code, err.field) == (status, code, field)
    assert err.message and str(err) == err.message


def test_every_error_class_is_a_cpnet_error():
    for cls in (NotFound, Unauthorized, BadRequest, Conflict, HubUnavailable, WaitTimeout):
        assert issubclass(cls, CpnetError)


def test_unknown_task_is_not_found(client):
    with pytest.raises(NotFound) as caught:
        client.task("tsk_nope")
    assert caught.value.code == "not_found"
    assert "cpnet tasks" in caught.value.hint


def test_cancel_returns_the_task(client):
    task = client.submit(queued())
    assert client.cancel(task.id).state is State.CANCELED
    assert client.task(task.id).state is State.CANCELED


def test_canceling_an_ended_task_changes_nothing(client):
    task = client.submit({"executors": [{"command": ["true"]}]})
    assert client.wait(task.id, timeout=60, poll=0.05).state is State.COMPLETE
    assert client.cancel(task.id).state is State.COMPLETE
    assert client.task(task.id).state is State.COMPLETE


def test_a_wrong_token_is_unauthorized_with_a_login_hint(net: Net):
    with Client(net.hub.url, "cpn_wrong") as c, pytest.raises(Unauthorized) as caught:
        c.whoami()
    assert caught.value.status == 401
    assert "cpnet login" in caught.value.hint


def test_a_malformed_identifier_shows_the_hubs_message(net: Net, client):
    said = httpx.get(f"{net.hub.url}/v1/resolve/cn.bad!id").json()["error"]
    with pytest.raises(BadRequest) as caught:
        client.resolve("cn.bad!id")
    assert caught.value.message == said["message"] and "'!'" in said["message"]
    assert caught.value.field == "id"


# ---- a server at the hub URL that is not this cpnet hub ---------------------------------------


@pytest.fixture
def not_a_hub(tmp_path: Path) -> Iterator[str]:
    """A plain static web server (Python's http.server) at the URL: what the SDK meets when the
    URL is wrong, or the hub is of another version. It serves files from `tmp_path/site`."""
    site = tmp_path / "site"
    (site / "v1").mkdir(parents=True)
    (site / "v1" / "pools").write_text(json.dumps({"pools": [{"id": "x"}]}))
    (site / "v1" / "health").write_text("<html>hello</html>")

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=site))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_non_json_error_body_still_says_what_happened(not_a_hub):
    with Client(not_a_hub, "cpn_x") as c, pytest.raises(NotFound) as caught:
        c.task("tsk_1")
    assert caught.value.status == 404
    assert "HTTP 404 from GET /v1/tasks/tsk_1" in caught.value.message
    assert "File not found" in caught.value.message  # the page's words, not its markup
    assert "<" not in caught.value.message


def test_a_5xx_is_a_plain_cpnet_error(not_a_hub):
    with Client(not_a_hub, "cpn_x") as c, pytest.raises(CpnetError) as caught:
        c.submit({"executors": [{"command": ["true"]}]})  # http.server answers POST with 501
    assert type(caught.value) is CpnetError and caught.value.status == 501


def test_an_answer_that_is_not_json_asks_whether_it_is_a_hub(not_a_hub):
    with Client(not_a_hub) as c, pytest.raises(CpnetError) as caught:
        c.health()
    assert caught.value.code == "bad_response"
    assert f"is {not_a_hub} a cpnet hub?" in caught.value.message


def test_an_answer_that_does_not_fit_the_models_blames_versions(not_a_hub):
    with Client(not_a_hub, "cpn_x") as c, pytest.raises(CpnetError) as caught:
        c.pools()
    assert caught.value.code == "bad_response"
    assert "version" in caught.value.message


# ---- connection errors and retries ------------------------------------------------------------


def test_an_unreachable_hub_says_what_to_do(dead_url, tap):
    with Client(dead_url, "cpn_x", transport=tap) as c, pytest.raises(HubUnavailable) as caught:
        c.health()
    message = caught.value.message
    assert f"is the hub running at {dead_url}?" in message
    assert "cpnet hub" in message
    assert len(tap.requests) == 3  # GETs are tried three times


def test_a_get_recovers_from_a_transient_connection_error(tapped, tap):
    tap.faults = [("before", httpx.ConnectError("refused"))]
    assert tapped.health()["status"] == "ok"
    assert len(tap.requests) == 2


def test_submit_adds_an_idempotency_key_and_reuses_it_on_retry(client, tapped, tap):
    # The hub creates the task but the answer is lost; the retry must not create a second one.
    tap.faults = [("after", httpx.ReadError("connection reset"))]
    view = tapped.submit(TaskSpec(**queued()))
    first, second = tap.requests
    key = body(first)["idempotency_key"]
    assert key and body(second)["idempotency_key"] == key
    assert task_ids(client) == [view.id]  # exactly one task on the hub


def test_submit_keeps_the_callers_idempotency_key(client, tapped, tap):
    spec = queued(idempotency_key="mine-1")
    first, again = tapped.submit(spec), tapped.submit(spec)
    assert first.id == again.id
    assert [body(r)["idempotency_key"] for r in tap.requests] == ["mine-1", "mine-1"]
    assert task_ids(client) == [first.id]


def test_two_submits_without_keys_are_two_tasks(client):
    spec = TaskSpec(**queued())
    a, b = client.submit(spec), client.submit(spec)
    assert a.id != b.id
    assert task_ids(client) == [b.id, a.id]
    assert spec.idempotency_key is None  # the caller's object is not changed


def test_cancel_is_not_retried(client, tapped, tap):
    task = client.submit(queued())
    tap.faults = [("before", httpx.ConnectError("refused"))]
    with pytest.raises(HubUnavailable):
        tapped.cancel(task.id)
    assert [r.method for r in tap.requests] == ["POST"]  # one try, no retry
    assert client.task(task.id).state is State.QUEUED  # and the hub never saw it


# ---- cursors ----------------------------------------------------------------------------------


def test_iter_tasks_follows_cursors_to_the_end(client, tapped, tap):
    created = [client.submit(queued(f"job-{i}")).id for i in range(12)]
    ids = [t.id for t in tapped.iter_tasks(page_size=5)]
    assert ids == created[::-1]  # all of them, newest first
    cursors = [r.url.params.get("cursor") for r in tap.requests]
    assert len(cursors) == 3 and cursors[0] is None
    assert None not in cursors[1:] and len(set(cursors)) == 3


def test_tasks_filters_by_state_name_and_tag(client):
    wanted = client.submit(queued("job-a", tags={"team": "nlp"}))
    canceled = client.submit(queued("job-c", tags={"team": "nlp"}))
    client.cancel(canceled.id)
    client.submit(queued("job-b", tags={"team": "cv"}))
    client.submit(queued("other", tags={"team": "nlp"}))
    page = client.tasks(
        state=[State.CANCELED, "queued"], name_prefix="job-", tags={"team": "nlp"}, limit=5
    )
    assert [t.id for t in page.tasks] == [canceled.id, wanted.id]
    assert [t.id for t in client.tasks(state="canceled").tasks] == [canceled.id]
    assert len(client.tasks(limit=1).tasks) == 1


# ---- configuration ----------------------------------------------------------------------------


def write_config(path, hub: str, token: str) -> None:
    path.write_text(f'hub = "{hub}"\ntoken = "{token}"\n')


def test_config_file_is_used_when_nothing_else_is_given(isolated_config):
    write_config(isolated_config, "http://file-hub:1", "cpn_file")
    with Client() as c:
        assert (c.url, c.token) == ("http://file-hub:1", "cpn_file")


def test_env_beats_the_config_file(isolated_config, monkeypatch):
    write_config(isolated_config, "http://file-hub:1", "cpn_file")
    monkeypatch.setenv("CPNET_HUB", "http://env-hub:2")
    monkeypatch.setenv("CPNET_TOKEN", "cpn_env")
    with Client() as c:
        assert (c.url, c.token) == ("http://env-hub:2", "cpn_env")


def test_arguments_beat_env_and_file(isolated_config, monkeypatch):
    write_config(isolated_config, "http://file-hub:1", "cpn_file")
    monkeypatch.setenv("CPNET_HUB", "http://env-hub:2")
    monkeypatch.setenv("CPNET_TOKEN", "cpn_env")
    with Client("http://arg-hub:3/", "cpn_arg") as c:
        assert (c.url, c.token) == ("http://arg-hub:3", "cpn_arg")


def test_the_saved_token_only_goes_to_the_saved_hub(isolated_config):
    write_config(isolated_config, "http://file-hub:1", "cpn_file")
    with Client("http://file-hub:1/") as same:
        assert same.token == "cpn_file"
    with Client("http://elsewhere:9") as other:
        assert other.token is None


def test_the_config_file_reaches_the_real_hub(isolated_config, tenant: Tenant):
    write_config(isolated_config, tenant.url, tenant.token)
    with Client() as c:
        assert c.whoami().org_id == tenant.world.org_id


def test_defaults_without_any_configuration():
    with Client() as c:
        assert (c.url, c.token) == (DEFAULT_HUB, None)
        assert "token=none" in repr(c)


def test_a_broken_config_file_is_a_clear_error(isolated_config):
    isolated_config.write_text("hub = [unclosed")
    with pytest.raises(CpnetError) as caught:
        Client()
    assert str(isolated_config) in caught.value.message


def test_load_jwks_from_the_hub_and_from_a_file(tmp_path, net: Net):
    url = f"{net.hub.url}/.well-known/cpnet/keys.json"
    fetched = load_jwks(url)
    kid = fetched["keys"][0]["kid"]
    assert kid
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(fetched))
    assert load_jwks(str(path))["keys"][0]["kid"] == kid
    path.write_text("[]")
    with pytest.raises(BadRequest):
        load_jwks(str(path))
