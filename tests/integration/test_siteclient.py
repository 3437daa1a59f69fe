"""The agent's side of the SDK (cpnet.siteclient.SiteClient) against a real hub: the agent API's
typed messages, and its retry policy — every failure retried until the hub answers or the agent
stops, 4xx raised at once. Faults are injected only at the network boundary."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from cpnet.client import BadRequest, Stopped, Unauthorized
from cpnet.siteclient import SiteClient
from cpnet.tasks.states import State
from tests.integration.cli.conftest import FaultyNetworkTransport
from tests.integration.procs import HubProc, make_world
from tests.services import free_port

pytestmark = pytest.mark.integration

POOLS = {"pools": [{"name": "cpu", "hardware": {"cpu_cores": 2, "memory_gb": 4}}]}


def site_of(hub: HubProc) -> tuple[str, str, str]:
    """(site id, site token, user token) of a new site."""
    world = make_world(hub, {"sz": ("general", "440300")})
    return world.site_ids["sz"], world.site_tokens["sz"], world.user_token


def test_the_agent_api_in_typed_messages(hub: HubProc) -> None:
    site, token, user = site_of(hub)
    stop = threading.Event()
    with SiteClient(hub.url, token, stop=stop) as c:
        assert c.whoami().site_id == site
        reg = c.register(site, POOLS)
        assert list(reg.pools) == ["cpu"]
        beat = c.heartbeat(site, {"pools": [], "running_attempts": ["att_gone"]})
        assert beat.unknown == ["att_gone"]
        with hub.client(user) as u:
            task = u.submit({"executors": [{"command": ["true"]}]})
        got = c.assignments(site, 10)
        (a,) = got.assignments
        assert a.task_id == task.id and a.pool_name == "cpu"
        at = datetime.now(UTC).isoformat()
        updates = [
            f'{{"attempt_id": "{a.attempt_id}", "state": "{st}", "at": "{at}"}}'
            for st in ("RUNNING", "COMPLETE")
        ]
        outcomes = c.post_updates(site, updates).results
        assert [o.attempt_id for o in outcomes] == [a.attempt_id] * 2, outcomes
        assert not any(o.cancel for o in outcomes), outcomes
        with hub.client(user) as u:
            assert u.task(task.id).state is State.COMPLETE


def test_failures_are_retried_until_the_hub_answers(hub: HubProc) -> None:
    site, token, _ = site_of(hub)
    faults: list[tuple[str, Exception | int]] = [
        ("status", 503),
        ("before", httpx.ConnectError("refused")),
        ("after", httpx.ReadTimeout("no answer")),  # the hub registered; the answer was lost
        ("status", 502),
    ]
    transport = FaultyNetworkTransport(faults)
    notices: list[str] = []
    with SiteClient(
        hub.url, token, stop=threading.Event(), on_retry=notices.append, transport=transport
    ) as c:
        reg = c.register(site, POOLS)
    assert list(reg.pools) == ["cpu"]
    assert len(transport.requests) == 5  # four failures, then the answer
    assert len(notices) == 1 and "retrying until it answers" in notices[0], notices


def test_a_4xx_is_raised_at_once(hub: HubProc) -> None:
    site, token, _ = site_of(hub)
    transport = FaultyNetworkTransport()
    with SiteClient(hub.url, token, stop=threading.Event(), transport=transport) as c:
        with pytest.raises(BadRequest) as e:
            c.register(site, {"pools": "not a list"})
        assert e.value.status in (400, 422)
        with pytest.raises(Unauthorized):
            c.register("ste_someone_else", POOLS)  # another site's: 403
    assert len(transport.requests) == 2  # neither was sent again
    with SiteClient(hub.url, "cpn_wrong", stop=threading.Event()) as c, pytest.raises(Unauthorized):
        c.whoami()


def test_stopping_ends_the_retries(tmp_path: Path) -> None:
    stop = threading.Event()
    notices: list[str] = []
    dead = f"http://127.0.0.1:{free_port()}"
    with SiteClient(dead, "cpn_x", stop=stop, on_retry=notices.append) as c:
        threading.Timer(0.5, stop.set).start()
        with pytest.raises(Stopped):  # the window is unbounded: only stop ends the retries
            c.whoami()
    assert len(notices) == 1
