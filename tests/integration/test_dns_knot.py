"""cpnet's shell around a real knotd (cpnet.dns.knot, cpnet.dns.control), without a hub: big
transactions, refusals that leave the zone as it was, and stopping."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dns.dnssec
import dns.message
import dns.query
import dns.rcode
import pytest

from cpnet.dns import zonekey
from cpnet.dns.knot import KnotError, KnotServer, ServerConfig, ToolMissing, find_tools
from cpnet.dns.zonediff import Change
from services import free_port, need_service

pytestmark = pytest.mark.integration

APEX = "id.test."
ROOT = (f"+root={APEX}",)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[KnotServer]:
    try:
        tools = find_tools()
    except ToolMissing as exc:
        need_service("dns", str(exc))
    d = tmp_path / "dns"
    pem, _ = zonekey.ensure_key(d)
    srv = KnotServer(ServerConfig(APEX, "127.0.0.1", free_port(), d), tools)
    srv.prepare(pem)
    srv.start()
    yield srv
    srv.stop()


def txt(srv: KnotServer, name: str) -> list[bytes] | None:
    q = dns.message.make_query(name, "TXT")
    r = dns.query.tcp(q, "127.0.0.1", port=srv.cfg.port, timeout=10)
    if r.rcode() != dns.rcode.NOERROR or not r.answer:
        return None
    return [b"".join(rd.strings) for rd in r.answer[0]]


def test_a_transaction_of_3000_large_records_goes_through(server: KnotServer) -> None:
    # ~900-byte records: their answers outgrow a unix socket's buffer unless the client reads
    # while it sends (a client that did not stalled here for minutes).
    big = " ".join(f'"{c * 250}"' for c in "abc") + ' "end"'
    changes = [Change("set", f"r{i}.{APEX}", "TXT", 300, big) for i in range(3000)]
    server.apply(changes)
    assert txt(server, f"r0.{APEX}") == [b"a" * 250 + b"b" * 250 + b"c" * 250 + b"end"]
    assert txt(server, f"r2999.{APEX}") is not None
    assert server.transactions == 1 and server.changes == 3000


def test_a_refused_record_aborts_the_whole_transaction(server: KnotServer) -> None:
    good = Change("set", f"good.{APEX}", "TXT", 300, '"with spaces and \\"quotes\\""')
    with pytest.raises(KnotError, match=r"parser failed .*bad\.id\.test\. .*URI"):
        server.apply([good, Change("set", f"bad.{APEX}", "URI", 300, "not a uri record")])
    assert txt(server, f"good.{APEX}") is None  # aborted: nothing of it was published
    server.apply([good])
    assert txt(server, f"good.{APEX}") == [b'with spaces and "quotes"']


def test_unset_one_record_then_the_rrset(server: KnotServer) -> None:
    name = f"two.{APEX}"
    server.apply([Change("set", name, "TXT", 300, '"1"'), Change("set", name, "TXT", 300, '"2"')])
    assert sorted(txt(server, name) or []) == [b"1", b"2"]
    server.apply([Change("unset", name, "TXT", rdata='"1"')])
    assert txt(server, name) == [b"2"]
    server.apply([Change("unset", name, "TXT")])
    assert txt(server, name) is None


def test_stop_ends_knotd(server: KnotServer) -> None:
    proc = server.proc
    assert proc is not None and server.running
    server.stop()
    assert proc.poll() is not None and not server.running


def _signed(srv: KnotServer, name: str, rtype: str) -> tuple[list[int], list[int]]:
    """(key tags in the DNSKEY RRset, key tags of the RRSIGs over ``name``'s ``rtype``)."""
    tags = []
    for qname, qtype in ((APEX, "DNSKEY"), (name, rtype)):
        q = dns.message.make_query(qname, qtype, want_dnssec=True, payload=1232)
        r = dns.query.udp(q, "127.0.0.1", port=srv.cfg.port, timeout=5)
        if qtype == "DNSKEY":
            tags.append(
                sorted(dns.dnssec.key_id(rd) for rr in r.answer for rd in rr if rr.rdtype == 48)
            )
        else:
            tags.append(sorted(rd.key_tag for rr in r.answer for rd in rr if rr.rdtype == 46))
    return tags[0], tags[1]


def _delv(srv: KnotServer, name: str) -> str:
    anchor = srv.cfg.dns_dir / "trust-anchor.conf"
    out = subprocess.run(
        ["delv", "@127.0.0.1", "-p", str(srv.cfg.port), "-a", str(anchor), *ROOT, "TXT", name],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return out.stdout + out.stderr


def test_a_zsk_rollover_keeps_the_zone_validating_before_during_and_after(
    tmp_path: Path,
) -> None:
    """The anchor (KSK, cpnet's key) stays; the ZSK is rolled by pre-publication: one RRSIG
    per answer at every moment, and delv validates against the same anchor throughout."""
    if shutil.which("delv") is None:
        need_service("dns", "delv not found: apt-get install bind9-dnsutils")
    try:
        tools = find_tools()
    except ToolMissing as exc:
        need_service("dns", str(exc))
    d = tmp_path / "dns"
    pem, _ = zonekey.ensure_key(d)
    srv = KnotServer(ServerConfig(APEX, "127.0.0.1", free_port(), d, max_ttl=2), tools)
    anchor = srv.prepare(pem)
    srv.start()
    try:
        name = f"gpu1.{APEX}"
        srv.apply([Change("set", name, "TXT", 2, '"cpnet=1" "{}"')])
        keys = srv.keys()
        (ksk,) = [k for k in keys if k.ksk]
        (zsk,) = [k for k in keys if k.zsk]
        assert ksk.tag == anchor.key_tag and not ksk.zsk  # the anchor is cpnet's key, a KSK
        assert _signed(srv, name, "TXT") == (sorted([ksk.tag, zsk.tag]), [zsk.tag])
        assert "; fully validated" in _delv(srv, name)

        roll = srv.roll_zsk()
        with pytest.raises(KnotError, match="already under way"):
            srv.roll_zsk()
        new = roll.new.tag
        seen: list[tuple[list[int], list[int]]] = []
        deadline = roll.removed_at + 30
        while time.time() < deadline:
            state = _signed(srv, name, "TXT")
            if not seen or seen[-1] != state:
                seen.append(state)
                # every state the zone passes through validates against the unchanged anchor
                assert "; fully validated" in _delv(srv, name), (state, _delv(srv, name))
            if state == (sorted([ksk.tag, new]), [new]):
                break
            assert len(state[1]) == 1, f"two signatures at once: {state}"
            time.sleep(0.2)
        assert seen == [
            (sorted([ksk.tag, zsk.tag, new]), [zsk.tag]),  # new key published, old one signs
            (sorted([ksk.tag, zsk.tag, new]), [new]),  # new one signs, old still published
            (sorted([ksk.tag, new]), [new]),  # old one gone
        ], seen
        assert (d / "trust-anchor.ds").read_text().strip() == anchor.ds  # the parent's DS stays
        # A restart keeps the rolled key (Knot's KASP is kept; only the zone is rebuilt).
        srv.stop()
        srv.prepare(pem)
        srv.start()
        srv.apply([Change("set", name, "TXT", 2, '"cpnet=1" "{}"')])
        assert _signed(srv, name, "TXT") == (sorted([ksk.tag, new]), [new])
    finally:
        srv.stop()
