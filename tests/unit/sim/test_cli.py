"""`cpnet sim` end to end on a fixture trace (needs the shared geo data for the cities)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cpnet.cli.main import app
from cpnet.sim.traces import shared_dir

FIXTURES = Path(__file__).parent / "fixtures"

pytestmark = pytest.mark.skipif(
    not (shared_dir() / "data" / "geo" / "sites.csv").exists(), reason="no shared geo data"
)


def test_json_comparison_with_bound_and_plot(tmp_path: Path) -> None:
    args = ["sim", str(FIXTURES / "tiny.swf"), "--sites", "5", "--bound", "--json"]
    result = CliRunner().invoke(
        app, [*args, "-p", "cpnet", "-p", "cheapest", "--plot", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data["policies"]) == {"cpnet", "cheapest"}
    assert data["jobs"] == 3 and data["bound"]["status"] == "optimal"
    for row in data["policies"].values():
        assert row["gap_mean_jct"] >= -1e-9
    assert Path(data["plot"]).stat().st_size > 0


def test_unknown_policy_is_one_line() -> None:
    result = CliRunner().invoke(app, ["sim", str(FIXTURES / "tiny.swf"), "-p", "fastest"])
    assert result.exit_code == 1
    assert "unknown policy" in result.output
