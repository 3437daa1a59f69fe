"""What is free on every pool while a simulation runs, kept both as arrays and as PoolViews.

Simple policies read NumPy arrays (which pools fit a job now, their load); cpnet's policy reads
``PoolView``s, the scheduler's own input. Views are rebuilt lazily, only for pools that changed
since they were last asked for, so a pass over 300 pools does not rebuild 300 dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from cpnet.sched import PoolView, Resources
from cpnet.sched.snapshot import EPSILON
from cpnet.sim.network import Network
from cpnet.sim.traces import Job

# Ended attempts a pool needs before its failure share is reported (fewer say little).
MIN_HISTORY = 10


@dataclass(slots=True)
class Task:
    """A job's life in the simulation: its attempts, the pools to avoid, where it ran."""

    index: int  # position in the simulated job list (also its age order in the queue)
    job: Job
    demand: Resources
    data_site: int  # site index of its input (-1: none)
    attempts: int = 0
    avoid: tuple[str, ...] = ()  # pool ids where an attempt failed
    pool: int = -1  # pool of the current attempt
    start_s: float = -1.0  # when the current attempt started running
    run_s: float = 0.0  # its run time on that pool
    done_s: float = -1.0  # completion time (-1: not completed)
    failed: bool = False  # ended SYSTEM_ERROR, out of attempts


class State:
    """Free capacity, running counts and views of every pool in one network."""

    def __init__(self, net: Network) -> None:
        self.net = net
        totals = [p.total for p in net.pools]
        self.total = np.array([[t.cpu_cores, t.ram_gb, t.gpus] for t in totals], dtype=float)
        self.free = self.total.copy()
        self.running = [0] * len(totals)
        self._views = list(net.pools)
        self._dirty: set[int] = set()
        self.speed = np.array([s.speed for s in net.sites])
        self.province = [s.province for s in net.sites]
        prices = [p.price for p in net.pools]
        self.price = np.array([[p.cpu_core_hour, p.ram_gb_hour, p.gpu_hour] for p in prices])
        self.pool_ids = [p.id for p in net.pools]
        self.pool_index = {pid: i for i, pid in enumerate(self.pool_ids)}
        self.attempts = [0] * len(totals)  # attempts started per pool
        self.failures = [0] * len(totals)  # of which failed for the system

    def fits(self, demand: Resources) -> np.ndarray:
        """A boolean mask of the pools where the demand fits now."""
        need = np.array([demand.cpu_cores, demand.ram_gb, demand.gpus]) - EPSILON
        return (self.free >= need).all(axis=1)

    def loads(self) -> np.ndarray:
        """Each pool's dominant used share (0..1), as ``sched.score.load_fraction`` defines it."""
        with np.errstate(divide="ignore", invalid="ignore"):
            used = np.where(self.total > 0, 1.0 - self.free / self.total, 0.0)
        return used.max(axis=1)

    def hourly(self, demand: Resources) -> np.ndarray:
        """Price per hour of the demand on every pool."""
        return self.price @ np.array([demand.cpu_cores, demand.ram_gb, demand.gpus])

    def staging(self, task: Task) -> np.ndarray:
        """Seconds to stage the task's input onto every pool's site."""
        d = task.data_site
        if d < 0 or task.job.input_bytes <= 0:
            return np.zeros(len(self.running))
        net = self.net
        return net.rtt_s[d] + task.job.input_bytes * 8 / (net.gbps[d] * 1e9)

    def take(self, i: int, demand: Resources) -> None:
        """Reserve the demand on pool i (at placement: it holds through staging and running)."""
        self.free[i, 0] -= demand.cpu_cores
        self.free[i, 1] -= demand.ram_gb
        self.free[i, 2] -= demand.gpus
        self.running[i] += 1
        self._dirty.add(i)

    def record(self, i: int, failed: bool) -> None:
        """Count an ended attempt on pool i, for the failure rate the hub would report."""
        self.attempts[i] += 1
        self.failures[i] += failed
        self._dirty.add(i)

    def failure_rate(self, i: int) -> float:
        """Share of pool i's ended attempts that failed; 0 until it has MIN_HISTORY of them."""
        seen = self.attempts[i]
        return self.failures[i] / seen if seen >= MIN_HISTORY else 0.0

    def give(self, i: int, demand: Resources) -> None:
        """Release the demand on pool i (the attempt ended)."""
        self.free[i, 0] += demand.cpu_cores
        self.free[i, 1] += demand.ram_gb
        self.free[i, 2] += demand.gpus
        self.running[i] -= 1
        self._dirty.add(i)

    def views(self) -> list[PoolView]:
        """The pools as the scheduler sees them now (only changed ones are rebuilt)."""
        for i in self._dirty:
            cpu, ram, gpus = self.free[i]
            self._views[i] = replace(
                self._views[i],
                available=Resources(float(cpu), float(ram), 0.0, round(gpus)),
                running=self.running[i],
                failure_rate=self.failure_rate(i),
            )
        self._dirty.clear()
        return self._views
