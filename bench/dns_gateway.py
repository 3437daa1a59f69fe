"""The DNS gateway (issue 18): cpnet's published zone through Knot DNS, next to the same server
answering a static zone, next to the hub's HTTP ``/v1/resolve``; propagation; bulk publication.

What it does, in one run:

1. A real hub with ``--dns`` (it starts its own knotd) and one provider whose ``--dns-pools /
   --dns-per-site`` sites register ``--dns-pools`` pools through the agent API
   (``POST /v1/sites/{id}/register``, the route an agent uses).
2. **Bulk publication.** The hub is stopped and started again on the same store: the gateway
   rebuilds the zone from scratch (Knot keeps no journal), the whole registry in one full pass.
   Timed from the zone's first answer (knotd up, empty zone) to the first correct answer for a
   pool registered last (one transaction: all names appear together), polled every 5 ms. Then,
   with the hub stopped at the end of the run, the same pass is repeated in this process on the
   same store into a fresh knotd and split into its parts (store read, DNS profile + sign +
   records, Knot's transaction).
   (The file is not ``bench/dns.py``: with ``bench/`` first on ``sys.path`` that name would
   shadow dnspython's ``dns`` package, which cpnet imports.)
3. **Sizes.** Every published name is asked with dnspython (TXT at each identifier, URI at each
   site's and pool's ``_cpnet._tcp``, PTR at each site's browse name; EDNS 1,232 bytes, DO bit):
   the answer's wire size, truncation, and the fraction at most 1,232 bytes.
4. **The static baseline.** Those very RRsets are written as a zone file and loaded into a
   second knotd with the same configuration (``cpnet.dns.knot.config_text``) and the same
   imported Ed25519 key, signed by Knot at load.
5. **Queries/s.** Debian ``dnsperf`` asks TXT at every identifier's name, rotating, with the DO
   bit, ``--dns-concurrency`` UDP sockets and as many queries outstanding, for ``--dns-seconds``,
   against the hub's knotd and the static one; per-query latencies come from ``dnsperf -v``.
   The hub's ``GET /v1/resolve/{id}`` is loaded over the same identifiers with the same number
   of keep-alive connections (``wrk`` with a Lua script rotating the ids, else the Python
   generator of ``bench/resolve.py``). After untimed warm-ups of 2 s, ``--dns-repeats`` rounds
   run the three in turn (the order rotated each round); each row is its median round.
6. **Propagation.** ``--dns-new`` new pools are registered through the agent API,
   ``--dns-per-site`` at a time (one registration per site, sites created beforehand); from the
   moment the API answered, each new pool's name is polled (all pending at once over one UDP
   socket) until the answer carries its record, verified with the hub's key set (signature,
   expiry and id). The resolution of the measurement is one polling round (reported).

Run: ``.venv/bin/python bench/dns_gateway.py [--quick]`` (or ``bench/run.py dns``). Needs Debian
``knot`` and ``dnsperf`` (``wrk`` optional). Writes ``bench/results/dns.md`` and
``bench/results/dns.png``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
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
import httpx
from common import (
    HOST,
    BenchError,
    Hub,
    Procs,
    Section,
    changed_note,
    cores,
    cpu_seconds,
    free_port,
    machine,
    make_world,
    ms,
    num,
    percentile,
    progress,
    ratio,
    standalone,
    wait_until,
    write_report,
)
from resolve import Params as HttpParams
from resolve import Server
from resolve import load as http_load

from cpnet.ident import dns as idns
from cpnet.ident.records import verify_envelope
from cpnet.registry.model import Registration

APEX = "id.bench."
POLL_S = 0.005  # bulk: how often the zone is asked whether the registry has arrived
PROP_POLL_S = 0.001  # propagation: pause between polling rounds
PROP_DEADLINE_S = 30.0
CPNET_ROW = "cpnet's zone (the hub's knotd)"
STATIC_ROW = "static zone (a second knotd)"
HTTP_ROW = "`GET /v1/resolve/{id}` (the same hub, HTTP)"
WARM_S = 2.0
TARGET_STATIC = 0.90  # of the static zone's rate
TARGET_HTTP = 5.0  # × the HTTP resolve rate
TARGET_PROP_P99_S = 1.0
TARGET_BULK_S = 5.0
TARGET_BULK_N = 10_000


@dataclass
class Params:
    pools: int = 10_000
    per_site: int = 20
    new: int = 1_000
    seconds: float = 10.0
    concurrency: int = 32
    repeats: int = 3
    profile: bool = False
    command: str = "bench/dns_gateway.py"


@dataclass
class Perf:
    """One load run (DNS or HTTP)."""

    what: str
    requests: int
    seconds: float
    p50_s: float
    p99_s: float
    errors: int
    server_cpu_s: float
    hub_cpu_s: float = 0.0  # the hub process's own CPU during a DNS run

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class Results:
    n_ids: int = 0
    registration_s: float = 0.0
    bulk_restart_s: float = float("nan")  # zone up -> registry answered (through the hub)
    bulk_hub_start_s: float = float("nan")  # hub process start -> zone up
    bulk_hub_cpu_s: float = float("nan")  # the hub process's CPU from its start to the last answer
    bulk_knotd_cpu_s: float = float("nan")  # its knotd's, the same span
    parts: list[tuple[str, float]] = field(default_factory=list)  # in-process breakdown
    parts_cpu: list[float] = field(default_factory=list)  # CPU of each part (knotd's for Knot)
    parts_n: int = 0
    parts_changes: int = 0
    sizes: list[int] = field(default_factory=list)
    sizes_by_type: dict[str, list[int]] = field(default_factory=dict)
    truncated: int = 0
    unanswered: int = 0
    perf: list[Perf] = field(default_factory=list)
    prop: list[float] = field(default_factory=list)
    prop_rounds: list[float] = field(default_factory=list)
    prop_missing: int = 0
    static_load_s: float = float("nan")
    profile_top: str = ""
    runs: dict[str, list[Perf]] = field(default_factory=dict)  # every round's run per row


# ---- registration -------------------------------------------------------------------------------


def register(hub: Hub, sid: str, token: str, names: list[str], http: httpx.Client) -> list[str]:
    """One agent registration of ``names`` on site ``sid``; the new pools' ids."""
    body = Registration(
        endpoint=f"https://{sid.split('.')[-2]}.bench.example:8443",
        agent_version="bench",
        heartbeat_interval_s=3600,  # online for the whole run without heartbeats
        pools=[
            {
                "name": name,
                "hardware": {"cpu_cores": 64, "memory_gb": 256, "cpu_model": "bench cpu"},
                "price": {"cpu_core_hour": 0.1},
            }
            for name in names
        ],
    ).model_dump(mode="json")
    r = http.post(
        f"{hub.url}/v1/sites/{sid}/register",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
    )
    if r.status_code != 200:
        raise BenchError(f"register {sid}: HTTP {r.status_code}: {r.text[:500]}")
    return list(r.json()["pools"].values())


