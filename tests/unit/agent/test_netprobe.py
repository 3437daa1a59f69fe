"""The agent's network probes: bounded, timed with the clock given, samples from transfers."""

from __future__ import annotations

import itertools

from cpnet.agent.netprobe import MAX_ORIGINS, NetProber, transfer_samples
from cpnet.network.records import MAX_SAMPLES, ProbeSample
from cpnet.tasks.model import TransferRecord


def rec(url: str, size: int, seconds: float, **kw) -> TransferRecord:  # type: ignore[no-untyped-def]
    return TransferRecord(direction="in", url=url, path="x", size_bytes=size, seconds=seconds, **kw)


def test_transfers_give_throughput_samples_to_their_origin() -> None:
    got = transfer_samples(
        [
            rec("https://data.org/big.bin", 10_000_000, 2.0),  # 40 Mbit/s
            rec("cpnet://blobs/" + "a" * 64, 4_000_000, 1.0),  # from the hub
            rec("https://data.org/small", 1000, 0.001),  # too small to say anything
            rec("(inline content)", 10_000_000, 1.0),
            rec("s3://bucket/k", 3_000_000, 1.0, resumed_from=2_900_000),  # 100 kB moved
        ],
        now=5.0,
    )
    assert [(s.dst, round(s.mbps or 0, 3), s.rtt_ms) for s in got] == [
        ("url:https://data.org", 40.0, None),
        ("hub", 32.0, None),
    ]


def fake_timer(steps: list[float]):  # type: ignore[no-untyped-def]
    """A monotonic clock that advances by the given steps in turn (then by 0)."""
    t = [0.0]
    it = itertools.chain(steps, itertools.repeat(0.0))

    def now() -> float:
        t[0] += next(it)
        return t[0]

    return now


def test_a_hub_probe_is_three_round_trips_and_one_bounded_download() -> None:
    calls: list[int] = []
    posted: list[list[ProbeSample]] = []
    # each timed() reads the timer twice: start (advance 0) and end (advance the duration)
    timer = fake_timer([0, 0.010, 0, 0.002, 0, 0.004, 0, 1.004])
    p = NetProber(
        rtt_hub=lambda: calls.append(0),
        download_hub=lambda n: calls.append(n) or n,
        post=posted.append,
        interval_s=60,
        probe_bytes=1_000_000,
        clock=lambda: 123.0,
        timer=timer,
    )
    p.origins.clear()
    p.round()
    assert calls == [0, 0, 0, 1_000_000]
    assert p.flush() == 1
    (s,) = posted[0]
    assert s.dst == "hub" and s.at == 123.0
    assert round(s.rtt_ms or 0, 6) == 4.0  # the median of 10, 2 and 4 ms
    assert round(s.mbps or 0, 6) == 8.0  # 1 MB in 1.004 s less one round trip
    assert p.flush() == 0


def test_origins_are_remembered_bounded_and_probed_once_per_round() -> None:
    p = NetProber(lambda: None, lambda n: n, lambda b: None, 60, 0)
    p.saw_transfers([rec(f"https://h{i}.org/f", 10, 0.1) for i in range(MAX_ORIGINS + 3)])
    p.saw_transfers([rec("s3://bucket/key", 10, 0.1)])  # no HEAD to an s3 origin
    heads: list[str] = []
    got = p.probe_origins(head=heads.append)
    assert len(heads) == MAX_ORIGINS and len(got) == MAX_ORIGINS
    assert "url:https://h0.org" not in {s.dst for s in got}  # the least recent went first
    assert all(s.rtt_ms is not None and s.mbps is None for s in got)


def test_flush_posts_in_bounded_batches() -> None:
    posted: list[list[ProbeSample]] = []
    p = NetProber(lambda: None, lambda n: n, posted.append, 60, 0)
    big = [rec("https://d.org/x", 1_000_000, 0.1) for _ in range(MAX_SAMPLES + 1)]
    p.saw_transfers(big)
    assert p.flush() == MAX_SAMPLES + 1
    assert [len(b) for b in posted] == [MAX_SAMPLES, 1]


def test_peers_asked_for_are_probed_once_per_interval() -> None:
    from cpnet.agent.netprobe import NetProber

    t = [0.0]
    gets: list[tuple[str, int]] = []
    p = NetProber(lambda: None, lambda n: n, lambda b: None, 60, 1000, timer=lambda: t[0])

    def get(url: str, n: int) -> int:
        gets.append((url, n))
        t[0] += 0.001
        return n

    p.ask_peers({"site:b": "http://10.0.0.2:8471"})
    (s,) = p.probe_peers(get)
    assert s.dst == "site:b" and s.rtt_ms is not None and s.mbps is not None
    assert gets == [("http://10.0.0.2:8471", 0)] * 3 + [("http://10.0.0.2:8471", 1000)]
    p.ask_peers({"site:b": "http://10.0.0.2:8471"})  # asked again at the next heartbeat
    assert p.probe_peers(get) == []  # not within the interval
    t[0] += 61
    p.ask_peers({"site:b": "http://10.0.0.2:8471"})
    assert len(p.probe_peers(get)) == 1


def test_the_probe_listener_serves_bounded_bytes_at_a_bounded_rate(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import httpx

    from cpnet.agent import netprobe
    from cpnet.network.records import MAX_PROBE_BYTES

    monkeypatch.setattr(netprobe, "LISTENER_PER_MINUTE", 3)
    listener = netprobe.ProbeListener("127.0.0.1", 0).start()
    try:
        base = f"http://127.0.0.1:{listener.port}"
        assert netprobe._download(base, 100_000) == 100_000
        r = httpx.get(f"{base}/v1/network/probe", params={"bytes": MAX_PROBE_BYTES + 1})
        assert r.status_code == 400 and "bytes must be" in r.text
        assert httpx.get(f"{base}/elsewhere").status_code == 404
        assert httpx.get(f"{base}/v1/network/probe", params={"bytes": 1}).status_code == 200
        assert httpx.get(f"{base}/v1/network/probe", params={"bytes": 1}).status_code == 200
        r = httpx.get(f"{base}/v1/network/probe", params={"bytes": 1})
        assert r.status_code == 429 and "try later" in r.text
    finally:
        listener.close()


def test_probe_listen_must_be_an_address_peers_reach() -> None:
    import pytest

    from cpnet.agent.settings import AgentConfigError, check_listen

    assert check_listen("10.0.0.5:8471") == ("10.0.0.5", 8471)
    assert check_listen("[::1]:8471") == ("::1", 8471)
    for bad in ("8471", "host:", "host:99999", "0.0.0.0:8471"):
        with pytest.raises(AgentConfigError, match="probe_listen"):
            check_listen(bad)
