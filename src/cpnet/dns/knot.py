"""The shell around Knot DNS (Debian ``knot`` 3.2): its configuration, the ``knotd`` child
process, the zone key in its KASP database (``keymgr``), and batched zone transactions.

Everything Knot keeps lives under the hub's ``DATA_DIR/dns/``: ``knot.conf``, the zone file
(written at each start: the zone is derived from the registry, so nothing in it needs keeping),
``kasp/`` (the key, imported from ``zone-ed25519.pem``), ``knot.sock`` (control), ``knotd.log``.
Changes go through one zone transaction per batch (``zone-begin``, ``zone-set``/``zone-unset``
…, ``zone-commit``) on the control socket (dns/control.py), never a reload; Knot signs what
changed (``dnssec-signing: on``) with the imported Ed25519 key and re-signs everything before
its signatures expire (``rrsig-refresh``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cpnet.dns import zonediff, zonekey
from cpnet.dns.control import Control, ControlError, describe

PACKAGES = {"knotd": "knot", "keymgr": "knot"}
SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")  # knotd and keymgr live here on Debian
CONTROL_TIMEOUT_S = 60  # the wait for an answer: a big commit signs everything it changed


class KnotError(RuntimeError):
    """Knot refused or failed something; the message says what and where to look."""


class ToolMissing(KnotError):
    """A Knot program is not installed; the message names the Debian package."""


@dataclass(frozen=True, slots=True)
class Tools:
    knotd: str
    keymgr: str


def find_tools(knotd: str | None = None) -> Tools:
    """The Knot programs: ``knotd`` at the given path (else on PATH or in /usr/sbin), and
    ``keymgr`` beside it (else on PATH or in /usr/sbin). Raises ToolMissing naming the package."""
    found: dict[str, str] = {}
    beside = [str(Path(knotd).parent)] if knotd else []
    for name in ("knotd", "keymgr"):
        if name == "knotd" and knotd:
            path = knotd if os.access(knotd, os.X_OK) and Path(knotd).is_file() else None
        else:
            search = os.pathsep.join([*beside, os.environ.get("PATH", ""), *SBIN])
            path = shutil.which(name, path=search)
        if path is None:
            where = f" at {knotd}" if name == "knotd" and knotd else ""
            raise ToolMissing(
                f"{name} not found{where}: install Knot DNS with "
                f"`apt-get install {PACKAGES[name]}` (Debian), or give its path (--dns-knotd, "
                "CPNET_DNS_KNOTD)"
            )
        found[name] = path
    return Tools(**found)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """What the Knot server serves, where it listens, and where it keeps its files."""

    apex: str  # absolute, lower case, trailing dot
    host: str
    port: int
    dns_dir: Path  # DATA_DIR/dns
    rrsig_lifetime_s: int = 14 * 86400  # how long each DNSSEC signature is valid
    rrsig_refresh_s: int = 7 * 86400  # re-sign this long before a signature expires
    max_ttl: int = 300  # the zone's longest TTL (SOA minimum, DNSKEY, NS)

    @property
    def socket(self) -> Path:
        return self.dns_dir / "knot.sock"

    @property
    def conf(self) -> Path:
        return self.dns_dir / "knot.conf"

    @property
    def zone_file(self) -> Path:
        return self.dns_dir / "zone" / f"{self.apex}zone"

    @property
    def log(self) -> Path:
        return self.dns_dir / "knotd.log"

    @property
    def kasp(self) -> Path:
        return self.dns_dir / "kasp"

    @property
    def ns_name(self) -> str:
        return f"ns.{self.apex}"


def config_text(cfg: ServerConfig) -> str:
    """knot.conf for one signed primary zone at ``cfg.apex`` (pure)."""
    d = cfg.dns_dir.resolve()
    return f"""# Written by cpnet at each start of the DNS gateway (cpnet.dns.knot); edits are lost.
server:
    rundir: "{d}"
    pidfile: "{d}/knotd.pid"
    listen: {cfg.host}@{cfg.port}
    identity: ""
    version: ""
control:
    listen: "{cfg.socket.resolve()}"
    timeout: {CONTROL_TIMEOUT_S}
log:
  - target: stderr
    any: info
database:
    storage: "{d}/db"
    kasp-db: "{cfg.kasp.resolve()}"
