"""Prometheus metrics of a hub process (``GET /metrics``) and of an agent (``metrics_listen``).

Each process keeps its own registry (prometheus_client's, not the module-wide default: a test
may run several hubs in one process). Counters and histograms count what this process did since
it started, after it was committed; the store's figures (queue depth, capacity, ledger
postings) are read from the store at each scrape, so every replica of a hub reports the same.
The names, their labels and what they mean are listed in docs/operations.md ("Metrics").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from cpnet.store.db import Store

__all__ = ["CONTENT_TYPE_LATEST", "AgentMetrics", "HubMetrics"]

# Seconds: from a cached resolve (tens of µs) to a long poll (up to a minute).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
PASS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class StoreCollector(Collector):
    """The store's figures, read in one read-only transaction per scrape (store/metrics.py)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        from cpnet.store import metrics as store_metrics

        with self.store.read() as s:
            snap = store_metrics.snapshot(s)
        tasks = GaugeMetricFamily(
            "cpnet_tasks",
            "Tasks waiting or running, by state (queue depth: QUEUED).",
            labels=["state"],
        )
        for state, n in sorted(snap.tasks.items()):
            tasks.add_metric([state], n)
        yield tasks
        sites = GaugeMetricFamily(
            "cpnet_sites", "Sites (not retired), online or not.", labels=["online"]
        )
        pools = GaugeMetricFamily(
            "cpnet_pools", "Pools (not retired), online or not.", labels=["online"]
        )
        cores = GaugeMetricFamily(
            "cpnet_pool_cpu_cores",
            "CPU cores of pools, in all and reserved by placed attempts.",
            labels=["online", "kind"],
        )
        gpus = GaugeMetricFamily(
            "cpnet_pool_gpus",
            "GPUs of pools, in all and reserved by placed attempts.",
            labels=["online", "kind"],
        )
        for online in (True, False):
            flag = "true" if online else "false"
            sites.add_metric([flag], snap.sites.get(online, 0))
            p = snap.pools[online]
            pools.add_metric([flag], p.pools)
            cores.add_metric([flag, "total"], p.cpu_cores)
            cores.add_metric([flag, "reserved"], p.cpu_cores_reserved)
            gpus.add_metric([flag, "total"], p.gpus)
            gpus.add_metric([flag, "reserved"], p.gpus_reserved)
        yield from (sites, pools, cores, gpus)
        yield CounterMetricFamily(
            "cpnet_ledger_transfers",
            "Transfers the ledger has posted (all time).",
            value=snap.ledger_transfers,
        )


class HubMetrics:
    """A hub process's metrics: its HTTP traffic, its scheduler, and the store's figures."""

    def __init__(self, store: Store | None = None) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "cpnet_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "cpnet_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by method and route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.passes = Histogram(
            "cpnet_scheduler_pass_duration_seconds",
            "Scheduling passes and how long each took (read the queue and pools, decide, commit).",
            buckets=PASS_BUCKETS,
            registry=r,
        )
        self.placements = Counter(
            "cpnet_scheduler_placements", "Attempts the scheduler placed on pools.", registry=r
        )
        self.attempts_ended = Counter(
            "cpnet_attempts_ended",
            "Attempts whose end an agent reported, by final state.",
            ["state"],
            registry=r,
        )
        self.sites_lost = Counter(
            "cpnet_sites_lost",
            "Sites called lost after missing heartbeats (attempts failed over).",
            registry=r,
        )
        ProcessCollector(registry=r)  # CPU seconds, resident memory, open files of the process
        if store is not None:
            r.register(StoreCollector(store))

    def render(self) -> bytes:
        """The text exposition format (what Prometheus scrapes)."""
        return generate_latest(self.registry)


class _Held(Collector):
    """The agent's attempts by the last state it knows of them, at scrape time."""

    def __init__(self, states: Callable[[], dict[str, int]]) -> None:
        self.states = states

    def collect(self) -> Iterator[Metric]:
        g = GaugeMetricFamily(
            "cpnet_agent_attempts",
            "Attempts this agent holds (not yet ended and acknowledged), by state.",
            labels=["state"],
        )
        for state, n in sorted(self.states().items()):
            g.add_metric([state], n)
        yield g


class AgentMetrics:
    """An agent's metrics; `held` counts its attempts by state when scraped."""

    def __init__(self, held: Callable[[], dict[str, int]]) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.accepted = Counter(
            "cpnet_agent_attempts_accepted", "Attempts accepted from the hub.", registry=r
        )
        self.ended = Counter(
            "cpnet_agent_attempts_ended",
            "Attempts that ended here, by final state.",
            ["state"],
            registry=r,
        )
        self.backend_errors = Counter(
            "cpnet_agent_backend_errors",
            "Attempts the backend refused or lost: submit (refused), reattach (after a restart), "
            "secrets (could not fetch them).",
            ["op"],
            registry=r,
        )
        self.staged_bytes = Counter(
            "cpnet_agent_staged_bytes",
            "Bytes staged by ended attempts: in (inputs), out (outputs).",
            ["direction"],
            registry=r,
        )
        self.updates_sent = Counter(
            "cpnet_agent_updates_sent", "Attempt reports the hub took.", registry=r
        )
        r.register(_Held(held))
        ProcessCollector(registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
