"""Signed records published as a static zone in a real knotd, resolved with our client and kdig.

No hub here: the zone file is written from records_for() of envelopes signed with a fresh key,
which is exactly what the hub's publisher feeds the server (tests of that live in test_dns_*).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import dns.flags
import dns.message
import dns.query
import dns.rdatatype
import pytest
from typer.testing import CliRunner

from cpnet.cli.main import app
from cpnet.client import NotFound
from cpnet.dnsclient import load_trust_anchor, resolve_via_dns
from cpnet.ident import SigningKey, jwks, make, sign_record, tombstone
from cpnet.ident import dns as idns
from knotzone import kdig, serve_zone, zone_text

pytestmark = pytest.mark.integration

APEX = "id.example.org."
KEY = SigningKey.generate()
KEYS = jwks([KEY])


def pool(path: str, **over) -> dict:
    rec = {
        "id": make(path, "i").text,
        "kind": "pool",
        "authority": "cn.dev",
        "name": path.rsplit(".", 1)[-1],
        "type": "intelligent",
        "region": {"code": "440300"},
        "endpoint": f"https://{path.rsplit('.', 1)[-1]}.acme.example:8443/v1",
        "capacity": {
            "total": {"cpu_cores": 96.0, "ram_gb": 1024.0, "disk_gb": 0.0, "gpus": 8},
            "accelerators": [{"model": "NVIDIA H100", "count": 8, "memory_gb": 80.0}],
        },
    }
    return rec | over


def envelopes(now: datetime) -> dict[str, dict]:
    """Real signed envelopes of every kind, and one pool as large as the worst-case budget."""
    # 128 characters: the longest identifier, its path 125 characters in 7 labels.
    longest = "cn.dev." + ".".join(["a" * 24] * 4) + "." + "b" * 18
    records = {
        "provider": {
            "id": make("cn.dev.acme", "x").text,
            "kind": "provider",
            "authority": "cn.dev",
            "name": "ACME",
            "org_id": "acme",
        },
        "site": {
            "id": make("cn.dev.acme.sz1", "i").text,
            "kind": "site",
            "authority": "cn.dev",
            "name": "sz1",
            "type": "intelligent",
            "region": {"code": "440300"},
            "endpoint": "https://sz1.acme.example",
        },
        "gpu1": pool("cn.dev.acme.sz1.gpu1"),
        "gpu2": pool("cn.dev.acme.sz1.gpu2"),
        "big": pool(longest, name="n" * 40, endpoint="https://" + "e" * 60 + ".example"),
        "retired": tombstone(
            make("cn.dev.acme.sz1.old1", "g").text, retired_at=now, authority="cn.dev"
        ),
    }
    return {
        k: sign_record(idns.dns_record(r), KEY, issued_at=now, ttl_s=3600)
        for k, r in records.items()
    }


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    now = datetime.now(UTC)
    envs = envelopes(now)
    rrs = [rr for env in envs.values() for rr in idns.records_for(env, APEX, now=now)]
    yield envs, rrs, zone_text(APEX, rrs)


def wire_answer(server, name: str, rtype: str) -> tuple[dns.message.Message, int]:
    query = dns.message.make_query(name, rtype, want_dnssec=True, payload=1232)
    response = dns.query.udp(query, server.host, port=server.port, timeout=10)
    return response, len(response.to_wire())


def test_static_zone_round_trips_every_envelope(tmp_path, published):
    envs, rrs, text = published
    with serve_zone(tmp_path / "knot", APEX, text) as server:
        now = datetime.now(UTC)
        for env in envs.values():
            record_id = env["record"]["id"]
            found = resolve_via_dns(record_id, apex=APEX, jwks=KEYS, now=now, server=server.server)
            assert found.envelope == env
            assert found.verify.ok, found.verify.reason
            assert found.dnssec == "unsigned"
            assert not found.tcp and found.answer_bytes <= 1232
        # Every RRset the zone holds answers in one UDP datagram within the budget.
        for owner, rtype in {(rr.owner, rr.rtype) for rr in rrs}:
            response, size = wire_answer(server, owner, rtype)
            assert not response.flags & dns.flags.TC
            assert response.answer and size <= 1232, (owner, rtype, size)
        # kdig sees the same strings; the site's browse set lists both pools.
        out = kdig(
            f"@{server.host}",
            "-p",
            str(server.port),
            "+short",
            "TXT",
            idns.dns_name(envs["gpu1"]["record"]["id"], APEX),
        )
        assert out.strip().startswith('"cpnet=1" "{')
        ptr = kdig(
            f"@{server.host}",
            "-p",
            str(server.port),
            "+short",
            "PTR",
            "_cpnet._tcp.sz1.acme.dev.cn." + APEX,
        ).split()
        assert sorted(ptr) == [f"gpu{i}.sz1.acme.dev.cn.{APEX}" for i in (1, 2)]
        uri = kdig(
            f"@{server.host}",
            "-p",
            str(server.port),
            "+short",
            "URI",
            "_cpnet._tcp.gpu1.sz1.acme.dev.cn." + APEX,
        )
        assert uri.strip() == '10 1 "https://gpu1.acme.example:8443/v1"'


def test_wrong_or_missing_records_are_refused(tmp_path, published):
    envs, _, _ = published
    gpu1, gpu2 = envs["gpu1"], envs["gpu2"]
    forged = json.loads(json.dumps(gpu2))
    forged["record"]["endpoint"] = "https://evil.example"
    now = datetime.now(UTC)
    moved = [  # gpu1's genuine envelope served at gpu2's name, a forged one at gpu1's
        idns.RR(idns.dns_name(gpu2["record"]["id"], APEX), rr.ttl, rr.rtype, rr.rdata)
        for rr in idns.records_for(gpu1, APEX, now=now)
        if rr.rtype == "TXT"
    ] + [
        idns.RR(idns.dns_name(gpu1["record"]["id"], APEX), rr.ttl, rr.rtype, rr.rdata)
        for rr in idns.records_for(forged, APEX, now=now)
        if rr.rtype == "TXT"
    ]
    with serve_zone(tmp_path / "knot", APEX, zone_text(APEX, moved)) as server:
        found = resolve_via_dns(
            gpu2["record"]["id"], apex=APEX, jwks=KEYS, now=now, server=server.server
        )
        assert not found.verify.ok and "is not" in found.verify.reason
        found = resolve_via_dns(
            gpu1["record"]["id"], apex=APEX, jwks=KEYS, now=now, server=server.server
        )
        assert not found.verify.ok and found.verify.reason == "bad signature"
        with pytest.raises(NotFound, match="NXDOMAIN"):
            resolve_via_dns(
                make("cn.dev.acme.sz1.gpu9", "i").text,
                apex=APEX,
                jwks=KEYS,
                now=now,
                server=server.server,
            )


def test_signed_zone_validates_against_its_key_and_fits(tmp_path, published):
    envs, rrs, text = published
    with serve_zone(tmp_path / "knot", APEX, text, signed=True) as server:
        keys = kdig(f"@{server.host}", "-p", str(server.port), "DNSKEY", APEX, "+noall", "+answer")
        anchor = tmp_path / "anchor.zone"
        ksk = [line for line in keys.splitlines() if line.split()[4:5] == ["257"]]
        anchor.write_text("\n".join(ksk))  # the KSK: what a parent's DS would point at
        anchors = load_trust_anchor(anchor)
        now = datetime.now(UTC)
        sizes = {}
        for kind, env in envs.items():
            found = resolve_via_dns(
                env["record"]["id"],
                apex=APEX,
                jwks=KEYS,
                now=now,
                server=server.server,
                trust_anchor=anchors,
            )
            assert found.verify.ok and found.dnssec == "validated", found.dnssec_reason
            assert not found.tcp and found.answer_bytes <= 1232
            sizes[kind] = found.answer_bytes
        for owner, rtype in {(rr.owner, rr.rtype) for rr in rrs}:
            response, size = wire_answer(server, owner, rtype)
            assert not response.flags & dns.flags.TC and size <= 1232, (owner, rtype, size)
            covered = [r for r in response.answer if r.rdtype == dns.rdatatype.RRSIG]
            assert covered, (owner, rtype)  # the RRSIG is inside what was measured
        # answer_size() is an upper bound (it reserves room for a 32-byte server cookie).
        big = envs["big"]
        txt = next(rr for rr in idns.records_for(big, APEX, now=now) if rr.rtype == "TXT")
        strings = idns.txt_strings(big)
        bound = idns.answer_size(txt.owner, [sum(1 + len(s) for s in strings)], APEX)
        assert sizes["big"] <= bound <= sizes["big"] + idns.EDNS_OPTIONS
        print(f"\nanswer bytes with DNSSEC (Ed25519): {sizes}; bound for 'big': {bound}")

        # A key that is not the zone's makes the answer bogus, and the CLI refuses it.
        other = tmp_path / "other.zone"
        other.write_text(f"{APEX} 3600 IN DNSKEY 257 3 15 {'A' * 43}=\n")
        found = resolve_via_dns(
            envs["gpu1"]["record"]["id"],
            apex=APEX,
            jwks=KEYS,
            now=now,
            server=server.server,
            trust_anchor=load_trust_anchor(other),
        )
        assert found.dnssec == "bogus" and found.verify.ok
        keys_file = tmp_path / "keys.json"
        keys_file.write_text(json.dumps(KEYS))
        base = ["resolve", envs["gpu1"]["record"]["id"], "--via", "dns"]
        base += ["--server", f"{server.host}:{server.port}", "--apex", APEX, "--keys"]
        base += [str(keys_file)]
        run = CliRunner().invoke
        ok = run(app, [*base, "--trust-anchor", str(anchor), "--json"])
        assert ok.exit_code == 0, ok.output
        assert "DNSSEC validated" in ok.stderr
        assert json.loads(ok.stdout) == envs["gpu1"]
        table = run(app, [*base, "--trust-anchor", str(anchor)])
        assert table.exit_code == 0 and "gpu1.sz1.acme.dev.cn.id.example.org." in table.output
        bad = run(app, [*base, "--trust-anchor", str(other)])
        assert bad.exit_code == 1 and "DNSSEC validation failed" in bad.output
        good = envs["gpu1"]["record"]["id"]
        mistyped = good[:-1] + ("~" if good[-1] != "~" else "0")
        typo = run(app, ["resolve", mistyped, "--via", "dns", "--apex", APEX, "--keys", "x"])
        assert typo.exit_code == 1 and "check character" in typo.output
