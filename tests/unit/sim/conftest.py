"""Small hand-made networks for the simulator tests (no data files needed)."""

from __future__ import annotations

from collections.abc import Sequence

from cpnet.sched import PoolView, Price, Resources
from cpnet.sim.network import SCU_PROFILE, Network, Site, assemble


def make_network(
    pools: Sequence[tuple[float, int, float]],
    *,
    speeds: Sequence[float] | None = None,
    failure_per_h: float = 0.0,
    rtt_s: float = 0.0,
    gbps: float = 8.0,
    provinces: Sequence[str] | None = None,
) -> Network:
    """A network of one pool per site: (cores, GPUs, CNY per core-hour) each."""
    sites, views = [], []
    for k, (cores, gpus, price) in enumerate(pools):
        speed = speeds[k] if speeds else 1.0
        region = (provinces[k] if provinces else "11") + "0000"
        sites.append(
            Site(f"s{k}", f"city{k}", region, 30.0, 110.0 + k, 500.0, gbps, speed, failure_per_h)
        )
        total = Resources(cores, cores * 4.0, 0.0, gpus)
        views.append(
            PoolView(
                id=f"pool-{k:03d}", site_id=f"s{k}", provider_id="p", name=f"pool {k}",
                type="general", region_code=region, labels=(), total=total, available=total,
                gpu_model="X" if gpus else None, queue_length=0, running=0,
                price=Price("CNY", cpu_core_hour=price, gpu_hour=1.0 if gpus else 0.0),
                scu=((SCU_PROFILE, speed),),
            )
        )  # fmt: skip
    return assemble(sites, views, rtt_ms=rtt_s * 1000.0)
