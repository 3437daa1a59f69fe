"""The publisher: keeps the DNS zone in step with the registry (a reconcile loop, as Funnel's).

What it publishes: for every provider, site and pool the hub holds, the record
``GET /v1/resolve`` serves (hub/records.py), reduced to its DNS profile
(``cpnet.ident.dns.dns_record``: no live fields), signed with the hub's key and turned into RRs
by ``cpnet.ident.dns.records_for``. What it published is kept per identifier (the profile's
canonical JSON, when to sign it again, its RRs) and as RRsets; each pass diffs the RRsets it
wants against those (dns/zonediff.py) and applies the difference as ONE zone transaction.

How it learns of changes (``run``):
- in this process, the routes that change the registry call ``wake(ids)`` (through
  ``Resolver.invalidate``): those identifiers are read and published in the next pass, after a
  short pause that gathers a burst into one transaction (and passes start at least
  ``MIN_INTERVAL_S`` apart, so a stream of changes is published in batches);
- every ``poll_s`` a cheap query asks the store for identifiers created or retired in the last
  few seconds (``records.changed_since``: other replicas' registrations) and keeps those not yet
  published as they are (new ones, and retirements not yet a tombstone);
- records whose signature nears its end (``refresh_by``) are signed again;
- every ``full_s`` (longer when a full pass is slow) a full pass reads every record and
  publishes whatever differs from what was published: changes no signal reported (another
  replica's re-registration, a measurement) and anything a failed pass left behind.
A pass that Knot refuses leaves the published state as it was, so the next pass retries it.

Delegations (dns/delegation.py): the prefixes this zone hands to other servers are read at every
full pass and every poll (``delegations``: the gateway re-reads its file when it changed); the
publisher adds their NS, DS and glue and withholds its own records at or under each cut. When
the set of delegations changes, the whole zone is diffed again (nothing is signed again).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cpnet.dns import delegation, zonediff
from cpnet.dns.delegation import Delegation
from cpnet.dns.zonediff import Change, Key, RRset
from cpnet.hub import records
from cpnet.ident import SigningKey
from cpnet.ident import dns as idns
from cpnet.ident.records import sign_owned
from cpnet.store.db import Store

log = logging.getLogger("cpnet.dns.publisher")

COALESCE_S = 0.02  # seconds a wake-up waits for more of the same burst
# Passes start at least this far apart (seconds): under a stream of changes each transaction
# takes what came in meanwhile, so a burst costs at most 1 / MIN_INTERVAL_S transactions a
# second however many identifiers it brings, and a change still waits well under a second.
MIN_INTERVAL_S = 0.1
SINCE_SLACK_S = 5.0  # the changed-since query looks back this much more (clocks, late commits)
REFRESH_SPREAD_S = 60.0  # signatures are renewed up to this much before they must be


@dataclass(frozen=True, slots=True)
class Entry:
    """What is published for one identifier."""

    content: bytes  # the DNS profile that was signed, as sorted JSON
    tombstone: bool
    refresh_at: float  # sign again at this time (seconds since the epoch)
    rrs: tuple[idns.RR, ...]


@dataclass(frozen=True, slots=True)
class Plan:
    """One pass's outcome before it is applied: the new entries and the zone changes."""

    entries: dict[str, Entry | None]  # None: the identifier is gone from the zone
    changes: list[Change]
    rrsets: dict[Key, RRset | None]  # the touched RRsets as they will be (None: gone)
    refused: dict[str, str] = field(default_factory=dict)  # id -> why it cannot be published
    delegations: tuple[Delegation, ...] = ()  # the delegations published once it is applied


@dataclass(slots=True)
class Stats:
    passes: int = 0
    full_passes: int = 0
    transactions: int = 0
    changes: int = 0
    signed: int = 0
    failures: int = 0
    last_full_s: float = 0.0  # how long the last full pass took
    last_error: str = ""


