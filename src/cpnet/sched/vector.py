"""The single-task decision over NumPy pool arrays: the pool ``rank`` would reserve, fast.

``rank`` explains every pool in sentences; a hub answering "where does this task go?" for many
tasks against one snapshot needs only the winner. ``Snapshot.of(pools)`` turns the pools into
arrays once; ``Snapshot.best(task)`` then evaluates the same policy as ``place.rank`` with array
operations: feasibility (constraints, size), fit now, start estimate, price, SCU run time,
normalised score, load, avoided pools, ties by pool id. The arithmetic is the same IEEE
operations in the same order as ``score.scores``, so the winner is the same pool, not just a
close one (``tests/unit/sched/test_vector.py`` checks it against ``rank``).

Constraint masks are cached per value (a region prefix, a label, a provider...), so a task
costs a few array operations over the pools, whatever its constraints.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np

from cpnet.sched import score
from cpnet.sched.snapshot import EPSILON, PoolView, TaskRequest


def _column(values: Sequence[float]) -> np.ndarray:
    return np.array(values, dtype=float)


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

    def mask(self, test: Callable[[Hashable], bool]) -> np.ndarray:
        """Per pool, ``test`` of its value: evaluated once per distinct value."""
        return np.array([test(v) for v in self.values], dtype=bool)[self.index]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One snapshot's pools as column arrays, in pool id order (as ``place.Board``)."""

    ids: tuple[str, ...]
    total: tuple[np.ndarray, ...]  # cpu, ram, disk, gpus: one array each
    available: tuple[np.ndarray, ...]  # the same four
    queue: np.ndarray  # score.start_factors: queue multiplier of the run time
    queue_busy: np.ndarray  # queue + busy: the multiplier when the task does not fit now
    load: np.ndarray  # score.load_fraction
    prices: tuple[np.ndarray, ...]  # per core-hour, per GB-hour, per GPU-hour
    online: np.ndarray  # bool
    images: np.ndarray  # bool: can run executors' images
    # Per column of total and of available: whether no pool has a negative amount.
    nonnegative: tuple[tuple[bool, ...], tuple[bool, ...]]
    factors: dict[str, _Factor] = field(repr=False, compare=False)
    scu: tuple[tuple[tuple[str, float], ...], ...] = field(repr=False, compare=False)
    # Masks and rates already computed, keyed by the value they test.
    _cache: dict[Hashable, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def of(cls, pools: Sequence[PoolView]) -> Snapshot:
        """Build the arrays for a snapshot; refuse duplicate pool ids (as ``Board.of``)."""
        ordered = sorted(pools, key=lambda p: p.id)
        ids = tuple(p.id for p in ordered)
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate pool id in snapshot: give each pool once")
        factors = [score.start_factors(p) for p in ordered]
        queue = _column([q for q, _ in factors])
        total = tuple(_column([getattr(p.total, n) for p in ordered]) for n in _NAMES)
        available = tuple(_column([getattr(p.available, n) for p in ordered]) for n in _NAMES)
        return cls(
            ids=ids,
            total=total,
            available=available,
            nonnegative=(
                tuple(bool((c >= 0).all()) for c in total),
                tuple(bool((c >= 0).all()) for c in available),
            ),
            queue=queue,
            queue_busy=_column([q + b for q, b in factors]),
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
            },
            scu=tuple(p.scu for p in ordered),
        )

    def _mask(self, name: str, key: Hashable, test: Callable[[Hashable], bool]) -> np.ndarray:
        """A cached per-pool boolean array for one constraint value."""
        mask = self._cache.get((name, key))
        if mask is None:
            mask = self._cache[(name, key)] = self.factors[name].mask(test)
        return mask

    def feasible(self, task: TaskRequest) -> np.ndarray:
        """Per pool, whether ``feasibility.check`` would accept it (constraints and size)."""
        ok = self.online
        if task.gpu_model is not None:
            want = task.gpu_model.lower()
            ok = ok & self._mask("gpu", want, lambda m: bool(m) and want in m)
        if task.regions:
            regions = task.regions
            ok = ok & self._mask(
                "region", regions, lambda code: any(code.startswith(r) for r in regions)
            )
        if task.providers:
            ok = ok & self._mask("provider", task.providers, task.providers.__contains__)
        if task.pool_types:
            ok = ok & self._mask("type", task.pool_types, task.pool_types.__contains__)
        if task.image is not None:
            ok = ok & self.images
        if task.labels:
            want_labels = task.labels
            ok = ok & self._mask(
                "labels", want_labels, lambda have: all(pair in have for pair in want_labels)
            )
        return ok & _fits(task, self.total, self.nonnegative[0])

    def _rates(self, profile: str) -> np.ndarray:
        rates = self._cache.get(("scu", profile))
        if rates is None:
            rates = self._cache[("scu", profile)] = _column(
                [dict(pairs).get(profile, 0.0) for pairs in self.scu]
            )
        return rates

    def best(self, task: TaskRequest, weights: score.Weights = score.DEFAULT_WEIGHTS) -> str | None:
        """The id of the pool ``rank(task, pools, weights).best`` names, or None."""
        candidates = np.flatnonzero(self.feasible(task))
        if len(candidates) == 0:
            return None
        fits = _fits(task, tuple(a[candidates] for a in self.available), self.nonnegative[1])
        if not fits.any():
            return None
        runtime = max(0.0, task.expected_runtime_s)
        predicted = False
        runtimes: np.ndarray | float = runtime
        if task.profile is not None and task.work_scu_h is not None:
            rates = self._rates(task.profile)[candidates]
            known = rates > 0
            if known.any():
                predicted = True
                with np.errstate(divide="ignore"):
                    runtimes = np.where(known, task.work_scu_h * 3600.0 / rates, runtime)
        starts = runtimes * np.where(fits, self.queue[candidates], self.queue_busy[candidates])
        d = task.demand
        # Same operations, same order as Price.hourly: cpu, then ram, then gpus.
        cpu, ram, gpu = (p[candidates] for p in self.prices)
        hourly = d.cpu_cores * cpu + d.ram_gb * ram + d.gpus * gpu
        if predicted:
            starts, hourly = starts + runtimes, hourly * runtimes
        scores = (
            weights.start * _normalise(starts)
            + weights.price * _normalise(hourly)
            + weights.spread * self.load[candidates]
        )
        choose = fits
        if task.avoid_pools:
            avoided = np.fromiter(
                (self.ids[i] in task.avoid_pools for i in candidates),
                dtype=bool,
                count=len(candidates),
            )
            if (fits & ~avoided).any():
                choose = fits & ~avoided
        # argmin takes the first of equal scores: the lowest pool id, as rank's tie-break.
        j = int(np.argmin(np.where(choose, scores, np.inf)))
        return self.ids[candidates[j]]


_NAMES = ("cpu_cores", "ram_gb", "disk_gb", "gpus")


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