# ---- DNS ----------------------------------------------------------------------------------------


def ask(port: int, name: str, rtype: str, timeout: float = 2.0) -> dns.message.Message | None:
    q = dns.message.make_query(name, rtype, want_dnssec=True, payload=idns.UDP_BUDGET)
    try:
        return dns.query.udp(q, HOST, port=port, timeout=timeout)
    except (dns.exception.Timeout, OSError):
        return None


def envelope(port: int, ident: str, timeout: float = 2.0) -> dict | None:
    name = idns.dns_name(ident, APEX)
    r = ask(port, name, "TXT", timeout)
    if r is None or r.rcode() != dns.rcode.NOERROR:
        return None
    rrset = r.get_rrset(r.answer, dns.name.from_text(name), dns.rdataclass.IN, dns.rdatatype.TXT)
    if rrset is None:
        return None
    try:
        return idns.envelope_from_txt(list(rrset[0].strings))
    except ValueError:
        return None


def correct(port: int, ident: str, jwks: dict) -> bool:
    """The zone answers ``ident`` with its own record, signed by the hub and not expired."""
    env = envelope(port, ident, timeout=0.5)
    if env is None or env.get("record", {}).get("id") != ident:
        return False
    return verify_envelope(env, jwks, now=datetime.now(UTC)).ok


def soa_up(port: int) -> bool:
    r = ask(port, APEX, "SOA", timeout=0.5)
    return r is not None and r.rcode() == dns.rcode.NOERROR and bool(r.answer)


def knotd_pid(hub: Hub) -> int:
    return int((hub.data_dir / "dns" / "knotd.pid").read_text().strip())


def names_to_ask(ids: dict[str, str]) -> list[tuple[str, str]]:
    """(name, type) of every RRset published for ``ids`` (identifier -> kind)."""
    out = []
    for ident, kind in ids.items():
        name = idns.dns_name(ident, APEX)
        out.append((name, "TXT"))
        if kind in ("site", "pool"):  # not "empty site": no endpoint, no pools yet
            out.append((f"{idns.SERVICE}.{name}", "URI"))
        if kind == "site":
            out.append((f"{idns.SERVICE}.{name}", "PTR"))
    return out


