"""What the scheduler sees and answers: resource amounts, prices, live pools, tasks, decisions."""

from __future__ import annotations

from dataclasses import dataclass

# Slack for float capacity comparisons, in the resource's own unit (cores, GB). Availability is
# kept by repeated float subtraction; a billionth of a core or GB absorbs that rounding and is far
# below any real allocation granularity. GPUs are whole numbers and compared exactly.
EPSILON = 1e-9

# What a task may ask the scheduler to optimise (docs/scheduling.md, "Objectives").
OBJECTIVES = ("balanced", "fastest", "cheapest", "greenest")

# Resource field names, in the order reasons mention them.
RESOURCE_NAMES = ("cpu_cores", "ram_gb", "disk_gb", "gpus")


def amount_text(value: float) -> str:
    """Render a resource amount for a human reason: "4", "2.5", "0.001"."""
    if type(value) is int:
        return str(value)
    value = float(value)
    if value.is_integer():
        return str(int(value))
    if abs(value) < 0.01:
        # Two significant digits so tiny amounts do not print as "0".
        return f"{value:.2g}"
    return f"{value:.2f}".rstrip("0").rstrip(".")


@dataclass(frozen=True, slots=True)
class Resources:
    """An amount of resources, used both for demand and for capacity."""

    cpu_cores: float = 0.0
    ram_gb: float = 0.0
    disk_gb: float = 0.0
    gpus: int = 0

    def fits_in(self, other: Resources) -> bool:
        """Tell whether this amount fits inside ``other`` in every resource."""
        return (
            self.cpu_cores <= other.cpu_cores + EPSILON
            and self.ram_gb <= other.ram_gb + EPSILON
            and self.disk_gb <= other.disk_gb + EPSILON
            and self.gpus <= other.gpus
        )

    def __add__(self, other: object) -> Resources:
        if not isinstance(other, Resources):
            return NotImplemented
        return Resources(
            self.cpu_cores + other.cpu_cores,
            self.ram_gb + other.ram_gb,
            self.disk_gb + other.disk_gb,
            self.gpus + other.gpus,
        )

    def __sub__(self, other: object) -> Resources:
        if not isinstance(other, Resources):
            return NotImplemented
        return Resources(
            self.cpu_cores - other.cpu_cores,
            self.ram_gb - other.ram_gb,
            self.disk_gb - other.disk_gb,
            self.gpus - other.gpus,
        )

    def shortfall(self, other: Resources, *, have: str = "free") -> list[str]:
        """Explain every resource where this amount does not fit in ``other``.

        Each entry reads like "needs 4 cpu_cores, 2 free"; ``have`` replaces "free" when
        ``other`` is not free capacity (e.g. "in total"). Empty when it fits.
        """
        out = []
        # Unrolled rather than a getattr loop: rejections call this once per task and pool.
        if self.cpu_cores > other.cpu_cores + EPSILON:
            out.append(_short(self.cpu_cores, other.cpu_cores, "cpu_cores", have))
        if self.ram_gb > other.ram_gb + EPSILON:
            out.append(_short(self.ram_gb, other.ram_gb, "ram_gb", have))
        if self.disk_gb > other.disk_gb + EPSILON:
            out.append(_short(self.disk_gb, other.disk_gb, "disk_gb", have))
        if self.gpus > other.gpus:
            out.append(_short(self.gpus, other.gpus, "gpus", have))
        return out


def _short(need: float, got: float, name: str, have: str) -> str:
    """Phrase one shortfall, e.g. "needs 4 cpu_cores, 2 free"."""
    return f"needs {amount_text(need)} {name}, {amount_text(got)} {have}"


