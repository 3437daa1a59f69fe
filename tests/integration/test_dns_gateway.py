"""The DNS gateway end to end: a real hub with ``--dns``, the real Knot DNS server it starts, a
real agent joining; answers read with dnspython and validated with BIND's ``delv``.

Timings (propagation from the API's answer to the first correct DNS answer, a burst's
transactions) are printed for the report, never asserted: deadlines here are generous, for a
busy CI machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import dns.dnssec
import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from cpnet.dns.knot import ToolMissing, find_tools
from cpnet.dnsclient import load_trust_anchor, resolve_via_dns
from cpnet.ident import dns as idns
from cpnet.ident.records import verify_envelope
from cpnet.siteclient import SiteClient
from services import free_port, need_service
from tests.integration.procs import AgentProc, HubProc, World, make_world, pool, wait_until

pytestmark = pytest.mark.integration

APEX = "id.test."
CPNET = (sys.executable, "-m", "cpnet")
ROOT = (f"+root={APEX}",)
DEADLINE_S = 20.0  # for anything the gateway should do within a second on a quiet machine


def knot_problem() -> str | None:
    """Why the gateway's tools are missing, or None."""
    try:
        find_tools()
    except ToolMissing as exc:
        return str(exc)
    if shutil.which("delv") is None:
        return "delv not found: install it with `apt-get install bind9-dnsutils`"
    return None


class Gateway:
    """The hub under test, its DNS port, and small readers of its zone."""

    def __init__(self, hub: HubProc, port: int, world: World, tmp: Path) -> None:
        self.hub, self.port, self.world, self.tmp = hub, port, world, tmp
        self.dns_dir = hub.data_dir / "dns"
        self.agents: list[AgentProc] = []

    def start_agent(self, name: str, token: str, pools: list[dict]) -> AgentProc:
        agent = AgentProc(self.hub, token, self.tmp / f"agent-{name}", pools)
        agent.config = {"endpoint": f"https://{name}.acme.example:8443"}
        agent.start()
        self.agents.append(agent)
        return agent

    def query(self, name: str, rtype: str, dnssec: bool = False) -> dns.message.Message | None:
        q = dns.message.make_query(name, rtype, want_dnssec=dnssec, payload=1232)
        try:
            r = dns.query.udp(q, "127.0.0.1", port=self.port, timeout=2)
        except dns.exception.Timeout:
            return None
        assert len(r.to_wire()) <= 1232, f"{name} {rtype}: answer over 1232 bytes"
        assert not r.flags & dns.flags.TC, f"{name} {rtype}: truncated"
        return r

    def rrset(self, name: str, rtype: str):  # type: ignore[no-untyped-def]
        r = self.query(name, rtype)
        if r is None or r.rcode() != dns.rcode.NOERROR:
            return None
        return r.get_rrset(r.answer, dns.name.from_text(name), dns.rdataclass.IN, _type(rtype))

    def envelope(self, id_text: str) -> dict | None:
        rrset = self.rrset(idns.dns_name(id_text, APEX), "TXT")
        return None if rrset is None else idns.envelope_from_txt(list(rrset[0].strings))

    def commits(self) -> int:
        """Zone transactions committed so far, as knotd's own log tells."""
        return (self.dns_dir / "knotd.log").read_text(errors="replace").count("'zone-commit'")


def _type(rtype: str) -> dns.rdatatype.RdataType:
    return dns.rdatatype.from_text(rtype)


def first_answer(read, timeout: float = DEADLINE_S):  # type: ignore[no-untyped-def]
    """Poll ``read`` every 5 ms until it returns something truthy; (value, seconds taken)."""
    began = time.perf_counter()
    deadline = began + timeout
    while time.perf_counter() < deadline:
        value = read()
        if value:
            return value, time.perf_counter() - began
        time.sleep(0.005)
    raise AssertionError(f"no answer within {timeout} s (last: {value!r})")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    problem = knot_problem()
    if problem:
        need_service("dns", problem)
    tmp = tmp_path_factory.mktemp("dns")
    port = free_port()
    hub = HubProc(
        tmp / "hub",
        free_port(),
        args=["--dns", "--dns-apex", APEX, "--dns-listen", f"127.0.0.1:{port}"],
    )
    hub.data_dir.mkdir()
    hub.init()
    hub.start()
    gw = None
    try:
        gw = Gateway(hub, port, make_world(hub, {"sz1": ("intelligent", "440300")}), tmp)
        # The zone is up (signed SOA) once the hub answers: the gateway starts with it.
        wait_until(lambda: gw.rrset(APEX, "SOA"), DEADLINE_S, "the zone's SOA", log=hub.log)
        yield gw
    finally:
        for a in gw.agents if gw is not None else []:
            a.kill()
        knotd = _knotd_pid(hub.data_dir / "dns")
        if hub.proc is not None and hub.proc.poll() is None:
            # The hub alone, as an operator's SIGTERM: it must stop knotd itself.
            hub.proc.send_signal(signal.SIGTERM)
            try:
                hub.proc.wait(timeout=30)
            finally:
                hub.kill()
        if knotd is not None:
            wait_until(lambda: not _alive(knotd), 15, "knotd to stop with the hub")


