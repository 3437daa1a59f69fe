"""Placement policies the simulator compares: six simple baselines and cpnet's own scheduler.

One small interface: ``place(tasks, state, now)`` gets the queued tasks in age order (oldest
first, as the hub reads them) and returns, per task, the chosen pool index or None (it waits).
A policy reserves what it places through ``state.take`` so later tasks in the batch see it.
Every baseline places only where the job fits now, and, like cpnet's scheduler, tries pools
where an earlier attempt failed only when nothing else fits.

cpnet's policy calls ``cpnet.sched.assign`` on the live ``PoolView``s: the same function, with
the same arguments, that the hub's scheduling pass (``hub/scheduling.schedule_once``) calls:
each task's input place and size, the network map, the pools' failure share and grid carbon.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import numpy as np

from cpnet.network import site_place
from cpnet.sched import DEFAULT_WEIGHTS, TaskRequest, Weights, assign
from cpnet.sim.network import SCU_PROFILE
from cpnet.sim.state import State, Task


def expected_s(task: Task) -> float:
    """The run time a policy may know in advance: the user's estimate, else the recorded one."""
    return task.job.estimate_s or task.job.runtime_s


class Baseline:
    """A policy that scores each task's fitting pools on its own; subclasses give ``choose``."""

    name = "baseline"

    def place(self, tasks: Sequence[Task], state: State, now: float) -> list[int | None]:
        """Choose a pool for each task in order, reserving each choice before the next."""
        out: list[int | None] = []
        for task in tasks:
            mask = state.fits(task.demand)
            if task.avoid:
                preferred = mask.copy()
                for pid in task.avoid:
                    preferred[state.pool_ids.index(pid)] = False
                if preferred.any():
                    mask = preferred
            candidates = np.flatnonzero(mask)
            if candidates.size == 0:
                out.append(None)
                continue
            i = int(self.choose(task, candidates, state))
            state.take(i, task.demand)
            out.append(i)
        return out

    def choose(self, task: Task, candidates: np.ndarray, state: State) -> int:
        """Pick one of the candidate pool indices (all fit now)."""
        raise NotImplementedError


class RandomPolicy(Baseline):
    """Any pool that fits, uniformly at random (seeded)."""

    name = "random"

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def choose(self, task: Task, candidates: np.ndarray, state: State) -> int:
        return int(candidates[self.rng.randrange(candidates.size)])


class RoundRobin(Baseline):
    """The next pool after the last one chosen that fits, cycling through the network."""

    name = "round-robin"

    def __init__(self) -> None:
        self.next = 0

    def choose(self, task: Task, candidates: np.ndarray, state: State) -> int:
        after = candidates[candidates >= self.next]
        i = int(after[0] if after.size else candidates[0])
        self.next = i + 1
        return i


class LeastLoaded(Baseline):
    """The fitting pool with the smallest used share (dominant resource); ties by position."""

    name = "least-loaded"

    def choose(self, task: Task, candidates: np.ndarray, state: State) -> int:
        loads = state.loads()[candidates]
        return int(candidates[int(np.argmin(loads))])


class Cheapest(Baseline):
    """SkyPilot-like: the fitting pool where the job is expected to cost least (price × time)."""

    name = "cheapest"

    def choose(self, task: Task, candidates: np.ndarray, state: State) -> int:
        cost = state.hourly(task.demand)[candidates] * expected_s(task) / state.speed[candidates]
        return int(candidates[int(np.argmin(cost))])


class DataNearest(Baseline):
    """proTES-like: the fitting pool whose site receives the job's input soonest; then cheapest."""

    name = "data-nearest"

    def choose(self, task: Task, candidates: np.ndarray, state: State) -> int:
        staging = state.staging(task)[candidates]
        price = state.hourly(task.demand)[candidates]
        order = np.lexsort((price, staging))
        return int(candidates[order[0]])


class Ordered(Baseline):
    """MultiKueue-like: the first pool that fits in a fixed order of clusters (network order)."""

    name = "ordered"

    def choose(self, task: Task, candidates: np.ndarray, state: State) -> int:
        return int(candidates[0])


class Cpnet:
    """cpnet's scheduler: ``cpnet.sched.assign`` over the live pool views, as the hub calls it."""

    name = "cpnet"

    def __init__(self, weights: Weights | None = None, objective: str = "balanced") -> None:
        self.weights = weights
        self.objective = objective
        self._requests: dict[tuple[int, int], TaskRequest] = {}

    def request(self, task: Task) -> TaskRequest:
        """The task as the hub would describe it to the scheduler (cached per attempt)."""
        key = (task.index, task.attempts)
        req = self._requests.pop(key, None)
        if req is None:
            estimate = expected_s(task)
            job = task.job
            inputs = ()
            if job.data_site and job.input_bytes > 0:
                inputs = ((site_place(job.data_site), int(job.input_bytes)),)
            req = TaskRequest(
                id=job.id,
                demand=task.demand,
                avoid_pools=task.avoid,
                expected_runtime_s=estimate,
                profile=SCU_PROFILE,
                work_scu_h=estimate / 3600.0,  # the trace ran at speed 1.0 (one SCU)
                inputs=inputs,
                objective=self.objective,
            )
        self._requests[key] = req
        return req

    def place(self, tasks: Sequence[Task], state: State, now: float) -> list[int | None]:
        reqs = [self.request(t) for t in tasks]
        weights = self.weights or DEFAULT_WEIGHTS
        result = assign(reqs, state.views(), weights, keep=1, network=state.net.map)
        index = state.pool_index
        out: list[int | None] = []
        for task, (_, _, pool_id) in zip(tasks, result, strict=True):
            if pool_id is None:
                out.append(None)
                continue
            i = index[pool_id]
            state.take(i, task.demand)
            self._requests.pop((task.index, task.attempts), None)
            out.append(i)
        return out


Policy = Baseline | Cpnet

# Policy names in the order tables list them, each with how to build it from a seeded generator.
POLICIES: dict[str, Callable[[random.Random], Policy]] = {
    "random": RandomPolicy,
    "round-robin": lambda rng: RoundRobin(),
    "least-loaded": lambda rng: LeastLoaded(),
    "cheapest": lambda rng: Cheapest(),
    "data-nearest": lambda rng: DataNearest(),
    "ordered": lambda rng: Ordered(),
    "cpnet": lambda rng: Cpnet(),
}