policy:
  - id: cpnet
    algorithm: ed25519
    # cpnet made the key (`cpnet hub init`) and imported it: Knot signs with it, never rolls it.
    manual: on
    single-type-signing: on
    dnskey-ttl: {cfg.max_ttl}
    zone-max-ttl: {cfg.max_ttl}
    rrsig-lifetime: {cfg.rrsig_lifetime_s}
    rrsig-refresh: {cfg.rrsig_refresh_s}
    nsec3: off
template:
  - id: default
    storage: "{cfg.zone_file.parent.resolve()}"
zone:
  - domain: {cfg.apex}
    file: "{cfg.zone_file.name}"
    dnssec-signing: on
    dnssec-policy: cpnet
    # The registry is the truth: the zone file holds only the apex records, everything else
    # arrives by transaction and lives in memory; a restart publishes it again.
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
    serial-policy: unixtime
    semantic-checks: off
"""


def zone_file_text(cfg: ServerConfig, serial: int) -> str:
    """The zone file written at each start: SOA, NS and (for a specific listen address) the
    name server's address record (pure)."""
    lines = [
        f"$ORIGIN {cfg.apex}",
        f"$TTL {cfg.max_ttl}",
        f"@ SOA {cfg.ns_name} hostmaster.{cfg.apex} {serial} 3600 600 604800 {cfg.max_ttl}",
        f"@ NS {cfg.ns_name}",
    ]
    with contextlib.suppress(ValueError):
        ip = ipaddress.ip_address(cfg.host)
        if not ip.is_unspecified:
            lines.append(f"{cfg.ns_name} {'A' if ip.version == 4 else 'AAAA'} {ip}")
    return "\n".join(lines) + "\n"


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return ""


def _parent(pid: int) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[1])
    return None


def stale_knotd(cfg: ServerConfig, *, orphans_only: bool) -> int | None:
    """The pid of a knotd still serving this hub's zone from a run that is over: the one its
    pid file names, if that process is a knotd started with this very configuration. With
    ``orphans_only``, only one whose parent is no longer a cpnet hub (its hub was killed
    with no chance to stop it: SIGKILL, the OOM killer)."""
    with contextlib.suppress(OSError, ValueError):
        pid = int((cfg.dns_dir / "knotd.pid").read_text().strip())
        cmd = _cmdline(pid)
        if pid <= 1 or "knotd" not in cmd or f"-c {cfg.conf}" not in cmd:
            return None
        if orphans_only:
            parent = _parent(pid)
            if parent is not None and parent > 1 and "cpnet" in _cmdline(parent):
                return None  # a live hub's own server
        return pid
    return None


def stop_stale(cfg: ServerConfig, *, orphans_only: bool, grace: float = 10.0) -> int | None:
    """Stop ``stale_knotd`` (SIGTERM, then SIGKILL after ``grace`` s) and wait until it is
    gone, so that its port and control socket are free; its pid, or None if there was none.
    A stale knotd would otherwise hold the DNS port and keep answering the zone as it was."""
    pid = stale_knotd(cfg, orphans_only=orphans_only)
    if pid is None:
        return None
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    try:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            if select.select([fd], [], [], grace)[0]:  # readable once the process has ended
                return pid
        raise KnotError(f"a stale knotd (pid {pid}) did not stop: stop it, then restart the hub")
    finally:
        os.close(fd)