def _knotd_pid(dns_dir: Path) -> int | None:
    try:
        return int((dns_dir / "knotd.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of a dead hub is gone for our purposes once init reaps it.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_the_zone_is_signed_with_ed25519_and_validates_against_the_published_anchor(
    gateway: Gateway,
) -> None:
    r = gateway.query(APEX, "DNSKEY", dnssec=True)
    assert r is not None and r.rcode() == dns.rcode.NOERROR
    keys = r.get_rrset(r.answer, dns.name.from_text(APEX), dns.rdataclass.IN, _type("DNSKEY"))
    sigs = [rr for rr in r.answer if rr.rdtype == dns.rdatatype.RRSIG]
    # Two keys: cpnet's KSK (the trust anchor) and the ZSK that signs the records (rolled by
    # `cpnet dns roll-zsk`), both Ed25519.
    assert keys is not None and sorted(k.algorithm for k in keys) == [15, 15]
    assert sorted(k.flags for k in keys) == [256, 257]
    assert sigs and all(s.algorithm == 15 for rrset in sigs for s in rrset)
    # The anchor files hold the KSK: the DNSKEY for validators, the DS for the parent.
    (ksk,) = [k for k in keys if k.flags == 257]
    dnskey_text = (gateway.dns_dir / "trust-anchor.dnskey").read_text().split(" DNSKEY ", 1)[1]
    assert ksk.to_text().replace(" ", "") == dnskey_text.replace(" ", "").strip()
    ds = dns.dnssec.make_ds(dns.name.from_text(APEX), ksk, "SHA256")
    assert ds.digest.hex().upper() in (gateway.dns_dir / "trust-anchor.ds").read_text()

    site = gateway.world.site_ids["sz1"]
    first_answer(lambda: gateway.envelope(site))
    name = idns.dns_name(site, APEX)
    anchor = gateway.dns_dir / "trust-anchor.conf"
    delv = ["delv", "@127.0.0.1", "-p", str(gateway.port), "-a", str(anchor), f"+root={APEX}"]
    ok = subprocess.run([*delv, "TXT", name], capture_output=True, text=True, timeout=60)
    assert "; fully validated" in ok.stdout, ok.stdout + ok.stderr
    assert "RRSIG\tTXT 15 " in ok.stdout
    # A name that does not exist is proven absent (signed NSEC), and validates too.
    gone = subprocess.run(
        [*delv, "TXT", f"nothere.{APEX}"], capture_output=True, text=True, timeout=60
    )
    assert "negative response, fully validated" in gone.stdout, gone.stdout + gone.stderr
    # Another key as the anchor: the chain is broken (the check can fail).
    wrong = gateway.tmp / "wrong-anchor.conf"
    other = re.sub(r'"[A-Za-z0-9+/=]{40,}"', '"' + "A" * 43 + '="', anchor.read_text())
    wrong.write_text(other)
    bad = subprocess.run(
        [*delv[:4], "-a", str(wrong), f"+root={APEX}", "TXT", name],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "fully validated" not in bad.stdout and "resolution failed" in bad.stderr + bad.stdout


def test_an_agent_joining_appears_in_dns_with_records_that_verify(gateway: Gateway) -> None:
    hub, world = gateway.hub, gateway.world
    with hub.client(world.padmin_token) as c:
        began = time.perf_counter()
        site = c.create_site(world.provider_id, "sz2", type="intelligent", region_code="440300")
        api_s = time.perf_counter() - began
        site_token = c.create_site_token(site.id).token
    envelope, site_s = first_answer(lambda: gateway.envelope(site.id))
    assert envelope["record"]["id"] == site.id and envelope["record"]["kind"] == "site"
    print(f"\nDNS propagation, new site: {site_s * 1000:.0f} ms after the API answered")
    print(f"(the API call took {api_s * 1000:.0f} ms)")

    gateway.start_agent("sz2", site_token, [pool(f"gpu{i}") for i in range(3)])

    def registered() -> list:
        with hub.client(world.user_token) as c:
            return [p for p in c.pools(online="any") if p.site_id == site.id]

    pools = wait_until(lambda: len(registered()) == 3 and registered(), 60, "the agent's pools")
    envelopes = {}
    for p in pools:
        env, took = first_answer(lambda p=p: gateway.envelope(p.id))
        envelopes[p.id] = env
        print(f"DNS propagation, pool {p.id}: {took * 1000:.0f} ms after the API listed it")
    with hub.client() as c:
        keys = c.keys()
    for pool_id, env in envelopes.items():
        assert verify_envelope(env, keys), pool_id
        record = env["record"]
        assert record["id"] == pool_id and record["profile"] == "dns"
        assert "free" not in record["capacity"]  # live fields stay out of DNS
        uri = gateway.rrset(f"{idns.SERVICE}.{idns.dns_name(pool_id, APEX)}", "URI")
        assert record["endpoint"] == "https://sz2.acme.example:8443"
        assert uri is not None and uri[0].target.decode() == record["endpoint"]
    browse = gateway.rrset(idns.browse_name(site.id.rsplit(".", 1)[0], APEX), "PTR")
    assert browse is not None
    assert sorted(str(rr.target) for rr in browse) == sorted(
        idns.dns_name(p, APEX) for p in envelopes
    )
    # cpnet's own DNS client, trusting only the DS the gateway published: both checks hold.
    for ds_or_key in ("trust-anchor.ds", "trust-anchor.dnskey"):
        found = resolve_via_dns(
            pools[0].id,
            apex=APEX,
            jwks=keys,
            now=datetime.now(UTC),
            server=("127.0.0.1", gateway.port),
            trust_anchor=load_trust_anchor(gateway.dns_dir / ds_or_key),
        )
        assert found.ok and found.dnssec == "validated", (ds_or_key, found.dnssec_reason)
        assert found.envelope["record"]["id"] == pools[0].id


def test_a_retired_pool_turns_into_its_tombstone(gateway: Gateway) -> None:
    hub, world = gateway.hub, gateway.world
    with hub.client(world.padmin_token) as c:
        site = c.create_site(world.provider_id, "sz3", type="intelligent", region_code="440300")
        token = c.create_site_token(site.id).token
    gateway.start_agent("sz3", token, [pool("a"), pool("b")])

    def pools() -> list:
        with hub.client(world.user_token) as c:
            return sorted(p.id for p in c.pools(online="any") if p.site_id == site.id)

    ids = wait_until(lambda: len(pools()) == 2 and pools(), 60, "the agent's pools")
    for pid in ids:
        first_answer(lambda pid=pid: gateway.envelope(pid))
    retired, kept = ids
    with hub.client(world.padmin_token) as c:
        c.retire_pool(retired)
    env, took = first_answer(
        lambda: (e := gateway.envelope(retired)) and e["record"].get("retired") and e
    )
    print(f"\nDNS propagation, retirement: {took * 1000:.0f} ms after the API answered")
    with hub.client() as c:
        assert verify_envelope(env, c.keys())
    assert env["record"]["kind"] == "tombstone" and env["record"]["id"] == retired
    assert gateway.rrset(f"{idns.SERVICE}.{idns.dns_name(retired, APEX)}", "URI") is None
    browse = gateway.rrset(idns.browse_name(site.id.rsplit(".", 1)[0], APEX), "PTR")
    assert browse is not None and [str(rr.target) for rr in browse] == [idns.dns_name(kept, APEX)]
    # The other pool is untouched.
    assert gateway.envelope(kept)["record"]["kind"] == "pool"  # type: ignore[index]


def test_ten_sites_joining_at_once_with_200_pools_land_in_few_transactions(
    gateway: Gateway,
) -> None:
    """What ten agents send when they start together (their registrations, through the agent
    API with each site's own token): 200 new pool identifiers in ten requests."""
    hub, world = gateway.hub, gateway.world
    sites: dict[str, str] = {}
    with hub.client(world.padmin_token) as c:
        for i in range(10):
            site = c.create_site(world.provider_id, f"j{i}", type="general", region_code="110000")
            sites[site.id] = c.create_site_token(site.id).token
    for site_id in sites:
        first_answer(lambda site_id=site_id: gateway.envelope(site_id))
    before = gateway.commits()

    def join(site_id: str) -> list[str]:
        with SiteClient(hub.url, sites[site_id], stop=threading.Event()) as c:
            body = {
                "endpoint": f"https://{site_id.split('.')[-2]}.example:8443",
                "pools": [pool(f"p{j}") for j in range(20)],
            }
            return list(c.register(site_id, body).pools.values())

    began = time.perf_counter()
    with ThreadPoolExecutor(10) as threads:
        ids = [pid for pools in threads.map(join, sites) for pid in pools]
    api_s = time.perf_counter() - began
    assert len(ids) == 200

    pending = set(ids)

    def all_there() -> bool | None:
        for i in list(pending):
            if gateway.envelope(i) is not None:
                pending.discard(i)
        return not pending or None

    _, took = first_answer(all_there, timeout=60)
    commits = gateway.commits() - before
    print(
        f"\n10 registrations of 20 pools each answered in {api_s:.2f} s; all 200 pools in DNS "
        f"{took:.2f} s after the last answer, in {commits} zone transactions"
    )
    assert not pending
    # Batched: never a transaction per identifier; at most one per registration, fewer when
    # they arrive together (a pass takes whatever came in meanwhile).
    assert 1 <= commits <= len(sites), f"{commits} transactions for 200 identifiers"


def test_a_killed_knotd_is_started_again_with_the_whole_registry(gateway: Gateway) -> None:
    site = gateway.world.site_ids["sz1"]
    first_answer(lambda: gateway.envelope(site))
    old = _knotd_pid(gateway.dns_dir)
    assert old is not None and _alive(old)
    os.kill(old, signal.SIGKILL)
    began = time.perf_counter()
    new = wait_until(
        lambda: (pid := _knotd_pid(gateway.dns_dir)) != old and pid and _alive(pid) and pid,
        DEADLINE_S,
        "a new knotd",
        log=gateway.hub.log,
    )
    # The new server started from an empty zone; the publisher puts everything back.
    env, _ = first_answer(lambda: gateway.envelope(site))
    print(f"\nknotd killed: serving the registry again after {time.perf_counter() - began:.2f} s")
    assert env["record"]["id"] == site and new != old


def test_the_trust_anchor_is_served_by_the_hub_and_fetched_by_the_cli(
    gateway: Gateway, tmp_path: Path
) -> None:
    import httpx

    hub = gateway.hub
    # Open to anyone: no token.
    r = httpx.get(f"{hub.url}/.well-known/cpnet/dns-anchor.json", timeout=10)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["zone"] == APEX
    assert doc["ds"] == [(gateway.dns_dir / "trust-anchor.ds").read_text().strip()]
    assert doc["dnskey"] == [(gateway.dns_dir / "trust-anchor.dnskey").read_text().strip()]
    # The DNSKEY served over HTTP is the one the zone publishes.
    served = gateway.rrset(APEX, "DNSKEY")
    assert served is not None
    assert doc["dnskey"][0].split(" DNSKEY ", 1)[1].replace(" ", "") in {
        rr.to_text().replace(" ", "") for rr in served
    }
    # `cpnet dns anchor --hub URL --out DIR`: the files validate the zone like the hub's own.
    out = tmp_path / "anchor"
    cli = subprocess.run(
        [*CPNET, "dns", "anchor", "--hub", hub.url, "--out", str(out), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["ds"] == doc["ds"]
    assert (out / "trust-anchor.ds").read_text().strip() == doc["ds"][0]
    delv = ["delv", "@127.0.0.1", "-p", str(gateway.port), "-a", str(out / "trust-anchor.conf")]
    ok = subprocess.run(
        [*delv, f"+root={APEX}", "SOA", APEX], capture_output=True, text=True, timeout=60
    )
    assert "; fully validated" in ok.stdout + ok.stderr, ok.stdout + ok.stderr
    # A hub URL that serves no anchor: one clear line, exit 1.
    bad = subprocess.run(
        [*CPNET, "dns", "anchor", "--hub", f"{hub.url}/nothere"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "HTTP 404" in bad.stderr, bad.stderr


def test_cpnet_dns_roll_zsk_prepublishes_a_key_and_the_zone_keeps_validating(
    gateway: Gateway,
) -> None:
    """The command on a running hub: the new ZSK is in the DNSKEY RRset at once, the old one
    still signs, delv still validates against the unchanged anchor; a second roll is refused.
    (The whole cycle, to the old key's removal, is test_dns_knot.py's, with short TTLs.)"""

    def dnskey_tags() -> set[int]:
        keys = gateway.rrset(APEX, "DNSKEY")
        return {dns.dnssec.key_id(k) for k in keys or ()}

    before = dnskey_tags()
    args = [*CPNET, "dns", "roll-zsk", "--data-dir", str(gateway.hub.data_dir)]
    args += ["--dns-apex", APEX, "--json"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    roll = json.loads(out.stdout)
    assert roll["new"] not in before and set(roll["old"]) <= before
    first_answer(lambda: roll["new"] in dnskey_tags())
    name = idns.dns_name(gateway.world.site_ids["sz1"], APEX)
    anchor = gateway.dns_dir / "trust-anchor.conf"
    delv = ["delv", "@127.0.0.1", "-p", str(gateway.port), "-a", str(anchor), *ROOT, "TXT", name]
    ok = subprocess.run(delv, capture_output=True, text=True, timeout=60)
    assert "; fully validated" in ok.stdout, ok.stdout + ok.stderr
    r = gateway.query(name, "TXT", dnssec=True)
    assert r is not None
    signers = [s.key_tag for rrset in r.answer if rrset.rdtype == 46 for s in rrset]
    assert signers == roll["old"]  # one signature, still the old key's until the switch
    again = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "already under way" in again.stderr, again.stderr
