"""Delegation through three authorities, validated by a real resolver (issue 18, part 5).

Three hubs, each `cpnet hub --dns` with its own Knot server, each in its own network namespace
(joined to the host by a veth pair in its own /30) answering on port 53 of its namespace address:

- national, authority ``cn``, serving the apex ``id.test.``;
- regional, authority ``cn.gd``, serving ``gd.cn.id.test.`` (delegated by the national hub);
- provider level, authority ``cn.gd.acme``, serving ``acme.gd.cn.id.test.`` (delegated by the
  regional hub), with an agent whose pool it registers.

Delegations are declared with `cpnet dns delegate` from the child's `cpnet dns anchor`. A
validating resolver (Debian ``unbound``) on the host knows only the national server (a stub zone)
and the apex's trust anchor: it resolves the pool's name through the chain with DNSSEC (AD set;
``delv`` through it says "fully validated"), and ``resolve_via_dns`` through it gets the envelope
with our signature valid and "validated-by-resolver". A wrong DS at the regional hub breaks the
chain: the resolver answers SERVFAIL. Needs root, ``ip`` and ``nsenter`` (skipped otherwise) and
knotd, unbound and delv (need_service("dns")). Everything started is stopped, and the namespaces
removed, even when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import pytest
from typer.testing import CliRunner

from cpnet.cli.main import app
from cpnet.dns.knot import ToolMissing, find_tools
from cpnet.dnsclient import DnsError, resolve_via_dns
from cpnet.ident import dns as idns
from services import free_port, need_service
from tests.integration.procs import AgentProc, HubProc, World, make_world, pool, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.netns]

APEX = "id.test."
DEADLINE_S = 30.0  # for what takes well under a second on a quiet machine


def _problem() -> str:
    if os.geteuid() != 0:
        return "needs root (network namespaces, veth)"
    for tool in ("ip", "nsenter"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return ""


def _dns_problem() -> str | None:
    try:
        find_tools()
    except ToolMissing as exc:
        return str(exc)
    for tool, package in (("unbound", "unbound"), ("delv", "bind9-dnsutils")):
        if shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin") is None:
            return f"{tool} not found: install it with `apt-get install {package}`"
    return None


def sh(*args: str) -> None:
    out = subprocess.run(args, capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: {out.stderr.strip()}")


@dataclass
class Namespace:
    """One namespace joined to the host by a veth pair in its own /30."""

    ns: str
    host_if: str
    host_ip: str
    ns_ip: str

    def up(self) -> None:
        peer = self.host_if[:-1] + "n"
        sh("ip", "netns", "add", self.ns)
        sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", peer)
        sh("ip", "link", "set", peer, "netns", self.ns)
        sh("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        sh("ip", "link", "set", self.host_if, "up")
        sh("ip", "-n", self.ns, "addr", "add", f"{self.ns_ip}/30", "dev", peer)
        sh("ip", "-n", self.ns, "link", "set", peer, "up")
        sh("ip", "-n", self.ns, "link", "set", "lo", "up")

    def down(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=30)

    @property
    def prefix(self) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.ns}"]


@dataclass
class Level:
    """One authority: its namespace, its hub, the zone it serves."""

    name: str
    authority: str
    net: Namespace
    hub: HubProc

    @property
    def zone(self) -> str:
        return APEX if self.authority == "cn" else idns.path_name(self.authority, APEX)

    @property
    def ns_name(self) -> str:
        return f"ns.{self.zone}"  # the name Knot's zone file gives the server (dns/knot.py)


class Unbound:
    """A validating resolver on the host's loopback: a stub zone for the apex pointing at the
    national server, the apex's trust anchor, no root."""

    def __init__(self, tmp: Path, national: str, anchor_ds: str) -> None:
        self.dir, self.port = tmp, free_port()
        self.proc: subprocess.Popen | None = None
        self.conf = tmp / "unbound.conf"
        self.log = tmp / "unbound.log"
        self.conf.write_text(
            f"""server:
    username: ""
    chroot: ""
    directory: "{tmp}"
    pidfile: "{tmp}/unbound.pid"
    use-syslog: no
    logfile: "{tmp}/unbound.log"
    verbosity: 1
    val-log-level: 2
    interface: 127.0.0.1@{self.port}
    port: {self.port}
    do-ip6: no
    access-control: 127.0.0.0/8 allow
    num-threads: 1
    so-reuseport: no
    module-config: "validator iterator"
    trust-anchor: "{anchor_ds}"
    # "test." is one of unbound's built-in empty zones (RFC 6761): let it through.
    local-zone: "test." nodefault
stub-zone:
    name: "{APEX}"
    stub-addr: {national}@53
"""
        )

    def start(self) -> None:
        check = subprocess.run(
            ["unbound-checkconf", str(self.conf)], capture_output=True, text=True, timeout=30
        )
        assert check.returncode == 0, check.stdout + check.stderr
        self.proc = subprocess.Popen(
            ["unbound", "-d", "-c", str(self.conf)],
            stdout=(self.dir / "unbound.out").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(lambda: self.ask(APEX, "SOA"), 20, "unbound to answer", log=self.log)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def ask(self, name: str, rtype: str) -> dns.message.Message | None:
        q = dns.message.make_query(name, rtype, want_dnssec=True, payload=1232)
        q.flags |= dns.flags.AD
        try:
            return dns.query.udp(q, "127.0.0.1", port=self.port, timeout=3)
        except (dns.exception.Timeout, OSError):
            return None

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-2000:]
        return ""