def collect(port: int, queries: list[tuple[str, str]], res: Results, bar) -> list[str]:  # type: ignore[no-untyped-def]
    """Ask every (name, type) once: the sizes go into ``res``, the answer RRsets (RRSIGs left
    out) come back as zone file lines."""
    lines: list[str] = []
    for name, rtype in queries:
        r = ask(port, name, rtype)
        bar()
        if r is None or r.rcode() != dns.rcode.NOERROR or not r.answer:
            res.unanswered += 1
            continue
        size = len(r.to_wire())
        res.sizes.append(size)
        res.sizes_by_type.setdefault(rtype, []).append(size)
        if r.flags & dns.flags.TC:
            res.truncated += 1
        for rrset in r.answer:
            if rrset.rdtype != dns.rdatatype.RRSIG:
                lines.append(rrset.to_text())
    return lines


def start_static(procs: Procs, hub: Hub, zone_lines: list[str]):  # type: ignore[no-untyped-def]
    """A second knotd, configured as the gateway configures its own, with the same key,
    loading the hub's records from a zone file (signed by Knot at load)."""
    from cpnet.dns import knot, zonekey

    work = procs.scratch("static-zone")
    cfg = knot.ServerConfig(apex=APEX, host=HOST, port=free_port(), dns_dir=work / "dns")
    cfg.dns_dir.mkdir(parents=True)
    pem = zonekey.key_path(hub.data_dir / "dns").read_bytes()
    zonekey.key_path(cfg.dns_dir).write_bytes(pem)
    server = knot.KnotServer(cfg, knot.find_tools())
    server.prepare(pem)
    with cfg.zone_file.open("a") as f:
        f.write("\n".join(zone_lines) + "\n")
    t0 = time.perf_counter()
    server.start(timeout=300)
    return server, time.perf_counter() - t0


def run_dnsperf(
    port: int, qfile: Path, p: Params, seconds: float, pid: int, what: str, hub_pid: int = 0
) -> Perf:
    argv = [
        "dnsperf",
        "-s", HOST, "-p", str(port), "-d", str(qfile), "-l", f"{seconds:g}",
        "-c", str(p.concurrency), "-q", str(p.concurrency), "-T", "1", "-D", "-v",
    ]  # fmt: skip
    cpu0, hub0 = cpu_seconds(pid)[0], cpu_seconds(hub_pid)[0] if hub_pid else 0.0
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    cpu = cpu_seconds(pid)[0] - cpu0
    hub_cpu = cpu_seconds(hub_pid)[0] - hub0 if hub_pid else 0.0
    if out.returncode != 0:
        raise BenchError(f"dnsperf failed: {(out.stderr or out.stdout).strip()[-1000:]}")
    text = out.stdout

    def field_of(label: str) -> float:
        m = re.search(rf"{label}:\s+([0-9.]+)", text)
        if not m:
            raise BenchError(f"dnsperf printed no '{label}': {text[-1000:]}")
        return float(m.group(1))

    completed = int(field_of("Queries completed"))
    lost = int(field_of("Queries lost"))
    run_s = field_of("Run time \\(s\\)")
    lat = [float(x.rsplit(None, 1)[1]) for x in text.splitlines() if x.startswith("> ")]
    not_noerror = sum(1 for x in text.splitlines() if x.startswith("> ") and " NOERROR " not in x)
    return Perf(
        what,
        completed,
        run_s,
        percentile(lat, 50),
        percentile(lat, 99),
        lost + not_noerror,
        cpu,
        hub_cpu_s=hub_cpu,
    )


# ---- the phases ---------------------------------------------------------------------------------


def bulk_restart(procs: Procs, hub: Hub, port: int, last: str, jwks: dict, res: Results) -> None:
    """Stop the hub, start it again on the same store: the zone is rebuilt from scratch."""
    procs.stop(hub.proc)  # type: ignore[arg-type]  (its process group: knotd too)
    wait_until(lambda: not soa_up(port), 30, "the old knotd to stop answering", every=0.05)
    t0 = time.perf_counter()
    hub.start(procs)
    t_up = wait_until(
        lambda: soa_up(port) and time.perf_counter(), 120, "the zone to answer SOA", POLL_S
    )
    t_all = wait_until(
        lambda: correct(port, last, jwks) and time.perf_counter(),
        300,
        "the registry to be published",
        POLL_S,
    )
    res.bulk_hub_start_s = t_up - t0
    res.bulk_restart_s = t_all - t_up
    res.bulk_hub_cpu_s = cpu_seconds(hub.proc.pid)[0]  # type: ignore[union-attr]
    res.bulk_knotd_cpu_s = cpu_seconds(knotd_pid(hub))[0]


