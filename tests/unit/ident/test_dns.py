"""Tests for the DNS mapping of identifiers, the records published, and their size budget."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cpnet.ident import (
    IdentifierError,
    SigningKey,
    canonical_json,
    jwks,
    make,
    sign_record,
    tombstone,
)
from cpnet.ident import dns as idns
from cpnet.ident.records import verify_envelope

KEY = SigningKey.generate()
KEYS = jwks([KEY])
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
APEX = "id.example.org."

labels = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=24)
paths = st.lists(labels, min_size=2, max_size=8).filter(lambda p: len(".".join(p)) <= 125)
pool_paths = st.lists(labels, min_size=3, max_size=8).filter(lambda p: len(".".join(p)) <= 125)
types = st.sampled_from(["g", "i", "s", "e", "x"])


def full_pool(path: list[str], **over) -> dict:
    """A pool record shaped as the hub's resolver builds it (live fields included)."""
    rec = {
        "id": make(path, "i").text,
        "kind": "pool",
        "authority": ".".join(path[:2]),
        "name": path[-1],
        "type": "intelligent",
        "owner": {"provider_id": make(path[:3], "x").text, "provider": "ACME"},
        "site_id": make(path[:-1], "i").text,
        "region": {"code": "440300", "name": "Shenzhen", "lat": 22.54, "lon": 114.06},
        "endpoint": "https://gpu.acme.example",
        "capacity": {
            "total": {"cpu_cores": 96.0, "ram_gb": 1024.0, "disk_gb": 0.0, "gpus": 8},
            "free": {"cpu_cores": 64.0, "ram_gb": 768.0, "disk_gb": 0.0, "gpus": 4},
            "accelerators": [{"model": "NVIDIA H100", "count": 8, "memory_gb": 80.0}],
            "cpu_model": "Intel Xeon Platinum 8480+",
            "vector": {"scu": 123.0},
        },
        "state": {"online": True, "queue_length": 0, "running": 2},
        "price": {"currency": "CNY", "cpu_core_hour": 0.1, "ram_gb_hour": 0.0, "gpu_hour": 12.0},
        "sla": None,
    }
    rec.update(over)
    return rec


def signed(record: dict, ttl_s: int = 3600) -> dict:
    return sign_record(record, KEY, issued_at=NOW, ttl_s=ttl_s)


def txt_wire(rr: idns.RR) -> list[bytes]:
    """Parse an RR's presentation rdata the way a zone file loader does (dnspython)."""
    rd = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rr.rtype), rr.rdata)
    return list(rd.strings)


# ---- the name mapping ---------------------------------------------------------------------------


def test_dns_name_reverses_the_path_and_drops_type_and_check():
    pool = make("cn.dev.acme.sz1.gpu1", "g").text
    assert idns.dns_name(pool, "ID.Example.org") == "gpu1.sz1.acme.dev.cn.id.example.org."
    assert idns.id_path("GPU1.sz1.acme.dev.cn.id.example.org", APEX) == "cn.dev.acme.sz1.gpu1"


def test_dns_name_checks_the_check_character_first():
    good = make("cn.dev.acme", "x").text
    bad = good[:-1] + ("0" if good[-1] != "0" else "1")
    with pytest.raises(IdentifierError, match="check character"):
        idns.dns_name(bad, APEX)


def test_name_over_253_characters_is_refused_naming_the_length():
    pool = make(["cn", "gd"] + ["a" * 24] * 4 + ["b" * 19], "i").text  # 125-char path
    apex = ".".join(["z" * 63, "y" * 63]) + ".org"
    with pytest.raises(ValueError, match=r"is 2\d\d characters; at most 253"):
        idns.dns_name(pool, apex)


@pytest.mark.parametrize(
    ("apex", "message"),
    [
        ("", "apex is empty"),
        ("a" * 64 + ".org", "apex label 1 .* is 64 characters; at most 63"),
        ("id..org", "apex label 2 '' is not letters"),
        ("-id.org", "apex label 1 '-id' is not letters"),
        ("例.org", "not ASCII"),
    ],
)
def test_bad_apex_is_refused_naming_the_label(apex, message):
    with pytest.raises(ValueError, match=message):
        idns.normalise_apex(apex)


def test_id_path_refuses_a_name_outside_the_apex():
    with pytest.raises(ValueError, match="not under the apex"):
        idns.id_path("gpu1.sz1.acme.dev.cn.other.org.", APEX)


@given(paths, types)
def test_dns_name_and_id_path_round_trip(path, type_code):
    cid = make(path, type_code)
    name = idns.dns_name(cid.text.upper(), "Id.Example.ORG")
    assert name == name.lower() and name.endswith(".id.example.org.")
    assert all(1 <= len(label) <= 63 for label in name[:-1].split("."))
    assert idns.id_path(name, APEX) == cid.path


# ---- TXT encoding -------------------------------------------------------------------------------


