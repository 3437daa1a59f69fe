"""The SDK against the stand-in hub: typed results, errors, retries, cursors, configuration."""

from __future__ import annotations

import json

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

from .conftest import TOKEN, FakeHub, error

HUB = "http://hub.test:8470"


@pytest.fixture
def client(fake_hub_transport) -> Client:
    with Client(HUB, TOKEN, transport=fake_hub_transport) as c:
        yield c


def body(request: httpx.Request) -> dict:
    return json.loads(request.content)


# ---- typed results ----------------------------------------------------------------------------


def test_submit_returns_a_task_view_and_sends_the_token(client, fake_hub: FakeHub):
    view = client.submit({"name": "hello", "executors": [{"command": ["echo", "hi"]}]})
    assert isinstance(view, TaskView)
    assert view.state is State.QUEUED
    assert view.spec.executors[0].command == ["echo", "hi"]
    assert fake_hub.requests[0].headers["Authorization"] == f"Bearer {TOKEN}"


def test_pools_are_pool_records_and_filters_become_query_params(client, fake_hub: FakeHub):
    pools = client.pools(
        type="intelligent",
        region="44",
        accelerator="h100",
        min_gpus=2,
        labels={"rack": "a1", "zone": "b"},
        online="any",
    )
    assert [type(p) for p in pools] == [PoolRecord]
    assert pools[0].hardware.gpus == 8
    params = fake_hub.requests[0].url.params
    assert params["type"] == "intelligent"
    assert params["region"] == "44"
    assert params["accelerator"] == "h100"
    assert params["min_gpus"] == "2"
    assert params.get_list("label") == ["rack=a1", "zone=b"]
    assert params["online"] == "any"
    assert "min_cores" not in params


def test_pools_default_to_online_only(client, fake_hub: FakeHub):
    client.pools()
    assert fake_hub.requests[0].url.params["online"] == "true"


def test_events_are_typed(client, fake_hub: FakeHub):
    task = client.submit({"executors": [{"command": ["true"]}]})
    events = client.events(task.id)
    assert all(isinstance(e, TaskEvent) for e in events)
    assert events[0].to_state is State.QUEUED


def test_wait_polls_until_terminal_and_reports_each_view(client):
    task = client.submit({"executors": [{"command": ["true"]}]})
    seen: list[State] = []
    done = client.wait(task.id, timeout=5, poll=0.001, on_update=lambda v: seen.append(v.state))
    assert done.state is State.COMPLETE
    assert seen == [State.RUNNING, State.COMPLETE]


def test_wait_times_out_with_a_cpnet_error(client, fake_hub: FakeHub):
    fake_hub.progress = ["QUEUED"]  # never moves
    task = client.submit({"executors": [{"command": ["sleep", "99"]}]})
    with pytest.raises(WaitTimeout) as caught:
        client.wait(task.id, timeout=0.05, poll=0.01)
    assert isinstance(caught.value, CpnetError)
    assert "QUEUED" in caught.value.message


def test_a_bad_spec_is_refused_before_it_is_sent(client, fake_hub: FakeHub):
    with pytest.raises(BadRequest) as caught:
        client.submit({"executors": [{"command": ["x"], "stdout": "../escape"}]})
    assert caught.value.field == "executors.0.stdout"
    assert fake_hub.requests == []


# ---- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequest),
        (401, Unauthorized),
        (403, Unauthorized),
        (404, NotFound),
        (409, Conflict),
        (413, BadRequest),
        (422, BadRequest),
        (500, CpnetError),
        (503, CpnetError),
    ],
)
def test_error_statuses_map_to_exception_classes(client, fake_hub: FakeHub, status, cls):
    fake_hub.forced["/v1/pools"] = error(status, "some_code", "what went wrong", field="type")
    with pytest.raises(cls) as caught:
        client.pools()
    err = caught.value
    assert type(err) is cls
    assert (err.status, err.code, err.message, err.field) == (
        status,
        "some_code",
        "what went wrong",
        "type",
    )
    assert str(err) == "what went wrong"


def test_every_error_class_is_a_cpnet_error():
    for cls in (NotFound, Unauthorized, BadRequest, Conflict, HubUnavailable, WaitTimeout):
        assert issubclass(cls, CpnetError)


def test_unknown_task_is_not_found(client):
    with pytest.raises(NotFound) as caught:
        client.task("t-nope")
    assert caught.value.code == "not_found"
    assert "cpnet tasks" in caught.value.hint


def test_cancel_returns_the_task(client):
    task = client.submit({"executors": [{"command": ["true"]}]})
    assert client.cancel(task.id).state is State.CANCELED


def test_a_wrong_token_is_unauthorized_with_a_login_hint(fake_hub_transport):
    with (
        Client(HUB, "cpn_wrong", transport=fake_hub_transport) as c,
        pytest.raises(Unauthorized) as caught,
    ):
        c.whoami()
    assert caught.value.status == 401
    assert "cpnet login" in caught.value.hint


