"""The SSRF rule: which addresses staging may reach, and the operator's allow list."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cpnet.limits.ssrf import OPEN, STRICT, forbidden, literal, parse_allow, refusal


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped: judged as the IPv4 address
        ("169.254.169.254", "link-local"),  # the cloud metadata service
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd12::1", "private"),  # unique local
        ("100.64.0.1", "private"),  # shared address space (carrier-grade NAT)
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
    ],
)
def test_non_public_addresses_are_refused_with_the_reason(address: str, why: str) -> None:
    reason = refusal("h", [address], STRICT)
    assert reason is not None and why in reason and "allow_private_urls" in reason


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert refusal("h", [address], STRICT) is None


def test_one_bad_address_of_a_name_refuses_it() -> None:
    reason = refusal("two.example", ["8.8.8.8", "10.0.0.1"], STRICT)
    assert reason is not None and "two.example resolves to 10.0.0.1" in reason


def test_the_allow_list_admits_networks_and_names_only() -> None:
    rule = parse_allow("10.0.0.0/8, minio.internal, ::1")
    assert refusal("x", ["10.9.9.9"], rule) is None
    assert refusal("minio.internal", ["192.168.7.7"], rule) is None
    assert refusal("MINIO.internal.", ["192.168.7.7"], rule) is None
    assert refusal("x", ["::1"], rule) is None
    assert refusal("x", ["192.168.7.7"], rule) is not None
    assert refusal("x", ["127.0.0.1"], rule) is not None
    # a mapped address is allowed by its IPv4 network
    assert refusal("x", ["::ffff:10.1.1.1"], rule) is None
    assert refusal("x", ["127.0.0.1", "10.0.0.1"], OPEN) is None
    assert parse_allow("*") == OPEN and parse_allow(None) == STRICT and parse_allow("") == STRICT


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "not a host", "a/b", "-x.example"[0:0] + "x..y"])
def test_allow_list_nonsense_is_refused_naming_the_item(bad: str) -> None:
    with pytest.raises(ValueError, match="allow_private_urls"):
        parse_allow(bad)


def test_literal_hosts() -> None:
    assert literal("127.0.0.1") == ipaddress.ip_address("127.0.0.1")
    assert literal("[::1]") == ipaddress.ip_address("::1")
    assert literal("example.org") is None


@given(st.integers(0, 2**32 - 1))
def test_an_ipv4_address_passes_exactly_when_it_is_global(n: int) -> None:
    address = ipaddress.IPv4Address(n)
    public = address.is_global and address not in ipaddress.ip_network("100.64.0.0/10")
    assert (forbidden(address) is None) == public
    # and the same address mapped into IPv6 gets the same verdict
    mapped = ipaddress.IPv6Address(f"::ffff:{address}")
    assert (forbidden(mapped) is None) == public


def test_literal_refusal_at_submission() -> None:
    from cpnet.limits.ssrf import literal_refusal

    assert literal_refusal("http://127.0.0.1:8000/x", STRICT) == "127.0.0.1, a loopback address"
    assert literal_refusal("https://[::1]/x", STRICT) == "::1, a loopback address"
    assert literal_refusal("http://169.254.169.254/", STRICT) is not None
    assert literal_refusal("http://127.0.0.1:8000/x", parse_allow("127.0.0.0/8")) is None
    assert literal_refusal("http://example.org/x", STRICT) is None  # names: the agent checks
    assert literal_refusal("s3://bucket/key", STRICT) is None
    assert literal_refusal("http://8.8.8.8/x", STRICT) is None
