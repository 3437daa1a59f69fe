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
- samples are posted in batches of at most ``records.MAX_SAMPLES``.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import httpx

from cpnet.agent.settings import MIN_PROBE_INTERVAL_S
from cpnet.network.model import HUB, url_place
from cpnet.network.records import MAX_SAMPLES, ProbeSample
from cpnet.tasks.model import TransferRecord

log = logging.getLogger("cpnet.agent.network")

MAX_ORIGINS = 8  # data origins probed per round (the most recently used)
RTT_TRIES = 3
MIN_TRANSFER_BYTES = 256 * 1024  # smaller transfers say more about latency than bandwidth
ORIGIN_TIMEOUT_S = 5.0
PROBED_SCHEMES = ("http", "https")  # origins a HEAD request can reach


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

    def timed(self, call: Callable[[], object]) -> float:
        t0 = self.timer()
        call()
        return self.timer() - t0

    def probe_hub(self) -> ProbeSample:
        """RTT (median of three tiny requests) and throughput (one bounded download)."""
        rtt_s = statistics.median(self.timed(self.rtt_hub) for _ in range(RTT_TRIES))
        got = 0

        def download() -> None:
            nonlocal got
            got = self.download_hub(self.probe_bytes)

        seconds = self.timed(download)
        # The download's first round trip is latency, not bandwidth.
        rate = mbps(got, max(seconds - rtt_s, seconds / 10))
        return ProbeSample(dst=HUB, at=self.clock(), rtt_ms=rtt_s * 1000, mbps=rate)

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
