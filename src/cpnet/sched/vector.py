"""The single-task decision over NumPy pool arrays: the pool ``rank`` would reserve, fast.

``rank`` explains every pool in sentences; a hub answering "where does this task go?" for many
tasks against one snapshot needs only the winner. ``Snapshot.of(pools)`` turns the pools into
column arrays once; ``Snapshot.best(task)`` then evaluates the same policy as ``place.rank``
(scheduler v2) with array operations: feasibility (constraints, size, allowed pools, denied
providers, spillover tiers, deadline and budget), fit now, the time/cost/carbon model of
``terms`` (wait, run time, risk, prices per resource-hour or per SCU-hour), the task's
objective, load, avoided pools and ties by pool id. The arithmetic is the same IEEE operations
in the same order as ``terms`` and ``score``, so the winner is the same pool, not just a close
one (``tests/unit/sched/test_vector.py`` checks it against
``rank``).

Not vectorised (those tasks go through ``rank`` itself, with the same answer): inputs staged
over a network map, and latency bounds, both of which need the map's paths per pool.

Constraint masks are cached per value (a region prefix, a label, a provider...), so a task
costs a few array operations over the pools, whatever its constraints.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np

from cpnet.network import NetworkMap
from cpnet.sched import feasibility, score, terms
from cpnet.sched.place import rank
from cpnet.sched.snapshot import EPSILON, PoolView, TaskRequest

_NAMES = ("cpu_cores", "ram_gb", "disk_gb", "gpus")
# Numbers each per-shape cache (shortlists, terms) may hold (8 bytes each): 64 MB.
CACHE_FLOATS = 8_000_000


def _column(values: Sequence[float | None]) -> np.ndarray:
    """A float array; None becomes NaN."""
    return np.array([np.nan if v is None else v for v in values], dtype=float)


@dataclass(frozen=True, slots=True)
class _Factor:
    """One pool attribute as distinct values and each pool's index into them."""

    values: tuple[Hashable, ...]
    index: np.ndarray

    @classmethod
    def of(cls, values: Sequence[Hashable]) -> _Factor:
        seen: dict[Hashable, int] = {}
        index = np.fromiter((seen.setdefault(v, len(seen)) for v in values), dtype=np.int64)
        return cls(tuple(seen), index)

    def map(self, test: Callable[[Hashable], object], dtype: type = bool) -> np.ndarray:
        """Per pool, ``test`` of its value: evaluated once per distinct value."""
        return np.array([test(v) for v in self.values], dtype=dtype)[self.index]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One snapshot's pools as column arrays, in pool id order (as ``place.Board``)."""

    pools: tuple[PoolView, ...]
    ids: tuple[str, ...]
    total: tuple[np.ndarray, ...]  # cpu, ram, disk, gpus: one array each
    available: tuple[np.ndarray, ...]  # the same four
    # Per column of total and of available: whether no pool has a negative amount.
    nonnegative: tuple[tuple[bool, ...], tuple[bool, ...]]
    queue: np.ndarray  # backend queue length
    slots: np.ndarray  # max(1, running)
    recent_runtime: np.ndarray  # s; NaN: no history
    recent_known: np.ndarray  # bool: recent_runtime is known
    recent_wait: np.ndarray  # s; -inf: no history (so max() with it changes nothing)
    risk: np.ndarray  # terms.risk: expected tries
    carbon: np.ndarray  # grid g/kWh; NaN: unknown
    watts: tuple[np.ndarray, np.ndarray]  # per busy core, per busy GPU
    load: np.ndarray  # score.load_fraction
    prices: tuple[np.ndarray, ...]  # per core-hour, per GB-hour, per GPU-hour
    online: np.ndarray  # bool
    images: np.ndarray  # bool: can run executors' images
    factors: dict[str, _Factor] = field(repr=False, compare=False)
    # Masks and rates already computed, keyed by the value they test.
    _cache: dict[Hashable, np.ndarray] = field(default_factory=dict, repr=False, compare=False)
    _shortlists: dict[Hashable, tuple[np.ndarray, ...]] = field(
        default_factory=dict, repr=False, compare=False
    )
    _terms_cache: dict[Hashable, tuple[np.ndarray, ...]] = field(
        default_factory=dict, repr=False, compare=False
    )
    # Numbers held by the two caches above, each kept under CACHE_FLOATS.
    _held: list[int] = field(default_factory=lambda: [0, 0], repr=False, compare=False)

    @classmethod
    def of(cls, pools: Sequence[PoolView]) -> Snapshot:
        """Build the arrays for a snapshot; refuse duplicate pool ids (as ``Board.of``)."""
        ordered = tuple(sorted(pools, key=lambda p: p.id))
        ids = tuple(p.id for p in ordered)
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate pool id in snapshot: give each pool once")
        total = tuple(_column([getattr(p.total, n) for p in ordered]) for n in _NAMES)
        available = tuple(_column([getattr(p.available, n) for p in ordered]) for n in _NAMES)
        return cls(
            pools=ordered,
            ids=ids,
            total=total,
            available=available,
            nonnegative=(
                tuple(bool((c >= 0).all()) for c in total),
                tuple(bool((c >= 0).all()) for c in available),
            ),
            queue=_column([p.queue_length for p in ordered]),
            slots=_column([max(1, p.running) for p in ordered]),
            recent_runtime=_column([p.recent_runtime_s for p in ordered]),
            recent_known=np.array([p.recent_runtime_s is not None for p in ordered], dtype=bool),
            recent_wait=np.array(
                [-np.inf if p.recent_wait_s is None else p.recent_wait_s for p in ordered],
                dtype=float,
            ),
            risk=_column([terms.risk(p) for p in ordered]),
            carbon=_column([p.carbon_g_per_kwh for p in ordered]),
            watts=(
                _column([p.watts_per_core for p in ordered]),
                _column([p.watts_per_gpu for p in ordered]),
            ),
            load=_column([score.load_fraction(p) for p in ordered]),
            prices=tuple(
                _column([getattr(p.price, n) for p in ordered])
                for n in ("cpu_core_hour", "ram_gb_hour", "gpu_hour")
            ),
            online=np.array([p.online for p in ordered], dtype=bool),
            images=np.array([p.can_run_images for p in ordered], dtype=bool),
            factors={
                "gpu": _Factor.of([(p.gpu_model or "").lower() for p in ordered]),
                "region": _Factor.of([p.region_code for p in ordered]),
                "provider": _Factor.of([p.provider_id for p in ordered]),
                "type": _Factor.of([p.type for p in ordered]),
                "labels": _Factor.of([p.labels for p in ordered]),
                "scu": _Factor.of([p.scu for p in ordered]),
                "scu_price": _Factor.of([p.price.scu_hour for p in ordered]),
                "id": _Factor.of(ids),
            },
        )

    def _map(
        self, name: str, key: Hashable, test: Callable[[Hashable], object], dtype: type = bool
    ) -> np.ndarray:
        """A cached per-pool array of ``test`` over one attribute, for one constraint value."""
        got = self._cache.get((name, key))
        if got is None:
            got = self._cache[(name, key)] = self.factors[name].map(test, dtype)
        return got

    def feasible(self, task: TaskRequest) -> np.ndarray:
        """Per pool, whether ``feasibility.check`` would accept it (constraints and size).

        Latency bounds are not judged here (``best`` leaves such tasks to ``rank``).
        """
        ok = self.online
        if task.gpu_model is not None:
            want = task.gpu_model.lower()
            ok = ok & self._map("gpu", want, lambda m: bool(m) and want in m)
        if task.regions:
            regions = task.regions
            ok = ok & self._map(
                "region", regions, lambda code: any(code.startswith(r) for r in regions)
            )
        if task.tiers:
            ok = ok & (self._tiers(task) >= 0)
        if task.providers:
            ok = ok & self._map("provider", task.providers, task.providers.__contains__)
        if task.pools:
            ok = ok & self._map("id", task.pools, task.pools.__contains__)
        if task.deny_providers:
            deny = task.deny_providers
            ok = ok & self._map("provider", ("deny", deny), lambda p: p not in deny)
        if task.pool_types:
            ok = ok & self._map("type", task.pool_types, task.pool_types.__contains__)
        if task.image is not None:
            ok = ok & self.images
        if task.labels:
            want_labels = task.labels
            ok = ok & self._map(
                "labels", want_labels, lambda have: all(pair in have for pair in want_labels)
            )
        return ok & _fits(task, self.total, self.nonnegative[0])

    def _tiers(self, task: TaskRequest) -> np.ndarray:
        """Per pool, its spillover tier (0 first), -1 when it is in none."""
        tiers = task.tiers

        def tier_of(code: Hashable) -> int:
            for i, prefixes in enumerate(tiers):
                if any(str(code).startswith(p) for p in prefixes):
                    return i
            return -1

        return self._map("region", ("tiers", tiers), tier_of, np.int64)

    def _rates(self, profile: str) -> np.ndarray:
        return self._map(
            "scu", ("scu", profile), lambda pairs: dict(pairs).get(profile, 0.0), float
        )

    def _scu_prices(self, profile: str) -> np.ndarray:
        """Per pool, its price per SCU-hour of ``profile`` (NaN: not priced per SCU-hour)."""
        return self._map(
            "scu_price",
            ("scu_price", profile),
            lambda pairs: dict(pairs).get(profile, np.nan),
            float,
        )

    def best(
        self,
        task: TaskRequest,
        weights: score.Weights = score.DEFAULT_WEIGHTS,
        network: NetworkMap | None = None,
    ) -> str | None:
        """The id of the pool ``rank(task, pools, weights, network).best`` names, or None."""
        if task.latency is not None or (task.inputs and network is not None):
            # Paths on the map per pool: not vectorised, so ask rank itself.
            chosen = rank(task, self.pools, weights, network).best
            return chosen.pool_id if chosen else None
        candidates, times_fit, times_not, costs, grams, loads = self._shortlist(task)
        if len(candidates) == 0:
            return None
        fits = _fits(task, tuple(a[candidates] for a in self.available), self.nonnegative[1])
        if not fits.any():
            return None
        times = np.where(fits, times_fit, times_not)
        scores = _objective_scores(task.objective, times, costs, grams, loads, weights)
        choose = fits
        if task.avoid_pools:
            avoided = np.fromiter(
                (self.ids[i] in task.avoid_pools for i in candidates),
                dtype=bool,
                count=len(candidates),
            )
            if (fits & ~avoided).any():
                choose = fits & ~avoided
        if task.tiers:
            tiers = self._tiers(task)[candidates]
            choose = choose & (tiers == tiers[choose].min())
        # argmin takes the first of equal scores: the lowest pool id, as rank's tie-break.
        j = int(np.argmin(np.where(choose, scores, np.inf)))
        return self.ids[candidates[j]]

    def _shortlist(self, task: TaskRequest) -> tuple[np.ndarray, ...]:
        """The feasible pools within deadline and budget, with their availability-free terms.

        (candidates, time if it fits, time if not, cost, CO2 g, load), as ``place.shortlist``
        and then ``decide`` see them. None of it depends on what is free now, so it is cached
        per task shape (``batch.assign`` caches its shortlists by the same key); the cache
        holds at most about ``CACHE_FLOATS`` numbers, dropping the oldest shape first.
        """
        key = (
            feasibility.signature(task),
            task.demand,
            task.expected_runtime_s,
            task.profile,
            task.work_scu_h,
            task.deadline_s,
            task.budget,
        )
        got = self._shortlists.get(key)
        if got is not None:
            return got
        candidates = np.flatnonzero(self.feasible(task))
        terms_ = [x[candidates] for x in self._shape_terms(task)]
        if task.deadline_s is not None or task.budget is not None:
            keep = np.ones(len(candidates), dtype=bool)
            if task.deadline_s is not None:
                keep &= ~(terms_[0] > task.deadline_s)
            if task.budget is not None:
                keep &= ~(terms_[2] > task.budget + 1e-12)
            candidates = candidates[keep]
            terms_ = [x[keep] for x in terms_]
        got = self._shortlists[key] = (candidates, *terms_, self.load[candidates])
        _bound(self._shortlists, self._held, 0, 6 * len(candidates))
        return got

    def _shape_terms(self, task: TaskRequest) -> tuple[np.ndarray, ...]:
        """``_terms`` cached per what it depends on: demand, run time and SCU work."""
        d = task.demand
        key = (d.cpu_cores, d.ram_gb, d.gpus, task.expected_runtime_s, task.profile,
               task.work_scu_h)  # fmt: skip
        got = self._terms_cache.get(key)
        if got is None:
            got = self._terms_cache[key] = self._terms(task)
            _bound(self._terms_cache, self._held, 1, 4 * len(self.ids))
        return got

    def _terms(self, task: TaskRequest) -> tuple[np.ndarray, ...]:
        """``terms.of`` per pool without staging: time if it fits / if not, cost, CO2 g.

        Over every pool (cheaper than gathering a dozen columns per task); every expression
        keeps ``terms``' order of operations, so the figures are identical.
        """
        default = max(0.0, task.expected_runtime_s)
        run: np.ndarray | float = default
        if task.profile is not None and task.work_scu_h is not None:
            rates = self._rates(task.profile)
            with np.errstate(divide="ignore"):
                run = np.where(rates > 0, task.work_scu_h * 3600.0 / rates, default)
        ahead = np.maximum(0.0, np.where(self.recent_known, self.recent_runtime, run))
        slots = self.slots
        wait_fits = np.maximum(self.queue * ahead / slots, self.recent_wait)
        wait_not = wait_fits + ahead * slots / (slots + 1)
        risk = self.risk
        # Staging is 0 here: (0.0 + wait + run) x risk, as Terms.time_to_result_s.
        times_fit = (0.0 + wait_fits + run) * risk
        times_not = (0.0 + wait_not + run) * risk
        d = task.demand
        cpu, ram, gpu = self.prices
        hourly = d.cpu_cores * cpu + d.ram_gb * ram + d.gpus * gpu  # Price.hourly's order
        costs = (hourly * ((0.0 + run) / 3600.0) + 0.0) * risk
        if task.work_scu_h is not None and task.profile is not None:
            # SCU pricing (terms.work_cost): staging (0 here) at the hourly price + the work.
            per = self._scu_prices(task.profile)
            priced = ~np.isnan(per)
            if priced.any():
                scu_costs = (hourly * 0.0 / 3600.0 + task.work_scu_h * per + 0.0) * risk
                costs = np.where(priced, scu_costs, costs)
        per_core, per_gpu = self.watts
        watts = d.cpu_cores * per_core + d.gpus * per_gpu
        grams = self.carbon * watts * run / 3600.0 / 1000.0  # NaN: unknown grid
        return times_fit, times_not, costs, grams