@given(st.dictionaries(st.text(max_size=8), st.text(max_size=400), max_size=5))
@settings(max_examples=200)
def test_txt_strings_round_trip_through_presentation_form(payload):
    envelope = {"record": payload, "signature": {"alg": "EdDSA"}}
    strings = idns.txt_strings(envelope)
    assert strings[0] == b"cpnet=1"
    assert all(1 <= len(s) <= 255 for s in strings)
    rr = idns.RR(APEX, 60, "TXT", " ".join(idns.quote_string(s) for s in strings))
    assert txt_wire(rr) == strings  # a zone-file parser reads back exactly these bytes
    assert idns.envelope_from_txt(strings) == envelope


def test_envelope_from_txt_needs_the_marker_and_json():
    with pytest.raises(ValueError, match="does not start with 'cpnet=1'"):
        idns.envelope_from_txt([b"v=spf1 -all"])
    with pytest.raises(ValueError, match="not UTF-8 JSON"):
        idns.envelope_from_txt([b"cpnet=1", b'{"record":'])
    with pytest.raises(ValueError, match="needs a 'record' object"):
        idns.envelope_from_txt([b"cpnet=1", b"[1]"])


# ---- records_for --------------------------------------------------------------------------------


def test_records_for_a_pool_publishes_txt_uri_and_the_site_ptr():
    path = ["cn", "dev", "acme", "sz1", "gpu1"]
    envelope = signed(idns.dns_record(full_pool(path)))
    rrs = idns.records_for(envelope, APEX, now=NOW, max_ttl=300)
    by_type = {rr.rtype: rr for rr in rrs}
    assert sorted(by_type) == ["PTR", "TXT", "URI"]
    name = "gpu1.sz1.acme.dev.cn.id.example.org."
    assert by_type["TXT"].owner == name
    assert by_type["URI"].owner == "_cpnet._tcp." + name
    assert by_type["URI"].rdata == '10 1 "https://gpu.acme.example"'
    assert by_type["PTR"].owner == "_cpnet._tcp.sz1.acme.dev.cn.id.example.org."
    assert by_type["PTR"].rdata == name
    assert {rr.ttl for rr in rrs} == {300}
    back = idns.envelope_from_txt(txt_wire(by_type["TXT"]))
    assert back == envelope
    assert verify_envelope(back, KEYS, now=NOW).ok


def test_dns_profile_drops_live_and_derivable_fields():
    rec = idns.dns_record(full_pool(["cn", "dev", "acme", "sz1", "gpu1"]))
    assert rec["profile"] == "dns"
    for gone in ("state", "price", "sla", "owner", "site_id"):
        assert gone not in rec
    assert set(rec["capacity"]) == {"total", "accelerators"}
    assert rec["region"] == {"code": "440300"}
    signed_body = signed(rec)["record"]
    assert idns.dns_record(signed_body) == rec  # signer fields are dropped too


def test_dns_record_refuses_an_unknown_kind():
    with pytest.raises(ValueError, match=r"record\.kind 'task' has no DNS profile"):
        idns.dns_record({"id": "x", "kind": "task"})


def test_ttl_is_the_validity_left_when_shorter_than_max_ttl():
    envelope = signed(idns.dns_record(full_pool(["cn", "dev", "acme", "sz1", "gpu1"])), 600)
    later = NOW + timedelta(seconds=520, milliseconds=400)
    assert {rr.ttl for rr in idns.records_for(envelope, APEX, now=later)} == {79}
    assert idns.refresh_by(envelope, ttl=300) == NOW + timedelta(seconds=300)


def test_an_envelope_with_under_a_second_left_is_not_published():
    envelope = signed(idns.dns_record(full_pool(["cn", "dev", "acme", "sz1", "gpu1"])), 60)
    with pytest.raises(ValueError, match=r"record\.expires_at .* sign a fresh envelope"):
        idns.records_for(envelope, APEX, now=NOW + timedelta(seconds=59, milliseconds=500))


def test_tombstone_is_one_txt_rr_with_its_own_ttl():
    pool = make("cn.dev.acme.sz1.gpu1", "i").text
    envelope = signed(tombstone(pool, retired_at=NOW, authority="cn.dev"), 86400)
    (rr,) = idns.records_for(envelope, APEX, now=NOW, max_ttl=3600)
    assert (rr.rtype, rr.ttl) == ("TXT", 3600)
    assert idns.envelope_from_txt(txt_wire(rr))["record"]["kind"] == "tombstone"


def test_an_answer_over_1232_bytes_is_refused_naming_the_field():
    rec = full_pool(["cn", "dev", "acme", "sz1", "gpu1"], endpoint="https://" + "e" * 500)
    rec["capacity"]["accelerators"] *= 4
    with pytest.raises(ValueError, match=r"TXT gpu1\.sz1.*1232-byte.*record\.endpoint \(5"):
        idns.records_for(signed(idns.dns_record(rec)), APEX, now=NOW)


