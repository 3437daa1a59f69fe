"""Rate limits through a real hub: a burst gets 429 with Retry-After naming the limit, the SDK
waits it out within its retry window, anonymous calls have their own (per address) budget, and
an agent keeps heartbeating and running tasks while a user of its hub is being throttled."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cpnet.client import Client, CpnetError
from cpnet.tasks.states import State
from services import free_port
from tests.integration.procs import AgentProc, HubProc, make_world, pool, wait_until

pytestmark = pytest.mark.integration

USER_RATE = "5/s,10"
ANON_RATE = "5/s,10"


def _hub(tmp_path: Path, env: dict[str, str]) -> Iterator[HubProc]:
    h = HubProc(tmp_path / "hub", free_port(), env=env)
    h.data_dir.mkdir()
    h.init()
    h.start()
    yield h
    h.kill()


@pytest.fixture
def slow_hub(tmp_path: Path) -> Iterator[HubProc]:
    yield from _hub(
        tmp_path, {"CPNET_RATE_LIMIT": USER_RATE, "CPNET_RATE_LIMIT_ANONYMOUS": ANON_RATE}
    )


def _burst(
    url: str, n: int, headers: dict[str, str], path: str = "/v1/tasks"
) -> list[httpx.Response]:
    with httpx.Client(base_url=url, headers=headers, timeout=10) as c:
        return [c.get(path) for _ in range(n)]


def test_a_burst_gets_429_with_retry_after_and_the_sdk_waits_it_out(slow_hub: HubProc) -> None:
    world = make_world(slow_hub, {})
    auth = {"authorization": f"Bearer {world.user_token}"}
    answers = _burst(slow_hub.url, 40, auth)
    counts = Counter(r.status_code for r in answers)
    assert set(counts) == {200, 429}, counts
    # the burst and what refilled meanwhile, no more
    assert 10 <= counts[200] <= 10 + 5 * 10, counts
    refused = next(r for r in answers if r.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1
    err = refused.json()["error"]
    assert err["code"] == "rate_limited"
    assert err["limit"] == "5/s,10"
    assert "retry after" in err["message"]

    # Another token of the same organisation has its own bucket.
    other = {"authorization": f"Bearer {world.padmin_token}"}
    assert httpx.get(f"{slow_hub.url}/v1/tasks", headers=other).status_code == 200

    # The SDK, within its retry window, waits for Retry-After and gets through every call.
    _burst(slow_hub.url, 20, auth)  # empty the bucket again
    with Client(slow_hub.url, world.user_token, retry_window_s=30) as sdk:
        t0 = time.monotonic()
        for _ in range(15):
            sdk.tasks()
        assert time.monotonic() - t0 >= 0.5  # it had to wait for refills
    # Without a retry window the 429 is the caller's error, naming the limit.
    _burst(slow_hub.url, 20, auth)
    sdk = Client(slow_hub.url, world.user_token, retry_window_s=0)
    with sdk, pytest.raises(CpnetError) as info:
        for _ in range(20):
            sdk.tasks()
    assert info.value.status == 429 and info.value.code == "rate_limited"


@pytest.fixture
def stingy_hub(tmp_path: Path) -> Iterator[HubProc]:
    """Anonymous calls refill one token every 5 s: a test's requests cannot outpace the refill
    however slowly a busy machine serves them (at 5/s, five requests 0.2 s apart all passed)."""
    yield from _hub(tmp_path, {"CPNET_RATE_LIMIT_ANONYMOUS": "0.2/s,5"})


def test_anonymous_calls_and_unknown_tokens_share_the_address_budget(stingy_hub: HubProc) -> None:
    answers = _burst(stingy_hub.url, 12, {}, path="/v1/health")
    assert Counter(r.status_code for r in answers)[429] > 0
    # guessed tokens cannot buy fresh buckets: each is charged to the address
    guessed = [
        httpx.get(f"{stingy_hub.url}/v1/tasks", headers={"authorization": f"Bearer cpn_guess{i}"})
        for i in range(5)
    ]
    assert any(r.status_code == 429 for r in guessed), [r.status_code for r in guessed]


def test_an_agent_is_never_starved_by_a_throttled_user(
    slow_hub: HubProc, tmp_path: Path, agents
) -> None:
    world = make_world(slow_hub, {"a": ("general", "440100")})
    agent = AgentProc(
        slow_hub,
        world.site_tokens["a"],
        tmp_path / "agent",
        [pool("cpu", cores=2)],
        heartbeat_s=0.5,
    )
    agent.start()
    agents.append(agent)
    with slow_hub.client(world.padmin_token) as pa:
        wait_until(lambda: pa.pools(), 30, "pool online", log=agent.log)

    stop = threading.Event()
    seen: Counter[int] = Counter()

    def hammer() -> None:
        with httpx.Client(
            base_url=slow_hub.url,
            headers={"authorization": f"Bearer {world.user_token}"},
            timeout=10,
        ) as c:
            while not stop.is_set():
                seen[c.get("/v1/tasks").status_code] += 1

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        with slow_hub.client(world.padmin_token) as pa:
            wait_until(lambda: seen[429] >= 20, 30, "the user to be throttled")
            beat = pa.pools()[0].last_heartbeat
            tasks = [
                pa.submit({"executors": [{"command": ["true"]}], "resources": {"cpu_cores": 1}})
                for _ in range(3)
            ]
            for t in tasks:
                assert pa.wait(t.id, timeout=60).state is State.COMPLETE
            # heartbeats at 0.5 s went on meanwhile and the pool stayed online
            (after,) = pa.pools()
            assert after.online and beat is not None and after.last_heartbeat > beat
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert seen[429] > seen[200], seen
    log = agent.log.read_text()
    # What a throttled agent would say: the client's "rate limited by the hub; retrying", or
    # an error naming "HTTP 429". (A bare "429" would also match a timestamp's milliseconds.)
    throttled = re.search(r"rate[ _-]?limit|HTTP 429|too many requests", log, re.IGNORECASE)
    assert throttled is None, log[-2000:]