@dataclass(frozen=True, slots=True)
class Price:
    """Price per resource-hour, in the pool's currency (display money, not ledger amounts).

    The scheduler compares prices as plain numbers, so the caller must give every pool of one
    snapshot the same currency (convert before building the snapshot).
    """

    currency: str = "CNY"
    cpu_core_hour: float = 0.0  # per core per hour
    ram_gb_hour: float = 0.0  # per GB of RAM per hour
    gpu_hour: float = 0.0  # per GPU per hour
    # Per SCU-hour of work, by workload profile, sorted (profile, price) pairs; () = none. A
    # task that states its work in SCU-hours of a profile priced here pays work × this price,
    # however fast the pool is (docs/market-prices.md).
    scu_hour: tuple[tuple[str, float], ...] = ()

    def per_scu_hour(self, profile: str | None) -> float | None:
        """The price of one SCU-hour of ``profile`` work here, or None when it is not priced."""
        if profile is None:
            return None
        for name, price in self.scu_hour:
            if name == profile:
                return price
        return None

    def hourly(self, demand: Resources) -> float:
        """Give the price of holding ``demand`` for one hour; disk is not charged."""
        return (
            demand.cpu_cores * self.cpu_core_hour
            + demand.ram_gb * self.ram_gb_hour
            + demand.gpus * self.gpu_hour
        )


@dataclass(frozen=True, slots=True)
class PoolView:
    """One live pool as the scheduler sees it at snapshot time."""

    id: str
    site_id: str
    provider_id: str
    name: str
    type: str  # "general" | "intelligent" | "supercomputing" | "edge"
    region_code: str  # administrative division code, e.g. "440300"
    labels: tuple[tuple[str, str], ...]  # sorted key/value pairs
    total: Resources  # the whole pool
    # What the hub may still reserve now: total minus reservations, also bounded by what the
    # backend reports free.
    available: Resources
    gpu_model: str | None  # accelerator model, e.g. "NVIDIA H100 80GB"; None without GPUs
    queue_length: int  # tasks waiting in the backend's own queue
    running: int  # tasks running there now
    price: Price
    online: bool = True
    can_run_images: bool = False  # runs executors' images (in a runtime, or host exec allowed)
    # SCU rate per workload profile (cpnet.measure.scu), sorted pairs; () when not known.
    scu: tuple[tuple[str, float], ...] = ()
    # Scheduler v2 facts; each default keeps the v1 model (see docs/scheduling.md).
    place: str = ""  # network place of the pool's site ("site:<id>"); "" = unknown
    # Median start delay (placed → running) of the pool's recent attempts, s; None: no history.
    recent_wait_s: float | None = None
    # Median run time of the pool's recent attempts, s: how long the tasks ahead take.
    recent_runtime_s: float | None = None
    # Expected share of tries lost to the pool (0..1): the risk term's input. The hub sets it
    # to 1 − the pool's reputation score (market/reputation.py) once scored; the simulator to
    # its own record.
    failure_rate: float = 0.0
    reputation: float | None = None  # the reputation score it came from; None: not scored
    carbon_g_per_kwh: float | None = None  # grid intensity of the pool's region; None: unknown
    watts_per_core: float = 10.0  # power drawn per busy core (W), for the carbon estimate
    watts_per_gpu: float = 300.0  # power drawn per busy GPU (W)

    def scu_rate(self, profile: str) -> float:
        """The pool's SCU rate for a profile (0.0 when not known)."""
        for name, rate in self.scu:
            if name == profile:
                return rate
        return 0.0


