"""Calibration probes on this machine: time taken, and measured vs peak per figure.

The peak is the catalogue's for the detected CPU (``lscpu`` model name). When the CPU is not in
the catalogue (a KVM guest that reports "Intel(R) Xeon(R) Processor", say), the table also shows
an *estimate* derived from what the kernel reports: CPUs x clock (BogoMIPS / 2, the TSC rate) x
FP64 FLOP/cycle/core from the vector flags (AVX-512: 32, two 512-bit FMA units as on every
Sapphire-Rapids-class part with AMX; AVX2+FMA: 16). It is labelled as such, never as catalogue.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common import Section, console, machine, write_report

from cpnet.agent import hostinfo
from cpnet.measure import probes, scu, vector

DEFAULT_BUDGET_S = 20.0


DEFAULT_RUNS = 3


@dataclass(frozen=True)
class Params:
    budget_s: float
    runs: int
    command: str


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--budget", type=float, default=None, help=f"measure: probe budget s ({DEFAULT_BUDGET_S})"
    )
    ap.add_argument("--runs", type=int, default=None, help=f"measure: probe runs ({DEFAULT_RUNS})")


def params(args: argparse.Namespace, command: str) -> Params:
    budget = args.budget or (5.0 if args.quick else DEFAULT_BUDGET_S)
    runs = args.runs or (1 if args.quick else DEFAULT_RUNS)
    return Params(budget, runs, command)


def flag_estimate(cores: int) -> tuple[dict[str, float], str]:
    """Per-figure peaks estimated from /proc/cpuinfo flags and BogoMIPS (not catalogue)."""
    text = Path("/proc/cpuinfo").read_text()
    flags = set()
    mips = 0.0
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags" and not flags:
            flags = set(value.split())
        if key.strip() == "bogomips" and not mips:
            mips = float(value)
    per_cycle = 32 if "avx512f" in flags else 16 if "fma" in flags else 4
    ghz = mips / 2000.0
    fp64 = cores * ghz * per_cycle / 1000.0
    how = (
        f"{cores} CPUs x {ghz:.2f} GHz (BogoMIPS / 2) x {per_cycle} FP64 FLOP/cycle "
        f"({'avx512f' if per_cycle == 32 else 'fma'} in the flags)"
    )
    return {"fp64": fp64, "fp32": 2 * fp64}, how


def _cell(values: list[float]) -> str:
    """Median, with the range when there are several runs."""
    if not values:
        return "-"
    mid = statistics.median(values)
    if len(values) == 1:
        return f"{mid:.4g}"
    return f"{mid:.4g} ({min(values):.4g}–{max(values):.4g})"


def _ratio(values: list[float], peak: float | None) -> str:
    if not values or not peak:
        return "-"
    return f"{statistics.median(values) / peak:.0%}"


def run(p: Params) -> os.PathLike:
    model = hostinfo.cpu_model()
    reports = []
    walls = []
    for i in range(p.runs):
        console.print(f"probing {model} for {p.budget_s:g} s (run {i + 1} of {p.runs}) …")
        t0 = time.perf_counter()
        reports.append(probes.run(budget_s=p.budget_s, cpu_model=model, torch_on_cpu=True))
        walls.append(time.perf_counter() - t0)
    last = reports[-1]
    vec = scu.rate_all(
        vector.build(cpu_model=model, cpu_cores=last.cores_used, memory_gb=0.0, probe=last)
    )
    estimate, how = flag_estimate(last.cores_used)
    rows = []
    for name in vector.CPU_FIGURES:
        fig = vec.cpu.figures.get(name)
        values = [v for r in reports if (v := r.cpu.given().get(name)) is not None]
        peak = fig.nominal if fig else None
        est = estimate.get(name)
        rows.append(
            [
                f"CPU {name} ({vector.UNITS[name]})",
                _cell(values),
                f"{peak:.4g}" if peak is not None else "not in catalogue",
                _ratio(values, peak),
                f"{est:.4g}" if est is not None else "-",
                _ratio(values, est),
            ]
        )
    for device in last.torch:
        for name in last.torch[device].given():
            values = [
                v
                for r in reports
                if device in r.torch and (v := r.torch[device].given().get(name)) is not None
            ]
            rows.append(
                [f"torch on {device} {name} ({vector.UNITS[name]})", _cell(values)] + ["-"] * 4
            )
    timing = [
        [f"{p.budget_s:g} s", f"{r.duration_s:.2f} s", f"{w:.2f} s", r.cores_used]
        for r, w in zip(reports, walls, strict=True)
    ]
    rates = [[name, f"{vec.scu[name]:g}", scu.rate(vec, name).bound] for name in scu.PROFILES]
    notes = [
        f"CPU as lscpu reports it: {model!r}. Catalogue: {vec.cpu.match}",
        f"Estimated peak (not catalogue): {how}.",
        f"{p.runs} probe runs; each cell is the median (range). Measured: NumPy/OpenBLAS GEMM "
        "(best of repeated runs within a run), a threaded triad counting the 5 x 8 bytes per "
        "element NumPy's two passes move, and the PyTorch path on the CPU (matmul at "
        "FP32/BF16/FP16, tensor copy bandwidth). The machine is shared with other work, so "
        "figures vary from run to run; the load average is in the machine line.",
        "SCU rates are from the last run's figures, for this machine's 2 CPUs as one pool.",
        "GPU path: unvalidated on a real GPU (this machine has none).",
    ]
    return write_report(
        "measure",
        "Calibration probes: time and measured vs peak",
        command=p.command,
        sections=[
            Section(
                "Probe time per run",
                ["budget", "probe time", "wall incl. set-up", "CPUs used"],
                timing,
            ),
            Section(
                "Measured vs peak",
                ["figure", "measured", "catalogue peak", "ratio", "estimated peak", "ratio"],
                rows,
            ),
            Section(
                "SCU rate per profile from the measured figures", ["profile", "SCU", "bound"], rates
            ),
        ],
        notes=notes,
        machine_info=machine(),
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one short run")
    add_args(ap)
    args = ap.parse_args()
    path = run(params(args, " ".join(["bench/measure.py", *sys.argv[1:]])))
    console.print(Path(path).read_text(), markup=False, highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
