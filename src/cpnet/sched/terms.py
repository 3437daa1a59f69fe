"""The time, cost, carbon and risk model of one task on one pool (docs/scheduling.md).

Every figure the scheduler ranks by is computed here, from plain data, so the hub, ``cpnet
explain`` and the simulator all use the same arithmetic:

    time to result = (staging + wait + run) × risk
    staging        = Σ over inputs (RTT + bytes / bandwidth)  of the path input place → pool place
    wait           = max(queue × T / slots, recent start delay)          when it fits now
                     that + T × slots / (slots + 1)                      when it must wait for room
    run            = work in SCU-h / the pool's SCU rate, else the task's expected run time
    cost           = (price per hour of the demand × (staging + run) + egress of the inputs) × risk
                     or, when the task states its work in SCU-h of a profile the pool prices per
                     SCU-hour: (price per hour × staging + SCU-h × price per SCU-h + egress) × risk
    carbon         = grid gCO2/kWh × (cores × W per core + GPUs × W per GPU) × run hours / 1000
    risk           = 1 / (1 − failure rate): the expected number of tries, counting retries;
                     the hub's failure rate is 1 − the pool's reputation score (docs/market.md)

``T`` is how long the tasks ahead take: the pool's recent median run time when known, else this
task's own run time (the v1 assumption); ``slots`` is ``max(1, running)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from cpnet.network import NetworkMap
from cpnet.sched.snapshot import PoolView, TaskRequest

MAX_FAILURE_RATE = 0.9  # caps risk at 10 tries, so one bad record cannot make a pool infinite


@dataclass(frozen=True, slots=True)
class Staging:
    """Moving a task's inputs to one place."""

    seconds: float
    egress: float  # price of the bytes moved, pool currency
    bytes: int
    sources: tuple[str, ...]  # the map's source for each input's path ("measured", "geo", ...)


@dataclass(frozen=True, slots=True)
class Terms:
    """Every figure of one task on one pool that does not depend on what is free right now."""

    staging: Staging
    runtime_s: float
    predicted: bool  # run time predicted from SCU-h (else the task's expected_runtime_s)
    wait_if_fits_s: float
    wait_if_not_s: float
    hourly: float  # price of the demand for one hour
    risk: float  # expected tries, >= 1
    carbon_g: float | None
    # Price of the run when the pool prices the task's work per SCU-hour (SCU-h × price per
    # SCU-h, whatever the pool's speed); None: the run is priced per resource-hour.
    work_cost: float | None = None

    def time_to_result_s(self, fits_now: bool) -> float:
        """Expected seconds from now until the result exists, counting retries."""
        wait = self.wait_if_fits_s if fits_now else self.wait_if_not_s
        return (self.staging.seconds + wait + self.runtime_s) * self.risk

    @property
    def cost(self) -> float:
        """Expected price of the task: the pool is held while staging and running.

        Under SCU pricing the run costs its work at the SCU-hour price and only staging is held
        at the hourly price.
        """
        if self.work_cost is not None:
            held = self.hourly * self.staging.seconds / 3600.0 + self.work_cost
            return (held + self.staging.egress) * self.risk
        held_h = (self.staging.seconds + self.runtime_s) / 3600.0
        return (self.hourly * held_h + self.staging.egress) * self.risk


def staging(task: TaskRequest, pool: PoolView, network: NetworkMap | None) -> Staging:
    """Time and egress of staging every input from where it lives to the pool.

    Inputs are staged one after another (as the runner does), so their times add up. Without a
    network map nothing is known of the paths and staging counts as free.
    """
    if not task.inputs or network is None:
        return Staging(0.0, 0.0, sum(n for _, n in task.inputs), ())
    seconds = egress = 0.0
    total = 0
    sources = []
    for place, nbytes in task.inputs:
        path = network.path(place, pool.place)
        seconds += path.seconds(nbytes)
        egress += path.egress(nbytes)
        total += nbytes
        sources.append(path.source)
    return Staging(seconds, egress, total, tuple(sources))


def waits(pool: PoolView, runtime_s: float) -> tuple[float, float]:
    """(wait if the task fits now, wait if it must wait for room), in seconds.

    The backend runs ``slots = max(1, running)`` tasks side by side, so its queue of ``q`` drains
    in ``q × T / slots``; a task that does not fit also waits for running tasks to release room,
    on average ``T × slots / (slots + 1)`` with remaining times spread evenly. The pool's recent
    start delay (placed → running, which includes the backend's own dispatch) is a floor.
    """
    slots = max(1, pool.running)
    ahead = pool.recent_runtime_s if pool.recent_runtime_s is not None else runtime_s
    ahead = max(0.0, ahead)
    fits = pool.queue_length * ahead / slots
    if pool.recent_wait_s is not None:
        fits = max(fits, pool.recent_wait_s)
    return fits, fits + ahead * slots / (slots + 1)


def risk(pool: PoolView) -> float:
    """Expected number of tries on the pool, from its expected share of tries lost (in the hub:
    1 − its reputation score)."""
    rate = min(max(pool.failure_rate, 0.0), MAX_FAILURE_RATE)
    return 1.0 / (1.0 - rate)


def carbon_g(task: TaskRequest, pool: PoolView, runtime_s: float) -> float | None:
    """Grams of CO2 the run emits on the pool's grid; None when its intensity is unknown."""
    if pool.carbon_g_per_kwh is None:
        return None
    demand = task.demand
    watts = demand.cpu_cores * pool.watts_per_core + demand.gpus * pool.watts_per_gpu
    return pool.carbon_g_per_kwh * watts * runtime_s / 3600.0 / 1000.0


def work_cost(task: TaskRequest, pool: PoolView) -> float | None:
    """The run's price under SCU pricing: the task's SCU-hours × the pool's price per SCU-hour
    of its profile; None when the task states no work or the pool does not price the profile."""
    if task.work_scu_h is None:
        return None
    per = pool.price.per_scu_hour(task.profile)
    return None if per is None else task.work_scu_h * per


def of(task: TaskRequest, pool: PoolView, network: NetworkMap | None = None) -> Terms:
    """Every availability-independent figure of the task on the pool."""
    runtime_s, predicted = task.runtime_on(pool)
    wait_fits, wait_not = waits(pool, runtime_s)
    return Terms(
        staging=staging(task, pool, network),
        runtime_s=runtime_s,
        predicted=predicted,
        wait_if_fits_s=wait_fits,
        wait_if_not_s=wait_not,
        hourly=pool.price.hourly(task.demand),
        risk=risk(pool),
        carbon_g=carbon_g(task, pool, runtime_s),
        work_cost=work_cost(task, pool),
    )


def limit_reasons(task: TaskRequest, terms: Terms) -> tuple[str, ...]:
    """Why the task's deadline or budget rule the pool out, judged at its best (fits now)."""
    reasons = []
    if task.deadline_s is not None:
        best = terms.time_to_result_s(True)
        if best > task.deadline_s:
            reasons.append(
                f"would finish in ~{round(best)} s at best (staging "
                f"{round(terms.staging.seconds)} s + wait {round(terms.wait_if_fits_s)} s + run "
                f"{round(terms.runtime_s)} s), deadline in {round(task.deadline_s)} s"
            )
    if task.budget is not None and terms.cost > task.budget + 1e-12:
        reasons.append(f"estimated cost {terms.cost:.4g} exceeds the budget {task.budget:g}")
    return tuple(reasons)
