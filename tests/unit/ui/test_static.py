"""The dashboard's built files, as the package ships them (src/cpnet/ui/static, made by `make ui`):
the page, every asset it names, and the province boundaries it draws."""

from __future__ import annotations

import json
import re
from importlib import resources

from cpnet.network.geo import shipped

STATIC = resources.files("cpnet.ui").joinpath("static")


def test_the_page_names_only_assets_that_are_shipped() -> None:
    page = STATIC.joinpath("index.html").read_text(encoding="utf-8")
    named = re.findall(r'(?:src|href)="/ui/(assets/[^"]+)"', page)
    assert any(n.endswith(".js") for n in named) and any(n.endswith(".css") for n in named), page
    for name in named:
        assert STATIC.joinpath(name).is_file(), f"index.html names {name}, which is not built"


def test_the_boundaries_are_the_34_provincial_divisions_with_their_codes() -> None:
    fc = json.loads(STATIC.joinpath("data", "cn-provinces.json").read_text(encoding="utf-8"))
    codes = [f["properties"]["code"] for f in fc["features"]]
    assert len(codes) == len(set(codes)) == 34
    assert {"110000", "440000", "540000", "650000", "710000", "810000", "820000"} <= set(codes)
    # Every city the hub places sites at lies in a province the map draws.
    assert {c.admin_code[:2] + "0000" for c in shipped().cities.values()} <= set(codes)
    assert STATIC.joinpath("data", "SOURCE.md").read_text().count("Natural Earth") >= 1