class Publisher:
    """Publishes the registry's records into one zone through ``apply`` (a zone transaction)."""

    def __init__(
        self,
        store: Store,
        key: SigningKey,
        authority: str,
        apex: str,
        apply: Callable[[Sequence[Change]], None],
        *,
        record_ttl_s: int = 900,
        max_ttl: int = 300,
        poll_s: float = 0.5,
        full_s: float = 10.0,
        clock: Callable[[], float] = time.time,
        zone: str | None = None,
        delegations: Callable[[], Sequence[Delegation]] | None = None,
    ) -> None:
        if record_ttl_s < 2 * max_ttl:
            raise ValueError(
                f"the DNS records' validity ({record_ttl_s} s) must be at least twice their "
                f"DNS TTL ({max_ttl} s): a record is replaced {max_ttl} s before it expires"
            )
        self.store, self.key, self.authority = store, key, authority
        self.apex = idns.normalise_apex(apex)
        # The zone served (signs every answer): the apex, or a delegated prefix's name below it.
        self.zone = idns.normalise_apex(zone or apex)
        self.apply = apply
        self.load_delegations = delegations  # the current declarations (None: never any)
        self.delegations: tuple[Delegation, ...] = ()  # those published
        self.record_ttl_s, self.max_ttl = record_ttl_s, max_ttl
        self.poll_s, self.full_s, self.clock = poll_s, full_s, clock
        self.entries: dict[str, Entry] = {}
        self.rrsets: dict[Key, RRset] = {}
        self.refused: dict[str, str] = {}  # identifiers whose records cannot be published
        self._cut: dict[str, int] = {}  # browse names cut to fit, and from how many PTRs
        self.stats = Stats()
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    # ---- signals (any thread) ----

    def wake(self, ids: Iterable[str] = ()) -> None:
        """Publish these identifiers (and, for a site, its pools) in the next pass, soon."""
        with self._lock:
            self._pending.update(i.lower() for i in ids)
        loop, event = self._loop, self._event
        if loop is not None and event is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)

    def reset(self) -> None:
        """Forget what was published (the server started again with an empty zone)."""
        self.entries.clear()
        self.rrsets.clear()
        self.delegations = ()

    # ---- one pass ----

    def plan(
        self,
        bodies: dict[str, dict],
        now: float,
        *,
        full: bool,
        delegations: Sequence[Delegation] | None = None,
    ) -> Plan:
        """Sign and diff: the entries and zone changes that publish ``bodies`` (unsigned record
        bodies by identifier) at ``now``. ``full``: ``bodies`` is the whole registry, so a
        published identifier missing from it leaves the zone. ``delegations``: the prefixes
        served elsewhere (None: those published). No I/O."""
        dels = self.delegations if delegations is None else tuple(delegations)
        moment = datetime.fromtimestamp(now, UTC)
        new_entries: dict[str, Entry | None] = {}
        refused: dict[str, str] = {}
        for ident_text, body in bodies.items():
            try:
                profile = idns.dns_record(body)
                # What decides whether to sign again: stable and cheap (C json), not canonical.
                content = json.dumps(profile, sort_keys=True, separators=(",", ":")).encode()
                old = self.entries.get(ident_text)
                if old is not None and old.content == content and now < old.refresh_at:
                    continue
                # The profile is this pass's own (no copy); its canonical JSON made once.
                envelope, raw = sign_owned(
                    profile, self.key, issued_at=moment, ttl_s=self.record_ttl_s
                )
                rrs = idns.records_for(
                    envelope,
                    self.apex,
                    now=moment,
                    max_ttl=self.max_ttl,
                    signer=self.zone,
                    canonical=raw,
                )
            except ValueError as exc:
                refused[ident_text] = str(exc)
                if ident_text in self.entries:
                    new_entries[ident_text] = None  # a record that no longer fits: withdrawn
                continue
            must = idns.refresh_by(envelope, ttl=max(rr.ttl for rr in rrs)).timestamp()
            new_entries[ident_text] = Entry(
                content, profile.get("kind") == "tombstone", must - _spread(ident_text), tuple(rrs)
            )
        if full:
            for ident_text in self.entries.keys() - bodies.keys():
                new_entries[ident_text] = None
        # The RRsets these identifiers touch, before and after (an RRset may hold records of
        # several identifiers: a site's browse PTRs come from its pools' entries).
        touched: set[Key] = set()
        for ident_text, entry in new_entries.items():
            old = self.entries.get(ident_text)
            for e in (old, entry):
                if e is not None:
                    touched.update((rr.owner, rr.rtype) for rr in e.rrs)
        cut_rrs = delegation.records(dels, self.apex, self.max_ttl)
        if dels != self.delegations:
            # Names move in or out from under cuts: diff every RRset (none is signed again).
            touched.update(self.rrsets)
            for e in (*self.entries.values(), *new_entries.values()):
                if e is not None:
                    touched.update((rr.owner, rr.rtype) for rr in e.rrs)
            touched.update((rr.owner, rr.rtype) for rr in cut_rrs)
        cuts = delegation.cuts(dels, self.apex)
        contributors: list[idns.RR] = [rr for rr in cut_rrs if (rr.owner, rr.rtype) in touched]
        for entry in {**self.entries, **new_entries}.values():
            if entry is not None:
                contributors.extend(
                    rr
                    for rr in entry.rrs
                    if (rr.owner, rr.rtype) in touched
                    # at or under a cut the child's server answers: ours would be occluded
                    and not (cuts and delegation.covering_cut(rr.owner, cuts))
                )
        desired = {k: self._fit(v) for k, v in zonediff.rrsets(contributors).items()}
        before = {k: self.rrsets[k] for k in touched if k in self.rrsets}
        changes = zonediff.diff(before, desired)
        after: dict[Key, RRset | None] = {k: desired.get(k) for k in touched}
        return Plan(new_entries, changes, after, refused, dels)

    def _fit(self, rrset: RRset) -> RRset:
        """The RRset, cut to what fits one UDP answer (1,232 bytes with its RRSIG): only a
        site's browse PTRs grow with the number of records (one per pool); ``records_for``
        already refuses any other record that would not fit. The PTRs kept are the first in
        name order, so the same pools stay listed; each pool's own name answers regardless."""
        if rrset.rtype != "PTR":
            return rrset
        lengths = [idns.name_wire_length(r) for r in rrset.rdatas]
        n = len(lengths)
        while n and idns.answer_size(rrset.owner, lengths[:n], self.zone) > idns.UDP_BUDGET:
            n -= 1
        if n == len(lengths):
            return rrset
        if self._cut.get(rrset.owner) != len(lengths):
            self._cut[rrset.owner] = len(lengths)
            log.warning(
                "%s lists %d of its %d pools: one UDP answer holds no more",
                rrset.owner,
                n,
                len(lengths),
            )
        return RRset(rrset.owner, rrset.rtype, rrset.ttl, rrset.rdatas[:n])

    def commit(self, plan: Plan) -> None:
        """Record a plan as published (after its transaction committed)."""
        for ident_text, entry in plan.entries.items():
            if entry is None:
                self.entries.pop(ident_text, None)
            else:
                self.entries[ident_text] = entry
        for key, rrset in plan.rrsets.items():
            if rrset is None:
                self.rrsets.pop(key, None)
            else:
                self.rrsets[key] = rrset
        for ident_text in plan.entries:
            self.refused.pop(ident_text, None)
        self.refused.update(plan.refused)
        self.delegations = plan.delegations

    def reconcile(self, now: float, ids: Collection[str] | None) -> int:
        """One pass: read the records of ``ids`` (None: all), publish what differs in one
        transaction; returns how many changes it applied. Raises what ``apply`` raises (and
        then nothing is recorded as published)."""
        dels = self.load_delegations() if self.load_delegations is not None else None
        bodies: dict[str, dict] = {}
        if ids is None or ids:
            with self.store.read() as s:
                bodies = records.bodies(s, self.authority, ids, dns=True)
        plan = self.plan(bodies, now, full=ids is None, delegations=dels)
        for ident_text, why in plan.refused.items():
            if self.refused.get(ident_text) != why:
                log.error("identifier %s not published in DNS: %s", ident_text, why)
        if plan.changes:
            self.apply(plan.changes)
            self.stats.transactions += 1
            self.stats.changes += len(plan.changes)
        self.stats.signed += sum(1 for e in plan.entries.values() if e is not None)
        self.commit(plan)
        self.stats.passes += 1
        return len(plan.changes)

    def due(self, now: float) -> set[str]:
        """Identifiers whose signatures must be renewed by ``now``."""
        return {i for i, e in self.entries.items() if e.refresh_at <= now}

    def unpublished(self, changed: dict[str, bool]) -> set[str]:
        """Of ``changed`` (identifier -> retired), those the zone does not show as they are."""
        out = set()
        for ident_text, retired in changed.items():
            entry = self.entries.get(ident_text)
            if entry is None or entry.tombstone != retired:
                out.add(ident_text)
        return out

    # ---- the loop ----

    async def run(self, on_pass: Callable[[], None] | None = None) -> None:
        """Publish until cancelled: a full pass first, then as described in the module."""
        from anyio import to_thread

        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        next_full = 0.0  # monotonic: the first pass is a full one
        next_poll = 0.0
        watermark = self.clock() - SINCE_SLACK_S
        backoff = 0.0
        last_pass = 0.0  # monotonic: when the last pass began
        while True:
            now_m = time.monotonic()
            wait = max(0.0, min(next_full, next_poll) - now_m, backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), wait)
            # Let a burst of changes gather into one pass.
            await asyncio.sleep(max(COALESCE_S, last_pass + MIN_INTERVAL_S - time.monotonic()))
            last_pass = time.monotonic()
            self._event.clear()
            with self._lock:
                ids, self._pending = self._pending, set()
            now_m = time.monotonic()
            full = now_m >= next_full
            try:
                if full:
                    began = time.perf_counter()
                    await to_thread.run_sync(self.reconcile, self.clock(), None)
                    took = time.perf_counter() - began
                    self.stats.full_passes += 1
                    self.stats.last_full_s = took
                    # A slow full pass (a large registry) runs less often: at most 10 % busy.
                    next_full = time.monotonic() + max(self.full_s, 10 * took)
                else:
                    if now_m >= next_poll:
                        since = watermark
                        watermark = self.clock() - SINCE_SLACK_S
                        changed = await to_thread.run_sync(self._changed_since, since)
                        ids |= self.unpublished(changed)
                        ids |= self.due(self.clock())
                        next_poll = now_m + self.poll_s
                    if ids or await to_thread.run_sync(self._delegations_changed):
                        await to_thread.run_sync(self.reconcile, self.clock(), ids)
                backoff = 0.0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep publishing after a refused pass or a store error
                self.stats.failures += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.error("DNS publication pass failed (retrying): %s", self.stats.last_error)
                with self._lock:
                    self._pending |= ids  # not published: keep them for the next pass
                backoff = min(max(0.2, backoff * 2), 5.0)
                next_full = min(next_full, time.monotonic() + backoff) if full else next_full
            if on_pass is not None:
                on_pass()

    def _delegations_changed(self) -> bool:
        if self.load_delegations is None:
            return False
        return tuple(self.load_delegations()) != self.delegations

    def _changed_since(self, since: float) -> dict[str, bool]:
        with self.store.read() as s:
            return records.changed_since(s, since)


def _spread(ident_text: str) -> float:
    """A stable part of REFRESH_SPREAD_S per identifier, so that records signed together are
    not all signed again together."""
    digest = hashlib.blake2b(ident_text.encode(), digest_size=2).digest()
    return REFRESH_SPREAD_S * int.from_bytes(digest) / 0xFFFF
