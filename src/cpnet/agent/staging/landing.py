"""Bytes on this host: files land whole or not at all, and every byte is hashed on the way.

A file being written lives in a temp file next to its destination and takes the destination's
name only when complete and checked (atomic rename), so an executor never sees half an input.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

from cpnet.agent.staging.errors import StagingError

TYPE_CHECKING = False  # not typing's: the runner imports this package and must start fast
if TYPE_CHECKING:
    from cpnet.agent.staging.limits import Budget
    from cpnet.agent.staging.records import Progress

CHUNK_BYTES = 1024 * 1024  # read/write unit for copies and transfers
SHA_RE = re.compile(r"^[0-9a-f]{64}$")


def check_sha(expected: str | None, actual: str) -> None:
    """Refuse bytes whose sha256 is not the one expected (None: nothing expected)."""
    if expected is not None and expected.lower() != actual:
        raise StagingError(f"sha256 mismatch: expected {expected.lower()}, got {actual}")


def file_sha(path: Path) -> str:
    """The sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def measured(src: Path, what: str, budget: Budget) -> tuple[int, str]:
    """(size, sha256) of a file about to be sent, its size checked against the limits first."""
    size = src.stat().st_size
    budget.check(what, size)
    return size, file_sha(src)


class Landing:
    """A temp file next to `dest` that becomes `dest` only when complete (atomic rename)."""

    def __init__(self, dest: Path, what: str, budget: Budget) -> None:
        self.dest = dest
        self.what = what
        self.budget = budget
        fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
        self.tmp = Path(name)
        self.file = os.fdopen(fd, "wb")
        self.size = 0
        self.hash = hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self.budget.check(self.what, self.size)
        self.hash.update(chunk)
        self.file.write(chunk)

    def commit(self, expected_sha: str | None, mode_from: Path | None = None) -> str:
        self.file.close()
        sha = self.hash.hexdigest()
        check_sha(expected_sha, sha)
        if mode_from is not None:
            shutil.copymode(mode_from, self.tmp)  # keep scripts executable
        os.replace(self.tmp, self.dest)
        self.budget.add(self.size)
        return sha

    def __enter__(self) -> Landing:
        return self

    def __exit__(self, *exc: object) -> None:
        # On success commit() renamed tmp away; on any failure remove the partial file.
        self.file.close()
        self.tmp.unlink(missing_ok=True)


def copy_file(
    src: Path,
    dest: Path,
    what: str,
    budget: Budget,
    sha: str | None = None,
    progress: Progress | None = None,
) -> str:
    """Copy one regular file via a landing file; return its sha256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    size = src.stat().st_size
    budget.check(what, size)
    with Landing(dest, what, budget) as landing, src.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            landing.write(chunk)
            if progress is not None:
                progress(what, landing.size, size)
        return landing.commit(sha, mode_from=src)
