"""The pure RRset diff and its Knot control commands (cpnet.dns.zonediff)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cpnet.dns.zonediff import Change, RRset, commands, diff, rrsets
from cpnet.ident.dns import RR

A = "a.z."
B = "b.z."


def test_rrsets_group_by_owner_and_type_with_the_smallest_ttl() -> None:
    got = rrsets(
        [
            RR(A, 300, "PTR", "x.z."),
            RR(A, 200, "PTR", "y.z."),
            RR(A, 300, "PTR", "x.z."),  # a duplicate is one record
            RR(A, 300, "TXT", '"t"'),
        ]
    )
    assert got == {
        (A, "PTR"): RRset(A, "PTR", 200, ("x.z.", "y.z.")),
        (A, "TXT"): RRset(A, "TXT", 300, ('"t"',)),
    }


def test_new_rrset_is_set_record_by_record() -> None:
    want = rrsets([RR(A, 300, "PTR", "x.z."), RR(A, 300, "PTR", "y.z.")])
    assert diff({}, want) == [
        Change("set", A, "PTR", 300, "x.z."),
        Change("set", A, "PTR", 300, "y.z."),
    ]


def test_gone_rrset_is_unset_whole() -> None:
    have = rrsets([RR(A, 300, "TXT", '"old"')])
    assert diff(have, {}) == [Change("unset", A, "TXT")]


def test_rrset_that_gains_and_loses_records_changes_only_those() -> None:
    have = rrsets([RR(A, 300, "PTR", "x.z."), RR(A, 300, "PTR", "y.z.")])
    want = rrsets([RR(A, 300, "PTR", "y.z."), RR(A, 300, "PTR", "w.z.")])
    assert diff(have, want) == [
        Change("unset", A, "PTR", rdata="x.z."),
        Change("set", A, "PTR", 300, "w.z."),
    ]


def test_a_new_ttl_sets_the_whole_rrset_again() -> None:
    have = rrsets([RR(A, 300, "TXT", '"t"')])
    want = rrsets([RR(A, 120, "TXT", '"t"')])
    assert diff(have, want) == [Change("unset", A, "TXT"), Change("set", A, "TXT", 120, '"t"')]


def test_unchanged_rrsets_give_no_change_and_the_order_is_stable() -> None:
    same = rrsets([RR(A, 300, "TXT", '"t"')])
    assert diff(same, same) == []
    want = rrsets([RR(B, 1, "TXT", '"b"'), RR(A, 1, "TXT", '"a"')])
    assert [c.owner for c in diff({}, want)] == [A, B]


def test_commands_carry_each_field_as_is() -> None:
    data = '"hello world" "q\\"uote"'  # spaces and quotes travel untouched (no shell words)
    got = commands(
        "z.",
        [
            Change("set", A, "TXT", 300, data),
            Change("unset", A, "PTR", rdata="x.z."),
            Change("unset", B, "URI"),
        ],
    )
    assert got == [
        ("zone-set", {"zone": "z.", "owner": A, "ttl": "300", "type": "TXT", "data": data}),
        ("zone-unset", {"zone": "z.", "owner": A, "type": "PTR", "data": "x.z."}),
        ("zone-unset", {"zone": "z.", "owner": B, "type": "URI"}),
    ]
    with pytest.raises(ValueError, match="op must be 'set' or 'unset'"):
        commands("z.", [Change("replace", A, "TXT")])


records = st.lists(
    st.builds(
        RR,
        owner=st.sampled_from([A, B, "c.z."]),
        ttl=st.sampled_from([60, 300]),
        rtype=st.sampled_from(["TXT", "PTR"]),
        rdata=st.sampled_from(['"1"', '"2"', '"3"']),
    ),
    max_size=12,
)


def apply(zone: dict[tuple[str, str], set], ttls: dict, changes: list[Change]) -> None:
    """A model of Knot's zone-set / zone-unset on a zone of RRsets."""
    for c in changes:
        key = (c.owner, c.rtype)
        if c.op == "unset" and not c.rdata:
            zone.pop(key, None)
        elif c.op == "unset":
            zone[key].discard(c.rdata)
            if not zone[key]:
                del zone[key]
        else:
            zone.setdefault(key, set()).add(c.rdata)
            ttls[key] = c.ttl


@given(records, records)
def test_applying_the_diff_turns_the_published_zone_into_the_desired_one(
    old: list[RR], new: list[RR]
) -> None:
    have, want = rrsets(old), rrsets(new)
    zone = {k: set(v.rdatas) for k, v in have.items()}
    ttls = {k: v.ttl for k, v in have.items()}
    apply(zone, ttls, diff(have, want))
    assert zone == {k: set(v.rdatas) for k, v in want.items()}
    assert {k: ttls[k] for k in zone} == {k: v.ttl for k, v in want.items()}
