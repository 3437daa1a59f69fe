"""The zone's Ed25519 key and trust anchor (cpnet.dns.zonekey), checked against dnspython."""

from __future__ import annotations

import stat
from pathlib import Path

import dns.dnssec
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest

from cpnet.dns import zonekey


def test_dnskey_key_tag_and_ds_match_an_independent_implementation() -> None:
    pem = zonekey.generate_pem()
    a = zonekey.anchor("ID.Example.org", pem)
    assert a.apex == "id.example.org."
    rdata_text = a.dnskey.split(" DNSKEY ", 1)[1]
    key = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.DNSKEY, rdata_text)
    assert (key.flags, key.protocol, key.algorithm) == (257, 3, 15)
    assert dns.dnssec.key_id(key) == a.key_tag
    ds = dns.dnssec.make_ds(dns.name.from_text("id.example.org."), key, "SHA256")
    assert a.ds == f"id.example.org. IN DS {a.key_tag} 15 2 {ds.digest.hex().upper()}"
    assert f'"id.example.org." static-key 257 3 15 "{a.public_key_b64}";' in a.bind_anchor


def test_the_ds_depends_on_the_zone_the_dnskey_does_not() -> None:
    pem = zonekey.generate_pem()
    one, two = zonekey.anchor("a.example", pem), zonekey.anchor("b.example", pem)
    assert one.public_key_b64 == two.public_key_b64 and one.key_tag == two.key_tag
    assert one.ds.split()[-1] != two.ds.split()[-1]


def test_ensure_key_makes_one_private_key_once(tmp_path: Path) -> None:
    d = tmp_path / "dns"
    pem, made = zonekey.ensure_key(d)
    again, made_again = zonekey.ensure_key(d)
    assert made and not made_again and pem == again
    mode = stat.S_IMODE(zonekey.key_path(d).stat().st_mode)
    assert mode == 0o600
    assert list(d.iterdir()) == [zonekey.key_path(d)]  # no temporary file left behind


def test_a_key_that_is_not_ed25519_is_refused() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match="must be Ed25519"):
        zonekey.anchor("a.example", pem)


def _doc(a: zonekey.Anchor) -> dict:
    return {"zone": a.apex, "ds": [a.ds], "dnskey": [a.dnskey], "key_tags": [a.key_tag]}


def test_an_anchor_document_is_read_back_and_checked_against_itself() -> None:
    a = zonekey.anchor("id.example.org", zonekey.generate_pem())
    assert zonekey.anchors_from_document(_doc(a)) == [a]
    other = zonekey.anchor("id.example.org", zonekey.generate_pem())
    # A DS that is not the DNSKEY's digest, a key of another zone, a ZSK: refused by field.
    with pytest.raises(ValueError, match=r"^ds: no DS listed matches dnskey\.0"):
        zonekey.anchors_from_document({**_doc(a), "ds": [other.ds]})
    with pytest.raises(ValueError, match=r"^dnskey\.0: owner"):
        zonekey.anchors_from_document({**_doc(a), "zone": "id.example.net."})
    with pytest.raises(ValueError, match=r"^dnskey\.0: flags 256"):
        zonekey.anchors_from_document({**_doc(a), "dnskey": [a.dnskey.replace(" 257 ", " 256 ")]})
    with pytest.raises(ValueError, match=r"^dnskey: expected"):
        zonekey.anchors_from_document({**_doc(a), "dnskey": []})
