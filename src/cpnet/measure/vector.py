"""The capacity vector of a pool: what it can sustain, figure by figure, and where each came from.

Every figure keeps its sources apart, after the IETF CATS metric model (draft-ietf-cats-metric-
definition), which separates a metric's *nominal* value (what the vendor states) from values
obtained by *measurement/estimation*, and from *normalised* values (one comparable number):

- ``nominal``: the catalogue's peak for the matched model, scaled to the pool;
- ``measured``: a calibration probe's result, scaled to the pool;
- ``declared``: what the pool's operator states.

``value`` is the sustained figure the SCU uses (``source`` says which it is): measured, else
declared, else ``NOMINAL_CREDIT`` x nominal. A measured or declared figure above the catalogue's
ceiling for the model is not used: it goes to ``flags``, kept apart, and never priced. The SCU
rates per workload profile (the normalised metric) are in ``scu`` (see ``cpnet.measure.scu``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from cpnet.measure import catalogue
from cpnet.measure.catalogue import AcceleratorSpec, CpuSpec, Match

# Units of every figure a part may have.
UNITS = {
    "fp64": "TFLOP/s",
    "fp64_tensor": "TFLOP/s",
    "fp32": "TFLOP/s",
    "tf32": "TFLOP/s",
    "bf16": "TFLOP/s",
    "fp16": "TFLOP/s",
    "int8": "TOP/s",
    "mem_bw": "GB/s",
}
CPU_FIGURES = ("fp64", "fp32", "mem_bw")
ACCELERATOR_FIGURES = tuple(UNITS)

# Share of the catalogue peak credited to a figure nobody measured or declared. Measuring should
# pay: an unmeasured pool is not rated at its paper peak, which no real code reaches.
NOMINAL_CREDIT = 0.5
# How far above the catalogue peak a measured or declared figure may be before it is refused.
# CPU peaks are at base clock and all-core turbo runs above it; accelerator peaks are boost peaks.
CPU_CEILING = 1.5
ACCELERATOR_CEILING = 1.05

# Largest figure accepted at all for a whole pool (anything above is an input error).
MAX_POOL_TFLOPS = 10_000_000.0  # 10 EFLOP/s in one pool
MAX_POOL_BW_GBPS = 1_000_000_000.0

Source = Literal["nominal", "measured", "declared"]
PoolFigure = Annotated[float, Field(ge=0, le=MAX_POOL_TFLOPS)]
PoolBandwidth = Annotated[float, Field(ge=0, le=MAX_POOL_BW_GBPS)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FigureSet(Strict):
    """Figures for one part of a pool (whole-pool totals), every one optional."""

    fp64: PoolFigure | None = None
    fp64_tensor: PoolFigure | None = None
    fp32: PoolFigure | None = None
    tf32: PoolFigure | None = None
    bf16: PoolFigure | None = None
    fp16: PoolFigure | None = None
    int8: PoolFigure | None = None
    mem_bw: PoolBandwidth | None = None

    def given(self) -> dict[str, float]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class Declared(Strict):
    """What a pool's operator states about its sustained capacity (whole-pool totals)."""

    cpu: FigureSet = Field(default_factory=FigureSet)
    accelerator: FigureSet = Field(default_factory=FigureSet)
    interconnect: Annotated[str, Field(max_length=256)] = ""


class Figure(BaseModel):
    """One figure of a part, with each source kept apart."""

    nominal: float | None = None
    measured: float | None = None
    declared: float | None = None
    value: float | None = None  # the sustained figure SCU rates use
    source: Source | None = None  # which source ``value`` comes from
    ratio: float | None = None  # measured / nominal


class Part(BaseModel):
    """The CPU side or the accelerator side of a pool."""

    kind: Literal["cpu", "accelerator"]
    model: str  # as discovered or declared
    catalogue: str | None = None  # the matched catalogue entry, or None
    match: str = ""  # how it was matched, or why nothing matched
    count: float  # CPU cores, or accelerator devices
    memory_gb: float = 0.0  # host RAM, or accelerator memory in total
    figures: dict[str, Figure] = Field(default_factory=dict)

    def value(self, name: str) -> float | None:
        fig = self.figures.get(name)
        return None if fig is None else fig.value


class Flag(BaseModel):
    """A claim that was not used: above the catalogue's ceiling, or not checkable."""

    field: str  # e.g. "accelerator.bf16"
    source: Source
    claimed: float
    limit: float | None  # the ceiling it broke; None when no catalogue peak exists
    reason: str