def poll_round(sock, port: int, pending: set[str], jwks: dict) -> set[str]:  # type: ignore[no-untyped-def]
    """Ask TXT for every pending identifier at once (one UDP socket, all queries sent, then the
    answers read); those answered with their own, verified record."""
    wanted: dict[int, str] = {}
    for ident in pending:
        q = dns.message.make_query(
            idns.dns_name(ident, APEX), "TXT", want_dnssec=True, payload=idns.UDP_BUDGET
        )
        wanted[q.id] = ident
        sock.sendto(q.to_wire(), (HOST, port))
    found: set[str] = set()
    deadline = time.perf_counter() + 0.5
    while wanted and time.perf_counter() < deadline:
        sock.settimeout(max(0.001, deadline - time.perf_counter()))
        try:
            wire = sock.recv(65535)
        except TimeoutError:
            break
        try:
            r = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            continue
        ident = wanted.pop(r.id, None)
        if ident is None or r.rcode() != dns.rcode.NOERROR:
            continue
        name = dns.name.from_text(idns.dns_name(ident, APEX))
        rrset = r.get_rrset(r.answer, name, dns.rdataclass.IN, dns.rdatatype.TXT)
        if rrset is None:
            continue
        try:
            env = idns.envelope_from_txt(list(rrset[0].strings))
        except ValueError:
            continue
        if (
            env.get("record", {}).get("id") == ident
            and verify_envelope(env, jwks, now=datetime.now(UTC)).ok
        ):
            found.add(ident)
    return found


def propagation(
    hub: Hub, port: int, sites: list[tuple[str, str]], p: Params, jwks: dict, res: Results, bar
) -> None:  # type: ignore[no-untyped-def]
    """Register ``p.new`` pools, ``p.per_site`` per registration; time each to its first
    correct DNS answer."""
    import socket

    left = p.new
    with httpx.Client(timeout=60) as http, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for k, (sid, token) in enumerate(sites):
            if left <= 0:
                break
            names = [f"n{k:04d}x{j:02d}" for j in range(min(p.per_site, left))]
            left -= len(names)
            ids = register(hub, sid, token, names, http)
            t_api = time.perf_counter()
            pending = set(ids)
            deadline = t_api + PROP_DEADLINE_S
            while pending and time.perf_counter() < deadline:
                r0 = time.perf_counter()
                for ident in poll_round(sock, port, pending, jwks):
                    res.prop.append(time.perf_counter() - t_api)
                    pending.discard(ident)
                    bar()
                res.prop_rounds.append(time.perf_counter() - r0)
                time.sleep(PROP_POLL_S)
            res.prop_missing += len(pending)


def in_process_bulk(data_dir: Path, procs: Procs, p: Params, res: Results) -> None:
    """The full pass from scratch, in this process on the (stopped) hub's store, into a fresh
    knotd: store read, plan (DNS profile, sign, records, diff), Knot's transaction."""
    from cpnet.config import HubSettings
    from cpnet.dns import knot, zonekey
    from cpnet.dns.publisher import Publisher
    from cpnet.hub import records
    from cpnet.hub.service import Hub as HubService

    work = procs.scratch("bulk")
    cfg = knot.ServerConfig(apex=APEX, host=HOST, port=free_port(), dns_dir=work / "dns")
    cfg.dns_dir.mkdir(parents=True)
    pem = zonekey.key_path(data_dir / "dns").read_bytes()
    zonekey.key_path(cfg.dns_dir).write_bytes(pem)
    server = knot.KnotServer(cfg, knot.find_tools())
    h = HubService(HubSettings(data_dir=data_dir))
    try:
        server.prepare(pem)
        server.start(timeout=120)
        pub = Publisher(h.store, h.keys[0], h.authority, APEX, server.apply)
        t0, c0 = time.perf_counter(), time.process_time()
        with h.store.read() as s:
            bodies = records.bodies(s, h.authority, None, dns=True)  # as the publisher reads
        t1, c1 = time.perf_counter(), time.process_time()
        if p.profile:
            import cProfile
            import io
            import pstats

            prof = cProfile.Profile()
            plan = prof.runcall(pub.plan, bodies, time.time(), full=True)
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(25)
            res.profile_top = buf.getvalue()
            t1, c1 = time.perf_counter(), time.process_time()  # the profiled plan is not timed
            plan = pub.plan(bodies, time.time(), full=True)
        else:
            plan = pub.plan(bodies, time.time(), full=True)
        t2, c2 = time.perf_counter(), time.process_time()
        k2 = cpu_seconds(server.proc.pid)[0]  # type: ignore[union-attr]
        server.apply(plan.changes)
        t3, c3 = time.perf_counter(), time.process_time()
        k3 = cpu_seconds(server.proc.pid)[0]  # type: ignore[union-attr]
        pub.commit(plan)
        res.parts = [
            ("read the records from the store (`records.bodies`, DNS columns)", t1 - t0),
            ("DNS profile, sign, build and diff the RRs (`Publisher.plan`)", t2 - t1),
            ("Knot's zone transaction (`KnotServer.apply`: set, sign, commit)", t3 - t2),
        ]
        res.parts_cpu = [c1 - c0, c2 - c1, (k3 - k2) + (c3 - c2)]
        res.parts_n = len(bodies)
        res.parts_changes = len(plan.changes)
    finally:
        server.stop()
        h.store.close()