@dataclass(frozen=True, slots=True)
class TaskRequest:
    """What placement needs to know about one task."""

    id: str
    demand: Resources
    # Required accelerator model: case-insensitive substring of PoolView.gpu_model.
    gpu_model: str | None = None
    regions: tuple[str, ...] = ()  # allowed region code prefixes ("44" allows "440300"); () = any
    providers: tuple[str, ...] = ()  # allowed provider ids; () = any
    pools: tuple[str, ...] = ()  # allowed pool ids (a quoted task: its quoted pool); () = any
    pool_types: tuple[str, ...] = ()  # allowed pool types; () = any
    labels: tuple[tuple[str, str], ...] = ()  # every pair must be present on the pool
    # Pools where an earlier attempt failed: still feasible, but ranked after all others.
    avoid_pools: tuple[str, ...] = ()
    expected_runtime_s: float = 600.0  # seconds; used to estimate cost and queue wait
    image: str | None = None  # an executor's container image: only pools that run images
    # The task's work in SCU-hours for a workload profile: when both are set, the run time on a
    # pool with a known SCU rate is predicted (work / rate) and used instead of the above.
    profile: str | None = None
    work_scu_h: float | None = None
    # Scheduler v2 terms and constraints; each default leaves the v1 behaviour unchanged.
    inputs: tuple[tuple[str, int], ...] = ()  # (network place, bytes) of each input to stage
    deadline_s: float | None = None  # the result is due this many seconds from now
    budget: float | None = None  # most the task may cost, in the pools' currency
    latency: tuple[str, float] | None = None  # (place, most RTT in ms a pool may be from it)
    # The fall-back policy of the latency bound: pools beyond the bound but within this RTT (ms,
    # above the bound) stay candidates, ranked after every pool within the bound (a later tier).
    # None: fail closed (a pool beyond the bound is rejected).
    latency_fallback_ms: float | None = None
    deny_providers: tuple[str, ...] = ()  # providers never to use
    objective: str = "balanced"  # one of OBJECTIVES
    # Ordered spillover tiers of region code prefixes ("" matches any region): a tier's pools
    # are used before the next tier's. () = one tier of every pool.
    tiers: tuple[tuple[str, ...], ...] = ()

    def tier_of(self, pool: PoolView) -> int | None:
        """The pool's spillover tier (0 first), or None when it is in no tier."""
        if not self.tiers:
            return 0
        for i, prefixes in enumerate(self.tiers):
            if any(pool.region_code.startswith(p) for p in prefixes):
                return i
        return None

    def spill_tiers(self) -> int:
        """How many spillover tiers the task has (1 when it states none)."""
        return max(1, len(self.tiers))

    def runtime_on(self, pool: PoolView) -> tuple[float, bool]:
        """(run time in s on the pool, whether it is predicted from SCUs)."""
        if self.profile is not None and self.work_scu_h is not None:
            rate = pool.scu_rate(self.profile)
            if rate > 0:
                return self.work_scu_h * 3600.0 / rate, True
        return max(0.0, self.expected_runtime_s), False


@dataclass(frozen=True, slots=True)
class Placement:
    """One ranked candidate pool for a task."""

    pool_id: str
    rank: int  # 1 is best; ranks count every feasible pool, even ones a Decision leaves out
    score: float  # weighted policy score, lower is better (avoided pools rank last regardless)
    expected_start_s: float  # seconds from now until the task would start
    hourly_price: float  # price of the task's demand for one hour, pool currency
    estimated_cost: float  # hourly_price x expected runtime, pool currency
    fits_now: bool  # enough available capacity right now; only these may be reserved
    reasons: tuple[str, ...]  # why it ranks where it does, human sentences
    # Run time predicted from the task's SCU-hours and the pool's SCU rate (None: not predicted,
    # expected_runtime_s was used).
    predicted_runtime_s: float | None = None
    # The time-to-result terms (s): staging inputs in + waiting to start + running.
    staging_s: float = 0.0
    runtime_s: float = 0.0
    time_to_result_s: float = 0.0  # expected, counting retries after the pool's failures
    egress_cost: float = 0.0  # moving the inputs, pool currency (part of estimated_cost)
    carbon_g: float | None = None  # grams of CO2 of the run; None: the grid is unknown
    # Lexical tier before the objective (0 first): pools within the latency bound, then those
    # beyond it but within its fallback; within each, the spillover tier.
    tier: int = 0


@dataclass(frozen=True, slots=True)
class Rejection:
    """An infeasible pool and every reason it cannot take the task."""

    pool_id: str
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Decision:
    """The scheduler's answer for one task: ranked placements and rejected pools."""

    task_id: str
    placements: tuple[Placement, ...]  # best first
    rejections: tuple[Rejection, ...]  # sorted by pool id

    @property
    def best(self) -> Placement | None:
        """Return the first placement that fits now (the one to reserve), or None."""
        for placement in self.placements:
            if placement.fits_now:
                return placement
        return None