def test_a_non_json_error_body_still_says_what_happened(client, fake_hub: FakeHub):
    fake_hub.forced["/v1/pools"] = httpx.Response(502, text="<html>Bad Gateway</html>")
    with pytest.raises(CpnetError) as caught:
        client.pools()
    assert caught.value.status == 502
    assert "HTTP 502 from GET /v1/pools" in caught.value.message
    assert "Bad Gateway" in caught.value.message


def test_a_malformed_identifier_shows_the_hubs_message(client):
    with pytest.raises(BadRequest) as caught:
        client.resolve("cn.bad!id")
    assert "'!' is not allowed" in caught.value.message


def test_an_answer_that_does_not_fit_the_models_blames_versions(client, fake_hub: FakeHub):
    fake_hub.forced["/v1/pools"] = httpx.Response(200, json={"pools": [{"id": "x"}]})
    with pytest.raises(CpnetError) as caught:
        client.pools()
    assert caught.value.code == "bad_response"
    assert "version" in caught.value.message


# ---- connection errors and retries ------------------------------------------------------------


def test_an_unreachable_hub_says_what_to_do(fake_hub: FakeHub, fake_hub_transport):
    refused = httpx.ConnectError("connection refused")
    fake_hub.failures = [("before", refused)] * 3
    with (
        Client(HUB, TOKEN, transport=fake_hub_transport) as c,
        pytest.raises(HubUnavailable) as caught,
    ):
        c.health()
    message = caught.value.message
    assert f"is the hub running at {HUB}?" in message
    assert "cpnet hub" in message
    assert len(fake_hub.requests) == 3  # GETs are tried three times


def test_a_get_recovers_from_a_transient_connection_error(client, fake_hub: FakeHub):
    fake_hub.failures = [("before", httpx.ConnectError("refused"))]
    assert client.health()["status"] == "ok"
    assert len(fake_hub.requests) == 2


def test_submit_adds_an_idempotency_key_and_reuses_it_on_retry(client, fake_hub: FakeHub):
    # The hub creates the task but the answer is lost; the retry must not create a second one.
    fake_hub.failures = [("after", httpx.ReadError("connection reset"))]
    view = client.submit(TaskSpec(executors=[{"command": ["echo", "hi"]}]))
    first, second = fake_hub.requests
    key = body(first)["idempotency_key"]
    assert key and body(second)["idempotency_key"] == key
    assert len(fake_hub.tasks) == 1
    assert view.id == fake_hub.tasks[0]["id"]


def test_submit_keeps_the_callers_idempotency_key(client, fake_hub: FakeHub):
    spec = {"executors": [{"command": ["true"]}], "idempotency_key": "mine-1"}
    first, again = client.submit(spec), client.submit(spec)
    assert first.id == again.id
    assert [body(r)["idempotency_key"] for r in fake_hub.requests] == ["mine-1", "mine-1"]


def test_two_submits_without_keys_are_two_tasks(client, fake_hub: FakeHub):
    spec = TaskSpec(executors=[{"command": ["true"]}])
    client.submit(spec)
    client.submit(spec)
    assert len(fake_hub.tasks) == 2
    assert spec.idempotency_key is None  # the caller's object is not changed


def test_cancel_is_not_retried(client, fake_hub: FakeHub):
    task = client.submit({"executors": [{"command": ["true"]}]})
    fake_hub.failures = [("before", httpx.ConnectError("refused"))]
    with pytest.raises(HubUnavailable):
        client.cancel(task.id)
    assert [r.method for r in fake_hub.requests] == ["POST", "POST"]  # submit + one cancel


# ---- cursors ----------------------------------------------------------------------------------


def test_iter_tasks_follows_cursors_to_the_end(client, fake_hub: FakeHub):
    for i in range(250):
        fake_hub.add_task({"name": f"job-{i}", "executors": [{"command": ["true"]}]})
    ids = [t.id for t in client.iter_tasks(page_size=100)]
    assert len(ids) == 250
    assert ids[0] == "t-0249" and ids[-1] == "t-0000"  # newest first
    cursors = [r.url.params.get("cursor") for r in fake_hub.requests]
    assert cursors == [None, "100", "200"]


def test_tasks_passes_filters(client, fake_hub: FakeHub):
    client.tasks(state=[State.RUNNING, "queued"], name_prefix="job-", tags={"team": "nlp"}, limit=5)
    params = fake_hub.requests[0].url.params
    assert params.get_list("state") == ["RUNNING", "QUEUED"]
    assert params["name_prefix"] == "job-"
    assert params.get_list("tag") == ["team=nlp"]
    assert params["limit"] == "5"


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


def test_defaults_without_any_configuration():
    with Client() as c:
        assert (c.url, c.token) == (DEFAULT_HUB, None)
        assert "token=none" in repr(c)


def test_a_broken_config_file_is_a_clear_error(isolated_config):
    isolated_config.write_text("hub = [unclosed")
    with pytest.raises(CpnetError) as caught:
        Client()
    assert str(isolated_config) in caught.value.message


def test_load_jwks_from_a_file(tmp_path, fake_hub: FakeHub):
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keys": [fake_hub.key.jwk()]}))
    assert load_jwks(str(path))["keys"][0]["kid"] == fake_hub.key.key_id
    path.write_text("[]")
    with pytest.raises(BadRequest):
        load_jwks(str(path))
