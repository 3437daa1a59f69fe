"""The agent's network probes: round trip and throughput to the hub and to its tasks' data
origins, reported to the hub's network map (docs/network.md).

Bounds, so probes never become traffic of their own:

- to the hub, every ``network_probe_interval_s`` (at least ``MIN_PROBE_INTERVAL_S``): three tiny
  requests (RTT, their median) and one download of ``network_probe_bytes`` (at most
  ``records.MAX_PROBE_BYTES``);
- to a data origin (``url:<scheme>://<host>``) an input of a task came from: one HEAD request
  per origin per interval, at most ``MAX_ORIGINS`` origins (the most recently used); its
  throughput comes from the transfers the agent made anyway (``TransferRecord``), never from
  extra downloads;
- to a peer site the hub names in a heartbeat reply (``HeartbeatReply.probe``, when the peer's
  agent listens with ``--probe-listen``): the same RTT and download as to the hub, against the
  peer's listener, at most once per interval per peer;
- this agent's own listener (``ProbeListener``) answers at most ``records.MAX_PROBE_BYTES`` per
  request and at most ``LISTENER_PER_MINUTE`` requests a minute (429 beyond);
- samples are posted in batches of at most ``records.MAX_SAMPLES``.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import httpx

from cpnet.agent.settings import MIN_PROBE_INTERVAL_S
from cpnet.network.model import HUB, url_place
from cpnet.network.records import MAX_PROBE_BYTES, MAX_SAMPLES, ProbeSample
from cpnet.tasks.model import TransferRecord

log = logging.getLogger("cpnet.agent.network")

MAX_ORIGINS = 8  # data origins probed per round (the most recently used)
RTT_TRIES = 3
MIN_TRANSFER_BYTES = 256 * 1024  # smaller transfers say more about latency than bandwidth
ORIGIN_TIMEOUT_S = 5.0
PROBED_SCHEMES = ("http", "https")  # origins a HEAD request can reach
PEER_TIMEOUT_S = 60.0
MAX_PEERS = 16  # peer requests remembered at once
LISTENER_PER_MINUTE = 120  # requests this agent's probe listener answers a minute, at most


def mbps(nbytes: int, seconds: float) -> float | None:
    """Megabits per second of ``nbytes`` moved in ``seconds`` (None when nothing measurable)."""
    if nbytes <= 0 or seconds <= 0:
        return None
    return nbytes * 8 / seconds / 1e6


def transfer_samples(records: Iterable[TransferRecord], now: float) -> list[ProbeSample]:
    """Throughput samples from staged inputs: one per transfer big enough to say something.

    ``cpnet://blobs/`` inputs came from the hub; others from their URL's origin. Resumed
    transfers count only the bytes moved this time.
    """
    out = []
    for r in records:
        if r.direction != "in" or r.url.startswith("("):
            continue
        dst = HUB if r.url.startswith("cpnet://") else url_place(r.url)
        moved = r.size_bytes - r.resumed_from
        rate = mbps(moved, r.seconds) if moved >= MIN_TRANSFER_BYTES else None
        if dst is None or rate is None:
            continue
        out.append(ProbeSample(dst=dst, at=now, mbps=min(rate, 1e7)))
    return out


@dataclass
class NetProber:
    """Probes on a schedule and queues samples; ``post`` sends what is queued.

    ``rtt_hub`` makes one tiny request to the hub, ``download_hub(n)`` downloads n probe bytes
    (both through the site client); the clock is ``time.time``/``time.monotonic`` unless given.
    """

    rtt_hub: Callable[[], object]
    download_hub: Callable[[int], int]
    post: Callable[[list[ProbeSample]], object]
    interval_s: float
    probe_bytes: int
    clock: Callable[[], float] = time.time
    timer: Callable[[], float] = time.monotonic
    origins: OrderedDict[str, str] = field(default_factory=OrderedDict)  # place -> a URL there
    queued: list[ProbeSample] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    peers: dict[str, str] = field(default_factory=dict)  # asked for: place -> probe URL
    peer_probed: dict[str, float] = field(default_factory=dict)  # place -> timer() of last try

    def timed(self, call: Callable[[], object]) -> float:
        t0 = self.timer()
        call()
        return self.timer() - t0

    def probe_hub(self) -> ProbeSample:
        """RTT (median of three tiny requests) and throughput (one bounded download)."""
        return self._probe(HUB, self.rtt_hub, self.download_hub)

    def probe_origins(self, head: Callable[[str], object] | None = None) -> list[ProbeSample]:
        """One HEAD request to each recently used http(s) origin: its RTT."""
        head = head or _head
        out = []
        with self.lock:
            targets = list(self.origins.items())[-MAX_ORIGINS:]
        for place, url in targets:
            try:
                seconds = self.timed(lambda u=url: head(u))
            except httpx.HTTPError as exc:
                log.info("network probe of %s failed: %s", place, exc)
                continue
            out.append(ProbeSample(dst=place, at=self.clock(), rtt_ms=seconds * 1000))
        return out

    def ask_peers(self, peers: Mapping[str, str]) -> None:
        """The hub asks for these peers to be probed (place -> probe URL); done in the loop."""
        with self.lock:
            for place, url in list(peers.items())[:MAX_PEERS]:
                self.peers[place] = url
            while len(self.peers) > MAX_PEERS:
                del self.peers[next(iter(self.peers))]

    def probe_peers(self, get: Callable[[str, int], int] | None = None) -> list[ProbeSample]:
        """Probe the peers asked for, each at most once per interval: RTT and one download."""
        get = get or _download
        every = max(MIN_PROBE_INTERVAL_S, self.interval_s)
        t = self.timer()
        with self.lock:
            due = {
                p: u for p, u in self.peers.items() if t - self.peer_probed.get(p, -1e18) >= every
            }
            self.peers.clear()
            for p in due:
                self.peer_probed[p] = t
        out = []
        for place, url in due.items():
            try:
                out.append(self._probe(place, lambda u=url: get(u, 0), lambda n, u=url: get(u, n)))
            except httpx.HTTPError as exc:
                log.info("network probe of peer %s (%s) failed: %s", place, url, exc)
        return out

    def _probe(
        self, dst: str, tiny: Callable[[], object], download: Callable[[int], int]
    ) -> ProbeSample:
        """RTT (median of three tiny requests) and throughput (one bounded download)."""
        rtt_s = statistics.median(self.timed(tiny) for _ in range(RTT_TRIES))
        got = 0

        def fetch() -> None:
            nonlocal got
            got = download(self.probe_bytes)

        seconds = self.timed(fetch)
        # The download's first round trip is latency, not bandwidth.
        rate = mbps(got, max(seconds - rtt_s, seconds / 10))
        return ProbeSample(dst=dst, at=self.clock(), rtt_ms=rtt_s * 1000, mbps=rate)

    def saw_transfers(self, records: Iterable[TransferRecord]) -> None:
        """Note an attempt's staged inputs: throughput samples, and origins to probe."""
        records = list(records)
        samples = transfer_samples(records, self.clock())
        with self.lock:
            self.queued.extend(samples)
            del self.queued[: max(0, len(self.queued) - MAX_SAMPLES * 5)]  # bounded
            for r in records:
                place = url_place(r.url) if r.direction == "in" else None
                if place and r.url.split(":", 1)[0].lower() in PROBED_SCHEMES:
                    self.origins.pop(place, None)
                    self.origins[place] = r.url
                    while len(self.origins) > MAX_ORIGINS:
                        self.origins.popitem(last=False)

    def round(self) -> None:
        """One probing round: the hub, then the origins; queued for ``flush``."""
        samples = [self.probe_hub(), *self.probe_origins()]
        with self.lock:
            self.queued.extend(samples)

    def flush(self) -> int:
        """Post what is queued (in bounded batches); samples not accepted are dropped."""
        with self.lock:
            batch, self.queued = self.queued, []
        for i in range(0, len(batch), MAX_SAMPLES):
            self.post(batch[i : i + MAX_SAMPLES])
        return len(batch)

    def loop(self, stop: threading.Event) -> None:
        """Probe now and every ``interval_s``; post queued transfer samples within a second."""
        due = self.timer()
        while not stop.is_set():
            try:
                if self.timer() >= due:
                    due = self.timer() + max(MIN_PROBE_INTERVAL_S, self.interval_s)
                    self.round()
                peers = self.probe_peers()
                with self.lock:
                    self.queued.extend(peers)
                self.flush()
            except Exception as exc:  # a failed probe is a missing sample, never a stopped agent
                if not stop.is_set():
                    log.warning("network probe: %s", exc)
            stop.wait(1.0)