class CapacityVector(BaseModel):
    """One pool's capacity: figures per part, with sources, flags and SCU rates per profile."""

    cpu: Part
    accelerator: Part | None = None
    memory_gb: float = 0.0
    storage_gb: float = 0.0
    interconnect: str = ""
    flags: list[Flag] = Field(default_factory=list)
    measured_at: float | None = None  # epoch seconds of the probe, if any
    measured_on: str | None = None  # the host (or Slurm node) the probe ran on
    probe_s: float | None = None  # how long the probe took
    scu: dict[str, float] = Field(default_factory=dict)  # profile -> SCU rate

    def summary(self) -> dict:
        """The short form resolution records carry."""
        out: dict = {
            "cpu": {
                "model": self.cpu.model,
                "catalogue": self.cpu.catalogue,
                "cores": self.cpu.count,
            },
            "memory_gb": self.memory_gb,
            "storage_gb": self.storage_gb,
            "scu": self.scu,
            "measured": self.measured_at is not None,
            "flags": len(self.flags),
        }
        if self.accelerator is not None:
            acc = self.accelerator
            out["accelerator"] = {
                "model": acc.model,
                "catalogue": acc.catalogue,
                "count": acc.count,
                "memory_gb": acc.memory_gb,
            }
        if self.interconnect:
            out["interconnect"] = self.interconnect
        return out


# ---- what a calibration probe reports -----------------------------------------------------------

NodeFigure = Annotated[float, Field(ge=0, le=1_000_000)]


class ProbeFigures(BaseModel):
    """Figures one probe run measured: per node (CPU) or per device (accelerator)."""

    model_config = ConfigDict(extra="forbid")

    fp64: NodeFigure | None = None
    fp32: NodeFigure | None = None
    tf32: NodeFigure | None = None
    bf16: NodeFigure | None = None
    fp16: NodeFigure | None = None
    mem_bw: NodeFigure | None = None

    def given(self) -> dict[str, float]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class ProbeReport(BaseModel):
    """The result of one calibration run on one node of a pool (``cpnet.measure.probes``)."""

    model_config = ConfigDict(extra="ignore")

    host: Annotated[str, Field(max_length=256)] = ""
    cpu_model: Annotated[str, Field(max_length=256)] = ""
    node_cores: int = Field(default=1, ge=1, le=100_000)  # CPUs on the node
    cores_used: int = Field(default=1, ge=1, le=100_000)  # CPUs the probe could run on
    cpu: ProbeFigures = Field(default_factory=ProbeFigures)
    accelerator_model: Annotated[str, Field(max_length=256)] | None = None
    accelerator: ProbeFigures = Field(default_factory=ProbeFigures)  # one device
    # device kind -> figures
    torch: dict[Annotated[str, Field(max_length=64)], ProbeFigures] = Field(
        default_factory=dict, max_length=16
    )
    budget_s: float = Field(default=0.0, ge=0, le=3600)
    duration_s: float = Field(default=0.0, ge=0, le=86400)
    measured_at: float | None = None
    notes: list[Annotated[str, Field(max_length=1024)]] = Field(default_factory=list, max_length=64)


# ---- building the vector -------------------------------------------------------------------------


def _scaled(values: dict[str, float], factor: float) -> dict[str, float]:
    return {k: v * factor for k, v in values.items()}


def _figures(
    part: str,
    names: tuple[str, ...],
    nominal: dict[str, float],
    measured: dict[str, float],
    declared: dict[str, float],
    ceiling: float,
    flags: list[Flag],
) -> dict[str, Figure]:
    known = bool(nominal)
    out: dict[str, Figure] = {}
    for name in names:
        fig = Figure(nominal=nominal.get(name))
        limit = None if fig.nominal is None else fig.nominal * ceiling
        for source, values in (("measured", measured), ("declared", declared)):
            claim = values.get(name)
            if claim is None:
                continue
            if limit is not None and claim > limit:
                flags.append(
                    Flag(
                        field=f"{part}.{name}",
                        source=source,  # type: ignore[arg-type]
                        claimed=claim,
                        limit=limit,
                        reason=f"{source} {claim:g} {UNITS[name]} is above {ceiling:g} x the "
                        f"catalogue peak ({fig.nominal:g}): not used",
                    )
                )
                continue
            if source == "declared" and not known:
                flags.append(
                    Flag(
                        field=f"{part}.{name}",
                        source="declared",
                        claimed=claim,
                        limit=None,
                        reason="declared for hardware not in the catalogue, so it cannot be "
                        "checked: not used until measured",
                    )
                )
                continue
            setattr(fig, source, claim)
        if fig.measured is not None:
            fig.value, fig.source = fig.measured, "measured"
        elif fig.declared is not None:
            fig.value, fig.source = fig.declared, "declared"
        elif fig.nominal is not None:
            fig.value, fig.source = fig.nominal * NOMINAL_CREDIT, "nominal"
        if fig.measured is not None and fig.nominal:
            fig.ratio = fig.measured / fig.nominal
        if fig.value is not None or fig.nominal is not None:
            out[name] = fig
    return out


