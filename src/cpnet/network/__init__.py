"""The network map: measured probes, declared links and geography → transfer-time estimates."""

from cpnet.network.geo import Geo, distance_km, shipped
from cpnet.network.model import (
    HUB,
    Link,
    NetworkMap,
    Path,
    Sample,
    Smoothed,
    site_place,
    smooth,
    url_place,
)

__all__ = [
    "HUB",
    "Geo",
    "Link",
    "NetworkMap",
    "Path",
    "Sample",
    "Smoothed",
    "distance_km",
    "shipped",
    "site_place",
    "smooth",
    "url_place",
]
