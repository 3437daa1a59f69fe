"""The publisher's pure pass (Publisher.plan / commit): what it signs, publishes and withdraws."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cpnet.dns.publisher import Publisher
from cpnet.dns.zonediff import Change
from cpnet.ident import SigningKey, jwks, make, tombstone
from cpnet.ident import dns as idns
from cpnet.ident.records import verify_envelope

KEY = SigningKey.generate()
APEX = "id.example.org."
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC).timestamp()
SITE = make(["cn", "dev", "acme", "sz1"], "i").text
POOL1 = make(["cn", "dev", "acme", "sz1", "gpu1"], "i").text
POOL2 = make(["cn", "dev", "acme", "sz1", "gpu2"], "i").text
BROWSE = idns.browse_name("cn.dev.acme.sz1", APEX)


def site(**over) -> dict:
    rec = {
        "id": SITE,
        "kind": "site",
        "authority": "cn.dev",
        "name": "sz1",
        "type": "intelligent",
        "owner": {"provider_id": "cn.dev.acme.x"},
        "region": {"code": "440300", "name": "Shenzhen"},
        "endpoint": "https://sz1.acme.example",
        "state": {"online": True},
        "pools": [POOL1, POOL2],
    }
    return {**rec, **over}


def pool(pid: str, **over) -> dict:
    rec = {
        "id": pid,
        "kind": "pool",
        "authority": "cn.dev",
        "name": pid.rsplit(".", 2)[-2],
        "type": "intelligent",
        "owner": {"provider_id": "cn.dev.acme.x", "provider": "ACME"},
        "site_id": SITE,
        "region": {"code": "440300"},
        "endpoint": "https://sz1.acme.example",
        "capacity": {"total": {"cpu_cores": 8.0}, "free": {"cpu_cores": 3.0}},
        "state": {"online": True, "queue_length": 0, "running": 1},
    }
    return {**rec, **over}


def publisher(**kw) -> Publisher:
    return Publisher(None, KEY, "cn.dev", APEX, lambda changes: None, **kw)  # type: ignore[arg-type]


def published(p: Publisher, bodies: dict, now: float = NOW, full: bool = False) -> list[Change]:
    plan = p.plan(bodies, now, full=full)
    p.commit(plan)
    return plan.changes


def test_first_pass_publishes_each_record_its_endpoint_and_the_browse_ptrs() -> None:
    p = publisher()
    changes = published(p, {SITE: site(), POOL1: pool(POOL1), POOL2: pool(POOL2)})
    sets = {(c.owner, c.rtype) for c in changes if c.op == "set"}
    owners = {x: idns.dns_name(x, APEX) for x in (SITE, POOL1, POOL2)}
    assert {(owners[x], "TXT") for x in owners} <= sets
    assert {(f"_cpnet._tcp.{owners[x]}", "URI") for x in owners} <= sets
    assert sorted(c.rdata for c in changes if c.rtype == "PTR") == [owners[POOL1], owners[POOL2]]
    assert all(c.op == "set" for c in changes)
    # The TXT is the record's DNS profile, signed by the hub's key, valid offline.
    txt = next(c for c in changes if c.owner == owners[POOL1] and c.rtype == "TXT")
    envelope = idns.envelope_from_txt(_strings(txt.rdata))
    assert verify_envelope(envelope, jwks([KEY]), now=datetime.fromtimestamp(NOW, UTC))
    assert envelope["record"]["profile"] == "dns" and "free" not in envelope["record"]["capacity"]
    assert envelope["record"]["ttl"] == 900 and txt.ttl == 300


def test_live_fields_changing_publish_nothing_new() -> None:
    p = publisher()
    published(p, {POOL1: pool(POOL1)})
    busier = pool(POOL1, state={"online": True, "queue_length": 9, "running": 4})
    assert published(p, {POOL1: busier}, NOW + 5) == []


def test_a_changed_endpoint_replaces_the_txt_and_the_uri_only() -> None:
    p = publisher()
    published(p, {POOL1: pool(POOL1)})
    changes = published(p, {POOL1: pool(POOL1, endpoint="https://new.example")}, NOW + 5)
    assert {(c.op, c.rtype) for c in changes} == {
        ("unset", "TXT"),
        ("set", "TXT"),
        ("unset", "URI"),
        ("set", "URI"),
    }
    assert [c.rdata for c in changes if c.op == "set" and c.rtype == "URI"] == [
        '10 1 "https://new.example"'
    ]


def test_records_are_signed_again_before_they_expire() -> None:
    p = publisher(record_ttl_s=900, max_ttl=300)
    published(p, {POOL1: pool(POOL1)})
    refresh_at = p.entries[POOL1].refresh_at
    # expires at NOW + 900; the last moment to replace it is NOW + 900 - 300; spread before that
    assert NOW + 540 <= refresh_at <= NOW + 600
    assert p.due(refresh_at - 1) == set() and p.due(refresh_at) == {POOL1}
    changes = published(p, {POOL1: pool(POOL1)}, refresh_at)
    assert {(c.op, c.rtype) for c in changes} == {("unset", "TXT"), ("set", "TXT")}
    assert p.entries[POOL1].refresh_at > refresh_at + 500


def test_a_retired_pool_becomes_its_tombstone_and_leaves_the_browse_list() -> None:
    p = publisher()
    published(p, {SITE: site(), POOL1: pool(POOL1), POOL2: pool(POOL2)})
    retired = tombstone(POOL1, retired_at=datetime.fromtimestamp(NOW + 10, UTC), authority="cn.dev")
    changes = published(p, {POOL1: retired}, NOW + 10)
    name = idns.dns_name(POOL1, APEX)
    assert Change("unset", f"_cpnet._tcp.{name}", "URI") in changes
    assert Change("unset", BROWSE, "PTR", rdata=name) in changes  # one record, not the RRset
    assert not any(c.owner == BROWSE and c.op == "set" for c in changes)
    txt = next(c for c in changes if c.op == "set" and c.rtype == "TXT")
    assert idns.envelope_from_txt(_strings(txt.rdata))["record"]["retired"] is True
    assert p.entries[POOL1].tombstone
    assert p.unpublished({POOL1: True, POOL2: False}) == set()
    assert p.unpublished({POOL2: True, "cn.dev.acme.new.x": False}) == {POOL2, "cn.dev.acme.new.x"}


def test_a_full_pass_withdraws_what_the_registry_no_longer_holds() -> None:
    p = publisher()
    published(p, {SITE: site(), POOL1: pool(POOL1)})
    changes = published(p, {SITE: site()}, NOW + 1, full=True)
    name = idns.dns_name(POOL1, APEX)
    assert set(changes) == {
        Change("unset", name, "TXT"),
        Change("unset", f"_cpnet._tcp.{name}", "URI"),
        Change("unset", BROWSE, "PTR"),  # its last record: the RRset goes
    }
    assert POOL1 not in p.entries and (BROWSE, "PTR") not in p.rrsets
    # An incremental pass (not full) never withdraws what it was not given.
    assert published(p, {}, NOW + 2) == []


def test_a_record_too_big_for_dns_is_refused_with_the_reason_and_not_published() -> None:
    p = publisher()
    plan = p.plan({POOL1: pool(POOL1, name="n" * 2000)}, NOW, full=False)
    assert plan.changes == [] and POOL1 in plan.refused
    assert "1232" in plan.refused[POOL1] and "record.name" in plan.refused[POOL1]
    p.commit(plan)
    assert p.refused[POOL1] and POOL1 not in p.entries


def test_the_signed_validity_must_cover_twice_the_dns_ttl() -> None:
    with pytest.raises(ValueError, match="at least twice their DNS TTL"):
        publisher(record_ttl_s=500, max_ttl=300)


def _strings(rdata: str) -> list[bytes]:
    """TXT presentation data back to its character-strings (via dnspython)."""
    import dns.rdata
    import dns.rdataclass
    import dns.rdatatype

    rd = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, rdata)
    return list(rd.strings)  # type: ignore[attr-defined]


def test_a_site_browse_list_is_cut_to_what_one_udp_answer_holds() -> None:
    p = publisher()
    many = [make(["cn", "dev", "acme", "sz1", f"pool{i:02d}"], "i").text for i in range(40)]
    changes = published(p, {pid: pool(pid) for pid in many})
    ptrs = sorted(c.rdata for c in changes if c.rtype == "PTR")
    fits = idns.max_site_pools("cn.dev.acme.sz1", APEX, pool_label_length=len("pool00"))
    assert 0 < len(ptrs) == fits < 40
    assert ptrs == sorted(idns.dns_name(pid, APEX) for pid in many)[:fits]  # the first by name
    size = idns.answer_size(BROWSE, [idns.name_wire_length(t) for t in ptrs], APEX)
    assert size <= idns.UDP_BUDGET
    # Every pool still answers at its own name.
    assert {c.owner for c in changes if c.rtype == "TXT"} == {idns.dns_name(x, APEX) for x in many}


def test_a_delegation_publishes_the_cut_and_withholds_the_records_under_it() -> None:
    from cpnet.dns import delegation

    p = publisher()
    bodies = {SITE: site(), POOL1: pool(POOL1), POOL2: pool(POOL2)}
    published(p, bodies)
    acme = delegation.declare(
        "cn.dev.acme",
        ["ns.acme.dev.cn.id.example.org=192.0.2.53"],
        ["1 15 2 " + "AB" * 32],
        authority="cn.dev",
        apex=APEX,
        zone=APEX,
    )
    plan = p.plan({}, NOW, full=False, delegations=[acme])
    p.commit(plan)
    cut = "acme.dev.cn.id.example.org."
    sets = {(c.owner, c.rtype, c.rdata) for c in plan.changes if c.op == "set"}
    assert sets == {
        (cut, "NS", "ns.acme.dev.cn.id.example.org."),
        ("ns.acme.dev.cn.id.example.org.", "A", "192.0.2.53"),
        (cut, "DS", "1 15 2 " + "AB" * 32),
    }
    # Every record of the site and its pools lies under the cut: all withdrawn, none signed.
    unset = {(c.owner, c.rtype) for c in plan.changes if c.op == "unset"}
    assert (idns.dns_name(POOL1, APEX), "TXT") in unset and (BROWSE, "PTR") in unset
    assert all(c.owner.endswith("." + cut) for c in plan.changes if c.op == "unset")
    # A registry change under the cut publishes nothing; the same delegations, nothing again.
    assert published(p, {POOL1: pool(POOL1, endpoint="https://other.example")}) == []
    assert p.plan({}, NOW, full=False, delegations=[acme]).changes == []
    # Removing the delegation brings the records back (the changed one as it is now).
    back = p.plan({}, NOW, full=False, delegations=[])
    assert {(c.owner, c.rtype) for c in back.changes if c.op == "unset"} == {
        (cut, "NS"),
        (cut, "DS"),
        ("ns.acme.dev.cn.id.example.org.", "A"),
    }
    restored = {(c.owner, c.rtype) for c in back.changes if c.op == "set"}
    assert (idns.dns_name(POOL1, APEX), "TXT") in restored and (BROWSE, "PTR") in restored


def test_a_delegated_hub_sizes_answers_for_its_own_zone_name() -> None:
    p = publisher(zone="dev.cn.id.example.org")
    assert p.zone == "dev.cn.id.example.org." and p.apex == APEX
    changes = published(p, {POOL1: pool(POOL1)})
    assert (idns.dns_name(POOL1, APEX), "TXT") in {(c.owner, c.rtype) for c in changes}