def _bound(cache: dict, held: list[int], which: int, added: int) -> None:
    """Count ``added`` numbers into ``held[which]``; drop the oldest entries past the bound."""
    held[which] += added
    while held[which] > CACHE_FLOATS and len(cache) > 1:
        oldest = cache.pop(next(iter(cache)))
        held[which] -= sum(len(x) for x in oldest)


def _objective_scores(
    objective: str,
    times: np.ndarray,
    costs: np.ndarray,
    grams: np.ndarray,
    loads: np.ndarray,
    weights: score.Weights,
) -> np.ndarray:
    """``score.objective_scores`` over arrays (NaN grams: unknown, counted as the worst known)."""
    known = grams[~np.isnan(grams)]
    grams = np.where(np.isnan(grams), known.max() if len(known) else 0.0, grams)
    if objective == "balanced":
        base = (
            weights.start * _normalise(times)
            + weights.price * _normalise(costs)
            + weights.spread * loads
        )
        if weights.carbon:
            base = base + weights.carbon * _normalise(grams)
        return base
    first, second = {
        "fastest": (times, costs),
        "cheapest": (costs, times),
        "greenest": (grams, times),
    }[objective]
    tie = score.TIE_BREAK
    return _normalise(first) + tie * _normalise(second) + tie * weights.spread * loads


def _fits(
    task: TaskRequest, columns: tuple[np.ndarray, ...], nonnegative: tuple[bool, ...]
) -> np.ndarray:
    """Per row, ``task.demand.fits_in`` the row's resources."""
    d = task.demand
    ok = np.ones(len(columns[0]), dtype=bool)
    for need, have, slack, skip in zip(
        (d.cpu_cores, d.ram_gb, d.disk_gb, d.gpus),
        columns,
        (EPSILON, EPSILON, EPSILON, 0),
        nonnegative,
        strict=True,
    ):
        # No demand fits any amount that is not negative: skip the pass over the pools.
        if not (need <= 0 and skip):
            ok &= need <= have + slack
    return ok


def _normalise(values: np.ndarray) -> np.ndarray:
    """``score.normalise`` over an array: min to 0, max to 1, all 0 when equal."""
    low = values.min()
    span = values.max() - low
    if span <= 0:
        return np.zeros(len(values))
    return (values - low) / span
