"""A synthetic national network for the simulator: sites in real Chinese cities, one pool each.

Cities, coordinates, division codes and grid carbon intensity are real (``data/geo``); what a
site holds (pool type, size, speed, prices, failure rate, WAN bandwidth) is drawn from a seeded
generator, because no public table gives it. ``build`` cycles through the 54 cities of
``sites.csv``, so 300 sites put five or six providers in every city.

Transfer times come from the hub's own network map (``cpnet.network.NetworkMap``): RTT from
great-circle distance (its geo default, 0.5 ms + 0.0245 ms/km, fitted on WonderNetwork's
Shanghai-sourced pairs) and, since bandwidth between cities is not in the data, a declared link
per site giving its WAN uplink (a per-site parameter drawn here). The simulator moves data with
the figures of that map and hands the same map to cpnet's scheduler, so the scheduler's staging
estimates are exact here: it is the network it would see with perfect probes.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from cpnet.network import Link, NetworkMap, shipped, site_place
from cpnet.network import Path as NetPath
from cpnet.sched import PoolView, Price, Resources

PUE = 1.4  # data-centre power usage effectiveness applied to every site (assumed, not measured)
SCU_PROFILE = "sim"  # the workload profile the simulator's pools publish a speed for

# Per pool type: (weight when drawing, cores range, RAM GB per core, GPUs choices, speed range,
# CPU core-hour price CNY, GPU-hour price CNY, failures per attempt-hour, WAN Gbit/s).
# Sizes, speeds, prices and failure rates are assumptions of the synthetic network, chosen to
# make the pools differ the way the four pool types do; they are not measurements.
TYPES: dict[
    str,
    tuple[
        float,
        tuple[int, int],
        float,
        tuple[int, ...],
        tuple[float, float],
        float,
        float,
        float,
        float,
    ],
] = {
    "general": (0.4, (128, 1024), 4.0, (0,), (0.8, 1.2), 0.12, 0.0, 0.0002, 10.0),
    "intelligent": (0.3, (64, 512), 8.0, (8, 16, 32, 64), (1.0, 1.4), 0.15, 8.0, 0.0004, 10.0),
    "supercomputing": (0.1, (1024, 4096), 4.0, (0, 8), (1.2, 1.6), 0.10, 9.0, 0.0001, 25.0),
    "edge": (0.2, (16, 64), 4.0, (0, 2, 4), (0.6, 0.9), 0.25, 12.0, 0.002, 1.0),
}
GPU_MODELS = ("NVIDIA A100 80GB", "NVIDIA H800", "NVIDIA H20", "Huawei Ascend 910B")
WATTS_PER_CORE = 8.0  # W per busy core (assumed)
WATTS_PER_GPU = 350.0  # W per busy GPU (assumed, a 300–400 W class accelerator)
# Provinces of the western hub nodes (东数西算): cheaper power, so prices are scaled down here.
WESTERN = ("15", "52", "62", "64")
WESTERN_PRICE = 0.8


@dataclass(frozen=True, slots=True)
class City:
    """One row of ``geo/sites.csv`` with the carbon intensity of its province's grid."""

    name: str
    admin_code: str
    lat: float
    lon: float
    role: str
    carbon_g_per_kwh: float


@dataclass(frozen=True, slots=True)
class Site:
    """A site of the simulated network: a provider's data centre in a city, holding one pool."""

    id: str
    city: str
    region_code: str  # the city's admin code
    lat: float
    lon: float
    carbon_g_per_kwh: float
    wan_gbps: float  # WAN uplink: throughput of a transfer out of this site, Gbit/s (assumed)
    speed: float  # run-time divisor: a trace job of T s runs T / speed s here
    failure_per_h: float  # attempt failures per hour of running (exponential)

    @property
    def province(self) -> str:
        """The first two digits of the division code: the province-level region."""
        return self.region_code[:2]


@dataclass(frozen=True)
class FixedMap(NetworkMap):
    """A network map whose figures never change (a simulated network): each pair's path is
    worked out once, then answered from a table, so the scheduler's many lookups stay cheap."""

    known: dict[tuple[str, str], NetPath] = field(default_factory=dict, compare=False, repr=False)

    def path(self, a: str, b: str) -> NetPath:
        """The map's path between two places (cached)."""
        found = self.known.get((a, b))
        if found is None:
            found = self.known[(a, b)] = NetworkMap.path(self, a, b)
        return found


@dataclass(frozen=True, slots=True)
class Network:
    """Sites, their pools (pool i lives at site i), the network map and its figures as arrays."""

    sites: tuple[Site, ...]
    pools: tuple[PoolView, ...]
    map: NetworkMap
    rtt_s: np.ndarray  # (n, n) round-trip seconds from site i to site j, from the map
    gbps: np.ndarray  # (n, n) transfer throughput from site i to site j, Gbit/s, from the map

    def index(self) -> dict[str, int]:
        """Site id → position, for looking up a job's data site."""
        return {s.id: i for i, s in enumerate(self.sites)}


def assemble(
    sites: Sequence[Site], pools: Sequence[PoolView], rtt_ms: float | None = None
) -> Network:
    """A Network from sites and their pools: the map declares each site's WAN uplink (and an RTT
    for every path when ``rtt_ms`` is given, else the map's geo model gives it from distance)."""
    places = [site_place(s.id) for s in sites]
    links = [
        Link(place, "*", rtt_ms=rtt_ms, mbps=s.wan_gbps * 1000.0)
        for place, s in zip(places, sites, strict=True)
    ]
    regions = {place: s.region_code for place, s in zip(places, sites, strict=True)}
    net_map = FixedMap.build(links=links, regions=regions, geo=shipped())
    n = len(sites)
    rtt = np.zeros((n, n))
    gbps = np.ones((n, n))
    for i, a in enumerate(places):
        for j, b in enumerate(places):
            path = net_map.path(a, b)
            rtt[i, j] = path.rtt_ms / 1000.0
            gbps[i, j] = path.mbps / 1000.0
    views = tuple(replace(p, place=place) for p, place in zip(pools, places, strict=True))
    return Network(tuple(sites), views, net_map, rtt, gbps)


