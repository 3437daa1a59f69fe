"""The pure diff between the RRsets to publish and the RRsets published, as Knot commands.

The publisher keeps what it published as RRsets keyed by (owner, type); each reconcile
computes the RRsets the registry asks for, and ``diff`` turns the difference into few changes:
an RRset that is new is set, one that is gone is unset, one that gained or lost records gets
just those, one whose TTL changed is unset and set again. ``commands`` writes them as Knot control
commands for one zone transaction (``zone-begin`` … ``zone-commit`` around them is the shell's
job, dns/knot.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cpnet.ident.dns import RR


@dataclass(frozen=True, slots=True)
class RRset:
    """Records sharing an owner and a type (one TTL: the smallest given)."""

    owner: str  # absolute, trailing dot, lower case
    rtype: str
    ttl: int
    rdatas: tuple[str, ...]  # presentation form, sorted, no duplicates


Key = tuple[str, str]  # (owner, rtype)


@dataclass(frozen=True, slots=True)
class Change:
    """One step of a zone transaction: set one record, or unset one record or (no ``rdata``) a
    whole RRset."""

    op: str  # "set" or "unset"
    owner: str
    rtype: str
    ttl: int = 0  # set only
    rdata: str = ""  # set: the record; unset: the record, or "" for the whole RRset


def rrsets(records: Iterable[RR]) -> dict[Key, RRset]:
    """Group records into RRsets by (owner, type), each with the smallest TTL of its records."""
    grouped: dict[Key, tuple[int, set[str]]] = {}
    for rr in records:
        key = (rr.owner.lower(), rr.rtype.upper())
        ttl, rdatas = grouped.get(key, (rr.ttl, set()))
        rdatas.add(rr.rdata)
        grouped[key] = (min(ttl, rr.ttl), rdatas)
    return {
        key: RRset(key[0], key[1], ttl, tuple(sorted(rdatas)))
        for key, (ttl, rdatas) in grouped.items()
    }


def diff(published: Mapping[Key, RRset], desired: Mapping[Key, RRset]) -> list[Change]:
    """The changes that turn the ``published`` RRsets into the ``desired`` ones, sorted by owner
    and type (the same inputs give the same transaction).

    Record by record where an RRset only gained or lost records (a site's browse PTRs, one per
    pool, change one at a time); the whole RRset unset and set again where its TTL changed, and
    unset where it is gone."""
    out: list[Change] = []
    for key in sorted(published.keys() | desired.keys()):
        old, new = published.get(key), desired.get(key)
        if old == new:
            continue
        owner, rtype = key
        if new is None or old is None or old.ttl != new.ttl:
            if old is not None:
                out.append(Change("unset", owner, rtype))
            if new is not None:
                out.extend(Change("set", owner, rtype, new.ttl, r) for r in new.rdatas)
            continue
        gone, added = set(old.rdatas) - set(new.rdatas), set(new.rdatas) - set(old.rdatas)
        out.extend(Change("unset", owner, rtype, rdata=r) for r in sorted(gone))
        out.extend(Change("set", owner, rtype, new.ttl, r) for r in sorted(added))
    return out


def commands(zone: str, changes: Iterable[Change]) -> list[tuple[str, dict[str, str]]]:
    """The changes as Knot control commands (``zone-set`` / ``zone-unset`` with their items),
    to send between ``zone-begin`` and ``zone-commit`` (pure)."""
    out: list[tuple[str, dict[str, str]]] = []
    for c in changes:
        if c.op == "unset":
            items = {"zone": zone, "owner": c.owner, "type": c.rtype}
            out.append(("zone-unset", {**items, "data": c.rdata} if c.rdata else items))
        elif c.op == "set":
            items = {"zone": zone, "owner": c.owner, "ttl": str(c.ttl), "type": c.rtype}
            out.append(("zone-set", {**items, "data": c.rdata}))
        else:
            raise ValueError(f"change op must be 'set' or 'unset', got {c.op!r}")
    return out
