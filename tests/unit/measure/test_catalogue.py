"""The shipped hardware catalogue and the matcher from discovered model strings to its entries."""

from __future__ import annotations

import pytest

from cpnet.measure import catalogue
from cpnet.measure.catalogue import Match, NoMatch


def name_of(m: Match | NoMatch) -> str | None:
    return m.spec.name if isinstance(m, Match) else None


def test_catalogue_covers_three_nvidia_generations_chinese_accelerators_and_server_cpus() -> None:
    models = {s.model for s in catalogue.accelerators()}
    for wanted in ("A100 SXM4 80GB", "H100 SXM5 80GB", "H200 SXM 141GB", "B200 (HGX B200)"):
        assert wanted in models
    assert {"Ascend 910", "Ascend 910B3", "Ascend 910C"} <= models
    cpus = {s.model for s in catalogue.cpus()}
    assert {"Xeon Platinum 8480+", "EPYC 9654", "Kunpeng 920-6426"} <= cpus
    h100 = next(s for s in catalogue.accelerators() if s.model == "H100 SXM5 80GB")
    # Dense BF16 (the datasheet's sparse 1979 / 2), bandwidth in GB/s.
    assert h100.peaks["bf16"] == pytest.approx(989.5)
    assert h100.memory_bw_gbps == 3350


@pytest.mark.parametrize(
    ("query", "memory", "entry"),
    [
        ("NVIDIA H100 80GB HBM3", None, "NVIDIA H100 SXM5 80GB"),  # nvidia-smi on an SXM part
        ("NVIDIA H100 PCIe", None, "NVIDIA H100 PCIe 80GB"),
        ("NVIDIA H100 NVL", None, "NVIDIA H100 NVL 94GB"),
        ("NVIDIA A100-SXM4-40GB", None, "NVIDIA A100 SXM4 40GB"),
        ("NVIDIA A100-SXM4-80GB", None, "NVIDIA A100 SXM4 80GB"),
        ("NVIDIA A100 PCIe", 81920 / 1024, "NVIDIA A100 PCIe 80GB"),  # size from the driver
        ("Tesla V100-SXM2-32GB", None, "NVIDIA Tesla V100 SXM2 32GB"),
        ("NVIDIA A10", None, "NVIDIA A10"),  # not the A100
        ("NVIDIA L40S", None, "NVIDIA L40S"),  # not the L40
        ("NVIDIA H200", None, "NVIDIA H200 SXM 141GB"),
        ("Ascend910B3", None, "Huawei Ascend 910B3"),  # npu-smi glues the words
        ("Huawei Ascend 910", None, "Huawei Ascend 910"),
        ("AMD Instinct MI300X", None, "AMD Instinct MI300X"),
        ("Intel Gaudi 2", None, "Intel Gaudi 2 (HL-225)"),
    ],
)
def test_accelerator_variants_match(query: str, memory: float | None, entry: str) -> None:
    assert name_of(catalogue.match_accelerator(query, memory)) == entry


@pytest.mark.parametrize(
    ("query", "entry"),
    [
        ("Intel(R) Xeon(R) Platinum 8480+", "Intel Xeon Platinum 8480+"),
        ("Intel(R) Xeon(R) Gold 6248R CPU @ 3.00GHz", "Intel Xeon Gold 6248R"),
        ("Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz", "Intel Xeon Gold 6248"),
        ("AMD EPYC 9654 96-Core Processor", "AMD EPYC 9654"),
    ],
)
def test_cpu_variants_match(query: str, entry: str) -> None:
    assert name_of(catalogue.match_cpu(query)) == entry


def test_no_match_says_why_and_what_to_do() -> None:
    m = catalogue.match_accelerator("NVIDIA GeForce RTX 4090")
    assert isinstance(m, NoMatch)
    assert "no accelerator in the catalogue matches" in m.reason and "cpnet measure" in m.reason
    family = catalogue.match_accelerator("Ascend 910B")
    assert isinstance(family, NoMatch) and len(family.candidates) == 4
    vm = catalogue.match_cpu("Intel(R) Xeon(R) Processor")  # what a masked KVM guest reports
    assert isinstance(vm, NoMatch)
    kunpeng = catalogue.match_cpu("Kunpeng-920")
    assert isinstance(kunpeng, NoMatch) and len(kunpeng.candidates) == 2
    assert isinstance(catalogue.match_cpu(""), NoMatch)


def test_cpu_per_core_peaks_follow_the_documented_derivation() -> None:
    epyc = next(s for s in catalogue.cpus() if s.model == "EPYC 9654")
    per = epyc.per_core()
    assert per["fp64"] == pytest.approx(epyc.base_ghz * 16 / 1000)
    assert per["fp32"] == pytest.approx(2 * per["fp64"])
    assert per["mem_bw"] == pytest.approx(epyc.memory_bw_gbps / 96)