def transfer_s(net: Network, src: int, dst: int, nbytes: float) -> float:
    """Seconds to move ``nbytes`` from site ``src`` to site ``dst``: the map's figure.

    Equal to ``net.map.transfer_s`` between the two sites' places (one RTT, then the bytes at
    the path's bandwidth), read from arrays because the engine asks for it on every placement.
    """
    if nbytes <= 0:
        return 0.0
    return float(net.rtt_s[src, dst] + nbytes * 8 / (net.gbps[src, dst] * 1e9))


def read_cities(geo: Path) -> tuple[City, ...]:
    """The cities of ``sites.csv`` with their province's grid carbon intensity (``carbon.csv``).

    Provinces without an MEE figure (Tibet, Hong Kong) take their regional grid's figure, or the
    national average where they have none.
    """
    carbon: dict[str, float] = {}
    grids: dict[str, float] = {}
    national = 0.0
    with (geo / "carbon.csv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            value = float(row["gco2_per_kwh"])
            if row["scope"] == "china_province":
                carbon[row["code"][:2]] = value
            elif row["scope"] == "china_regional_grid":
                grids[row["grid_region"]] = value
            elif row["scope"] == "china_national":
                national = value
    cities = []
    with (geo / "sites.csv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            code = row["admin_code"]
            intensity = carbon.get(code[:2], grids.get(row["grid_region"], national))
            cities.append(
                City(
                    row["name_en"],
                    code,
                    float(row["lat"]),
                    float(row["lon"]),
                    row["role"],
                    intensity,
                )
            )
    return tuple(cities)


def _type_for(k: int, city: City, rng: random.Random) -> str:
    """The pool type of site k: the first four sites take one of each type, then a weighted draw.

    Cities with a national supercomputing centre lean to supercomputing, hub clusters to
    general and intelligent pools, so the draw follows the real roles where they exist.
    """
    names = list(TYPES)
    if k < len(names):
        return names[k]
    weights = [TYPES[n][0] for n in names]
    if "supercomputing_centre" in city.role:
        weights[names.index("supercomputing")] *= 3
    if "dc_cluster" in city.role:
        weights[names.index("edge")] *= 0.25
    return rng.choices(names, weights)[0]


def build(n_sites: int, rng: random.Random, cities: Sequence[City]) -> Network:
    """Draw a network of ``n_sites`` sites over ``cities`` (cycled), one pool per site."""
    sites: list[Site] = []
    pools: list[PoolView] = []
    for k in range(n_sites):
        city = cities[k % len(cities)]
        provider = f"prov{k // len(cities) + 1}"
        kind = _type_for(k, city, rng)
        _, (lo, hi), ram_per_core, gpu_choices, (s_lo, s_hi), core_h, gpu_h, fail_h, wan = TYPES[
            kind
        ]
        cores = rng.randrange(lo, hi + 1, 16 if lo >= 16 else 1)
        gpus = rng.choice(gpu_choices)
        region_price = WESTERN_PRICE if city.admin_code[:2] in WESTERN else 1.0
        slug = "".join(c for c in city.name.lower() if c.isalnum())[:12]
        site = Site(
            id=f"{slug}-{provider}",
            city=city.name,
            region_code=city.admin_code,
            lat=city.lat,
            lon=city.lon,
            carbon_g_per_kwh=city.carbon_g_per_kwh,
            wan_gbps=wan * rng.uniform(0.5, 1.5),
            speed=round(rng.uniform(s_lo, s_hi), 3),
            failure_per_h=fail_h * rng.uniform(0.5, 1.5),
        )
        total = Resources(float(cores), cores * ram_per_core, 0.0, gpus)
        price = Price(
            "CNY",
            cpu_core_hour=round(core_h * region_price * rng.uniform(0.7, 1.3), 4),
            ram_gb_hour=0.005,
            gpu_hour=round(gpu_h * region_price * rng.uniform(0.7, 1.3), 3) if gpus else 0.0,
        )
        pools.append(
            PoolView(
                id=f"pool-{k:03d}",
                site_id=site.id,
                provider_id=provider,
                name=f"{kind} pool at {city.name}",
                type=kind,
                region_code=city.admin_code,
                labels=(),
                total=total,
                available=total,
                gpu_model=rng.choice(GPU_MODELS) if gpus else None,
                queue_length=0,
                running=0,
                price=price,
                scu=((SCU_PROFILE, site.speed),),
                carbon_g_per_kwh=site.carbon_g_per_kwh,
                watts_per_core=WATTS_PER_CORE * PUE,
                watts_per_gpu=WATTS_PER_GPU * PUE,
            )
        )
        sites.append(site)
    return assemble(sites, pools)


def watts(demand: Resources) -> float:
    """Electrical power a running job draws at the wall, W (PUE included)."""
    return (demand.cpu_cores * WATTS_PER_CORE + demand.gpus * WATTS_PER_GPU) * PUE


def capacity(net: Network) -> tuple[float, int]:
    """Total cores and GPUs of the network."""
    return (
        math.fsum(p.total.cpu_cores for p in net.pools),
        sum(p.total.gpus for p in net.pools),
    )
