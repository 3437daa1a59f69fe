"""PNG plots of a policy comparison: one bar panel per metric, the LP bound drawn where known."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from cpnet.sim.bound import Bound
from cpnet.sim.metrics import Metrics

# (attribute, panel title, divisor for display units)
PANELS = (
    ("mean_jct_s", "mean JCT (h)", 3600.0),
    ("p95_jct_s", "p95 JCT (h)", 3600.0),
    ("makespan_s", "makespan (h)", 3600.0),
    ("cost", "cost (kCNY)", 1000.0),
    ("cross_region_bytes", "cross-region data (TB)", 1e12),
    ("carbon_kg", "carbon (t CO2)", 1000.0),
)


def comparison(
    results: Mapping[str, Metrics], title: str, path: Path, bound: Bound | None = None
) -> Path:
    """Write a 2×3 grid of bar charts, one bar per policy, to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    names = list(results)
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for ax, (attr, label, unit) in zip(axes.flat, PANELS, strict=True):
        values = [getattr(results[n], attr) / unit for n in names]
        colours = ["tab:orange" if n == "cpnet" else "tab:blue" for n in names]
        ax.bar(names, values, color=colours)
        ax.set_title(label)
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
        line = None
        if bound is not None and attr == "mean_jct_s":
            line = bound.mean_jct_s / unit
        if bound is not None and attr == "cost":
            line = bound.cost / unit
        if line is not None and not math.isnan(line):
            ax.axhline(line, color="black", linestyle="--", linewidth=1, label="LP lower bound")
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