# ---- report -------------------------------------------------------------------------------------


def plot(res: Results, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    names = [x.what.split(" (")[0].replace("`", "") for x in res.perf]
    a.bar(names, [x.rate for x in res.perf], color=["tab:blue", "tab:gray", "tab:orange"])
    a.set_ylabel("answers per second")
    a.set_title("Resolution rate (same ids, same concurrency)")
    a.tick_params(axis="x", labelsize=8)
    if res.prop:
        xs = sorted(x * 1000 for x in res.prop)
        b.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))])
        b.axvline(TARGET_PROP_P99_S * 1000, color="red", linestyle=":", label="target p99 1 s")
        b.set_xlabel("registration answered → first correct DNS answer (ms)")
        b.set_ylabel("fraction of new identifiers")
        b.set_title(f"Propagation of {len(xs):,} new identifiers")
        b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def report(p: Params, res: Results, info: dict, png: Path | None) -> Path:
    cp, st, http = res.perf
    perf = Section(
        f"Resolution: the same {res.n_ids:,} identifiers, {p.concurrency} in flight, "
        f"{p.seconds:g} s per run, the median of {p.repeats} rounds",
        [
            "what",
            "answers",
            "answers/s",
            "p50",
            "p99",
            "errors",
            "server CPU per answer",
            "hub process CPU (DNS rows)",
            "÷ static zone",
            "÷ HTTP resolve",
        ],
        [
            [
                x.what,
                f"{x.requests:,}",
                num(x.rate),
                ms(x.p50_s),
                ms(x.p99_s),
                x.errors,
                f"{1e6 * x.server_cpu_s / max(1, x.requests):.1f} µs",
                f"{x.hub_cpu_s:.2f} s" if x is not http else "",
                ratio(x.rate, st.rate),
                ratio(x.rate, http.rate),
            ]
            for x in res.perf
        ],
    )
    res_s = percentile(res.prop_rounds, 50)
    prop = Section(
        f"Propagation: {p.new:,} new pools registered through the agent API, "
        f"{p.per_site} per registration",
        ["identifiers", "answered", "p50", "p90", "p99", "max", "poll resolution (p50 / p99)"],
        [
            [
                f"{p.new:,}",
                f"{len(res.prop):,}",
                ms(percentile(res.prop, 50)),
                ms(percentile(res.prop, 90)),
                ms(percentile(res.prop, 99)),
                ms(max(res.prop) if res.prop else float("nan")),
                f"{ms(res_s)} / {ms(percentile(res.prop_rounds, 99))}",
            ]
        ],
    )
    total_parts = sum(s for _, s in res.parts)

    def per_10k(seconds: float, n: int) -> str:
        return f"{seconds * TARGET_BULK_N / max(1, n):.2f} s"

    bulk_rows = [
        [
            "through the hub: restarted on its store, zone up → the last pool answered "
            f"({res.n_ids:,} identifiers)",
            f"{res.bulk_restart_s:.2f} s",
            f"hub {res.bulk_hub_cpu_s:.2f} s + knotd {res.bulk_knotd_cpu_s:.2f} s "
            "(from the hub's start)",
            num(res.n_ids / res.bulk_restart_s),
            per_10k(res.bulk_restart_s, res.n_ids),
            "",
        ],
        [
            "(before it: the hub process started → its zone answering, empty)",
            f"{res.bulk_hub_start_s:.2f} s",
            "",
            "",
            "",
            "",
        ],
    ]
    cpus = res.parts_cpu or [float("nan")] * len(res.parts)
    for (what, s), c in zip(res.parts, cpus, strict=False):
        bulk_rows.append(
            [f"in process: {what}", f"{s:.2f} s", f"{c:.2f} s", "", "", f"{s / total_parts:.0%}"]
        )
    if res.parts:
        bulk_rows.append(
            [
                f"in process, all ({res.parts_n:,} identifiers, {res.parts_changes:,} records)",
                f"{total_parts:.2f} s",
                f"{sum(cpus):.2f} s",
                num(res.parts_n / total_parts),
                per_10k(total_parts, res.parts_n),
                "100%",
            ]
        )
    bulk = Section(
        "Bulk publication from scratch",
        ["what", "time", "CPU", "identifiers/s", "per 10,000 identifiers", "share"],
        bulk_rows,
    )
    n = len(res.sizes)
    fit = sum(1 for x in res.sizes if x <= idns.UDP_BUDGET)
    sizes = Section(
        "Answer sizes (EDNS 1,232, DO bit: with RRSIGs)",
        ["type", "answers", "p50", "max", "≤ 1,232 bytes", "truncated"],
        [
            [
                t,
                f"{len(v):,}",
                f"{percentile(v, 50):.0f} B",
                f"{max(v)} B",
                f"{sum(1 for x in v if x <= idns.UDP_BUDGET) / len(v):.1%}",
                "",
            ]
            for t, v in sorted(res.sizes_by_type.items())
        ]
        + [["all", f"{n:,}", "", f"{max(res.sizes, default=0)} B", f"{fit / max(1, n):.1%}",
            str(res.truncated)]],
    )  # fmt: skip
    prop99 = percentile(res.prop, 99)
    bulk_10k = res.bulk_restart_s * TARGET_BULK_N / max(1, res.n_ids)

    def met(ok: bool) -> str:
        return "met" if ok else "NOT met"

    notes = [
        "Targets (reported, never asserted): DNS rate on cpnet's zone ≥ 90 % of the static "
        f"zone's: {cp.rate / st.rate:.0%}, {met(cp.rate >= TARGET_STATIC * st.rate)}; ≥ 5× the "
        f"HTTP resolve: {cp.rate / http.rate:.2f}×, {met(cp.rate >= TARGET_HTTP * http.rate)}; "
        f"propagation p99 ≤ 1 s: {ms(prop99)}, {met(prop99 <= TARGET_PROP_P99_S)}; 10,000 "
        f"identifiers published in ≤ 5 s: {bulk_10k:.2f} s per 10,000 through the hub, "
        f"{met(bulk_10k <= TARGET_BULK_S)}; 100 % of answers ≤ 1,232 bytes: {fit / max(1, n):.1%}"
        f", {met(fit == n and n > 0)}.",
        f"The zone: one provider, {p.pools // p.per_site:,} sites of {p.per_site} pools "
        f"registered through the agent API ({res.registration_s:.1f} s for the registrations), "
        f"apex `{APEX}`; {res.n_ids:,} identifiers (TXT each; URI for each site and pool; PTR "
        "browse sets per site), DNSSEC Ed25519 with NSEC.",
        "The static zone is the very RRsets read back from the hub's server with dnspython, "
        "written as a zone file and loaded by a second knotd with the gateway's own "
        "configuration (`cpnet.dns.knot.config_text`) and the same imported key; Knot signed it "
        f"at load in {res.static_load_s:.1f} s. Same names, same records, same sizes.",
        f"DNS load: `dnsperf` (Debian {dnsperf_version()}) with `-D` (DO bit: answers carry "
        f"RRSIGs), `-c {p.concurrency} -q {p.concurrency} -T 1`, TXT at every identifier's name "
        "in turn; latencies from its per-query `-v` output (both DNS rows pay that alike). "
        f"HTTP load: {'`wrk` (1 thread, a Lua script rotating the ids)' if shutil.which('wrk') else 'the Python generator of bench/resolve.py'}"  # noqa: E501
        f" with {p.concurrency} keep-alive connections over the same identifiers "
        "(`GET /v1/resolve/{id}`, the full record signed for HTTP). Every row follows a 2 s "
        "untimed warm-up. Errors: lost queries and non-NOERROR answers; connect/read/timeout "
        "errors and non-2xx over HTTP.",
        f"Load generator and servers share the same {cores()} cores (knotd runs one UDP worker "
        "per core); server CPU is knotd's for DNS rows and the hub's for HTTP.",
        "Rounds: each row is the run with the median rate of its rounds; rounds run the three "
        "loads in turn, the order rotated each round; answers/s of every run: "
        + "; ".join(
            f"{what.split(' (')[0]}: " + ", ".join(num(x.rate) for x in xs)
            for what, xs in res.runs.items()
        )
        + ". The hub process's CPU during each DNS run (what it competes with knotd for): "
        + "; ".join(
            f"{what.split(' (')[0]}: " + ", ".join(f"{x.hub_cpu_s:.2f} s" for x in xs)
            for what, xs in res.runs.items()
            if what != HTTP_ROW
        )
        + ".",
        "Propagation: each registration's pools are polled with dnspython messages over one "
        "UDP socket (DO bit), all pending pools' queries sent at once then the answers read, "
        "from the moment the API answered until each answers with its own record, "
        "checked with the hub's key set (signature, expiry, id). One round asks every pool "
        f"still pending, then sleeps {PROP_POLL_S * 1000:g} ms; the resolution is that round's "
        "time (the column above). Registrations one after another, each waiting for its "
        "pools: the hub is otherwise idle. The publisher gathers a burst for 20 ms and starts "
        "passes at least 100 ms apart (docs/identifiers.md).",
        "Bulk through the hub: the hub stopped and started on the same store; the zone is "
        "rebuilt from the registry in one full pass (one transaction), timed from the first "
        "SOA answer (knotd serving the empty zone) to the first correct answer for the pool "
        f"registered last, polled every {POLL_S * 1000:g} ms. In process: the same pass in "
        "this process into a fresh knotd, with the hub stopped at the end of the run (the "
        "registry then also holds the propagation's pools). CPU: this process's for the store "
        "read and `plan`, knotd's (plus this process's client) for the transaction; wall "
        "times on a shared 2-core machine are inflated by whatever else runs, CPU times less.",
        "Sizes: every RRset asked once with EDNS 1,232 and the DO bit; wire size of the whole "
        f"answer as dnspython received it. {res.unanswered} questions got no answer.",
    ]
    if png is not None:
        notes.append(f"Plot: `bench/results/{png.name}`.")
    if res.profile_top:
        notes.append("cProfile of `Publisher.plan` (cumulative, top 25):\n\n```\n"
                     + res.profile_top.strip() + "\n```")  # fmt: skip
    notes += changed_note(info["cpnet source digest"])
    return write_report(
        "dns",
        "DNS gateway: cpnet's zone through Knot, next to a static zone and HTTP resolve",
        command=p.command,
        sections=[perf, prop, bulk, sizes],
        notes=notes,
        machine_info=info,
    )


