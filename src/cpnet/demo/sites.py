"""The three providers the demo runs, each with one site in a real national hub region.

Regions, admin codes (GB/T 2260) and coordinates are those of the shared geo data (sites.csv):
the Gui'an cluster of the Guizhou hub node, the Ulanqab (Jining) start area of the Inner Mongolia
hub node's Horinger cluster, and Tianjin, home of a national supercomputing centre. Provider and
site names are made up. The hardware is *declared*, as an operator declares it in the agent's
config: the demo machine has none of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class DemoSite:
    """One provider with one site and one declared pool."""

    key: str  # short name used in tables and for the site's directory
    provider: str
    site: str
    type: str  # general | intelligent | supercomputing | edge (site and pool alike)
    region_code: str
    region_name: str
    name_zh: str  # the division's official Chinese name (and the cluster's, where it differs)
    lat: float
    lon: float
    pool: dict[str, Any]  # the [[pool]] table of the agent's config

    @property
    def pool_name(self) -> str:
        return str(self.pool["name"])


GUIYANG = DemoSite(
    key="guiyang",
    provider="Qianyun Cloud",
    site="guian-dc1",
    type="general",
    region_code="520100",
    region_name="Gui'an, Guiyang, Guizhou",
    name_zh="贵阳市 (贵安新区)",
    lat=26.58333,
    lon=106.71667,
    pool={
        "name": "cpu",
        "type": "general",
        "hardware": {
            "cpu_model": "Intel Xeon Gold 6348",
            "cpu_cores": 56,
            "memory_gb": 256,
            "disk_gb": 2000,
        },
        "labels": {"tier": "standard"},
        "price": {"currency": "CNY", "cpu_core_hour": 0.04, "ram_gb_hour": 0.004},
    },
)

ULANQAB = DemoSite(
    key="ulanqab",
    provider="Caoyuan AI Compute",
    site="jining-ai1",
    type="intelligent",
    region_code="150902",
    region_name="Jining, Ulanqab, Inner Mongolia",
    name_zh="集宁区 (乌兰察布市)",
    lat=41.0275,
    lon=113.10583,
    pool={
        "name": "a800",
        "type": "intelligent",
        "hardware": {
            "cpu_model": "Intel Xeon Platinum 8358",
            "cpu_cores": 128,
            "memory_gb": 2048,
            "disk_gb": 15000,
            "accelerators": [{"model": "NVIDIA A800 80GB", "count": 8, "memory_gb": 80}],
        },
        "labels": {"interconnect": "nvlink"},
        "price": {"currency": "CNY", "cpu_core_hour": 0.08, "ram_gb_hour": 0.006, "gpu_hour": 15.0},
    },
)

TIANJIN = DemoSite(
    key="tianjin",
    provider="Binhai Supercomputing",
    site="hpc1",
    type="supercomputing",
    region_code="120000",
    region_name="Tianjin",
    name_zh="天津市",
    lat=39.14222,
    lon=117.17667,
    pool={
        "name": "fp64",
        "type": "supercomputing",
        "hardware": {
            "cpu_model": "AMD EPYC 9654",
            "cpu_cores": 192,
            "memory_gb": 1536,
            "disk_gb": 50000,
        },
        "labels": {"interconnect": "infiniband-hdr", "fp64": "high"},
        "price": {"currency": "CNY", "cpu_core_hour": 0.06, "ram_gb_hour": 0.005},
    },
)

SITES: tuple[DemoSite, ...] = (GUIYANG, ULANQAB, TIANJIN)
