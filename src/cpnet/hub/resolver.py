"""Resolution of compute identifiers to signed records, cached in memory."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from sqlalchemy import select

from cpnet import ident
from cpnet.errors import Invalid, NotFound
from cpnet.hub import records
from cpnet.ident import SigningKey, sign_record
from cpnet.store import registry as reg
from cpnet.store.db import Store
from cpnet.store.tables import Pool, Provider, Site

CACHE_S = 5.0  # about how long a signed record is served from memory (live state may lag so)


class Resolver:
    """Turns an identifier into its signed record; the hot path is one dict lookup."""

    def __init__(self, store: Store, key: SigningKey, authority: str, ttl_s: int) -> None:
        self.store, self.key, self.authority, self.ttl_s = store, key, authority, ttl_s
        self._cache: dict[str, tuple[float, bytes]] = {}
        self._lock = threading.Lock()
        # Told of every change (the DNS publisher's wake-up), with the identifiers it touched.
        self.on_change: Callable[[Iterable[str]], None] | None = None

    def invalidate(self, ids: Iterable[str] = ()) -> None:
        """Forget every cached record: the registry changed (pools registered, measured,
        retired, back from offline; ``ids`` names what changed, a site standing for its pools),
        so the next resolve signs what the store holds now."""
        self._cache.clear()
        if self.on_change is not None:
            self.on_change(ids)

    def cached(self, text: str) -> bytes | None:
        """The cached envelope if fresh, without touching the store (the hot path)."""
        hit = self._cache.get(text)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        return None

    def resolve_bytes(self, text: str, now: float | None = None) -> bytes:
        """The signed envelope as JSON bytes; raises Invalid (malformed) or NotFound."""
        now = time.monotonic() if now is None else now
        hit = self._cache.get(text)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            cid = ident.parse(text)
        except ident.IdentifierError as exc:
            raise Invalid(exc.message, field="id", code=f"identifier_{exc.code}") from exc
        canon = cid.text
        hit = self._cache.get(canon)
        if hit is None or hit[0] <= now:
            body = json.dumps(self._sign(canon), separators=(",", ":")).encode()
            # Jittered expiry: records signed together must not all expire together.
            hit = (now + CACHE_S * random.uniform(0.75, 1.25), body)
            with self._lock:
                if len(self._cache) > 100_000:
                    self._cache.clear()
                self._cache[canon] = hit
        if canon != text:
            self._cache[text] = hit
        return hit[1]

    def _sign(self, canon: str) -> dict:
        issued = datetime.now(UTC)
        record = self._record(canon)
        return sign_record(record, self.key, issued_at=issued, ttl_s=self.ttl_s)

    def _record(self, canon: str) -> dict:
        with self.store.read() as s:
            pool = s.get(Pool, canon)
            if pool is not None:
                if pool.retired_at is not None:
                    return records.retired_body(canon, pool.retired_at, self.authority)
                return records.pool_body(reg.get_pool(s, canon), self.authority)
            site = s.get(Site, canon)
            if site is not None:
                if site.retired_at is not None:
                    return records.retired_body(canon, site.retired_at, self.authority)
                pools = s.scalars(select(Pool.id).where(Pool.site_id == canon))
                return records.site_body(site, pools, self.authority)
            prov = s.get(Provider, canon)
            if prov is not None:
                if prov.retired_at is not None:
                    return records.retired_body(canon, prov.retired_at, self.authority)
                return records.provider_body(prov, self.authority)
        raise NotFound(f"no identifier {canon!r} is registered at this hub", field="id")
