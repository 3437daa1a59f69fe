"""The hardware catalogue shipped with cpnet, and matching discovered model strings to it.

The catalogue is the project's public spec dataset (``data/accelerators.csv``, ``data/cpus.csv``;
sources and licences in ``data/SOURCE.md``). Reading those package files is the only I/O in
``cpnet.measure``. Matching is pure: a model string as a driver or ``lscpu`` prints it ("NVIDIA
H100 80GB HBM3", "Intel(R) Xeon(R) Platinum 8480+") becomes tokens, and an entry matches when its
model key (the SKU token, e.g. ``h100``, ``8480+``, ``910b3``) is among them; form factor and
memory size pick between variants. Anything else is a ``NoMatch`` that says why and what to do.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from itertools import pairwise

# Figures of the capacity vector that come from the catalogue (TFLOP/s; int8 in TOP/s).
COMPUTE_FIGURES = ("fp64", "fp64_tensor", "fp32", "tf32", "bf16", "fp16", "int8")


@dataclass(frozen=True, slots=True)
class AcceleratorSpec:
    """One accelerator (per device), as the catalogue states it."""

    vendor: str
    model: str
    form_factor: str
    memory_gb: float | None
    memory_bw_gbps: float | None
    peaks: dict[str, float]  # COMPUTE_FIGURES present in the source, per device
    tdp_w: float | None
    interconnect: str
    source: str

    @property
    def name(self) -> str:
        return f"{self.vendor} {self.model}"


@dataclass(frozen=True, slots=True)
class CpuSpec:
    """One server CPU (per socket), as the catalogue states it."""

    vendor: str
    model: str
    microarchitecture: str
    cores: int
    base_ghz: float | None
    fp64_flops_per_cycle: float | None
    memory_bw_gbps: float | None  # per socket, derived theoretical peak
    tdp_w: float | None
    source: str

    @property
    def name(self) -> str:
        return f"{self.vendor} {self.model}"

    def per_core(self) -> dict[str, float]:
        """Nominal per-core peaks: fp64/fp32 in TFLOP/s at base clock, mem_bw GB/s (a share).

        FP32 is twice FP64: the same FMA vector units hold twice as many single-precision lanes.
        """
        out: dict[str, float] = {}
        if self.base_ghz and self.fp64_flops_per_cycle:
            fp64 = self.base_ghz * self.fp64_flops_per_cycle / 1000.0
            out["fp64"] = fp64
            out["fp32"] = 2 * fp64
        if self.memory_bw_gbps and self.cores:
            out["mem_bw"] = self.memory_bw_gbps / self.cores
        return out


@dataclass(frozen=True, slots=True)
class Match:
    """A catalogue entry found for a discovered model string."""

    query: str
    spec: AcceleratorSpec | CpuSpec
    note: str  # how it was chosen, e.g. "form factor SXM assumed (no 'PCIe' in the name)"


@dataclass(frozen=True, slots=True)
class NoMatch:
    """Nothing in the catalogue matches; ``reason`` says why and what to do."""

    query: str
    reason: str
    candidates: tuple[str, ...] = field(default=())


def _num(text: str) -> float | None:
    text = (text or "").strip()
    return float(text) if text else None


@cache
def accelerators() -> tuple[AcceleratorSpec, ...]:
    """Every accelerator in the shipped catalogue."""
    out = []
    for row in _rows("accelerators.csv"):
        peaks = {
            "fp64": _num(row["fp64_tflops"]),
            "fp64_tensor": _num(row["fp64_tensor_tflops"]),
            "fp32": _num(row["fp32_tflops"]),
            "tf32": _num(row["tf32_tensor_tflops"]),
            "bf16": _num(row["bf16_tensor_tflops"]),
            "fp16": _num(row["fp16_tensor_tflops"]),
            "int8": _num(row["int8_tensor_tops"]),
        }
        out.append(
            AcceleratorSpec(
                vendor=row["vendor"],
                model=row["model"],
                form_factor=row["form_factor"],
                memory_gb=_num(row["memory_gb"]),
                memory_bw_gbps=_num(row["memory_bw_gbps"]),
                peaks={k: v for k, v in peaks.items() if v is not None},
                tdp_w=_num(row["tdp_w"]),
                interconnect=row["interconnect"],
                source=row["source"],
            )
        )
    return tuple(out)


@cache
def cpus() -> tuple[CpuSpec, ...]:
    """Every CPU in the shipped catalogue."""
    out = []
    for row in _rows("cpus.csv"):
        out.append(
            CpuSpec(
                vendor=row["vendor"],
                model=row["model"],
                microarchitecture=row["microarchitecture"],
                cores=int(row["cores"]),
                base_ghz=_num(row["base_ghz"]),
                fp64_flops_per_cycle=_num(row["fp64_flops_per_cycle_per_core"]),
                memory_bw_gbps=_num(row["memory_bw_gbps"]),
                tdp_w=_num(row["tdp_w"]),
                source=row["source"],
            )
        )
    return tuple(out)


def _rows(name: str) -> list[dict[str, str]]:
    text = resources.files("cpnet.measure").joinpath("data", name).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


# ---- matching ----------------------------------------------------------------------------------

_NOISE = re.compile(r"\((?:r|tm|c)\)|@\s*[\d.]+\s*ghz|\bcpu\b|\bprocessor\b", re.IGNORECASE)
_SPLIT = re.compile(r"[^a-z0-9+]+")
_MEMORY = re.compile(r"^\d+gb$")
_FORM = re.compile(r"^(sxm\d*|pcie|nvl|oam|hgx)$")
# Words glued to a SKU in some tools' output ("Ascend910B3", "Tesla-V100").
_PREFIXES = ("ascend", "tesla", "instinct")


def tokens(text: str) -> set[str]:
    """The comparable tokens of a model string, plus letter+number pairs joined ("gaudi 2")."""
    raw = [t for t in _SPLIT.split(_NOISE.sub(" ", text.lower())) if t]
    out = set(raw)
    for word in raw:
        for prefix in _PREFIXES:
            if word.startswith(prefix) and len(word) > len(prefix):
                out.add(word[len(prefix) :])
    for a, b in pairwise(raw):
        if a.isalpha() and b.isdigit():
            out.add(a + b)
    return out


def _keys(model: str) -> set[str]:
    """The SKU keys of a catalogue model: its longest token with a digit (not a size or form)."""
    raw = [t for t in _SPLIT.split(model.lower()) if t]
    skus = [t for t in raw if any(c.isdigit() for c in t) and not _MEMORY.match(t)]
    skus = [t for t in skus if not _FORM.match(t)]
    keys = {max(skus, key=len)} if skus else set()
    for a, b in pairwise(raw):
        if a.isalpha() and b.isdigit():
            keys.add(a + b)
    return keys


def _form(spec: AcceleratorSpec) -> str:
    text = f"{spec.model} {spec.form_factor}".lower()
    for form in ("nvl", "pcie", "sxm", "oam"):
        if form in text:
            return form
    return ""


def match_accelerator(model: str, memory_gb: float | None = None) -> Match | NoMatch:
    """Find the accelerator a driver names, e.g. "NVIDIA A100-SXM4-80GB" or "Ascend910B3".

    Variants of one SKU are told apart by form factor ("PCIe", "NVL" and "SXM" in the name; a
    name without "PCIe"/"NVL" is the SXM/OAM part, as nvidia-smi names them) and memory size (a
    "80GB" token, or ``memory_gb`` from the driver within 15 %, GB or GiB).
    """
    query = model.strip()
    if not query:
        return NoMatch(query, "no accelerator model given")
    have = tokens(query)
    found = [s for s in accelerators() if _keys(s.model) & have]
    if not found:
        # A SKU family without its suffix ("Ascend 910B" for 910B1..910B4) names several.
        numbered = {t for t in have if len(t) >= 3 and any(c.isdigit() for c in t)}
        near = tuple(
            s.name
            for s in accelerators()
            if any(k.startswith(t) for k in _keys(s.model) for t in numbered)
        )
        if near:
            return NoMatch(
                query,
                f"{query!r} names a family of {len(near)} catalogue entries "
                f"({', '.join(near)}); declare the exact model",
                near,
            )
        return NoMatch(query, _none_reason("accelerator", query))
    notes = []
    for form in ("pcie", "nvl"):
        if len({_form(s) for s in found}) > 1:
            if any(form in t for t in have):
                found = [s for s in found if _form(s) == form]
            elif any(_form(s) != form for s in found):
                found = [s for s in found if _form(s) != form]
                notes.append(f"not the {form.upper()} part ('{form.upper()}' not in the name)")
    sizes = {int(t[:-2]) for t in have if _MEMORY.match(t)}
    if memory_gb:
        sizes |= {round(memory_gb), round(memory_gb * 1.073741824)}
    if sizes and len({s.memory_gb for s in found}) > 1:
        sized = [s for s in found if s.memory_gb and _near(s.memory_gb, sizes)]
        if sized:
            found = sized
    if len(found) > 1:
        # Prefer the entry sharing the most tokens with the name (e.g. "MLU370-X4").
        best = max(len(tokens(s.model) & have) for s in found)
        found = [s for s in found if len(tokens(s.model) & have) == best]
    if len(found) > 1:
        names = tuple(s.name for s in found)
        return NoMatch(
            query,
            f"{query!r} matches {len(found)} catalogue entries ({', '.join(names)}); "
            "declare the full model (form factor and memory, e.g. 'H100 SXM5 80GB')",
            names,
        )
    return Match(query, found[0], "; ".join(notes) or "exact SKU")


def _near(size: float, sizes: set[int]) -> bool:
    return any(abs(size - s) <= 0.15 * size for s in sizes)


def match_cpu(model: str) -> Match | NoMatch:
    """Find the CPU ``lscpu``/``/proc/cpuinfo`` names, e.g. "AMD EPYC 9654 96-Core Processor"."""
    query = model.strip()
    if not query:
        return NoMatch(query, "no CPU model given")
    have = tokens(query)
    found = [s for s in cpus() if _keys(s.model) & have]
    if len(found) == 1:
        return Match(query, found[0], "exact SKU")
    if len(found) > 1:
        names = tuple(s.name for s in found)
        return NoMatch(query, f"{query!r} matches several CPUs: {', '.join(names)}", names)
    return NoMatch(query, _none_reason("CPU", query), _near_names(have))


def _near_names(have: set[str]) -> tuple[str, ...]:
    """Catalogue CPUs sharing a numbered token with the name (e.g. "Kunpeng-920")."""
    numbered = {t for t in have if any(c.isdigit() for c in t)}
    return tuple(s.name for s in cpus() if numbered & tokens(s.model))


def _none_reason(kind: str, query: str) -> str:
    return (
        f"no {kind} in the catalogue matches {query!r}: its figures count only when measured "
        f"(run `cpnet measure`), or declare the model's catalogue name (check with `cpnet "
        f"measure-match MODEL`)"
    )
