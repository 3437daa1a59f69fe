"""The SDK against the real hub: typed results, errors, retries, cursors, configuration."""

from __future__ import annotations

import functools
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from cpnet.agent.settings import AgentConfigError, AgentSettings
from cpnet.client import (
    DEFAULT_HUB,
    BadRequest,
    BadSetting,
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
from tests.integration.procs import HubProc, make_world, wait_until

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


def test_wait_long_polls_one_request_per_move(tapped, tap, tmp_path: Path):
    """Each call after the first waits at the hub for the task to move: a task that sits in
    RUNNING for a while costs one request per state, not one per poll interval."""
    gate = tmp_path / "gate"
    task = tapped.submit({"executors": [{"command": gate_command(gate)}]})
    seen: list[State] = []
    ran: list[float] = []

    def update(view: TaskView) -> None:
        seen.append(view.state)
        if view.state is State.RUNNING and not ran:
            ran.append(time.monotonic())
            # Released 2 s later: ten poll intervals of the old wait().
            threading.Timer(2.0, gate.touch).start()

    before = len(tap.requests)
    done = tapped.wait(task.id, timeout=60, poll=0.2, on_update=update)
    assert done.state is State.COMPLETE and seen[-1] is State.COMPLETE
    assert seen == sorted(seen, key=ORDER.index) and len(seen) == len(set(seen)), seen
    gets = [r for r in tap.requests[before:] if r.method == "GET"]
    assert len(gets) == len(seen) <= 4, [str(r.url) for r in gets]
    assert all("wait_s=" in str(r.url) for r in gets[1:]), [str(r.url) for r in gets]


def test_a_task_get_waits_for_a_move_and_answers_it(client):
    task = client.submit(queued())
    canceller = threading.Timer(0.5, client.cancel, args=(task.id,))
    canceller.start()
    t0 = time.monotonic()
    view = client.task(task.id, wait_s=30, state=State.QUEUED)
    assert view.state is State.CANCELED  # answered when it moved, not after 30 s
    assert time.monotonic() - t0 < 29
    # Nothing moves: the answer comes when wait_s has passed, in the state it was.
    other = client.submit(queued())
    assert client.task(other.id, wait_s=0.5, state=State.QUEUED).state is State.QUEUED
    # An ended task answers at once, whatever the state given.
    assert client.task(task.id, wait_s=30, state=State.QUEUED).state is State.CANCELED


@pytest.mark.parametrize(
    ("query", "field"),
    [("wait_s=61", "wait_s"), ("wait_s=-1", "wait_s"), ("wait_s=1&state=SLEEPING", "state")],
)
def test_a_bad_wait_is_refused_naming_it(client, net: Net, tenant: Tenant, query, field):
    task = client.submit(queued())
    r = httpx.get(
        f"{net.hub.url}/v1/tasks/{task.id}?{query}",
        headers={"authorization": f"Bearer {tenant.token}"},
    )
    assert r.status_code in (400, 422), r.text
    assert r.json()["error"]["field"].endswith(field), r.text


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


def test_an_unreachable_hub_is_retried_for_the_window_then_says_what_to_do(dead_url, tap):
    notices: list[str] = []
    started = time.monotonic()
    with (
        Client(dead_url, "cpn_x", retry_window_s=1, on_retry=notices.append, transport=tap) as c,
        pytest.raises(HubUnavailable) as caught,
    ):
        c.health()
    assert time.monotonic() - started >= 1  # it kept trying for the whole window
    assert len(tap.requests) >= 2  # tried again ...
    assert notices == [  # ... and said so once
        f"hub at {dead_url} unreachable (ConnectError); retrying for up to 1 s…"
    ]
    message = caught.value.message
    assert "retried for 1 s" in message
    assert f"is the hub running at {dead_url}?" in message
    assert "cpnet hub" in message


def test_without_on_retry_the_notice_is_a_logged_warning(dead_url, caplog):
    with Client(dead_url, retry_window_s=0.3) as c, pytest.raises(HubUnavailable):
        c.pools()
    (record,) = [r for r in caplog.records if r.name == "cpnet.client"]
    assert record.levelname == "WARNING"
    assert f"hub at {dead_url} unreachable" in record.getMessage()


def test_the_retry_window_comes_from_the_environment(dead_url, tap, monkeypatch):
    monkeypatch.setenv("CPNET_RETRY_WINDOW_S", "0")  # 0: fail at once
    notices: list[str] = []
    with Client(dead_url, on_retry=notices.append, transport=tap) as c:
        assert c.retry_window_s == 0
        with pytest.raises(HubUnavailable):
            c.health()
    assert len(tap.requests) == 1 and notices == []
    monkeypatch.setenv("CPNET_RETRY_WINDOW_S", "soon")
    with pytest.raises(BadSetting) as caught:
        Client(dead_url)
    assert "CPNET_RETRY_WINDOW_S is 'soon', not a number of seconds" in caught.value.message
    monkeypatch.delenv("CPNET_RETRY_WINDOW_S")
    with Client(dead_url) as c:
        assert c.retry_window_s == 30


def test_an_unknown_host_name_is_not_retried():
    """A name that does not resolve is a typo, not a restart: no 30 s wait for it."""
    host = "no-such-host.invalid"  # RFC 2606: never resolves
    try:
        socket.getaddrinfo(host, 80)
    except socket.gaierror as err:
        if err.errno != socket.EAI_NONAME:
            pytest.skip(f"this machine's resolver answers {err} for {host}, not 'no such name'")
    else:
        pytest.skip(f"this machine's resolver finds {host}")
    notices: list[str] = []
    with (
        Client(f"http://{host}:8470", retry_window_s=20, on_retry=notices.append) as c,
        pytest.raises(HubUnavailable) as caught,
    ):
        c.health()
    assert notices == []
    assert "retried" not in caught.value.message


def test_a_get_recovers_from_a_transient_connection_error(tapped, tap):
    tap.faults = [("before", httpx.ConnectError("refused"))]
    assert tapped.health()["status"] == "ok"
    assert len(tap.requests) == 2


def test_submit_adds_an_idempotency_key_and_reuses_it_on_retry(client, tapped, tap, caplog):
    # The hub creates the task but the answer is lost; the retry must not create a second one.
    tap.faults = [("after", httpx.ReadError("connection reset"))]
    view = tapped.submit(TaskSpec(**queued()))
    first, second = tap.requests
    key = body(first)["idempotency_key"]
    assert key and body(second)["idempotency_key"] == key
    assert task_ids(client) == [view.id]  # exactly one task on the hub
    assert [r for r in caplog.records if r.name == "cpnet.client"] == []  # one reset: no news


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


@pytest.mark.parametrize(
    "fault",
    [
        ("before", httpx.ConnectError("refused")),  # the hub never saw the first try
        ("after", httpx.ReadError("connection reset")),  # it canceled, the answer was lost
    ],
    ids=["never-sent", "answer-lost"],
)
def test_cancel_is_sent_again_as_the_hub_treats_it_as_idempotent(client, tapped, tap, fault):
    task = client.submit(queued())
    tap.faults = [fault]
    assert tapped.cancel(task.id).state is State.CANCELED
    assert [r.method for r in tap.requests] == ["POST", "POST"]
    assert [e.to_state for e in client.events(task.id)] == [State.QUEUED, State.CANCELED]


def test_a_call_that_is_not_idempotent_is_not_sent_again_once_it_may_have_arrived(
    client, tapped, tap
):
    before = len(client.tokens())
    tap.faults = [("after", httpx.ReadError("connection reset"))]
    with pytest.raises(HubUnavailable) as caught:
        tapped.create_token("lost answer")
    assert [r.method for r in tap.requests] == ["POST"]  # one try: a second would be a 2nd token
    assert "may have reached the hub, so it was not sent again" in caught.value.message
    assert len(client.tokens()) == before + 1  # the hub did create it


def test_a_call_that_is_not_idempotent_is_retried_when_it_never_connected(client, tapped, tap):
    before = len(client.tokens())
    tap.faults = [("before", httpx.ConnectError("refused"))]
    assert tapped.create_token("second try").token
    assert [r.method for r in tap.requests] == ["POST", "POST"]
    assert len(client.tokens()) == before + 1


def test_submissions_ride_out_a_hub_killed_and_restarted(hub: HubProc):
    """A burst of submissions while the hub is SIGKILLed and restarted (same port, same data):
    every one succeeds, and the hub holds exactly one task per submission."""
    token = make_world(hub, {}, org="burst").user_token
    done: list[str] = []  # ids of the tasks the submissions returned
    failures: list[BaseException] = []
    notices: list[str] = []
    noticed, stop, lock = threading.Event(), threading.Event(), threading.Lock()

    def notice(message: str) -> None:
        notices.append(message)
        noticed.set()

    # A window far longer than a restart takes, even on a loaded machine: what is tested is that
    # the calls wait for the hub, not how fast it comes back.
    with Client(hub.url, token, retry_window_s=120, on_retry=notice) as c:

        def burst() -> None:
            while not stop.is_set():
                try:
                    view = c.submit(queued())
                except BaseException as err:
                    failures.append(err)
                    return
                with lock:
                    done.append(view.id)

        threads = [threading.Thread(target=burst) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            wait_until(lambda: len(done) >= 30 or failures, 60, "30 submissions")
            hub.kill()  # SIGKILL, mid-burst
            wait_until(lambda: noticed.is_set() or failures, 60, "the client to retry")
            hub.start()  # same port, same data directory
            restarted_at = len(done)
            wait_until(
                lambda: len(done) >= restarted_at + 30 or failures, 120, "30 more submissions"
            )
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=180)
    assert failures == []
    assert notices and notices[0].startswith(f"hub at {hub.url} unreachable")
    with hub.client(token) as c:
        on_hub = [t.id for t in c.iter_tasks(page_size=1000)]
    assert len(set(done)) == len(done)  # each submission got its own task ...
    assert sorted(on_hub) == sorted(done)  # ... the hub has each, and nothing twice or extra


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


# ---- values no request could carry ------------------------------------------------------------


def test_a_token_with_a_typographic_dash_is_refused_when_the_client_is_built(net: Net):
    with pytest.raises(BadSetting) as caught:
        Client(net.hub.url, "abc—def")
    err = caught.value
    assert isinstance(err, BadRequest) and err.field == "token"
    assert err.message == (
        "the token has '—' (U+2014) at position 4, which no cpnet token contains; "
        "copy it again from where it was issued"
    )


def test_a_bad_token_says_where_it_came_from(isolated_config, monkeypatch):
    monkeypatch.setenv("CPNET_TOKEN", "cpn_x\u00a0y")  # a non-breaking space
    with pytest.raises(BadSetting) as caught:
        Client("http://127.0.0.1:1")
    assert "the token in CPNET_TOKEN has '\\xa0' (U+00A0) at position 6" in caught.value.message
    monkeypatch.delenv("CPNET_TOKEN")
    write_config(isolated_config, "http://127.0.0.1:1", "cpn_ok\u2013")
    with pytest.raises(BadSetting) as caught:
        Client()
    assert f"the token in {isolated_config} has '–' (U+2013)" in caught.value.message


def test_surrounding_whitespace_is_not_part_of_the_token(tenant: Tenant):
    with Client(tenant.url, f" {tenant.token}\n") as c:
        assert c.whoami().org_id == tenant.world.org_id


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://hub—x:8470", "has '—' (U+2014) at position 11"),
        ("not a url", "has ' ' (U+0020) at position 4"),
        ("ftp://hub:8470", "its scheme is 'ftp', not http or https"),
        ("hub:port", "is not a URL: Invalid port: 'port'"),
        ("hub:99999", "port 99999 is out of range"),
        ("http://", "it has no host"),
        ("http://hub:8470/?x=1", "a hub URL has no ?query or #fragment"),
    ],
)
def test_a_hub_url_no_request_could_go_to_is_refused(url, said):
    with pytest.raises(BadSetting) as caught:
        Client(url, "cpn_x")
    assert caught.value.message.startswith(f"the hub URL ({url!r}) ")
    assert said in caught.value.message
    assert "http://HOST:PORT" in caught.value.message