def wire_size(rr: idns.RR, apex: str) -> int:
    """Bytes of a real DNS response carrying ``rr`` as dnspython renders it: the question, the
    answer, one Ed25519 RRSIG signed by the apex, and EDNS with a full-size cookie."""
    name = dns.name.from_text(rr.owner)
    rtype = dns.rdatatype.from_text(rr.rtype)
    query = dns.message.make_query(name, rtype, want_dnssec=True)
    response = dns.message.make_response(query)
    response.use_edns(0, dns.flags.DO, 1232, options=[dns.edns.CookieOption(b"c" * 8, b"s" * 32)])
    rdata = dns.rdata.from_text(dns.rdataclass.IN, rtype, rr.rdata)
    response.find_rrset(response.answer, name, dns.rdataclass.IN, rtype, create=True).add(
        rdata, rr.ttl
    )
    sig = base64.b64encode(b"\x00" * 64).decode()
    labels = len(name.labels) - 1
    signer = idns.normalise_apex(apex)
    rrsig = dns.rdata.from_text(
        dns.rdataclass.IN,
        dns.rdatatype.RRSIG,
        f"{rr.rtype} 15 {labels} {rr.ttl} 20260401000000 20260301000000 12345 {signer} {sig}",
    )
    response.find_rrset(
        response.answer, name, dns.rdataclass.IN, dns.rdatatype.RRSIG, rtype, create=True
    ).add(rrsig, rr.ttl)
    return len(response.to_wire())


# The variable fields (name, region, endpoint, capacity) of a pool may add this many bytes of JSON
# to an empty-valued record and still fit for ANY identifier (128 characters) under an apex of up
# to 40 characters (docs/identifiers.md, "Sizes").
WORST_CASE_BUDGET = 264
json_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=200)


@st.composite
def pools(draw):
    path = draw(pool_paths)
    rec = full_pool(path, name=draw(json_text), endpoint="https://" + draw(json_text))
    rec["region"] = {"code": draw(json_text)}
    rec["capacity"]["total"] = draw(
        st.fixed_dictionaries(
            {
                "cpu_cores": st.floats(0, 10_000_000),
                "ram_gb": st.floats(0, 1e9),
                "gpus": st.integers(0, 1_000_000),
            }
        )
    )
    rec["capacity"]["accelerators"] = draw(
        st.lists(
            st.fixed_dictionaries(
                {"model": json_text, "count": st.integers(1, 1024), "memory_gb": st.floats(0, 4096)}
            ),
            max_size=3,
        )
    )
    return rec


def variable_bytes(record: dict) -> int:
    empty = {"name": "", "region": {"code": ""}, "endpoint": "", "capacity": {}}
    return sum(len(canonical_json(record[k])) - len(canonical_json(v)) for k, v in empty.items())


@given(pools(), st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=36))
@settings(max_examples=300, deadline=None)
def test_every_published_answer_fits_or_the_record_is_refused(record, apex_label):
    apex = apex_label + ".org"  # up to 40 characters
    profile = idns.dns_record(record)
    envelope = signed(profile)
    try:
        rrs = idns.records_for(envelope, apex, now=NOW)
    except ValueError as err:
        assert "1232-byte UDP budget" in str(err) and "record." in str(err)
        assert variable_bytes(profile) > WORST_CASE_BUDGET
        return
    for rr in rrs:
        assert wire_size(rr, apex) <= idns.UDP_BUDGET, rr
    txt = next(rr for rr in rrs if rr.rtype == "TXT")
    assert idns.envelope_from_txt(txt_wire(txt)) == envelope


def test_the_worst_case_budget_is_exact():
    path = ["cn", "gd"] + ["a" * 24] * 4 + ["b" * 19]  # a 128-character identifier
    apex = "a" * 36 + ".org"
    rec = full_pool(path, name="", endpoint="", region={"code": ""})
    rec["capacity"] = {"total": {}, "accelerators": []}
    rec["name"] = "n" * WORST_CASE_BUDGET
    rrs = idns.records_for(signed(idns.dns_record(rec)), apex, now=NOW)
    txt = next(rr for rr in rrs if rr.rtype == "TXT")
    # answer_size is exact for a full-size cookie: the worst case fills the budget to the byte
    # (or up to 3 bytes short, as TXT chunking costs one length byte per 255).
    assert 1232 - 3 <= wire_size(txt, apex) <= 1232
    rec["name"] += "n"  # the budget is exact: one more byte does not fit
    with pytest.raises(ValueError, match=r"record\.name \(267 bytes\)"):
        idns.records_for(signed(idns.dns_record(rec)), apex, now=NOW)


def test_answer_size_counts_question_rrsig_signer_and_opt():
    # header 12 + question (5 + 4) + one RR (2 + 10 + 3) + RRSIG (2 + 10 + 18 + 5 + 64) + OPT 55
    assert idns.answer_size("a.b.", [3], "a.b.") == 12 + 9 + 15 + 99 + 55


def test_max_site_pools_is_what_the_browse_answer_holds():
    n = idns.max_site_pools("cn.dev.acme.sz1", APEX, 24)
    site = "_cpnet._tcp.sz1.acme.dev.cn.id.example.org."
    target = idns.name_wire_length("x" * 24 + ".sz1.acme.dev.cn.id.example.org.")
    assert idns.answer_size(site, [target] * n, APEX) <= 1232
    assert idns.answer_size(site, [target] * (n + 1), APEX) > 1232
