"""The discrete-event engine: arrivals, staging, runs, finishes and failures on one network.

Events sit in a heap keyed by (time, sequence number), so equal times keep the order they were
made in and a run is a pure function of (jobs, network, policy, seed). After all events at one
instant, one scheduling pass offers the queue (oldest first, as the hub reads it) to the policy.
A placement reserves capacity at once; the input is staged (``network.transfer_s``), then the job
runs for its trace run time ÷ the pool's speed. A failure (exponential per pool) goes through the
hub's own lifecycle rule, ``tasks.lifecycle.retry_or_fail``: back to the queue avoiding that
pool while attempts remain, else the job ends SYSTEM_ERROR.
"""

from __future__ import annotations

import heapq
import math
import random
import time
from bisect import insort
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cpnet.sched import Resources
from cpnet.sim.metrics import Metrics, summarise
from cpnet.sim.network import Network, transfer_s, watts
from cpnet.sim.policies import Policy
from cpnet.sim.state import State, Task
from cpnet.sim.traces import Job
from cpnet.tasks.lifecycle import AttemptFacts, TaskFacts, retry_or_fail
from cpnet.tasks.states import State as TaskState

ARRIVE, STAGED, FINISH, FAIL = 0, 1, 2, 3
MAX_ATTEMPTS = 3  # as a task's default max_attempts on the hub
# Queued tasks offered per pass after capacity was released. The hub reads its whole queue in
# batches of 500; a bounded window keeps a pass cheap when thousands wait, at the price of not
# trying tasks further back until the ones in front are placed.
WINDOW = 256


@dataclass(frozen=True, slots=True)
class Ledger:
    """Running totals a finished or failed attempt adds to."""

    cost: float = 0.0  # CNY
    carbon_g: float = 0.0  # grams CO2
    cross_region_bytes: float = 0.0
    busy_core_s: float = 0.0
    busy_gpu_s: float = 0.0