def test_a_bad_hub_url_in_the_environment_or_config_file_is_named(isolated_config, monkeypatch):
    monkeypatch.setenv("CPNET_HUB", "http://hub\u2010x")  # a typographic hyphen
    with pytest.raises(BadSetting, match="the hub URL in CPNET_HUB"):
        Client()
    monkeypatch.delenv("CPNET_HUB")
    write_config(isolated_config, "http://hub x:1", "cpn_file")
    with pytest.raises(BadSetting, match=f"the hub URL in {isolated_config}"):
        Client()


def test_agent_settings_refuse_a_bad_token_or_hub_url():
    with pytest.raises(AgentConfigError, match=r"'—' \(U\+2014\) at position 4"):
        AgentSettings(hub_url="http://127.0.0.1:1", token="abc—def")
    with pytest.raises(AgentConfigError, match="the hub URL"):
        AgentSettings(hub_url="http://hub—x:8470", token="cpn_x")


@pytest.mark.parametrize(
    ("ident", "said"),
    [
        ("abc—", "no task 'abc—'"),  # the hub's 404: the id travels percent-encoded
        ("x y", "no task 'x y'"),
        ("..", "no task '..'"),  # not a relative path to /v1
        (".", "no task '.'"),  # not the task list
    ],
)
def test_odd_task_ids_reach_the_hub_as_ids(client, ident, said):
    with pytest.raises(NotFound) as caught:
        client.task(ident)
    assert caught.value.message == said


def test_an_empty_id_is_refused_before_sending(tapped, tap):
    with pytest.raises(BadRequest, match="an empty id"):
        tapped.task("")
    assert tap.requests == []