@dataclass
class Chain:
    levels: dict[str, Level]
    world: World
    pool_id: str
    resolver: Unbound
    tmp: Path


def cli(*args: str) -> str:
    """`cpnet ARGS` as an operator runs it, in this process (a Python start per command costs
    seconds on a busy machine); its stdout."""
    out = CliRunner().invoke(app, list(args))
    assert out.exit_code == 0, f"cpnet {' '.join(args)}: {out.output}"
    return out.stdout


def ask_server(addr: str, name: str, rtype: str) -> dns.message.Message | None:
    q = dns.message.make_query(name, rtype, want_dnssec=True, payload=1232)
    try:
        return dns.query.udp(q, addr, port=53, timeout=2)
    except (dns.exception.Timeout, OSError):
        return None


def rrset(msg: dns.message.Message | None, section: str, name: str, rtype: str):  # type: ignore[no-untyped-def]
    if msg is None:
        return None
    with contextlib.suppress(KeyError):
        return msg.find_rrset(
            getattr(msg, section),
            dns.name.from_text(name),
            dns.rdataclass.IN,
            dns.rdatatype.from_text(rtype),
        )
    return None


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    problem = _problem()
    if problem:
        pytest.skip(problem)
    dns_problem = _dns_problem()
    if dns_problem:
        need_service("dns", dns_problem)
    tmp = tmp_path_factory.mktemp("deleg")
    tag = f"{os.getpid() % 100000:05d}"
    third = random.randrange(0, 250, 4)  # three /30s in 10.214.<third>.0/24 and the next two
    levels: dict[str, Level] = {}
    for i, (name, authority) in enumerate(
        (("national", "cn"), ("regional", "cn.gd"), ("provider", "cn.gd.acme"))
    ):
        net = Namespace(
            f"cpnet-{tag}-{name[:3]}",
            f"cd{name[0]}{tag}h",
            f"10.214.{third + i}.1",
            f"10.214.{third + i}.2",
        )
        zone = APEX if authority == "cn" else idns.path_name(authority, APEX)
        hub = HubProc(
            tmp / name,
            free_port(),
            authority=authority,
            prefix=net.prefix,
            address=net.ns_ip,
            args=[
                *("--host", "0.0.0.0", "--dns", "--dns-apex", APEX),
                *("--dns-zone", zone, "--dns-listen", f"{net.ns_ip}:53"),
            ],
        )
        levels[name] = Level(name, authority, net, hub)
    agents: list[AgentProc] = []
    resolver: Unbound | None = None
    try:
        for lv in levels.values():
            lv.net.up()
            lv.hub.data_dir.mkdir()
            lv.hub.init()

        # Each parent delegates its child's prefix, with the child's DS from the child's hub.
        def link(parent: Level, child: Level) -> None:
            data = ["--data-dir", str(child.hub.data_dir), "--dns-apex", APEX]
            anchor = json.loads(cli("dns", "anchor", *data, "--dns-zone", child.zone, "--json"))
            assert anchor["apex"] == child.zone
            cli(
                *("dns", "delegate", child.authority, "--ns"),
                f"{child.ns_name}={child.net.ns_ip}",
                *("--ds", anchor["ds"], "--data-dir", str(parent.hub.data_dir)),
                *("--dns-apex", APEX, "--dns-zone", parent.zone),
            )

        link(levels["national"], levels["regional"])
        link(levels["regional"], levels["provider"])
        with ThreadPoolExecutor(3) as starts:
            list(starts.map(lambda lv: lv.hub.start(), levels.values()))
        top = levels["provider"].hub
        world = make_world(top, {"sz1": ("intelligent", "440300")})
        agent = AgentProc(
            top, world.site_tokens["sz1"], tmp / "agent", [pool("gpu1", type="intelligent")]
        )
        agent.config = {"endpoint": "https://gpu1.acme.example:8443"}
        agent.start()
        agents.append(agent)

        def registered() -> str | None:
            with top.client(world.user_token) as cl:
                found = [p.id for p in cl.pools(online="any")]
            return found[0] if found else None

        pool_id = wait_until(registered, 60, "the agent's pool", log=agent.log)
        national = levels["national"]
        ds = (national.hub.data_dir / "dns" / "trust-anchor.ds").read_text().strip()
        resolver = Unbound(tmp, national.net.ns_ip, ds)
        yield Chain(levels, world, pool_id, resolver, tmp)
    finally:
        for a in agents:
            with contextlib.suppress(Exception):
                a.kill()
        if resolver is not None:
            resolver.stop()
        for lv in levels.values():
            hub = lv.hub
            if hub.proc is not None and hub.proc.poll() is None:
                hub.proc.send_signal(signal.SIGTERM)  # the hub stops its knotd itself
                try:
                    hub.proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    pass
                hub.kill()  # the whole group, knotd included, if anything is left
        for lv in levels.values():
            lv.net.down()


