"""The worked examples of docs/compute-unit.md, computed by the code (a test checks the doc)."""

from __future__ import annotations

from dataclasses import dataclass

from cpnet.measure import scu, vector


@dataclass(frozen=True, slots=True)
class Example:
    name: str
    cpu_model: str
    cpu_cores: int
    memory_gb: float
    accelerator_model: str | None = None
    accelerator_count: int = 0

    def vector(self) -> vector.CapacityVector:
        """The example's capacity vector from the catalogue alone (nothing measured)."""
        return scu.rate_all(
            vector.build(
                cpu_model=self.cpu_model,
                cpu_cores=self.cpu_cores,
                memory_gb=self.memory_gb,
                accelerator_model=self.accelerator_model,
                accelerator_count=self.accelerator_count,
            )
        )


EXAMPLES = (
    Example("8×H100 node", "Intel Xeon Platinum 8480+", 112, 2048, "NVIDIA H100 80GB HBM3", 8),
    Example("64-core CPU node", "AMD EPYC 7763 64-Core Processor", 64, 512),
    Example("FP64-heavy HPC node", "AMD EPYC 7763 64-Core Processor", 64, 512, "MI250X", 4),
    Example("edge box", "AMD EPYC 9254 24-Core Processor", 24, 128, "NVIDIA L4", 1),
)


def table() -> str:
    """The Markdown table of SCU rates per example and profile, as docs/compute-unit.md has it."""
    names = list(scu.PROFILES)
    lines = [
        "| example | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for ex in EXAMPLES:
        rates = ex.vector().scu
        lines.append(f"| {ex.name} | " + " | ".join(f"{rates[n]:g}" for n in names) + " |")
    return "\n".join(lines)
