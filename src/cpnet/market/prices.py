"""Price books: what a pool charges, when, and how its price follows its load (pure).

A pool's price book is a list of entries a provider published, each valid for a period:

- ``kind``: ``on_demand`` (what the scheduler and quotes use) or ``spot`` (published and shown;
  spot placement is not implemented yet);
- prices per resource-hour (``cpu_core_hour``, ``ram_gb_hour``, ``gpu_hour``, optionally per GPU
  model) and/or per SCU-hour of work by workload profile (``scu_hour``);
- ``valid_from`` and ``valid_until`` (epoch seconds; ``None``: open-ended);
- an optional dynamic rule: ``price × clamp(1 + k × (utilisation − target), floor, cap)``,
  whose bounds are checked here: ``0 ≤ target ≤ 1``, ``0 ≤ k ≤ MAX_K``,
  ``MIN_FLOOR ≤ floor ≤ 1 ≤ cap ≤ MAX_CAP``, so a dynamic price never leaves 0.5×–2× of the list
  price.

At a time ``now`` the effective entry of a kind is the one with the latest ``valid_from`` at or
before ``now`` whose period still runs (a newer entry supersedes an older one; ties go to the
later published). Nothing here reads the clock: ``now`` is passed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cpnet.sched.snapshot import Price

KINDS = ("on_demand", "spot")
MIN_FLOOR = 0.5  # a dynamic price is never below half the list price ...
MAX_CAP = 2.0  # ... nor above twice it
MAX_K = 10.0  # the steepest rule: +10 % of the price per point of utilisation over target
MAX_PRICE = 1_000_000.0  # per hour or per SCU-hour, in the currency: guards against typos


class PriceError(ValueError):
    """A price book entry that breaks a rule; ``field`` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class DynamicRule:
    """Price multiplier from utilisation: ``clamp(1 + k × (utilisation − target), floor, cap)``."""

    target: float = 0.7  # utilisation (0..1) at which the list price applies
    k: float = 1.0  # slope: multiplier change per unit of utilisation away from the target
    floor: float = 0.8  # lowest multiplier, MIN_FLOOR..1
    cap: float = 1.5  # highest multiplier, 1..MAX_CAP

    def factor(self, utilisation: float) -> float:
        """The multiplier at a utilisation (clamped to 0..1 first)."""
        u = min(1.0, max(0.0, utilisation))
        return min(self.cap, max(self.floor, 1.0 + self.k * (u - self.target)))


def check_rule(rule: DynamicRule) -> DynamicRule:
    """The rule if its figures are within the documented bounds, else PriceError naming one."""
    if not 0.0 <= rule.target <= 1.0:
        raise PriceError("dynamic.target", f"target is a utilisation 0..1, got {rule.target:g}")
    if not 0.0 <= rule.k <= MAX_K:
        raise PriceError("dynamic.k", f"k must be 0..{MAX_K:g}, got {rule.k:g}")
    if not MIN_FLOOR <= rule.floor <= 1.0:
        raise PriceError(
            "dynamic.floor",
            f"floor must be {MIN_FLOOR:g}..1 (× the list price), got {rule.floor:g}",
        )
    if not 1.0 <= rule.cap <= MAX_CAP:
        raise PriceError(
            "dynamic.cap", f"cap must be 1..{MAX_CAP:g} (× the list price), got {rule.cap:g}"
        )
    return rule


@dataclass(frozen=True, slots=True)
class Entry:
    """One published price of a pool, valid for a period."""

    kind: str = "on_demand"
    currency: str = "CNY"
    cpu_core_hour: float = 0.0
    ram_gb_hour: float = 0.0
    gpu_hour: float = 0.0  # any GPU model not listed in gpu_models
    gpu_models: tuple[tuple[str, float], ...] = ()  # (model substring, price per GPU-hour)
    scu_hour: tuple[tuple[str, float], ...] = ()  # (workload profile, price per SCU-hour)
    valid_from: float = 0.0
    valid_until: float | None = None
    dynamic: DynamicRule | None = None
    seq: int = 0  # publication order: later wins a tie of valid_from

    def valid_at(self, now: float) -> bool:
        """Whether the entry's period covers ``now`` (from inclusive, until exclusive)."""
        return self.valid_from <= now and (self.valid_until is None or now < self.valid_until)

    def gpu_price(self, gpu_model: str | None) -> float:
        """Price per GPU-hour for a pool's GPU model: the first listed model it contains, else
        the entry's ``gpu_hour``."""
        if gpu_model:
            name = gpu_model.lower()
            for model, price in self.gpu_models:
                if model.lower() in name:
                    return price
        return self.gpu_hour


