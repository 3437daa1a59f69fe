"""Where a region code lies, how far two lie apart, and their grid's carbon intensity.

The tables are the small extracts shipped in ``data/`` (sources in ``data/SOURCE.md``); reading
them is the only I/O here, done once. Everything else is arithmetic on plain values.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from functools import cache
from importlib import resources

EARTH_RADIUS_KM = 6371.0088  # mean radius, as used to derive great_circle_km in the geo data

# Default RTT model, fitted on measured in-China pairs (data/SOURCE.md): floor + slope x km.
RTT_FLOOR_MS = 0.5
RTT_MS_PER_KM = 0.0245


@dataclass(frozen=True, slots=True)
class City:
    """One city of the shipped table."""

    admin_code: str  # GB/T 2260, six digits
    name: str
    lat: float
    lon: float
    grid_region: str  # MEE regional grid, e.g. "East"


@dataclass(frozen=True, slots=True)
class Geo:
    """The shipped geography: cities by code, carbon by province and grid."""

    cities: dict[str, City]  # by admin_code
    carbon_by_code: dict[str, float]  # province code or "CN-GRID-*" or "CN" → gCO2/kWh
    grid_of_province: dict[str, str]  # province code → grid region

    def city(self, region_code: str) -> City | None:
        """The city a region code lies in: exact, then its prefecture (xxxx00), then province."""
        code = (region_code or "").strip()
        if not code.isdigit():
            return None
        code = code.ljust(6, "0")[:6]
        for key in (code, code[:4] + "00"):
            if key in self.cities:
                return self.cities[key]
        # A province's first city in the table stands for the province (documented limit).
        for city in self.cities.values():
            if city.admin_code[:2] == code[:2]:
                return city
        return None

    def carbon(self, region_code: str) -> tuple[float, str]:
        """(gCO2/kWh, which figure): the province's, else its grid's, else the national one."""
        code = (region_code or "").strip()
        if code.isdigit():
            province = code.ljust(6, "0")[:2] + "0000"
            if province in self.carbon_by_code:
                return self.carbon_by_code[province], f"province {province} (MEE 2023)"
            grid = self.grid_of_province.get(province)
            key = f"CN-GRID-{grid.upper()}" if grid else ""
            if key in self.carbon_by_code:
                return self.carbon_by_code[key], f"{grid} grid (MEE 2023)"
        return self.carbon_by_code.get("CN", 530.6), "China national average (MEE 2023)"


def distance_km(a: City, b: City) -> float:
    """Great-circle distance between two cities (haversine)."""
    p1, p2 = math.radians(a.lat), math.radians(b.lat)
    dp, dl = p2 - p1, math.radians(b.lon - a.lon)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def default_rtt_ms(km: float) -> float:
    """Round-trip time over a terrestrial path of ``km`` great-circle km (fitted model)."""
    return RTT_FLOOR_MS + RTT_MS_PER_KM * max(0.0, km)


def _rows(name: str) -> list[dict[str, str]]:
    text = resources.files("cpnet.network").joinpath("data", name).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


@cache
def shipped() -> Geo:
    """The geography shipped with cpnet (read once)."""
    cities = {
        r["admin_code"]: City(
            r["admin_code"], r["name_en"], float(r["lat"]), float(r["lon"]), r["grid_region"]
        )
        for r in _rows("cities.csv")
    }
    carbon = {r["code"]: float(r["gco2_per_kwh"]) for r in _rows("carbon.csv")}
    grids = {r["province_code"]: r["grid_region"] for r in _rows("provinces.csv")}
    return Geo(cities, carbon, grids)
