"""The calibration probes, run for real on this machine with a small budget."""

from __future__ import annotations

from cpnet.measure import probes


def test_probes_measure_cpu_and_run_the_torch_path_on_cpu() -> None:
    steps: list[str] = []
    report = probes.run(
        budget_s=4.0,
        cpu_model="test",
        torch_on_cpu=True,
        progress=lambda step, _: steps.append(step),
        max_triad_bytes=96 * 1024**2,
    )
    assert steps == ["fp64", "fp32", "mem_bw", "torch", "done"]
    cpu = report.cpu
    assert cpu.fp64 > 0 and cpu.fp32 > 0 and cpu.mem_bw > 0
    torch_cpu = report.torch["cpu"]
    assert torch_cpu.fp32 > 0 and torch_cpu.bf16 > 0 and torch_cpu.fp16 > 0
    assert torch_cpu.mem_bw > 0
    # Torch on the CPU is never reported as an accelerator.
    assert report.accelerator.given() == {} and report.accelerator_model is None
    assert report.cores_used >= 1 and report.duration_s > 0 and report.measured_at
    assert any("torch path ran on the CPU" in n for n in report.notes)