def test_a_pool_resolves_through_three_delegated_zones_with_dnssec(chain: Chain) -> None:
    national, regional = chain.levels["national"], chain.levels["regional"]
    provider = chain.levels["provider"]
    name = idns.dns_name(chain.pool_id, APEX)
    assert name.endswith("." + provider.zone)

    # Each parent publishes the cut: a referral (NS in authority, glue, DS), none of its own
    # records under it. Knot signs the DS, not the NS.
    for parent, child in ((national, regional), (regional, provider)):
        addr = parent.net.ns_ip

        def referral(addr: str = addr, child: Level = child):  # type: ignore[no-untyped-def]
            r = ask_server(addr, name, "TXT")
            return r if rrset(r, "authority", child.zone, "DS") is not None else None

        r = wait_until(referral, DEADLINE_S, f"{parent.name}'s referral to {child.zone}")
        assert not r.answer and not r.flags & dns.flags.AA
        ns = rrset(r, "authority", child.zone, "NS")
        assert ns is not None and [x.target.to_text() for x in ns] == [child.ns_name]
        glue = rrset(r, "additional", child.ns_name, "A")
        assert glue is not None and [x.address for x in glue] == [child.net.ns_ip]
        sig = r.find_rrset(
            r.authority,
            dns.name.from_text(child.zone),
            dns.rdataclass.IN,
            dns.rdatatype.RRSIG,
            dns.rdatatype.DS,
        )
        assert sig[0].signer == dns.name.from_text(parent.zone) and sig[0].algorithm == 15
        assert not any(
            rr.rdtype == dns.rdatatype.RRSIG and rr.covers == dns.rdatatype.NS for rr in r.authority
        )
    # The provider's own server answers authoritatively, signed by its zone.
    own = wait_until(
        lambda: rrset(ask_server(provider.net.ns_ip, name, "TXT"), "answer", name, "TXT"),
        DEADLINE_S,
        "the pool's TXT at the provider-level server",
        log=provider.hub.log,
    )
    assert own is not None

    resolver = chain.resolver
    resolver.start()
    began = time.perf_counter()

    def validated():  # type: ignore[no-untyped-def]
        r = resolver.ask(name, "TXT")
        return r if r is not None and r.rcode() == dns.rcode.NOERROR and r.answer else None

    r = wait_until(validated, DEADLINE_S, f"unbound to resolve {name}")
    print(f"\nunbound resolved the pool through 3 zones in {time.perf_counter() - began:.2f} s")
    assert r.flags & dns.flags.AD, f"no AD bit: {r}\n{resolver.log_tail()}"

    # delv validates the chain itself from the apex's anchor, asking through unbound.
    anchor = national.hub.data_dir / "dns" / "trust-anchor.conf"
    delv = subprocess.run(
        [
            *("delv", "@127.0.0.1", "-p", str(resolver.port), "-a", str(anchor)),
            *(f"+root={APEX}", "TXT", name),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "; fully validated" in delv.stdout, delv.stdout + delv.stderr

    with provider.hub.client() as c:
        keys = c.keys()
    found = resolve_via_dns(
        chain.pool_id,
        apex=APEX,
        jwks=keys,
        now=datetime.now(UTC),
        server=("127.0.0.1", resolver.port),
    )
    assert found.verify.ok, found.verify
    assert found.dnssec == "validated-by-resolver", (found.dnssec, found.dnssec_reason)
    record = found.envelope["record"]
    assert record["id"] == chain.pool_id and record["authority"] == "cn.gd.acme"


def test_a_wrong_ds_at_the_parent_makes_the_chain_bogus(chain: Chain) -> None:
    regional, provider = chain.levels["regional"], chain.levels["provider"]
    name = idns.dns_name(chain.pool_id, APEX)
    data = ["--data-dir", str(provider.hub.data_dir), "--dns-apex", APEX]
    good = json.loads(cli("dns", "anchor", *data, "--dns-zone", provider.zone, "--json"))
    tag, alg, dtype, digest = good["ds"].split()[-4:]
    wrong = f"{tag} {alg} {dtype} {'0' * len(digest)}"
    cli(
        *("dns", "delegate", provider.authority, "--ns"),
        f"{provider.ns_name}={provider.net.ns_ip}",
        *("--ds", wrong, "--data-dir", str(regional.hub.data_dir)),
        *("--dns-apex", APEX, "--dns-zone", regional.zone),
    )

    def wrong_ds_served() -> bool:
        r = ask_server(regional.net.ns_ip, provider.zone, "DS")
        ds = rrset(r, "answer", provider.zone, "DS")
        return ds is not None and all(x.digest == bytes(len(digest) // 2) for x in ds)

    wait_until(wrong_ds_served, DEADLINE_S, "the regional server to serve the wrong DS")
    resolver = chain.resolver
    resolver.stop()  # a fresh cache: the good chain was validated and cached before
    resolver.start()
    r = wait_until(lambda: resolver.ask(name, "TXT"), DEADLINE_S, "unbound to answer")
    assert r.rcode() == dns.rcode.SERVFAIL, r
    assert "DS hash mismatches key" in resolver.log_tail(), resolver.log_tail()
    assert not r.flags & dns.flags.AD
    with pytest.raises(DnsError, match="SERVFAIL"):
        resolve_via_dns(
            chain.pool_id,
            apex=APEX,
            jwks={"keys": []},
            now=datetime.now(UTC),
            server=("127.0.0.1", resolver.port),
        )
    # The regional zone itself still validates: only the broken link fails.
    up = resolver.ask(idns.path_name("cn.gd", APEX), "SOA")
    assert up is not None and up.rcode() == dns.rcode.NOERROR and up.flags & dns.flags.AD