def build(
    *,
    cpu_model: str,
    cpu_cores: float,
    memory_gb: float,
    disk_gb: float = 0.0,
    accelerator_model: str | None = None,
    accelerator_count: int = 0,
    accelerator_memory_gb: float = 0.0,
    declared: Declared | None = None,
    probe: ProbeReport | None = None,
) -> CapacityVector:
    """The capacity vector of a pool from its hardware, the operator's claims and a probe run.

    Pure: the catalogue is the only data consulted. SCU rates are filled in by the caller
    (``cpnet.measure.scu.rate_all``) so that this module does not depend on profiles.
    """
    declared = declared or Declared()
    flags: list[Flag] = []

    cpu_match = catalogue.match_cpu(cpu_model)
    cpu_nominal: dict[str, float] = {}
    if isinstance(cpu_match, Match):
        assert isinstance(cpu_match.spec, CpuSpec)
        cpu_nominal = _scaled(cpu_match.spec.per_core(), cpu_cores)
    cpu_measured: dict[str, float] = {}
    if probe is not None and probe.cpu.given():
        # The probe ran on ``cores_used`` CPUs of one node: compute scales to the pool's cores,
        # memory bandwidth to its nodes (pool cores / node cores; a probe held to fewer cores
        # than its node under-states the node's bandwidth, never over-states it).
        cpu_measured = _scaled(probe.cpu.given(), cpu_cores / probe.cores_used)
        if "mem_bw" in cpu_measured:
            nodes = max(1.0, cpu_cores / probe.node_cores)
            cpu_measured["mem_bw"] = probe.cpu.mem_bw * nodes  # type: ignore[operator]
    cpu = Part(
        kind="cpu",
        model=cpu_model,
        catalogue=cpu_match.spec.name if isinstance(cpu_match, Match) else None,
        match=cpu_match.note if isinstance(cpu_match, Match) else cpu_match.reason,
        count=cpu_cores,
        memory_gb=memory_gb,
        figures=_figures(
            "cpu",
            CPU_FIGURES,
            cpu_nominal,
            cpu_measured,
            declared.cpu.given(),
            CPU_CEILING,
            flags,
        ),
    )

    acc: Part | None = None
    interconnect = declared.interconnect
    if accelerator_model and accelerator_count > 0:
        acc_match = catalogue.match_accelerator(accelerator_model, accelerator_memory_gb or None)
        nominal: dict[str, float] = {}
        per_device_memory = accelerator_memory_gb
        if isinstance(acc_match, Match):
            spec = acc_match.spec
            assert isinstance(spec, AcceleratorSpec)
            per_device = dict(spec.peaks)
            if spec.memory_bw_gbps:
                per_device["mem_bw"] = spec.memory_bw_gbps
            nominal = _scaled(per_device, accelerator_count)
            per_device_memory = per_device_memory or spec.memory_gb or 0.0
            interconnect = interconnect or spec.interconnect
        measured: dict[str, float] = {}
        if probe is not None and probe.accelerator.given() and probe.accelerator_model:
            same = catalogue.match_accelerator(probe.accelerator_model)
            if probe.accelerator_model == accelerator_model or (
                isinstance(same, Match)
                and isinstance(acc_match, Match)
                and same.spec.name == acc_match.spec.name
            ):
                measured = _scaled(probe.accelerator.given(), accelerator_count)
        acc = Part(
            kind="accelerator",
            model=accelerator_model,
            catalogue=acc_match.spec.name if isinstance(acc_match, Match) else None,
            match=acc_match.note if isinstance(acc_match, Match) else acc_match.reason,
            count=accelerator_count,
            memory_gb=per_device_memory * accelerator_count,
            figures=_figures(
                "accelerator",
                ACCELERATOR_FIGURES,
                nominal,
                measured,
                declared.accelerator.given(),
                ACCELERATOR_CEILING,
                flags,
            ),
        )
    return CapacityVector(
        cpu=cpu,
        accelerator=acc,
        memory_gb=memory_gb,
        storage_gb=disk_gb,
        interconnect=interconnect,
        flags=flags,
        measured_at=probe.measured_at if probe else None,
        measured_on=(probe.host or None) if probe else None,
        probe_s=probe.duration_s if probe else None,
    )
