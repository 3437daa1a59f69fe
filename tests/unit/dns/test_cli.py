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


def test_dns_delegate_checks_writes_lists_and_removes(tmp_path: Path) -> None:
    parent, child = tmp_path / "national", tmp_path / "regional"
    init = runner.invoke(app, ["hub", "init", "--data-dir", str(parent), "--authority", "cn"])
    assert init.exit_code == 0, init.output
    runner.invoke(app, ["dns", "init", "--data-dir", str(child)])
    zone = ["--dns-apex", "id.test", "--dns-zone", "gd.cn.id.test"]
    anchor = runner.invoke(app, ["dns", "anchor", "--data-dir", str(child), *zone, "--json"])
    ds = json.loads(anchor.stdout)["ds"]
    assert ds.startswith("gd.cn.id.test. IN DS ") and " 15 2 " in ds
    where = ["--data-dir", str(parent), "--dns-apex", "id.test"]
    ok = runner.invoke(
        app,
        ["dns", "delegate", "cn.gd", "--ns", "ns.gd.cn.id.test=192.0.2.53", "--ds", ds, *where],
    )
    assert ok.exit_code == 0, ok.output
    text = (parent / "dns" / "delegations.toml").read_text()
    assert 'prefix = "cn.gd"' in text and "192.0.2.53" in text and ds.split()[-1] in text
    listed = runner.invoke(app, ["dns", "delegations", *where, "--json"])
    rows = json.loads(listed.stdout)["delegations"]
    assert [(r["prefix"], r["zone"]) for r in rows] == [("cn.gd", "gd.cn.id.test.")]
    # Refusals name the field and write nothing.
    bad = runner.invoke(
        app,
        ["dns", "delegate", "us.ny", "--ns", "ns.ny.us.id.test=192.0.2.1", "--ds", ds, *where],
    )
    assert bad.exit_code == 1 and "prefix: prefix 'us.ny' is not under" in bad.output
    wrong_alg = " ".join(ds.split()[-4:]).replace(" 15 2 ", " 13 2 ")
    ns = "ns.sh.cn.id.test=192.0.2.1"
    bad = runner.invoke(app, ["dns", "delegate", "cn.sh", "--ns", ns, "--ds", wrong_alg, *where])
    assert bad.exit_code == 1 and "ds: ds algorithm '13' is not 15" in bad.output
    assert (parent / "dns" / "delegations.toml").read_text() == text
    gone = runner.invoke(app, ["dns", "delegate", "cn.gd", "--remove", *where])
    assert gone.exit_code == 0, gone.output
    assert "delegation = []" in (parent / "dns" / "delegations.toml").read_text()
    # A hub serving a zone that does not hold its authority's names refuses to start.
    outside = runner.invoke(app, ["hub", "--dns", *where, "--dns-zone", "gd.cn.id.test"])
    assert outside.exit_code == 1 and "authority cn (cn.id.test.) is not inside" in outside.output
    # A hub whose delegations file is broken refuses to start with --dns, saying why.
    (parent / "dns" / "delegations.toml").write_text('[[delegation]]\nprefix = "us"\n')
    refused = runner.invoke(app, ["hub", "--dns", *where])
    assert refused.exit_code == 1 and "delegations.toml, delegation 1" in refused.output