class KnotServer:
    """One knotd child process serving the zone at ``cfg.apex``."""

    def __init__(self, cfg: ServerConfig, tools: Tools) -> None:
        self.cfg, self.tools = cfg, tools
        self.proc: subprocess.Popen | None = None
        self.transactions = 0  # zone transactions committed since start
        self.changes = 0  # records set and RRsets unset by them

    # ---- set-up ----

    def prepare(self, pem: bytes) -> zonekey.Anchor:
        """Write the configuration and a fresh zone file, import the zone key into the KASP
        database unless it holds exactly that key, and write the trust anchor files."""
        cfg = self.cfg
        # This hub leads now: a knotd of an earlier leader on this data dir that was killed
        # without stopping its server (SIGKILL) still holds the port, serving an old zone.
        if stop_stale(cfg, orphans_only=False) is not None:
            with contextlib.suppress(OSError):
                cfg.socket.unlink()
        for sub in (cfg.dns_dir, cfg.zone_file.parent, cfg.dns_dir / "db"):
            sub.mkdir(parents=True, exist_ok=True)
        if len(str(cfg.socket.resolve())) > 100:
            raise KnotError(f"control socket path too long for a unix socket: {cfg.socket}")
        cfg.conf.write_text(config_text(cfg))
        # No journal: what a previous run published is dropped with the zone file it started.
        shutil.rmtree(cfg.dns_dir / "db", ignore_errors=True)
        (cfg.dns_dir / "db").mkdir()
        cfg.zone_file.write_text(zone_file_text(cfg, int(time.time())))
        anchor = zonekey.anchor(cfg.apex, pem)
        if anchor.ds.split()[-1].lower() not in self._keymgr("ds", check=False).lower():
            shutil.rmtree(cfg.kasp, ignore_errors=True)  # another key (or none): start over
            pem_file = cfg.dns_dir / zonekey.KEY_FILE
            if not pem_file.exists() or pem_file.read_bytes() != pem:
                raise KnotError(f"the zone key to import must be {pem_file}")
            self._keymgr("import-pem", str(pem_file), "algorithm=ed25519", "ksk=yes", "zsk=yes")
            ds = self._keymgr("ds")
            if anchor.ds.split()[-1].lower() not in ds.lower():
                raise KnotError(f"keymgr's DS for the imported key ({ds.strip()}) is not ours")
        write_anchor_files(cfg.dns_dir, anchor)
        return anchor

    def _keymgr(self, *args: str, check: bool = True) -> str:
        cmd = [self.tools.keymgr, "-c", str(self.cfg.conf), self.cfg.apex, *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if check and proc.returncode != 0:
            raise KnotError(f"{' '.join(cmd)} failed: {(proc.stderr or proc.stdout).strip()}")
        return proc.stdout

    # ---- the process ----

    def start(self, timeout: float = 30.0) -> None:
        """Start knotd and wait until the zone is loaded and signed (KnotError otherwise)."""
        cfg = self.cfg
        with cfg.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.tools.knotd, "-c", str(cfg.conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # In the hub's process group: whatever stops the hub's group (a test's killpg, a
                # terminal's Ctrl-C) stops knotd too, even when the hub cannot stop it itself.
            )
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise KnotError(f"knotd exited with {self.proc.returncode}: {self._log_tail()}")
            if cfg.socket.exists():
                try:
                    with Control(cfg.socket, timeout=5) as ctl:
                        status = {
                            u.get("type"): u.get("data")
                            for u in ctl.call("zone-status", zone=cfg.apex)
                        }
                except ControlError as exc:
                    status, last = {}, str(exc)
                else:
                    last = repr(status)
                # loaded (a serial) and signed (the next re-sign is scheduled)
                if status.get("serial", "-") != "-" and status.get("re-sign", "-") != "-":
                    return
            time.sleep(0.05)
        self.stop()
        raise KnotError(
            f"knotd did not serve {cfg.apex} within {timeout} s (last status: {last})"
            f": {self._log_tail()}"
        )

    def stop(self, grace: float = 10.0) -> None:
        """Stop knotd (SIGTERM, then SIGKILL after ``grace`` seconds)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=grace)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return " | ".join(self.cfg.log.read_text(errors="replace").splitlines()[-6:])
        return "(no log)"

    # ---- changes ----

    def apply(self, changes: Sequence[zonediff.Change]) -> None:
        """Apply ``changes`` as one zone transaction; on any refusal abort it (the zone stays
        as it was) and raise KnotError quoting Knot's answers."""
        if not changes:
            return
        zone = self.cfg.apex
        try:
            with Control(self.cfg.socket, timeout=CONTROL_TIMEOUT_S) as ctl:
                ctl.call("zone-begin", zone=zone)
                try:
                    errors = ctl.call_many(zonediff.commands(zone, changes))
                    if errors:
                        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
                        raise KnotError(
                            "zone transaction refused, aborted: "
                            + "; ".join(describe(u) for u in errors[:3])
                            + more
                        )
                    ctl.call("zone-commit", zone=zone)
                except BaseException:
                    with contextlib.suppress(ControlError, OSError):
                        ctl.call("zone-abort", zone=zone)
                    raise
        except ControlError as exc:
            raise KnotError(f"zone transaction on {zone} failed: {exc}") from exc
        self.transactions += 1
        self.changes += len(changes)


def write_anchor_files(dns_dir: Path, anchor: zonekey.Anchor) -> None:
    """The trust anchor where operators find it: ``trust-anchor.ds`` (for the parent zone),
    ``trust-anchor.dnskey`` (for a validator) and ``trust-anchor.conf`` (``delv -a``)."""
    (dns_dir / "trust-anchor.ds").write_text(anchor.ds + "\n")
    (dns_dir / "trust-anchor.dnskey").write_text(anchor.dnskey + "\n")
    (dns_dir / "trust-anchor.conf").write_text(anchor.bind_anchor)
