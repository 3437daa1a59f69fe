"""Resolving compute identifiers through DNS (dnspython), verifying our signature and DNSSEC.

The mapping and the record encoding are in :mod:`cpnet.ident.dns`; this module only asks a DNS
server and checks what comes back. See docs/identifiers.md, "Resolving through DNS".
"""

from __future__ import annotations

import socket
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.rrset
import dns.zonefile

with warnings.catch_warnings():  # dnspython loads DSA support, which cryptography deprecates
    warnings.simplefilter("ignore")
    import dns.dnssec

from cpnet.client import BadSetting, CpnetError, NotFound
from cpnet.ident import dns as idns
from cpnet.ident.grammar import parse
from cpnet.ident.records import VerifyResult, verify_envelope

PAYLOAD = idns.UDP_BUDGET  # the EDNS buffer size we advertise: answers are built to fit it
DEFAULT_TIMEOUT_S = 5.0


class DnsError(CpnetError):
    """The DNS server could not be reached, or answered with an error or something unusable."""

    hint = "check --server (HOST:PORT) and --apex, and that the zone is published"


@dataclass(frozen=True, slots=True)
class DnsResolution:
    """What resolve_via_dns found: the envelope, our signature's verdict, and DNSSEC's.

    ``dnssec`` is one of: ``"validated"`` (RRSIG checked here against the trust anchor),
    ``"validated-by-resolver"`` (the server set AD: trust it only as far as you trust the path
    to that resolver), ``"unvalidated"`` (signed, but no anchor given for the signer zone),
    ``"unsigned"`` (no RRSIG), or ``"bogus"`` (a signature that does not validate; see
    ``dnssec_reason``).
    """

    envelope: dict
    verify: VerifyResult
    dnssec: str
    dnssec_reason: str
    name: str
    server: str
    answer_bytes: int
    tcp: bool

    @property
    def ok(self) -> bool:
        """Our signature holds and DNSSEC did not find the answer bogus."""
        return self.verify.ok and self.dnssec != "bogus"


