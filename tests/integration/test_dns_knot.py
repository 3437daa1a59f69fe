"""cpnet's shell around a real knotd (cpnet.dns.knot, cpnet.dns.control), without a hub: big
transactions, refusals that leave the zone as it was, and stopping."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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