def check_entry(entry: Entry, profiles: Iterable[str] = ()) -> Entry:
    """The entry if every figure is allowed, else PriceError naming the first bad field.

    ``profiles`` are the known workload profiles (empty: not checked).
    """
    if entry.kind not in KINDS:
        raise PriceError("kind", f"kind must be one of {', '.join(KINDS)}, got {entry.kind!r}")
    if len(entry.currency) != 3 or not entry.currency.isalpha() or not entry.currency.isupper():
        raise PriceError(
            "currency", f"currency is a 3-letter code like CNY, got {entry.currency!r}"
        )
    for field in ("cpu_core_hour", "ram_gb_hour", "gpu_hour"):
        _check_price(field, getattr(entry, field))
    for model, price in entry.gpu_models:
        _check_price(f"gpu_models.{model}", price)
    known = set(profiles)
    for profile, price in entry.scu_hour:
        if known and profile not in known:
            raise PriceError(
                f"scu_hour.{profile}",
                f"unknown workload profile {profile!r}; use one of {', '.join(sorted(known))}",
            )
        _check_price(f"scu_hour.{profile}", price)
    if entry.valid_until is not None and entry.valid_until <= entry.valid_from:
        raise PriceError("valid_until", "valid_until must be after valid_from")
    if entry.dynamic is not None:
        check_rule(entry.dynamic)
    return entry


def _check_price(field: str, value: float) -> None:
    if not (0.0 <= value <= MAX_PRICE):  # also refuses NaN
        raise PriceError(field, f"{field} must be 0..{MAX_PRICE:g}, got {value!r}")


def current(entries: Sequence[Entry], now: float, kind: str = "on_demand") -> Entry | None:
    """The entry of ``kind`` in force at ``now``: latest ``valid_from``, then latest published."""
    best: Entry | None = None
    for e in entries:
        if e.kind != kind or not e.valid_at(now):
            continue
        if best is None or (e.valid_from, e.seq) > (best.valid_from, best.seq):
            best = e
    return best


def effective(entry: Entry, utilisation: float, gpu_model: str | None = None) -> Price:
    """The scheduler's Price for a pool from an entry, the dynamic rule applied at a utilisation."""
    f = entry.dynamic.factor(utilisation) if entry.dynamic is not None else 1.0
    scu_hour = tuple(sorted(entry.scu_hour))
    return Price(
        currency=entry.currency,
        cpu_core_hour=entry.cpu_core_hour * f,
        ram_gb_hour=entry.ram_gb_hour * f,
        gpu_hour=entry.gpu_price(gpu_model) * f,
        scu_hour=scu_hour if f == 1.0 else tuple((p, v * f) for p, v in scu_hour),
    )


def price_at(
    entries: Sequence[Entry],
    now: float,
    utilisation: float,
    *,
    gpu_model: str | None = None,
    default: Price | None = None,
    kind: str = "on_demand",
) -> Price | None:
    """The pool's effective price of ``kind`` at ``now``: its book's entry in force with the
    dynamic rule at ``utilisation`` applied, else ``default`` (the price its agent declared)."""
    entry = current(entries, now, kind)
    if entry is None:
        return default
    return effective(entry, utilisation, gpu_model)


def from_declared(price: dict, *, since: float = 0.0) -> Entry:
    """The on-demand entry an agent's declared descriptor price stands for (no book set)."""
    return Entry(
        kind="on_demand",
        currency=price.get("currency", "CNY"),
        cpu_core_hour=float(price.get("cpu_core_hour", 0.0)),
        ram_gb_hour=float(price.get("ram_gb_hour", 0.0)),
        gpu_hour=float(price.get("gpu_hour", 0.0)),
        valid_from=since,
    )