def parse_server(text: str, default_port: int = 53) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT``, ``[V6]:PORT`` or a bare IPv6 address -> (address, port)."""
    value = text.strip()
    host, port = value, default_port
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        if rest:
            port = _port(rest.removeprefix(":"), text)
    elif value.count(":") == 1:
        host, _, rest = value.partition(":")
        port = _port(rest, text)
    if not host:
        raise BadSetting(f"DNS server {text!r} has no host; write HOST or HOST:PORT")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as err:
        raise BadSetting(f"DNS server host {host!r} does not resolve: {err}") from None
    return infos[0][4][0], port


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise BadSetting(f"DNS server {whole!r}: port {text!r} is not 1-65535")
    return int(text)


def load_trust_anchor(path: str | Path) -> list[dns.rrset.RRset]:
    """DNSKEY and/or DS records in zone-file form (e.g. `kdig DNSKEY` or `keymgr ... ds` output)."""
    try:
        text = Path(path).expanduser().read_text()
    except OSError as err:
        raise BadSetting(f"cannot read the trust anchor {path}: {err}") from None
    try:
        rrsets = dns.zonefile.read_rrsets(text, rdclass=None, default_ttl=3600)
    except dns.exception.DNSException as err:
        raise BadSetting(f"trust anchor {path} is not DNSKEY/DS records: {err}") from None
    kept = [r for r in rrsets if r.rdtype in (dns.rdatatype.DNSKEY, dns.rdatatype.DS)]
    if not kept:
        raise BadSetting(f"trust anchor {path} holds no DNSKEY or DS record")
    return kept


def resolve_via_dns(
    id_text: str,
    *,
    apex: str,
    jwks: dict,
    now: datetime,
    server: tuple[str, int] | None = None,
    trust_anchor: Sequence[dns.rrset.RRset] = (),
    timeout: float = DEFAULT_TIMEOUT_S,
) -> DnsResolution:
    """Resolve ``id_text`` through DNS and check it: check character first (before any query),
    then TXT at its DNS name, reassembly, our Ed25519 signature with ``jwks``, that the record's
    id is this identifier, and DNSSEC (against ``trust_anchor``, else the server's AD bit).

    ``server`` defaults to the first resolver in /etc/resolv.conf. Raises IdentifierError for a
    malformed identifier, NotFound when the name has no cpnet record, DnsError on DNS failures.
    """
    cid = parse(id_text)  # a mistyped identifier never reaches the network
    name = idns.dns_name(cid.text, apex)
    addr, port = server if server is not None else _system_resolver()
    where = f"{addr}:{port}"
    response, tcp, size = _ask(dns.name.from_text(name), dns.rdatatype.TXT, addr, port, timeout)
    rcode = response.rcode()
    if rcode == dns.rcode.NXDOMAIN:
        raise NotFound(f"{where} has no DNS name {name} for {cid.text} (NXDOMAIN)")
    if rcode != dns.rcode.NOERROR:
        raise DnsError(f"{where} answered {dns.rcode.to_text(rcode)} for TXT {name}")
    qname = dns.name.from_text(name)
    txt = _answer(response, qname, dns.rdatatype.TXT)
    ours = [rd for rd in (txt or ()) if rd.strings and rd.strings[0] == idns.TXT_MARKER]
    if not ours:
        raise NotFound(f"{where} has no cpnet TXT record at {name} for {cid.text}")
    if len(ours) > 1:
        raise DnsError(f"{where} has {len(ours)} cpnet TXT records at {name}; expected one")
    try:
        envelope = idns.envelope_from_txt(ours[0].strings)
    except ValueError as err:
        raise DnsError(f"the TXT record at {name} is not a cpnet envelope: {err}") from None
    result = verify_envelope(envelope, jwks, now=now)
    record_id = envelope["record"].get("id")
    if result.ok and record_id != cid.text:
        result = VerifyResult(False, f"record id {record_id!r} is not {cid.text!r}")
    status, reason = _dnssec(response, qname, txt, addr, port, trust_anchor, now, timeout)
    return DnsResolution(envelope, result, status, reason, name, where, size, tcp)


def _system_resolver() -> tuple[str, int]:
    try:
        resolver = dns.resolver.Resolver()
    except dns.exception.DNSException as err:
        raise DnsError(f"no DNS server given and none configured: {err}") from None
    if not resolver.nameservers:
        raise DnsError("no DNS server given (--server) and /etc/resolv.conf lists none")
    return str(resolver.nameservers[0]), int(resolver.port)


def _ask(qname, rdtype, addr: str, port: int, timeout: float):
    """One query with DO and AD set over UDP, retried over TCP if truncated; (msg, tcp, bytes)."""
    query = dns.message.make_query(qname, rdtype, want_dnssec=True, payload=PAYLOAD)
    query.flags |= dns.flags.AD  # RFC 6840 §5.7: ask a validating resolver to report AD
    try:
        wire = dns.query.udp(query, addr, port=port, timeout=timeout)
        if not wire.flags & dns.flags.TC:
            return wire, False, len(wire.to_wire())
        wire = dns.query.tcp(query, addr, port=port, timeout=timeout)
        return wire, True, len(wire.to_wire())
    except dns.exception.Timeout:
        raise DnsError(f"no answer from {addr}:{port} within {timeout:g} s") from None
    except (OSError, dns.exception.DNSException) as err:
        raise DnsError(f"DNS query to {addr}:{port} failed: {err}") from None


def _answer(response, qname, rdtype, covers=dns.rdatatype.NONE):
    try:
        return response.find_rrset(response.answer, qname, dns.rdataclass.IN, rdtype, covers)
    except KeyError:
        return None


def _dnssec(response, qname, txt, addr, port, anchors, now: datetime, timeout: float):
    """(status, reason) for the TXT RRset: see DnsResolution.dnssec."""
    sigs = _answer(response, qname, dns.rdatatype.RRSIG, dns.rdatatype.TXT)
    if not sigs:
        if response.flags & dns.flags.AD:
            return "validated-by-resolver", f"AD set by {addr}:{port}"
        return "unsigned", "the answer carries no RRSIG"
    signer = sigs[0].signer
    zone_anchors = [a for a in anchors if a.name == signer]
    if not zone_anchors:
        if response.flags & dns.flags.AD:
            return "validated-by-resolver", f"AD set by {addr}:{port}"
        return "unvalidated", f"signed by {signer}, but no trust anchor for it was given"
    keys, _, _ = _ask(signer, dns.rdatatype.DNSKEY, addr, port, timeout)
    dnskey = _answer(keys, signer, dns.rdatatype.DNSKEY)
    key_sigs = _answer(keys, signer, dns.rdatatype.RRSIG, dns.rdatatype.DNSKEY)
    if not dnskey or not key_sigs:
        return "bogus", f"{addr}:{port} gave no signed DNSKEY RRset for {signer}"
    when = now.timestamp()
    try:
        trusted = _trusted_keys(dnskey, zone_anchors)
        dns.dnssec.validate(dnskey, key_sigs, {signer: trusted}, now=when)
        dns.dnssec.validate(txt, sigs, {signer: dnskey}, now=when)
    except dns.dnssec.ValidationFailure as err:
        return "bogus", f"{err} (signer {signer})"
    return "validated", f"RRSIG by {signer} checked against the given trust anchor"


def _trusted_keys(dnskey: dns.rrset.RRset, anchors: Sequence[dns.rrset.RRset]) -> dns.rrset.RRset:
    """The DNSKEYs the anchors vouch for (DNSKEY anchors directly, DS anchors by digest)."""

    trusted = dns.rrset.RRset(dnskey.name, dns.rdataclass.IN, dns.rdatatype.DNSKEY)
    for anchor in anchors:
        for rd in anchor:
            if anchor.rdtype == dns.rdatatype.DNSKEY and rd in dnskey:
                trusted.add(rd)
            elif anchor.rdtype == dns.rdatatype.DS:
                for key in dnskey:
                    if dns.dnssec.make_ds(dnskey.name, key, rd.digest_type) == rd:
                        trusted.add(key)
    if not trusted:
        raise dns.dnssec.ValidationFailure("no DNSKEY matches the trust anchor")
    return trusted