class Simulation:
    """One policy replaying one job list on one network; ``run`` returns its Metrics."""

    def __init__(self, jobs: Sequence[Job], net: Network, policy: Policy, seed: int) -> None:
        self.net = net
        self.policy = policy
        self.rng = random.Random(seed)  # failure draws only: the same for every policy
        self.state = State(net)
        index = net.index()
        self.tasks = [
            Task(
                i,
                job,
                Resources(job.cpu_cores, job.ram_gb, 0.0, job.gpus),
                index.get(job.data_site, -1) if job.data_site else -1,
            )
            for i, job in enumerate(jobs)
        ]
        self.heap: list[tuple[float, int, int, int]] = []
        self.seq = 0
        self.queue: list[int] = []  # task indices waiting, oldest first
        self.fresh: list[int] = []  # arrived or requeued since the last pass
        self.released = False  # capacity was given back since the last pass
        self.ledger = Ledger()
        self.events = 0

    def push(self, at: float, kind: int, task: int) -> None:
        """Schedule an event."""
        heapq.heappush(self.heap, (at, self.seq, kind, task))
        self.seq += 1

    def run(self, progress: Callable[[int], None] | None = None) -> Metrics:
        """Replay every job to its end; ``progress(n)`` is told how many jobs have ended."""
        for task in self.tasks:
            self.push(task.job.submit_s, ARRIVE, task.index)
        started = time.perf_counter()
        ended = 0
        now = 0.0
        while self.heap:
            now = self.heap[0][0]
            while self.heap and self.heap[0][0] == now:
                _, _, kind, i = heapq.heappop(self.heap)
                self.events += 1
                ended += self.handle(kind, self.tasks[i], now)
            self.dispatch(now)
            if progress is not None and ended and self.events % 2048 < 4:
                progress(ended)
        if progress is not None:
            progress(ended)
        wall = time.perf_counter() - started
        return summarise(self.tasks, self.net, self.ledger, self.events, wall, len(self.queue))

    def handle(self, kind: int, task: Task, now: float) -> int:
        """Apply one event; return 1 when it ended the job (completed or failed for good)."""
        if kind == ARRIVE:
            self.enqueue(task)
        elif kind == STAGED:
            task.start_s = now
        elif kind == FINISH:
            self.account(task, task.run_s)
            self.state.give(task.pool, task.demand)
            self.state.record(task.pool, failed=False)
            self.released = True
            task.done_s = now
            return 1
        else:
            self.account(task, now - task.start_s)
            self.state.give(task.pool, task.demand)
            self.state.record(task.pool, failed=True)
            self.released = True
            return self.fail(task, now)
        return 0

    def enqueue(self, task: Task) -> None:
        """Put the task in the queue by age (a retried task keeps its place, as on the hub)."""
        insort(self.queue, task.index)
        self.fresh.append(task.index)

    def dispatch(self, now: float) -> None:
        """One scheduling pass: offer waiting tasks to the policy and start what it places."""
        if not self.queue:
            return
        if self.released:
            batch = self.queue[:WINDOW]
        elif self.fresh:
            batch = sorted(self.fresh)  # nothing freed: only new tasks can have become placeable
        else:
            return
        self.released = False
        self.fresh.clear()
        chosen = self.policy.place([self.tasks[i] for i in batch], self.state, now)
        placed = set()
        for i, pool in zip(batch, chosen, strict=True):
            if pool is not None:
                self.start(self.tasks[i], pool, now)
                placed.add(i)
        if placed:
            self.queue = [i for i in self.queue if i not in placed]

    def start(self, task: Task, pool: int, now: float) -> None:
        """Begin an attempt on a pool: stage the input, then run (or fail part way)."""
        task.attempts += 1
        task.pool = pool
        net = self.net
        job = task.job
        stage = 0.0
        if task.data_site >= 0:
            stage = transfer_s(net, task.data_site, pool, job.input_bytes)
            if net.sites[task.data_site].province != net.sites[pool].province:
                self.ledger = _add(self.ledger, cross_region_bytes=job.input_bytes)
        site = net.sites[pool]
        run = job.runtime_s / site.speed
        task.run_s = run
        # A unit exponential per attempt, scaled by the pool's rate: the draws do not depend on
        # which pools a policy picks, only on the order of its attempts.
        unit = self.rng.expovariate(1.0)
        rate = site.failure_per_h / 3600.0  # failures per second of running
        fail_after = unit / rate if rate > 0 else math.inf
        self.push(now + stage, STAGED, task.index)
        if fail_after < run:
            self.push(now + stage + fail_after, FAIL, task.index)
        else:
            self.push(now + stage + run, FINISH, task.index)

    def account(self, task: Task, ran_s: float) -> None:
        """Charge an attempt's run time: cost at the pool's price, energy and carbon, busy time."""
        pool = self.net.pools[task.pool]
        site = self.net.sites[task.pool]
        hours = ran_s / 3600.0
        kwh = watts(task.demand) * hours / 1000.0
        self.ledger = _add(
            self.ledger,
            cost=pool.price.hourly(task.demand) * hours,
            carbon_g=kwh * site.carbon_g_per_kwh,
            busy_core_s=task.demand.cpu_cores * ran_s,
            busy_gpu_s=task.demand.gpus * ran_s,
        )

    def fail(self, task: Task, now: float) -> int:
        """A failed attempt, through the hub's lifecycle: requeue (avoiding the pool) or give up."""
        pool = self.net.pools[task.pool]
        facts = TaskFacts(task.job.id, TaskState.RUNNING, task.attempts, MAX_ATTEMPTS)
        attempt = AttemptFacts(
            f"{task.job.id}/{task.attempts}",
            task.job.id,
            task.attempts,
            pool.id,
            pool.site_id,
            TaskState.RUNNING,
            start_time=task.start_s,
        )
        changes = retry_or_fail(facts, attempt, "simulated pool failure", now)
        if task.job.id in changes.requeued:
            task.avoid = (*task.avoid, pool.id)
            self.enqueue(task)
            return 0
        task.failed = True
        return 1


def _add(ledger: Ledger, **amounts: float) -> Ledger:
    """A ledger with amounts added (the ledger is immutable, like every value in the core)."""
    return Ledger(
        *(
            getattr(ledger, name) + amounts.get(name, 0.0)
            for name in ("cost", "carbon_g", "cross_region_bytes", "busy_core_s", "busy_gpu_s")
        )
    )


def simulate(
    jobs: Sequence[Job],
    net: Network,
    policy: Policy,
    seed: int,
    progress: Callable[[int], None] | None = None,
) -> Metrics:
    """Run one policy over the jobs on the network; the same arguments give the same Metrics."""
    return Simulation(jobs, net, policy, seed).run(progress)
