"""Delegation's pure part: checking a declaration, the records at a cut, names under cuts, the
file, and the zone a hub serves."""

from __future__ import annotations

import re

import pytest

from cpnet.dns import delegation as d
from cpnet.errors import Invalid

APEX = "id.test."
DIGEST = "3BEAFD028B13759ED32E96B03B89FC851B9BDE338B673825C050BFD322B23C3A"
DS = f"gd.cn.id.test. IN DS 18375 15 2 {DIGEST}"
RDATA = f"18375 15 2 {DIGEST}"


def declare(prefix: str = "cn.gd", ns=("ns.gd.cn.id.test=10.0.0.2",), ds=(DS,), **kw):  # type: ignore[no-untyped-def]
    where = {"authority": "cn", "apex": APEX, "zone": APEX, **kw}
    return d.declare(prefix, list(ns), list(ds), **where)


def field_of(exc: pytest.ExceptionInfo[Invalid]) -> str | None:
    return exc.value.field


def test_a_declaration_gives_ns_glue_and_ds_at_the_cut() -> None:
    deleg = declare(ns=["NS.gd.cn.id.test.=10.0.0.2,2001:db8::53", "ns2.example.net"])
    assert deleg.prefix == "cn.gd"
    assert deleg.ds == (f"18375 15 2 {DIGEST}",)
    rrs = {(r.owner, r.rtype, r.rdata, r.ttl) for r in d.records([deleg], APEX, 300)}
    cut = "gd.cn.id.test."
    assert rrs == {
        (cut, "NS", "ns.gd.cn.id.test.", 300),
        (cut, "NS", "ns2.example.net.", 300),
        ("ns.gd.cn.id.test.", "A", "10.0.0.2", 300),
        ("ns.gd.cn.id.test.", "AAAA", "2001:db8::53", 300),
        (cut, "DS", f"18375 15 2 {DIGEST}", 300),
    }


def test_the_ds_may_be_given_as_rdata_alone_in_lower_case() -> None:
    assert declare(ds=[f"18375 15 2 {DIGEST.lower()}"]).ds == (f"18375 15 2 {DIGEST}",)


@pytest.mark.parametrize(
    ("kw", "field", "words"),
    [
        ({"prefix": "cn"}, "prefix", "not under this hub's authority"),
        ({"prefix": "us.ny"}, "prefix", "not under this hub's authority"),
        ({"prefix": "cn.g-d"}, "prefix", "not an identifier prefix"),
        ({"ns": []}, "ns", "at least one name server"),
        ({"ns": ["ns.gd.cn.id.test"]}, "ns", "give its address for the glue"),
        ({"ns": ["ns.example.net=10.0.0.2"]}, "ns", "glue is published only"),
        ({"ns": ["ns.gd.cn.id.test=10.0.0.300"]}, "ns", "not an IPv4 or IPv6 address"),
        ({"ns": ["nohost=10.0.0.2"]}, "ns", "full host name"),
        ({"ds": []}, "ds", "needs the child's DS"),
        ({"ds": [f"18375 13 2 {DIGEST}"]}, "ds", "not 15 (Ed25519)"),
        ({"ds": [f"18375 15 1 {DIGEST}"]}, "ds", "digest type"),
        ({"ds": [f"18375 15 2 {DIGEST[:-2]}"]}, "ds", "64 hex digits"),
        ({"ds": [f"99999 15 2 {DIGEST}"]}, "ds", "key tag"),
        ({"ds": [f"other.id.test. IN DS 18375 15 2 {DIGEST}"]}, "ds", "not for the delegated"),
        ({"ds": ["18375 15"]}, "ds", "KEYTAG ALGORITHM DIGESTTYPE DIGEST"),
    ],
)
def test_a_wrong_declaration_names_its_field(kw: dict, field: str, words: str) -> None:
    with pytest.raises(Invalid, match=re.escape(words)) as exc:
        declare(**kw)
    assert field_of(exc) == field


def test_a_prefix_must_lie_below_the_zone_the_hub_serves() -> None:
    zone = "gd.cn.id.test."
    assert (
        declare(
            "cn.gd.acme",
            ["ns.acme.gd.cn.id.test=10.0.0.3"],
            [RDATA],
            authority="cn.gd",
            zone=zone,
        ).prefix
        == "cn.gd.acme"
    )
    with pytest.raises(Invalid, match="not below this hub's zone") as exc:
        declare("cn.gd.acme", ["ns.acme.gd.cn.id.test=10.0.0.3"], [RDATA], zone="sh.cn.id.test.")
    assert field_of(exc) == "prefix"


def test_names_under_a_cut_are_found_label_wise() -> None:
    cuts = d.cuts([declare()], APEX)
    assert cuts == {"gd.cn.id.test."}
    assert d.covering_cut("gd.cn.id.test.", cuts) == "gd.cn.id.test."
    assert d.covering_cut("gpu1.sz1.acme.gd.cn.id.test.", cuts) == "gd.cn.id.test."
    assert d.covering_cut("_cpnet._tcp.sz1.acme.GD.cn.id.test.", cuts) == "gd.cn.id.test."
    assert d.covering_cut("xgd.cn.id.test.", cuts) is None
    assert d.covering_cut("cn.id.test.", cuts) is None
    assert d.covering_cut("b.a.", {"a.", "b.a."}) == "a."


def test_the_file_round_trips_and_is_checked_when_read() -> None:
    first = declare()
    second = declare(
        "cn.sh",
        ["ns1.example.net"],
        [f"sh.cn.id.test. 3600 IN DS 1 15 2 {DIGEST}"],
    )
    text = d.to_toml([second, first])
    assert text.startswith("# Prefixes this hub's DNS zone delegates")
    again = d.from_toml(text, authority="cn", apex=APEX, zone=APEX)
    assert again == [first, second]
    assert d.from_toml("", authority="cn", apex=APEX, zone=APEX) == []
    with pytest.raises(Invalid, match=r"delegation 1: prefix 'cn\.gd' is not under") as exc:
        d.from_toml(text, authority="us", apex=APEX, zone=APEX)
    assert field_of(exc) == "prefix"
    with pytest.raises(Invalid, match="not valid TOML"):
        d.from_toml("[[delegation]", authority="cn", apex=APEX, zone=APEX)


def test_nested_or_repeated_prefixes_are_refused() -> None:
    outer = declare()
    inner = declare("cn.gd.acme", ["ns.acme.gd.cn.id.test=10.0.0.3"], [RDATA])
    with pytest.raises(Invalid, match="delegated already"):
        d.replace_one([outer], inner)
    replaced = d.replace_one([outer], declare(ds=[f"1 15 2 {DIGEST}"]))
    assert [x.ds for x in replaced] == [(f"1 15 2 {DIGEST}",)]


def test_the_zone_a_hub_serves() -> None:
    assert d.served_zone("id.test", "", "cn") == APEX
    assert d.served_zone("id.test", "GD.cn.id.test", "cn.gd") == "gd.cn.id.test."
    assert d.served_zone("id.test", "gd.cn.id.test", "cn.gd.acme") == "gd.cn.id.test."
    with pytest.raises(ValueError, match="not inside its DNS zone"):
        d.served_zone("id.test", "gd.cn.id.test", "cn.sh")
    with pytest.raises(ValueError, match="must be the apex"):
        d.served_zone("id.test", "gd.cn.example.org", "cn.gd")
