"""Capacity vectors (sources kept apart, claims above peak flagged) and SCU rates per profile."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cpnet.measure import examples, scu, vector
from cpnet.measure.vector import Declared, FigureSet, ProbeFigures, ProbeReport

DOC = Path(__file__).resolve().parents[3] / "docs" / "compute-unit.md"


def h100_node(**kw) -> vector.CapacityVector:  # type: ignore[no-untyped-def]
    return scu.rate_all(
        vector.build(
            cpu_model="Intel(R) Xeon(R) Platinum 8480+",
            cpu_cores=112,
            memory_gb=2048,
            accelerator_model="NVIDIA H100 80GB HBM3",
            accelerator_count=8,
            **kw,
        )
    )


def test_nominal_figures_are_catalogue_peaks_credited_at_half() -> None:
    vec = h100_node()
    bf16 = vec.accelerator.figures["bf16"]
    assert bf16.nominal == pytest.approx(8 * 989.5)
    assert bf16.source == "nominal"
    assert bf16.value == pytest.approx(8 * 989.5 * vector.NOMINAL_CREDIT)
    assert vec.accelerator.catalogue == "NVIDIA H100 SXM5 80GB"
    assert vec.accelerator.memory_gb == 8 * 80
    assert "NVLink" in vec.interconnect
    assert vec.flags == []


def test_measured_beats_declared_beats_nominal_and_ratio_is_measured_over_peak() -> None:
    probe = ProbeReport(
        cores_used=112,
        node_cores=112,
        cpu=ProbeFigures(fp64=4.0),
        accelerator_model="NVIDIA H100 80GB HBM3",
        accelerator=ProbeFigures(bf16=700.0),
    )
    declared = Declared(accelerator=FigureSet(bf16=6000.0, fp16=6000.0))
    vec = h100_node(probe=probe, declared=declared)
    bf16 = vec.accelerator.figures["bf16"]
    assert (bf16.source, bf16.value, bf16.declared) == ("measured", 8 * 700.0, 6000.0)
    assert bf16.ratio == pytest.approx(700.0 / 989.5)
    fp16 = vec.accelerator.figures["fp16"]
    assert (fp16.source, fp16.value) == ("declared", 6000.0)
    assert vec.cpu.figures["fp64"].source == "measured"


def test_claims_above_the_catalogue_peak_are_flagged_and_never_priced() -> None:
    honest = h100_node()
    bold = h100_node(declared=Declared(accelerator=FigureSet(bf16=8 * 5000.0)))
    flag = next(f for f in bold.flags if f.field == "accelerator.bf16")
    assert flag.source == "declared" and flag.claimed == 40000.0
    assert "above" in flag.reason
    fig = bold.accelerator.figures["bf16"]
    assert fig.declared is None and fig.source == "nominal"  # the claim is kept apart
    assert bold.scu == honest.scu
    # A probe that reports more than the hardware can do is flagged the same way.
    probe = ProbeReport(
        accelerator_model="NVIDIA H100 80GB HBM3", accelerator=ProbeFigures(fp32=500)
    )
    measured = h100_node(probe=probe)
    assert [f.field for f in measured.flags] == ["accelerator.fp32"]
    assert measured.accelerator.figures["fp32"].measured is None


def test_unknown_hardware_counts_only_when_measured() -> None:
    claims = Declared(cpu=FigureSet(fp64=100.0))
    vec = scu.rate_all(
        vector.build(cpu_model="Mystery CPU", cpu_cores=8, memory_gb=16, declared=claims)
    )
    assert vec.cpu.catalogue is None and "no CPU in the catalogue" in vec.cpu.match
    assert vec.flags[0].limit is None and vec.scu["hpc"] == 0.0
    probe = ProbeReport(cores_used=2, node_cores=2, cpu=ProbeFigures(fp64=0.1, mem_bw=20.0))
    vec = scu.rate_all(
        vector.build(cpu_model="Mystery CPU", cpu_cores=8, memory_gb=16, probe=probe)
    )
    # Compute scales by cores (8 / 2), bandwidth by nodes (8 / 2): hpc = min(0.4, 4 x 80 / 1000).
    assert vec.cpu.figures["fp64"].value == pytest.approx(0.4)
    assert vec.cpu.figures["mem_bw"].value == pytest.approx(80.0)
    assert vec.scu["hpc"] == pytest.approx(0.32)


def test_figures_out_of_range_are_input_errors() -> None:
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        FigureSet(fp64=-1)
    with pytest.raises(ValueError, match="less than or equal to"):
        FigureSet(bf16=1e9)


def test_roofline_takes_the_lower_of_compute_and_bandwidth() -> None:
    vec = h100_node()
    rate = scu.rate(vec, "ai-train")
    compute = vec.accelerator.value("bf16")
    memory = scu.PROFILES["ai-train"].intensity * vec.accelerator.value("mem_bw") / 1000
    assert rate.scu == pytest.approx(min(compute, memory))
    assert rate.bound == ("memory" if memory < compute else "compute")
    # Real-time work is rated on one device: adding devices does not change it.
    edge = scu.rate(vec, "edge-realtime").scu
    assert edge == pytest.approx(scu.PROFILES["edge-realtime"].intensity * 3350 * 0.5 / 1000)


def test_unknown_profile_names_the_known_ones() -> None:
    with pytest.raises(scu.UnknownProfile, match="ai-train"):
        scu.profile("crypto-mining")


def test_prediction_and_price_per_scu_hour() -> None:
    assert scu.predict_runtime_s(2.0, 4.0) == pytest.approx(1800.0)
    assert scu.predict_runtime_s(2.0, 0.0) is None
    assert scu.price_per_scu_hour(12.0, 4.0) == pytest.approx(3.0)


def test_docs_worked_examples_equal_the_code() -> None:
    text = DOC.read_text()
    start = text.index("<!-- examples:begin -->")
    end = text.index("<!-- examples:end -->")
    assert text[start:end].split("\n", 1)[1].strip() == examples.table()
    # And every example row names a catalogue match (none silently fell back to zero).
    for ex in examples.EXAMPLES:
        assert ex.vector().cpu.catalogue is not None
    assert re.search(r"SCU-hour", text)