def dnsperf_version() -> str:
    out = subprocess.run(["dnsperf", "-h"], capture_output=True, text=True)
    m = re.search(r"Version ([0-9.]+)", out.stdout + out.stderr)
    return f"dnsperf {m.group(1)}" if m else "dnsperf"


def check_tools() -> None:
    from cpnet.dns.knot import ToolMissing, find_tools

    try:
        find_tools()
    except ToolMissing as exc:
        raise BenchError(str(exc)) from None
    if shutil.which("dnsperf") is None:
        raise BenchError("dnsperf not found: apt-get install dnsperf")


def run(p: Params) -> Path:
    check_tools()
    info = machine()
    res = Results()
    n_sites = -(-p.pools // p.per_site)
    n_new = -(-p.new // p.per_site)
    with Procs() as procs, progress() as prog:
        work = procs.scratch("dns")
        port = free_port()
        hub = Hub(
            work / "hub", args=["--dns", "--dns-apex", APEX, "--dns-listen", f"{HOST}:{port}"]
        )
        hub.data_dir.mkdir()
        hub.init()
        hub.start(procs)
        wait_until(lambda: soa_up(port), 60, "the hub's zone to answer SOA", every=0.05)
        jwks = httpx.get(f"{hub.url}/.well-known/cpnet/keys.json", timeout=10).json()

        bar = prog.add_task("sites", total=1, info=f"{n_sites + n_new} sites")
        world = make_world(hub, [f"s{i:04d}" for i in range(n_sites + n_new)])
        prog.update(bar, completed=1)
        site_list = [(world.site_ids[n], world.site_tokens[n]) for n in sorted(world.site_ids)]
        bulk_sites, new_sites = site_list[:n_sites], site_list[n_sites:]

        kinds: dict[str, str] = {world.provider_id: "provider"}
        bar = prog.add_task("register pools", total=p.pools, info="agent API")
        t0 = time.perf_counter()
        left = p.pools
        with httpx.Client(timeout=60) as http:
            for k, (sid, token) in enumerate(bulk_sites):
                names = [f"p{k:04d}x{j:02d}" for j in range(min(p.per_site, left))]
                left -= len(names)
                kinds[sid] = "site"
                for ident in register(hub, sid, token, names, http):
                    kinds[ident] = "pool"
                prog.advance(bar, len(names))
        res.registration_s = time.perf_counter() - t0
        pools = [i for i, k in kinds.items() if k == "pool"]
        last = pools[-1]
        wait_until(lambda: correct(port, last, jwks), 300, "the registry in DNS", every=0.05)
        # The sites kept for propagation are published too (empty): part of the zone.
        for sid, _ in new_sites:
            kinds[sid] = "empty site"
        res.n_ids = len(kinds)

        bar = prog.add_task("bulk publication", total=1, info="hub restart")
        bulk_restart(procs, hub, port, last, jwks, res)
        prog.update(bar, completed=1, info=f"{res.bulk_restart_s:.2f} s")

        queries = names_to_ask(kinds)
        bar = prog.add_task("answer sizes", total=len(queries), info="dnspython")
        zone_lines = collect(port, queries, res, lambda: prog.advance(bar, 1))

        bar = prog.add_task("static zone", total=1, info="knotd loads and signs")
        static, res.static_load_s = start_static(procs, hub, zone_lines)
        prog.update(bar, completed=1)
        try:
            qfile = work / "queries.txt"
            qfile.write_text("".join(f"{idns.dns_name(i, APEX)} TXT\n" for i in kinds))
            hub_srv = Server("hub", hub.port, hub.proc.pid)  # type: ignore[union-attr]
            hp = HttpParams(
                seconds=p.seconds,
                connections=p.concurrency,
                loadgen="wrk" if shutil.which("wrk") else "python",
            )
            ids = list(kinds)
            rounds: dict[str, list[Perf]] = {}
            bar = prog.add_task("load", total=3 * p.repeats, info="")

            def cpnet_dns() -> Perf:
                return run_dnsperf(
                    port, qfile, p, p.seconds, knotd_pid(hub), CPNET_ROW, hub.proc.pid
                )

            def static_dns() -> Perf:
                pid = static.proc.pid
                return run_dnsperf(
                    static.cfg.port, qfile, p, p.seconds, pid, STATIC_ROW, hub.proc.pid
                )

            def http() -> Perf:
                h = http_load(hub_srv, "x", "", ids, hp, p.seconds, work)
                return Perf(HTTP_ROW, h.requests, h.seconds, h.p50_s, h.p99_s, h.errors,
                            h.hub_cpu_s)  # fmt: skip

            # Untimed warm-ups, then the three in turn, the order rotated every round.
            prog.update(bar, info="warm-up")
            run_dnsperf(port, qfile, p, WARM_S, knotd_pid(hub), "warm-up")
            run_dnsperf(static.cfg.port, qfile, p, WARM_S, static.proc.pid, "warm-up")
            http_load(hub_srv, "warm-up", "", ids, hp, WARM_S, work)
            order = [cpnet_dns, static_dns, http]
            for k in range(p.repeats):
                for fn in order[k % 3 :] + order[: k % 3]:
                    prog.update(bar, info=f"round {k + 1}: {fn.__name__}")
                    x = fn()
                    rounds.setdefault(x.what, []).append(x)
                    prog.advance(bar, 1)
            res.runs = rounds
            # Each row: the run with the median rate of its rounds.
            for what in (CPNET_ROW, STATIC_ROW, HTTP_ROW):
                xs = sorted(rounds[what], key=lambda x: x.rate)
                res.perf.append(xs[len(xs) // 2])
        finally:
            static.stop()

        bar = prog.add_task("propagation", total=p.new, info="agent API → DNS")
        propagation(hub, port, new_sites, p, jwks, res, lambda: prog.advance(bar, 1))

        procs.stop(hub.proc)  # type: ignore[arg-type]
        bar = prog.add_task("bulk in process", total=1, info="")
        in_process_bulk(hub.data_dir, procs, p, res)
        prog.update(bar, completed=1)
    png = plot(res, Path(__file__).resolve().parent / "results" / "dns.png")
    return report(p, res, info, png)


def add_args(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("dns")
    g.add_argument("--dns-pools", type=int, default=10_000, help="pools in the zone (10,000)")
    g.add_argument("--dns-per-site", type=int, default=20, help="pools per site (20)")
    g.add_argument("--dns-new", type=int, default=1_000, help="new pools timed to DNS (1,000)")
    g.add_argument("--dns-seconds", type=float, default=10.0, help="seconds per load run (10)")
    g.add_argument("--dns-concurrency", type=int, default=32, help="in flight (32)")
    g.add_argument("--dns-repeats", type=int, default=None, help="load rounds, alternating (3)")
    g.add_argument("--dns-profile", action="store_true", help="cProfile the bulk plan")


def params(args: argparse.Namespace, command: str) -> Params:
    p = Params(
        pools=args.dns_pools,
        per_site=args.dns_per_site,
        new=args.dns_new,
        seconds=args.dns_seconds,
        concurrency=args.dns_concurrency,
        repeats=args.dns_repeats or 3,
        profile=args.dns_profile,
        command=command,
    )
    if getattr(args, "quick", False):
        p.pools, p.new, p.seconds = min(p.pools, 200), min(p.new, 40), min(p.seconds, 2.0)
        p.repeats = args.dns_repeats or 1
    return p


def main(argv: list[str] | None = None) -> int:
    return standalone(
        "dns_gateway.py", __doc__, add_args, params, run, "200 pools, 40 new, 2 s per run", argv
    )


if __name__ == "__main__":
    sys.exit(main())
