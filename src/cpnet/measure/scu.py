"""Workload profiles and the standard compute unit (SCU); see docs/compute-unit.md.

A profile says what kind of work is meant: which part of a pool does it (CPU, accelerators,
both), at which precision, and how many operations it does per byte of memory traffic (its
arithmetic intensity I). A pool's SCU rate for a profile is its roofline-attainable throughput:

    attainable = min(compute at the profile's precision, I x memory bandwidth)   [TFLOP/s]
    SCU rate   = attainable / (1 TFLOP/s)

so **one SCU-hour is 3.6 x 10^15 operations of the profile's kind** (one hour at 1 TFLOP/s,
TOP/s for INT8), done at the profile's precision and intensity. Figures are the capacity
vector's sustained values (measured, else declared, else half the catalogue peak).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cpnet.measure.vector import CapacityVector, Part

SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    title: str
    devices: Literal["cpu", "accelerator", "all"]  # "accelerator" falls back to the CPU
    precisions: tuple[str, ...]  # the first one the part has is used
    intensity: float  # FLOP (or OP) per byte of memory traffic
    single_device: bool  # latency-bound: one request cannot spread over many devices
    why: str


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            "general",
            "general-purpose computing",
            "cpu",
            ("fp64",),
            1.0,
            False,
            "data processing, services, builds: CPU work that streams memory (~1 FLOP/byte)",
        ),
        Profile(
            "ai-train",
            "AI training",
            "accelerator",
            ("bf16", "fp16", "tf32", "fp32"),
            128.0,
            False,
            "large matrix multiplies in BF16/FP16 with high reuse (~128 FLOP/byte)",
        ),
        Profile(
            "ai-infer",
            "AI inference (batched serving)",
            "accelerator",
            ("fp16", "bf16", "int8", "fp32"),
            16.0,
            False,
            "batched decoding: weights streamed per step, modest reuse (~16 FLOP/byte)",
        ),
        Profile(
            "hpc",
            "scientific computing (FP64)",
            "all",
            ("fp64",),
            4.0,
            False,
            "FP64 stencils, sparse and dense solvers on CPUs and accelerators (~4 FLOP/byte)",
        ),
        Profile(
            "edge-realtime",
            "real-time inference at the edge",
            "accelerator",
            ("int8", "fp16", "bf16", "fp32"),
            8.0,
            True,
            "one request at a time, latency-bound: one device's rate, INT8 (~8 OP/byte)",
        ),
    )
}


class UnknownProfile(ValueError):
    """A profile name that is not defined; the message lists the known ones."""


def profile(name: str) -> Profile:
    """The profile of that name, or UnknownProfile naming the known ones."""
    p = PROFILES.get(name)
    if p is None:
        raise UnknownProfile(f"unknown profile {name!r}; use one of {', '.join(PROFILES)}")
    return p


@dataclass(frozen=True, slots=True)
class Rate:
    """A pool's SCU rate for one profile, and why it is that."""

    profile: str
    scu: float  # SCU (attainable TFLOP/s of the profile's kind)
    part: str | None  # "cpu", "accelerator", "cpu+accelerator"; None when nothing is known
    precision: str | None
    bound: str  # "compute", "memory", "compute (bandwidth unknown)", "unknown"


def part_rate(part: Part, p: Profile) -> tuple[float, str | None, str]:
    """Roofline rate of one part: (SCU, precision used, what bounds it)."""
    precision = next((x for x in p.precisions if part.value(x) is not None), None)
    if precision is None:
        return 0.0, None, "unknown"
    compute = part.value(precision) or 0.0
    bw = part.value("mem_bw")
    if p.single_device and part.count > 0 and part.kind == "accelerator":
        compute /= part.count
        bw = None if bw is None else bw / part.count
    if bw is None:
        return compute, precision, "compute (bandwidth unknown)"
    memory = p.intensity * bw / 1000.0  # GB/s x FLOP/B = GFLOP/s -> TFLOP/s
    if memory < compute:
        return memory, precision, "memory"
    return compute, precision, "compute"


def rate(vector: CapacityVector, name: str) -> Rate:
    """The pool's SCU rate for a profile (raises UnknownProfile)."""
    p = profile(name)
    cpu = part_rate(vector.cpu, p)
    acc = part_rate(vector.accelerator, p) if vector.accelerator is not None else None
    if p.devices == "cpu" or (p.devices == "accelerator" and (acc is None or acc[0] <= 0)):
        scu, precision, bound = cpu
        return Rate(name, scu, "cpu" if precision else None, precision, bound)
    if p.devices == "accelerator":
        assert acc is not None
        return Rate(name, acc[0], "accelerator", acc[1], acc[2])
    # "all": CPUs and accelerators work side by side, each on its own memory.
    if acc is None or acc[0] <= 0:
        return Rate(name, cpu[0], "cpu" if cpu[1] else None, cpu[1], cpu[2])
    if cpu[0] <= 0:
        return Rate(name, acc[0], "accelerator", acc[1], acc[2])
    bound = cpu[2] if cpu[2] == acc[2] else f"cpu {cpu[2]}, accelerator {acc[2]}"
    return Rate(name, cpu[0] + acc[0], "cpu+accelerator", acc[1], bound)


def rate_all(vector: CapacityVector) -> CapacityVector:
    """The vector with ``scu`` filled for every profile (rounded to 4 significant digits)."""
    vector.scu = {name: _round(rate(vector, name).scu) for name in PROFILES}
    return vector


def _round(x: float) -> float:
    return float(f"{x:.4g}")


def work_scu_hours(reference_runtime_s: float, reference_rate: float) -> float:
    """The work, in SCU-hours, of a task that ran `reference_runtime_s` on a pool of that SCU
    rate (the inverse of `predict_runtime_s`)."""
    return reference_runtime_s / SECONDS_PER_HOUR * reference_rate


def predict_runtime_s(work_scu_hours: float, scu_rate: float) -> float | None:
    """Seconds a task of that much work takes at that rate; None when the rate is not known."""
    if scu_rate <= 0:
        return None
    return work_scu_hours * SECONDS_PER_HOUR / scu_rate


def price_per_scu_hour(pool_hourly_price: float, scu_rate: float) -> float | None:
    """Price of one SCU-hour on a pool whose whole capacity costs ``pool_hourly_price`` per hour."""
    if scu_rate <= 0:
        return None
    return pool_hourly_price / scu_rate
