"""`cpnet hub --dns` refusing clearly, and `cpnet dns anchor | init` (no server started)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from cpnet.cli.main import app
from cpnet.dns import zonekey

runner = CliRunner()


def test_hub_dns_names_what_is_missing(tmp_path: Path) -> None:
    data = str(tmp_path / "hub")
    no_apex = runner.invoke(app, ["hub", "--data-dir", data, "--dns"])
    assert no_apex.exit_code == 1 and "CPNET_DNS_APEX (or --dns-apex)" in no_apex.output
    no_knotd = runner.invoke(
        app,
        ["hub", "--data-dir", data, "--dns", "--dns-apex", "id.test", "--dns-knotd", "/x/knotd"],
    )
    assert no_knotd.exit_code == 1
    assert "knotd not found at /x/knotd" in no_knotd.output
    assert "apt-get install knot" in no_knotd.output


def test_dns_init_then_anchor_prints_and_writes_the_trust_anchor(tmp_path: Path) -> None:
    data = tmp_path / "hub"
    first = runner.invoke(app, ["dns", "init", "--data-dir", str(data)])
    again = runner.invoke(app, ["dns", "init", "--data-dir", str(data)])
    assert "made" in first.output and "already there" in again.output
    out = runner.invoke(
        app, ["dns", "anchor", "--data-dir", str(data), "--dns-apex", "ID.Test", "--json"]
    )
    assert out.exit_code == 0, out.output
    printed = json.loads(out.stdout)
    expected = zonekey.anchor("id.test", (data / "dns" / zonekey.KEY_FILE).read_bytes())
    assert printed["apex"] == "id.test." and printed["ds"] == expected.ds
    assert (data / "dns" / "trust-anchor.ds").read_text().strip() == expected.ds
    assert "static-key 257 3 15" in (data / "dns" / "trust-anchor.conf").read_text()
    missing = runner.invoke(
        app, ["dns", "anchor", "--data-dir", str(tmp_path / "other"), "--dns-apex", "id.test"]
    )
    assert missing.exit_code == 1 and "no zone key" in missing.output
