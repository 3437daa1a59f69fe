"""A throw-away Knot DNS server serving one static zone file, for tests of the DNS records.

``from knotzone import serve_zone`` (``tests/`` is on ``sys.path``). The hub's own server control
(feeding a live zone) is ``cpnet.dns``; this only loads a file written by the test, optionally
signing it with an Ed25519 key that knotd makes itself, and always stops knotd again.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from services import free_port, need_service

START_DEADLINE_S = 60.0  # a busy 2-core CI machine can take a while to start and sign
SOA_RNAME = "hostmaster"


@dataclass(frozen=True)
class ZoneServer:
    """A running knotd: where to ask, and its log so far (for failure messages)."""

    host: str
    port: int
    apex: str
    log: Path

    @property
    def server(self) -> tuple[str, int]:
        return (self.host, self.port)


def zone_text(apex: str, rrs) -> str:
    """A zone file: SOA and NS at the apex, then ``rrs`` (cpnet.ident.dns.RR) one per line."""
    lines = [
        f"$ORIGIN {apex}",
        f"@ 3600 IN SOA ns1.{apex} {SOA_RNAME}.{apex} 1 3600 600 86400 60",
        f"@ 3600 IN NS ns1.{apex}",
        f"ns1.{apex} 3600 IN A 127.0.0.1",
    ]
    lines += [f"{rr.owner} {rr.ttl} IN {rr.rtype} {rr.rdata}" for rr in rrs]
    return "\n".join(lines) + "\n"


def _config(work: Path, apex: str, port: int, signed: bool) -> str:
    signing = "    dnssec-signing: on\n    dnssec-policy: ed\n" if signed else ""
    return f"""server:
    rundir: "{work}"
    listen: 127.0.0.1@{port}
database:
    storage: "{work}"
log:
  - target: stderr
    any: info
policy:
  - id: ed
    algorithm: ed25519
template:
  - id: default
    storage: "{work}"
    file: "%s.zone"
    zonefile-sync: -1
    journal-content: none
zone:
  - domain: {apex}
{signing}"""


@contextmanager
def serve_zone(work: Path, apex: str, text: str, *, signed: bool = False) -> Iterator[ZoneServer]:
    """Start knotd on a free port serving ``text`` as zone ``apex``; stop it on exit."""
    knotd = shutil.which("knotd") or ("/usr/sbin/knotd" if Path("/usr/sbin/knotd").exists() else "")
    if not knotd:
        need_service("dns", "knotd not installed (Debian: apt-get install knot knot-dnsutils)")
    work.mkdir(parents=True, exist_ok=True)
    (work / f"{apex.rstrip('.')}.zone").write_text(text)
    for _attempt in range(3):  # another process may take the port between free_port and bind
        port = free_port()
        (work / "knot.conf").write_text(_config(work, apex, port, signed))
        log = work / f"knotd-{port}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [knotd, "-c", str(work / "knot.conf")], stdout=out, stderr=subprocess.STDOUT
            )
        try:
            if _wait_ready(proc, apex, port, log):
                yield ZoneServer("127.0.0.1", port, apex, log)
                return
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    raise RuntimeError(f"knotd did not start on three ports; last log:\n{log.read_text()[-2000:]}")


def _wait_ready(proc: subprocess.Popen, apex: str, port: int, log: Path) -> bool:
    """Until the zone answers SOA authoritatively (True), knotd exits (False: e.g. the port was
    taken), or the deadline passes (RuntimeError with the log)."""
    deadline = time.monotonic() + START_DEADLINE_S
    query = dns.message.make_query(apex, dns.rdatatype.SOA)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            if b"address already in use" in log.read_bytes():
                return False
            raise RuntimeError(f"knotd exited ({proc.returncode}):\n{log.read_text()[-2000:]}")
        try:
            answer = dns.query.udp(query, "127.0.0.1", port=port, timeout=0.5)
        except (dns.exception.Timeout, OSError):
            time.sleep(0.05)  # not listening yet (a refused query may return at once)
            continue
        if answer.rcode() == dns.rcode.NOERROR and answer.answer:
            return True
        time.sleep(0.05)  # listening but the zone is not loaded yet
    raise RuntimeError(f"knotd not ready in {START_DEADLINE_S:g} s:\n{log.read_text()[-2000:]}")


def kdig(*args: str, timeout: float = 30.0) -> str:
    """Run kdig with ``args``; its stdout (need_service if kdig is missing)."""
    exe = shutil.which("kdig")
    if not exe:
        need_service("dns", "kdig not installed (Debian: apt-get install knot-dnsutils)")
    done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout, check=True)
    return done.stdout