def _head(url: str) -> None:
    """A HEAD request to a URL's origin (its root), following no redirects."""
    place = url_place(url)
    assert place is not None
    with httpx.Client(timeout=ORIGIN_TIMEOUT_S, follow_redirects=False) as c:
        c.head(place[4:] + "/")


def _download(base: str, nbytes: int) -> int:
    """GET ``nbytes`` of probe payload from a peer's listener; bytes received."""
    got = 0
    with httpx.Client(timeout=PEER_TIMEOUT_S, follow_redirects=False) as c:
        url = base.rstrip("/") + "/v1/network/probe"
        with c.stream("GET", url, params={"bytes": nbytes}) as r:
            r.raise_for_status()
            for chunk in r.iter_raw(64 * 1024):
                got += len(chunk)
    return got


class ProbeListener:
    """A small HTTP server other sites' agents time downloads from (``--probe-listen``).

    Serves only ``GET /v1/network/probe?bytes=N``: N zero bytes, N at most MAX_PROBE_BYTES, and
    at most LISTENER_PER_MINUTE requests a minute (429 beyond). No token: it hands out nothing
    but zeros, bounded in size and rate.
    """

    def __init__(self, host: str, port: int) -> None:
        recent: deque[float] = deque()
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return  # one line per probe is noise

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path != "/v1/network/probe":
                    return self._answer(404, b"only /v1/network/probe?bytes=N is served here")
                try:
                    n = int(parse_qs(parts.query).get("bytes", ["0"])[0])
                except ValueError:
                    n = -1
                if not 0 <= n <= MAX_PROBE_BYTES:
                    return self._answer(400, f"bytes must be 0..{MAX_PROBE_BYTES}".encode())
                now = time.monotonic()
                with lock:
                    while recent and now - recent[0] > 60:
                        recent.popleft()
                    busy = len(recent) >= LISTENER_PER_MINUTE
                    if not busy:
                        recent.append(now)
                if busy:
                    return self._answer(429, b"too many probes this minute: try later")
                self.send_response(200)
                self.send_header("content-type", "application/octet-stream")
                self.send_header("content-length", str(n))
                self.end_headers()
                chunk = bytes(64 * 1024)
                while n > 0:
                    self.wfile.write(chunk[: min(n, len(chunk))])
                    n -= min(n, len(chunk))
                return None

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", "text/plain")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]

    def start(self) -> ProbeListener:
        threading.Thread(target=self.server.serve_forever, name="probe-listen", daemon=True).start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
