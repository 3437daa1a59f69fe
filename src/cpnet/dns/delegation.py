"""Delegation of an identifier prefix to another DNS server: what the parent zone publishes.

A hub whose zone holds the names of its authority (``cn`` -> ``cn.<apex>``) can hand a prefix
below it (``cn.gd``) to another hub with its own server: the parent publishes, at the child's
zone cut ``gd.cn.<apex>``, the child's name servers (NS), their addresses where they live inside
the child's zone (glue A/AAAA: without them nobody could find the child's server), and the
child's DS (the digest of the child's zone key: the link of the DNSSEC chain). Knot signs the DS
and leaves NS and glue unsigned, as RFC 4035 wants; the parent stops publishing its own records
at or under the cut (they would be occluded, served by nobody).

Pure: parsing and checking an operator's declaration (``cpnet dns delegate``), the records a
delegation produces, which names fall under a cut, and the TOML file that holds the
declarations (``DATA_DIR/dns/delegations.toml``; reading and writing it is the caller's job).
Errors are :class:`cpnet.errors.Invalid` naming the field. docs/identifiers.md, "Delegation".
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import tomli_w

from cpnet.errors import Invalid
from cpnet.ident import dns as idns

FILE = "delegations.toml"  # under DATA_DIR/dns/
DS_ALGORITHMS = {15: "ED25519"}  # what cpnet's zones sign with (dns/zonekey.py)
DS_DIGESTS = {2: 64, 4: 96}  # digest type -> hex digits (SHA-256, SHA-384)
_NAME_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_HEX = re.compile(r"[0-9a-fA-F]+")


@dataclass(frozen=True, slots=True)
class NameServer:
    """One of the child's name servers: its name, and its addresses when the parent must publish
    them as glue (a name inside the child's zone)."""

    name: str  # absolute, lower case, trailing dot
    addresses: tuple[str, ...] = ()  # IPv4/IPv6, canonical text


@dataclass(frozen=True, slots=True)
class Delegation:
    """A prefix served elsewhere: the child's name servers and DS records."""

    prefix: str  # identifier path, lower case: "cn.gd"
    ns: tuple[NameServer, ...]
    ds: tuple[str, ...]  # DS RDATA, presentation form: "KEYTAG 15 2 HEX" (hex upper case)


# ---- names ----


def is_at_or_under(name: str, ancestor: str) -> bool:
    """Whether absolute ``name`` is ``ancestor`` or below it (label-wise, case-insensitive)."""
    n, a = name.lower(), ancestor.lower()
    return n == a or n.endswith("." + a)


def covering_cut(owner: str, cuts: Iterable[str]) -> str | None:
    """The zone cut ``owner`` is at or under (the highest, if cuts nest), or None."""
    found = [c for c in cuts if is_at_or_under(owner, c)]
    return min(found, key=len) if found else None


def cut_name(prefix: str, apex: str) -> str:
    """The DNS name of a delegated prefix: its zone cut (``cn.gd`` -> ``gd.cn.<apex>``)."""
    return idns.path_name(prefix, apex)


def normalise_name(text: str, what: str = "name") -> str:
    """An absolute host name, lower case with the trailing dot; Invalid naming ``what``."""
    name = text.strip().lower().removesuffix(".")
    labels = name.split(".")
    if not name or len(name) > idns.MAX_NAME or len(labels) < 2:
        raise Invalid(
            f"{what} {text!r} must be a full host name with at least two labels, e.g. "
            "ns1.gd.cn.id.example.org",
            field=what,
        )
    for label in labels:
        if not label.isascii() or _NAME_LABEL.fullmatch(label) is None:
            raise Invalid(
                f"{what} {text!r}: label {label!r} is not 1-63 letters, digits, '-' or '_'",
                field=what,
            )
    return name + "."


def served_zone(apex: str, zone: str, authority: str | None = None) -> str:
    """The zone a hub serves: ``zone`` (default the apex), which must be the apex or the name of
    an identifier prefix below it, and hold the names of the hub's ``authority`` (ValueError
    naming the setting otherwise)."""
    names = idns.normalise_apex(apex)
    if not zone.strip():
        served = names
    else:
        try:
            served = idns.normalise_apex(zone)
        except ValueError as exc:
            raise ValueError(f"CPNET_DNS_ZONE (--dns-zone): {exc}") from None
        if served != names:
            try:
                idns.id_path(served, names)
            except ValueError:
                raise ValueError(
                    f"CPNET_DNS_ZONE (--dns-zone) {served} must be the apex {names} or the name "
                    f"of an identifier prefix under it, e.g. gd.cn.{names}"
                ) from None
    if authority:
        own = cut_name(authority, names)
        if not is_at_or_under(own, served):
            raise ValueError(
                f"this hub's authority {authority} ({own}) is not inside its DNS zone {served}: "
                f"serve {own} (--dns-zone {own.rstrip('.')}) or a zone above it"
            )
    return served


# ---- parsing an operator's declaration ----


def parse_prefix(prefix: str, *, authority: str, apex: str, zone: str) -> str:
    """A prefix this hub may delegate: strictly under its authority and its zone."""
    text = prefix.strip().lower()
    labels = text.split(".")
    if not text or any(not x or not x.isascii() or not x.isalnum() for x in labels):
        raise Invalid(
            f"prefix {prefix!r} is not an identifier prefix (letters and digits, dot-separated, "
            "e.g. cn.gd)",
            field="prefix",
        )
    auth = authority.strip().lower()
    if not text.startswith(auth + "."):
        raise Invalid(
            f"prefix {text!r} is not under this hub's authority {auth!r}: a hub can delegate "
            f"only prefixes below its own, such as {auth}.<label>",
            field="prefix",
        )
    try:
        name = cut_name(text, apex)
    except ValueError as exc:
        raise Invalid(f"prefix {text!r}: {exc}", field="prefix") from None
    if name == zone or not is_at_or_under(name, zone):
        raise Invalid(
            f"prefix {text!r} ({name}) is not below this hub's zone {zone}", field="prefix"
        )
    return text


def parse_ns(text: str, cut: str) -> NameServer:
    """``NAME=ADDR[,ADDR…]`` or ``NAME``: a child name server. Addresses (glue) are required for
    a name inside the child's zone and refused for one outside it (the parent would publish
    them as its own data, or as data about a zone it does not serve)."""
    raw_name, sep, raw_addrs = text.partition("=")
    name = normalise_name(raw_name, "ns")
    addrs: list[str] = []
    for part in (p.strip() for p in raw_addrs.split(",")) if sep else ():
        try:
            addrs.append(str(ipaddress.ip_address(part)))
        except ValueError:
            raise Invalid(
                f"ns {text!r}: {part!r} is not an IPv4 or IPv6 address", field="ns"
            ) from None
    inside = is_at_or_under(name, cut)
    if inside and not addrs:
        raise Invalid(
            f"ns {name} is inside the delegated zone {cut}: give its address for the glue "
            f"record, as --ns {name.rstrip('.')}=ADDR",
            field="ns",
        )
    if not inside and addrs:
        raise Invalid(
            f"ns {name} is outside the delegated zone {cut}: glue is published only for names "
            f"inside it; give the name alone (--ns {name.rstrip('.')}) and publish its address "
            "where that name lives",
            field="ns",
        )
    return NameServer(name, tuple(sorted(set(addrs), key=_addr_key)))


def _addr_key(addr: str) -> tuple[int, int]:
    ip = ipaddress.ip_address(addr)
    return ip.version, int(ip)


def parse_ds(text: str, cut: str) -> str:
    """A DS record for the child: its RDATA (``KEYTAG ALG DIGESTTYPE HEX``) or the whole line
    ``cpnet dns anchor`` prints (``NAME [TTL] IN DS …``; the name must be the cut). Algorithm 15
    (Ed25519) only, digest type 2 (SHA-256) or 4 (SHA-384). Returns the RDATA, hex upper case."""
    words = text.split()
    if "DS" in (w.upper() for w in words):
        at = [w.upper() for w in words].index("DS")
        owner, words = words[0] if at else "", words[at + 1 :]
        if owner and normalise_name(owner, "ds") != cut:
            raise Invalid(f"ds is for {owner}, not for the delegated zone {cut}", field="ds")
    if len(words) < 4:
        raise Invalid(
            f"ds {text!r} must be KEYTAG ALGORITHM DIGESTTYPE DIGEST (from the child's "
            "`cpnet dns anchor`), e.g. '2371 15 2 3F5A…'",
            field="ds",
        )
    tag, alg, dtype, digest = words[0], words[1], words[2], "".join(words[3:])
    if not tag.isdigit() or not 0 <= int(tag) <= 65535:
        raise Invalid(f"ds key tag {tag!r} is not 0-65535", field="ds")
    if not alg.isdigit() or int(alg) not in DS_ALGORITHMS:
        raise Invalid(
            f"ds algorithm {alg!r} is not 15 (Ed25519): cpnet's zones are signed with Ed25519",
            field="ds",
        )
    if not dtype.isdigit() or int(dtype) not in DS_DIGESTS:
        raise Invalid(f"ds digest type {dtype!r} is not 2 (SHA-256) or 4 (SHA-384)", field="ds")
    want = DS_DIGESTS[int(dtype)]
    if _HEX.fullmatch(digest) is None or len(digest) != want:
        raise Invalid(
            f"ds digest must be {want} hex digits for digest type {dtype}, got {len(digest)} "
            "characters",
            field="ds",
        )
    return f"{int(tag)} {int(alg)} {int(dtype)} {digest.upper()}"


def declare(
    prefix: str,
    ns: Sequence[str],
    ds: Sequence[str],
    *,
    authority: str,
    apex: str,
    zone: str,
) -> Delegation:
    """Check an operator's declaration (``cpnet dns delegate``) and return it."""
    apex, zone = idns.normalise_apex(apex), idns.normalise_apex(zone)
    path = parse_prefix(prefix, authority=authority, apex=apex, zone=zone)
    cut = cut_name(path, apex)
    if not ns:
        raise Invalid(
            f"a delegation needs at least one name server: --ns ns1.{cut.rstrip('.')}=ADDR",
            field="ns",
        )
    if not ds:
        raise Invalid(
            "a delegation needs the child's DS (from `cpnet dns anchor` on the child's hub): "
            "--ds 'KEYTAG 15 2 DIGEST'; without it the child's zone would not validate",
            field="ds",
        )
    servers: dict[str, NameServer] = {}
    for text in ns:
        server = parse_ns(text, cut)
        old = servers.get(server.name)
        addrs = set(server.addresses) | set(old.addresses if old else ())
        servers[server.name] = NameServer(server.name, tuple(sorted(addrs, key=_addr_key)))
    return Delegation(
        path,
        tuple(servers[n] for n in sorted(servers)),
        tuple(sorted({parse_ds(d, cut) for d in ds})),
    )


def check_nesting(delegations: Iterable[Delegation]) -> None:
    """Invalid if one delegated prefix is under another: the inner one is the child's to
    delegate, from its own zone."""
    prefixes = sorted(d.prefix for d in delegations)
    for a in prefixes:
        for b in prefixes:
            if b.startswith(a + "."):
                raise Invalid(
                    f"prefix {b!r} is under {a!r}, which is delegated already: the hub serving "
                    f"{a!r} delegates {b!r} from its own zone",
                    field="prefix",
                )


# ---- what the parent publishes ----


def records(delegations: Iterable[Delegation], apex: str, ttl: int) -> list[idns.RR]:
    """The parent's records for its delegations: NS and DS at each cut, glue A/AAAA for each
    name server inside its cut."""
    out: list[idns.RR] = []
    for d in delegations:
        cut = cut_name(d.prefix, apex)
        for server in d.ns:
            out.append(idns.RR(cut, ttl, "NS", server.name))
            for addr in server.addresses:
                rtype = "A" if ipaddress.ip_address(addr).version == 4 else "AAAA"
                out.append(idns.RR(server.name, ttl, rtype, addr))
        out.extend(idns.RR(cut, ttl, "DS", ds) for ds in d.ds)
    return out


def cuts(delegations: Iterable[Delegation], apex: str) -> frozenset[str]:
    """The zone cuts' names."""
    return frozenset(cut_name(d.prefix, apex) for d in delegations)


# ---- the file ----


def to_toml(delegations: Iterable[Delegation]) -> str:
    """The declarations as ``delegations.toml`` text, sorted by prefix."""
    body = {
        "delegation": [
            {
                "prefix": d.prefix,
                "ds": list(d.ds),
                "ns": [
                    {"name": s.name, **({"addresses": list(s.addresses)} if s.addresses else {})}
                    for s in d.ns
                ],
            }
            for d in sorted(delegations, key=lambda d: d.prefix)
        ]
    }
    header = (
        "# Prefixes this hub's DNS zone delegates to other servers (NS + DS at each cut).\n"
        "# Written by `cpnet dns delegate`; read by `cpnet hub --dns` at start and while it\n"
        '# runs. docs/identifiers.md, "Delegation".\n'
    )
    return header + tomli_w.dumps(body).rstrip("\n") + "\n"


def from_toml(text: str, *, authority: str, apex: str, zone: str) -> list[Delegation]:
    """Read and check ``delegations.toml`` (as ``declare`` checks a declaration); Invalid naming
    the entry and field when something is wrong."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise Invalid(f"{FILE} is not valid TOML: {exc}", field="file") from None
    entries = data.get("delegation", [])
    if not isinstance(entries, list):
        raise Invalid(f"{FILE}: 'delegation' must be an array of tables", field="delegation")
    out: list[Delegation] = []
    for i, entry in enumerate(entries):
        where = f"{FILE}, delegation {i + 1}"
        if not isinstance(entry, dict):
            raise Invalid(f"{where} is not a table", field="delegation")
        try:
            ns = [_ns_text(s) for s in entry.get("ns", [])]
            ds = entry.get("ds", [])
            if not isinstance(ds, list) or not all(isinstance(x, str) for x in ds):
                raise Invalid("ds must be a list of strings", field="ds")
            out.append(
                declare(
                    str(entry.get("prefix", "")),
                    ns,
                    ds,
                    authority=authority,
                    apex=apex,
                    zone=zone,
                )
            )
        except Invalid as exc:
            raise Invalid(f"{where}: {exc.message}", field=exc.field) from None
    check_nesting(out)
    seen = [d.prefix for d in out]
    if len(seen) != len(set(seen)):
        raise Invalid(f"{FILE} declares a prefix twice", field="prefix")
    return out


def _ns_text(entry: object) -> str:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise Invalid("each ns must be a table with a 'name'", field="ns")
    addrs = entry.get("addresses", [])
    if not isinstance(addrs, list) or not all(isinstance(a, str) for a in addrs):
        raise Invalid("ns addresses must be a list of strings", field="ns")
    return entry["name"] + ("=" + ",".join(addrs) if addrs else "")


def replace_one(existing: Iterable[Delegation], new: Delegation) -> list[Delegation]:
    """The declarations with ``new`` added, or replacing the one for the same prefix."""
    out = [d for d in existing if d.prefix != new.prefix] + [new]
    check_nesting(out)
    return sorted(out, key=lambda d: d.prefix)
