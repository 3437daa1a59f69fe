"""Resumable downloads, shared by every remote scheme (http(s), s3, the hub's blobs).

A download lands in ``.<name>.part`` next to the destination, with a ``.meta`` naming the URL it
is part of and the source's validator (a strong ETag or Last-Modified). A dropped connection is
retried with a ranged request continuing the part file, guarded by the validator (``If-Range`` /
``IfMatch``) against a changed source; a part left by an earlier call for the same URL is
continued too. A scheme supplies only an `Opener`: how to ask for the bytes from an offset.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cpnet.agent.staging.errors import StagingError
from cpnet.agent.staging.landing import CHUNK_BYTES, check_sha
from cpnet.agent.staging.urls import shown

TYPE_CHECKING = False  # not typing's: the runner imports this package and must start fast
if TYPE_CHECKING:
    from typing import Any

    from cpnet.agent.staging.context import Context

RETRY_PAUSE_S = 0.2  # first pause between download tries; doubles, at most 5 s


class Transient(Exception):
    """A failure worth another (resuming) try: a dropped connection, a timeout."""


class Restart(Transient):
    """A ranged request the source refused (it changed, or the part is too long): start over."""


@dataclass(slots=True)
class Body:
    """One (possibly ranged) response: where it starts, the whole object's size, a validator."""

    start: int
    total: int | None
    validator: str | None
    chunks: Iterator[bytes]


# Asks for the bytes from an offset, with the validator of the bytes already there (or None).
Opener = Callable[[int, "str | None"], "contextlib.AbstractContextManager[Body]"]


def content_range(value: str | None) -> tuple[int, int | None] | None:
    """``bytes START-END/TOTAL`` → (START, TOTAL or None)."""
    m = re.match(r"^bytes (\d+)-\d+/(\d+|\*)$", (value or "").strip())
    if not m:
        return None
    return int(m.group(1)), None if m.group(2) == "*" else int(m.group(2))


class Part:
    """``.<name>.part`` next to the destination, with a ``.meta`` saying what it is part of."""

    def __init__(self, dest: Path, source: str) -> None:
        self.path = dest.with_name(f".{dest.name}.part")
        self.meta = dest.with_name(f".{dest.name}.part.meta")
        self.source = source
        self.validator: str | None = None
        self.hash = hashlib.sha256()
        self.size = 0
        meta: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            meta = json.loads(self.meta.read_text(encoding="utf-8"))
        if self.path.is_file() and not self.path.is_symlink() and meta.get("source") == source:
            self.validator = meta.get("validator")
            with self.path.open("rb") as f:
                while chunk := f.read(CHUNK_BYTES):
                    self.hash.update(chunk)
                    self.size += len(chunk)
        else:
            self.reset()

    def reset(self) -> None:
        self.path.unlink(missing_ok=True)
        self.meta.unlink(missing_ok=True)
        self.path.touch()
        self.hash = hashlib.sha256()
        self.size = 0
        self.validator = None

    def remember(self, validator: str | None) -> None:
        self.validator = validator
        self.meta.write_text(json.dumps({"source": self.source, "validator": validator}))

    def drop(self) -> None:
        self.path.unlink(missing_ok=True)
        self.meta.unlink(missing_ok=True)


def fetch(
    opener: Opener, url: str, dest: Path, what: str, sha: str | None, ctx: Context
) -> tuple[int, str, int]:
    """Download through a resumable part file; return (size, sha256, bytes resumed from)."""
    part = Part(dest, url)
    resumed_from = 0  # the latest offset a ranged request continued from
    tries = 0
    while True:
        try:
            with opener(part.size, part.validator) as body, part.path.open("ab") as f:
                if body.start != part.size:  # the server sent the whole object again
                    if body.start != 0:
                        raise StagingError(f"asked for bytes from {part.size}, got {body.start}")
                    f.truncate(0)
                    part.hash, part.size = hashlib.sha256(), 0
                elif part.size:
                    resumed_from = part.size
                part.remember(body.validator)
                if body.total is not None:
                    ctx.budget.check(what, body.total)
                for chunk in body.chunks:
                    f.write(chunk)
                    part.hash.update(chunk)
                    part.size += len(chunk)
                    ctx.budget.check(what, part.size)
                    if ctx.progress is not None:
                        ctx.progress(what, part.size, body.total)
                if body.total is not None and part.size < body.total:
                    raise Transient(f"connection ended at byte {part.size} of {body.total}")
            break
        except Transient as exc:
            tries += 1
            if isinstance(exc, Restart):
                part.reset()
            if tries > ctx.retries:
                raise StagingError(
                    f"GET {shown(url)}: {exc} (gave up after {tries} tries; {part.size} bytes "
                    f"kept in {part.path.name} for a later resume)"
                ) from None
            time.sleep(min(5.0, RETRY_PAUSE_S * 2 ** (tries - 1)))
        except BaseException:
            # a limit, a refused request, a cancel: nothing worth resuming
            part.drop()
            raise
    actual = part.hash.hexdigest()
    try:
        check_sha(sha, actual)
    except StagingError:
        part.drop()
        raise
    os.replace(part.path, dest)
    part.meta.unlink(missing_ok=True)
    ctx.budget.add(part.size)
    return part.size, actual, resumed_from
