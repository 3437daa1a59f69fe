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


PROPAGATION_S = 5  # added to the DNSKEY TTL in each wait of a ZSK rollover (NOTIFY, caches)


@dataclass(frozen=True, slots=True)
class ZoneKey:
    """One line of ``keymgr ZONE list``: ``ID TAG KSK|ZSK ALGORITHM timer=unix …``."""

    id: str
    tag: int
    ksk: bool
    zsk: bool
    publish: int | None = None
    active: int | None = None
    retire: int | None = None
    remove: int | None = None

    @classmethod
    def parse(cls, line: str) -> ZoneKey | None:
        parts = line.split()
        if len(parts) < 3 or not parts[1].isdigit():
            return None
        timers = dict(p.split("=", 1) for p in parts[3:] if "=" in p)

        def at(name: str) -> int | None:
            value = timers.get(name)
            return int(value) if value and value.isdigit() and int(value) > 0 else None

        kind = parts[2].upper()
        return cls(
            id=parts[0],
            tag=int(parts[1]),
            ksk=kind in ("KSK", "CSK"),
            zsk=kind in ("ZSK", "CSK"),
            publish=at("publish"),
            active=at("active"),
            retire=at("retire"),
            remove=at("remove"),
        )

    def describe(self) -> str:
        kind = "CSK" if self.ksk and self.zsk else "KSK" if self.ksk else "ZSK"
        timers = ("publish", "active", "retire", "remove")
        shown = " ".join(f"{n}={getattr(self, n)}" for n in timers if getattr(self, n))
        return f"{kind} {self.tag} {shown}".strip()


@dataclass(frozen=True, slots=True)
class ZskRoll:
    """A ZSK rollover begun: the new key (published now), the old ones, and when the new key
    takes over signing and the old ones leave the zone (seconds since the epoch)."""

    new: ZoneKey
    old: tuple[ZoneKey, ...]
    switch_at: int
    removed_at: int


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
    # Keys are managed by cpnet, not by Knot's timers of its own: the KSK is the key `cpnet hub
    # init` made (the trust anchor, never rolled by Knot); the ZSK that signs the records is
    # made by keymgr and rolled by `cpnet dns roll-zsk` (KnotServer.roll_zsk), which sets the
    # keys' timers; Knot follows them.
    manual: on
    single-type-signing: off
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
        keys = self.keys() if cfg.kasp.exists() else []
        ours = [k for k in keys if k.tag == anchor.key_tag and k.ksk]
        if (
            anchor.ds.split()[-1].lower() not in self._keymgr("ds", check=False).lower()
            or len(ours) != 1
            or ours[0].zsk  # imported as a CSK (before ZSKs were rolled): import it again
        ):
            shutil.rmtree(cfg.kasp, ignore_errors=True)  # another key (or none): start over
            pem_file = cfg.dns_dir / zonekey.KEY_FILE
            if not pem_file.exists() or pem_file.read_bytes() != pem:
                raise KnotError(f"the zone key to import must be {pem_file}")
            self._keymgr("import-pem", str(pem_file), "algorithm=ed25519", "ksk=yes", "zsk=no")
            ds = self._keymgr("ds")
            if anchor.ds.split()[-1].lower() not in ds.lower():
                raise KnotError(f"keymgr's DS for the imported key ({ds.strip()}) is not ours")
            keys = self.keys()
        if not any(k.zsk and not k.ksk and k.remove is None for k in keys):
            # The key that signs the records, published and active at once (a fresh zone).
            self._keymgr("generate", "algorithm=ed25519", "ksk=no", "zsk=yes")
        write_anchor_files(cfg.dns_dir, anchor)
        return anchor

    def keys(self) -> list[ZoneKey]:
        """The zone's keys in Knot's KASP database, as ``keymgr list`` shows them."""
        return [k for k in map(ZoneKey.parse, self._keymgr("list").splitlines()) if k]

    def roll_zsk(self, now: float | None = None) -> ZskRoll:
        """Start a pre-publication rollover of the zone-signing key (RFC 7583 §3.2), by timers
        Knot follows: the new ZSK is published now and signs from ``now + wait``, when the old
        one stops signing; the old one leaves the DNSKEY RRset ``wait`` later. ``wait`` is the
        DNSKEY TTL (and the zone's longest TTL) plus PROPAGATION_S: by the switch every cache
        holds a DNSKEY RRset with the new key, and by the removal no cache holds a signature
        made by the old one. One key signs at any moment: answers keep one RRSIG (1,232 bytes).
        Works on a running server (keymgr, then ``zone-keys-load``) or a stopped one (its next
        start loads the keys). Refused while a rollover is under way."""
        now = time.time() if now is None else now
        wait = self.cfg.max_ttl + PROPAGATION_S
        zsks = [
            k
            for k in self.keys()
            if k.zsk and not k.ksk and (k.remove is None or k.remove > now)  # not yet removed
        ]
        if any(k.retire is not None or k.active is None or k.active > now for k in zsks):
            raise KnotError(
                "a ZSK rollover is already under way: wait until its old key is removed "
                f"({', '.join(k.describe() for k in zsks)})"
            )
        switch, gone = int(now) + wait, int(now) + 2 * wait
        new_id = self._keymgr(
            "generate",
            "algorithm=ed25519",
            "ksk=no",
            "zsk=yes",
            f"publish={int(now)}",
            f"active={switch}",
        ).strip()
        for k in zsks:
            self._keymgr("set", k.id, f"retire={switch}", f"remove={gone}")
        if self.cfg.socket.exists():
            with contextlib.suppress(ControlError, OSError), Control(self.cfg.socket) as ctl:
                ctl.call("zone-keys-load", zone=self.cfg.apex)
        new = next(k for k in self.keys() if k.id == new_id)
        return ZskRoll(new=new, old=tuple(zsks), switch_at=switch, removed_at=gone)

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
