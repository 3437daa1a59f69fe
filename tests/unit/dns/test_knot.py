"""The Knot configuration cpnet writes, and what it says when Knot is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from cpnet.config import HubSettings
from cpnet.dns.knot import ServerConfig, ToolMissing, config_text, find_tools, zone_file_text


def cfg(host: str = "127.0.0.1") -> ServerConfig:
    return ServerConfig(apex="id.example.org.", host=host, port=8453, dns_dir=Path("/srv/h/dns"))


def test_the_config_signs_with_ed25519_by_cpnets_timers_and_keeps_no_journal() -> None:
    text = config_text(cfg())
    for line in (
        "listen: 127.0.0.1@8453",
        "algorithm: ed25519",
        "manual: on",  # keys roll by the timers cpnet sets (KnotServer.roll_zsk), not Knot's
        "single-type-signing: off",  # a KSK (the anchor) and a ZSK
        f"rrsig-lifetime: {14 * 86400}",
        f"rrsig-refresh: {7 * 86400}",
        "- domain: id.example.org.",
        "dnssec-signing: on",
        "journal-content: none",
        'kasp-db: "/srv/h/dns/kasp"',
        'listen: "/srv/h/dns/knot.sock"',
    ):
        assert line in text, line


def test_the_zone_file_names_the_server_and_its_address_when_it_has_one() -> None:
    text = zone_file_text(cfg(), serial=1700000000)
    assert "@ SOA ns.id.example.org. hostmaster.id.example.org. 1700000000 " in text
    assert "ns.id.example.org. A 127.0.0.1" in text
    assert "AAAA ::1" in zone_file_text(cfg("::1"), 1)
    assert " A " not in zone_file_text(cfg("0.0.0.0"), 1)  # no address to give


def test_a_missing_knotd_names_the_debian_package(tmp_path: Path) -> None:
    with pytest.raises(
        ToolMissing,
        match=r"knotd not found at .*: install Knot DNS with "
        r"`apt-get install knot`",
    ):
        find_tools(str(tmp_path / "knotd"))


def test_the_gateway_needs_its_zone_and_a_listen_address() -> None:
    with pytest.raises(ValueError, match="CPNET_DNS_APEX"):
        HubSettings(dns=True)
    with pytest.raises(ValueError, match="must be HOST:PORT"):
        HubSettings(dns=True, dns_apex="id.example.org", dns_listen="localhost")
    with pytest.raises(ValueError, match="at least 600 seconds"):
        HubSettings(dns=True, dns_apex="id.example.org", dns_record_ttl_s=300)
    ok = HubSettings(dns=True, dns_apex="id.example.org", dns_listen="[::1]:53")
    assert ok.dns_listen == "[::1]:53"


def test_keymgr_list_lines_are_read_with_their_timers() -> None:
    from cpnet.dns.knot import ZoneKey

    k = ZoneKey.parse(
        "8019ae7015d68b059f1eaadfbc238b761972d6e7 46376 ZSK ED25519 publish=1796683277 "
        "active=1796683283 retire=0"
    )
    assert k == ZoneKey(
        "8019ae7015d68b059f1eaadfbc238b761972d6e7", 46376, False, True, 1796683277, 1796683283
    )
    assert ZoneKey.parse("e8af 18557 KSK ED25519 publish=1").ksk  # type: ignore[union-attr]
    assert ZoneKey.parse("no keys") is None
