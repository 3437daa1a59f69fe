"""Compute identifiers in DNS: the name mapping, the records to publish, and their size budget.

Pure: no I/O and no clock (``now`` is passed in). The hub side (``cpnet.dns``) feeds what
:func:`records_for` returns to an authoritative server; the client side
(``cpnet.ident.dns_client``) queries and reassembles with :func:`envelope_from_txt`. See
docs/identifiers.md, "Resolving through DNS", for the reasoning behind each choice.

Per identifier ``cn.dev.acme.sz1.gpu1.i0`` under apex ``id.example.org.``:

- ``gpu1.sz1.acme.dev.cn.id.example.org. TXT "cpnet=1" "<JSON>" ...`` — the signed envelope
  (hub Ed25519 signature kept), one TXT RR whose strings after the marker concatenate to the
  RFC 8785 canonical JSON of the envelope;
- ``_cpnet._tcp.gpu1.sz1.acme.dev.cn.id.example.org. URI 10 1 "https://..."`` — the endpoint
  (sites and pools with one);
- ``_cpnet._tcp.sz1.acme.dev.cn.id.example.org. PTR gpu1.sz1.acme.dev.cn.id.example.org.`` — one
  RR per pool, emitted with the *pool's* envelope: the site's browse RRset is the union of its
  pools' PTRs, so a publisher adds and removes individual RRs (owner, type and rdata), never
  whole RRsets by owner and type alone.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cpnet.ident.grammar import parse
from cpnet.ident.records import canonical_json, parse_rfc3339

TXT_MARKER = b"cpnet=1"  # first character-string of the envelope TXT RR: format and version
SERVICE = "_cpnet._tcp"  # DNS-SD-style service label pair for endpoints and site browsing
UDP_BUDGET = 1232  # bytes: the DNS Flag Day 2020 EDNS buffer size, no IP fragmentation
URI_PRIORITY, URI_WEIGHT = 10, 1

# What the 1,232-byte budget assumes beyond the RRs themselves (bytes, wire format).
HEADER = 12
RR_FIXED = 10  # type, class, TTL, RDLENGTH
OWNER_POINTER = 2  # an answer owner equal to the question name is always a compression pointer
RRSIG_FIXED = 18  # type covered, algorithm, labels, original TTL, expiration, inception, key tag
ED25519_SIG = 64
OPT_RR = 11  # the EDNS(0) OPT pseudo-RR with no options
EDNS_OPTIONS = 44  # room for a DNS cookie option (4 + 8 client + up to 32 server bytes)

MAX_LABEL = 63
MAX_NAME = 253  # characters in presentation form without the trailing dot (255 octets on the wire)
MAX_STRING = 255  # bytes per TXT character-string

# The fields each kind keeps in its DNS profile: identity, ownership and where to connect, none of
# the live fields (free capacity, state) that change with every heartbeat. Nested keys listed here
# are kept; anything else in the full record is dropped.
_PROFILE: dict[str, dict[str, object]] = {
    "pool": {
        "id": True,
        "kind": True,
        "authority": True,
        "name": True,
        "type": True,
        "region": {"code": True},
        "endpoint": True,
        "capacity": {"total": True, "accelerators": True},
    },
    "site": {
        "id": True,
        "kind": True,
        "authority": True,
        "name": True,
        "type": True,
        "region": {"code": True},
        "endpoint": True,
    },
    "provider": {"id": True, "kind": True, "authority": True, "name": True, "org_id": True},
    "tombstone": {
        "id": True,
        "kind": True,
        "retired": True,
        "retired_at": True,
        "authority": True,
    },
}
_SIGNER_FIELDS = ("issued_at", "expires_at", "ttl", "key_id")
_APEX_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?")


@dataclass(frozen=True, slots=True)
class RR:
    """One resource record to publish, in zone-file presentation form."""

    owner: str  # absolute DNS name with trailing dot, lower case
    ttl: int  # seconds
    rtype: str  # "TXT", "URI", "PTR"
    rdata: str  # presentation format, as in a zone file / accepted by `knotc zone-set`


def normalise_apex(apex: str) -> str:
    """Lower-case ``apex`` and add the trailing dot: ``ID.Example.org`` -> ``id.example.org.``."""
    if not isinstance(apex, str):
        raise ValueError(f"apex must be a string, not {type(apex).__name__}")
    return _normalise_apex(apex)


@functools.lru_cache(maxsize=256)  # a hub uses one or two: every record's names pass here
def _normalise_apex(apex: str) -> str:
    text = apex.strip().lower().removesuffix(".")
    if not text:
        raise ValueError("apex is empty; give the zone to publish under, e.g. 'id.example.org'")
    if not text.isascii():
        raise ValueError(f"apex {apex!r} is not ASCII; write an IDN in its xn-- (A-label) form")
    for i, label in enumerate(text.split(".")):
        if len(label) > MAX_LABEL:
            raise ValueError(
                f"apex label {i + 1} {label!r} is {len(label)} characters; at most {MAX_LABEL}"
            )
        if _APEX_LABEL.fullmatch(label) is None:
            raise ValueError(
                f"apex label {i + 1} {label!r} is not letters, digits, '-' and '_' "
                "(and may not be empty or start or end with '-')"
            )
    if len(text) > MAX_NAME:
        raise ValueError(f"apex is {len(text)} characters; at most {MAX_NAME}")
    return text + "."


def path_name(path: str, apex: str) -> str:
    """The DNS name of an identifier path or prefix (``cn.dev`` -> ``dev.cn.<apex>``): zone cuts."""
    zone = normalise_apex(apex)
    labels = [label.strip().lower() for label in path.strip().split(".")]
    for i, label in enumerate(labels):
        if not label or len(label) > MAX_LABEL or not label.isascii() or not label.isalnum():
            raise ValueError(f"path label {i + 1} {label!r} is not 1-{MAX_LABEL} letters/digits")
    name = ".".join(reversed(labels)) + "." + zone
    if len(name) - 1 > MAX_NAME:
        raise ValueError(
            f"DNS name for {path!r} under {zone!r} is {len(name) - 1} characters; at most "
            f"{MAX_NAME}: use a shorter apex"
        )
    return name


def dns_name(id_text: str, apex: str) -> str:
    """``cn.dev.acme.sz1.gpu1.gl`` -> ``gpu1.sz1.acme.dev.cn.<apex>``: path labels reversed.

    The identifier is parsed first, so a wrong check character raises IdentifierError here; type
    code and check are not part of the name (a client compares the record's ``id`` instead).
    """
    return path_name(parse(id_text).path, apex)


def id_path(name: str, apex: str) -> str:
    """The reverse of dns_name: ``gpu1.sz1.acme.dev.cn.<apex>.`` -> ``cn.dev.acme.sz1.gpu1``."""
    zone = normalise_apex(apex)
    text = name.strip().lower()
    text = text if text.endswith(".") else text + "."
    if not text.endswith("." + zone):
        raise ValueError(f"name {name!r} is not under the apex {zone!r}")
    labels = text[: -len(zone) - 1].split(".")
    if any(not label.isascii() or not label.isalnum() for label in labels):
        raise ValueError(f"name {name!r} has a label that is not letters and digits")
    return ".".join(reversed(labels))


def browse_name(site_path: str, apex: str) -> str:
    """Where a site's pools are listed (PTR RRset): ``_cpnet._tcp.<site name>``.

    ``site_path`` is the site's path (``cn.dev.acme.sz1``), i.e. a pool identifier's parent path:
    a pool's site is the name above it in DNS, so its record need not repeat the site's id.
    """
    return f"{SERVICE}.{path_name(site_path, apex)}"


def dns_record(record: dict) -> dict:
    """Reduce a full, unsigned resolution record to its DNS profile (sign that for DNS).

    Kept per kind: see _PROFILE (and docs/identifiers.md). Signer fields (issued_at, expires_at,
    ttl, key_id) are dropped too, so a signed record's body can be reduced and signed again.
    The profile carries ``"profile": "dns"`` so a reader knows live fields were left out.
    """
    if not isinstance(record, dict):
        raise ValueError(f"record must be an object, not {type(record).__name__}")
    kind = record.get("kind")
    if kind not in _PROFILE:
        raise ValueError(f"record.kind {kind!r} has no DNS profile; one of {sorted(_PROFILE)}")
    if "id" not in record:
        raise ValueError("record.id is missing")
    out = _keep(record, _PROFILE[kind])
    if kind != "tombstone":
        out["profile"] = "dns"
    return out


def _keep(value: dict, spec: dict[str, object]) -> dict:
    out = {}
    for key, sub in spec.items():
        if key not in value:
            continue
        if isinstance(sub, dict) and isinstance(value[key], dict):
            out[key] = _keep(value[key], sub)
        else:
            out[key] = copy.deepcopy(value[key])
    return out


def txt_strings(envelope: dict, canonical: bytes | None = None) -> list[bytes]:
    """The envelope as TXT character-strings: the marker, then its canonical JSON in 255s
    (``canonical``: that JSON, when the signer already has it: ``records.sign_owned``)."""
    data = canonical_json(envelope) if canonical is None else canonical
    return [TXT_MARKER] + [data[i : i + MAX_STRING] for i in range(0, len(data), MAX_STRING)]


def envelope_from_txt(strings: Sequence[bytes]) -> dict:
    """Reassemble an envelope from ONE TXT RR's character-strings, in their order.

    The first string must be ``cpnet=1``; the rest concatenate to UTF-8 JSON. Verify the result
    with records.verify_envelope; this only undoes the encoding.
    """
    parts = [bytes(s) for s in strings]
    if not parts or parts[0] != TXT_MARKER:
        first = parts[0][:20] if parts else None
        raise ValueError(f"TXT record does not start with {TXT_MARKER.decode()!r} (got {first!r})")
    try:
        envelope = json.loads(b"".join(parts[1:]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"TXT record after the marker is not UTF-8 JSON: {err}") from None
    if not isinstance(envelope, dict) or not isinstance(envelope.get("record"), dict):
        raise ValueError("TXT record JSON is not an envelope: needs a 'record' object")
    return envelope


def _escape(b: int) -> str:
    if b in (0x22, 0x5C):
        return "\\" + chr(b)
    if 0x20 <= b < 0x7F:
        return chr(b)
    return f"\\{b:03d}"


# Each byte (read as a Latin-1 code point) to its presentation form: one C-level str.translate
# per string instead of a Python loop over its bytes (the bulk publication's hot spot).
_PRESENTATION = {b: _escape(b) for b in range(256)}
_PRINTABLE = re.compile(rb"[\x20-\x7e]*")  # only '"' and '\\' need escaping then


def quote_string(data: bytes) -> str:
    """One character-string in zone-file presentation form: quoted, ``\\"``, ``\\\\``, ``\\DDD``."""
    if _PRINTABLE.fullmatch(data):  # the usual case: canonical JSON of ASCII text
        return '"' + data.decode("ascii").replace("\\", "\\\\").replace('"', '\\"') + '"'
    return '"' + data.decode("latin-1").translate(_PRESENTATION) + '"'


def name_wire_length(name: str) -> int:
    """Octets of an absolute name on the wire, uncompressed (``a.b.`` is 5)."""
    text = name.rstrip(".")
    return 1 if not text else len(text) + 2


def answer_size(qname: str, rdata_lengths: Sequence[int], apex: str) -> int:
    """Worst-case bytes of a UDP answer for ``qname`` holding RRs of these RDATA lengths.

    Counts the header, the question, each answer RR (owner = a pointer to the question name),
    one Ed25519 RRSIG whose signer name (the apex) is never compressed (RFC 4034 §3.1.7), and
    an OPT RR with room for a cookie. RDATA names are counted uncompressed.
    """
    rrsig = OWNER_POINTER + RR_FIXED + RRSIG_FIXED + name_wire_length(apex) + ED25519_SIG
    return (
        HEADER
        + name_wire_length(qname)
        + 4
        + sum(OWNER_POINTER + RR_FIXED + n for n in rdata_lengths)
        + rrsig
        + OPT_RR
        + EDNS_OPTIONS
    )


def publish_ttl(envelope: dict, *, now: datetime, max_ttl: int = 300) -> int:
    """DNS TTL for an envelope published at ``now``: min(max_ttl, whole seconds of validity left).

    An envelope with less than one second left raises ValueError: publish a fresh one instead.
    """
    if isinstance(max_ttl, bool) or not isinstance(max_ttl, int) or max_ttl < 1:
        raise ValueError(f"max_ttl must be a positive int, got {max_ttl!r}")
    record = envelope.get("record") if isinstance(envelope, dict) else None
    if not isinstance(record, dict):
        raise ValueError("envelope has no 'record' object")
    try:
        expires = parse_rfc3339(record["expires_at"])
    except (KeyError, TypeError, ValueError):
        raise ValueError("record.expires_at is missing or not an RFC 3339 time") from None
    left = math.floor((expires - now).total_seconds())
    if left < 1:
        raise ValueError(
            f"record.expires_at {record['expires_at']} leaves {left} s at publication; "
            "sign a fresh envelope"
        )
    return min(max_ttl, left)


def records_for(
    envelope: dict,
    apex: str,
    *,
    now: datetime,
    max_ttl: int = 300,
    signer: str | None = None,
    canonical: bytes | None = None,
) -> list[RR]:
    """Every RR to publish for one signed envelope (a record in its DNS profile, or a tombstone).

    TTL = min(max_ttl, seconds until expires_at); an envelope with under a second left is
    refused. Raises ValueError naming the field when an answer would exceed 1,232 bytes.
    ``signer``: the zone that signs the answers when it is not the apex (a hub delegated a
    prefix serves the zone of that prefix's name: its longer name is in every RRSIG).
    ``canonical``: the envelope's canonical JSON if the caller has it (it is not checked).
    """
    names = normalise_apex(apex)
    zone = normalise_apex(signer) if signer else names
    ttl = publish_ttl(envelope, now=now, max_ttl=max_ttl)
    record = envelope["record"]
    if "id" not in record:
        raise ValueError("record.id is missing")
    ident = parse(record["id"])  # once: the owner and, for a pool, its site's browse name
    owner = path_name(ident.path, names)
    strings = txt_strings(envelope, canonical)
    size = answer_size(owner, [sum(1 + len(s) for s in strings)], zone)
    if size > UDP_BUDGET:
        raise ValueError(_too_big(f"TXT {owner}", size, record))
    rrs = [RR(owner, ttl, "TXT", " ".join(quote_string(s) for s in strings))]
    if record.get("kind") == "tombstone":
        return rrs
    endpoint = record.get("endpoint")
    if isinstance(endpoint, str) and endpoint:
        uri_owner = f"{SERVICE}.{owner}"
        target = endpoint.encode("utf-8")
        size = answer_size(uri_owner, [4 + len(target)], zone)
        if size > UDP_BUDGET:
            raise ValueError(f"record.endpoint is {len(target)} bytes: URI answer {size} > 1232")
        rdata = f"{URI_PRIORITY} {URI_WEIGHT} {quote_string(target)}"
        rrs.append(RR(uri_owner, ttl, "URI", rdata))
    if record.get("kind") == "pool":
        rrs.append(RR(browse_name(ident.parent_path, names), ttl, "PTR", owner))
    return rrs


def _too_big(what: str, size: int, record: dict) -> str:
    sizes = sorted(
        ((len(canonical_json(v)), f"record.{k}") for k, v in record.items()), reverse=True
    )
    largest = ", ".join(f"{field} ({n} bytes)" for n, field in sizes[:3])
    return (
        f"{what}: the answer would be {size} bytes, over the {UDP_BUDGET}-byte UDP budget by "
        f"{size - UDP_BUDGET}; largest fields: {largest}"
    )


def refresh_by(envelope: dict, *, ttl: int) -> datetime:
    """When a published envelope must be replaced at the latest: ``expires_at - ttl``.

    An authoritative server hands out the same TTL until the RR changes, so a resolver that
    fetched it later would otherwise cache it past the record's expiry.
    """
    return parse_rfc3339(envelope["record"]["expires_at"]) - timedelta(seconds=ttl)


def max_site_pools(site_path: str, apex: str, pool_label_length: int = 24) -> int:
    """How many pools with labels this long fit in one UDP answer of a site's browse RRset
    (PTR targets counted uncompressed, as answer_size does)."""
    owner = browse_name(site_path, apex)
    target = name_wire_length(path_name(site_path, apex)) + 1 + pool_label_length
    per = OWNER_POINTER + RR_FIXED + target
    return (UDP_BUDGET - answer_size(owner, [], apex)) // per


__all__ = [
    "RR",
    "SERVICE",
    "TXT_MARKER",
    "UDP_BUDGET",
    "answer_size",
    "browse_name",
    "dns_name",
    "dns_record",
    "envelope_from_txt",
    "id_path",
    "max_site_pools",
    "normalise_apex",
    "path_name",
    "publish_ttl",
    "records_for",
    "refresh_by",
    "txt_strings",
]
