"""The hub's small content-addressed store: files under ``<data_dir>/blobs`` keyed by sha256.

Blobs carry inline inputs and small outputs (``cpnet://blobs/<sha256>`` URLs) so that tasks need
no object store for a few kilobytes. A blob is written to a temp file in the same directory
while its sha256 is computed, fsynced, then renamed to ``<aa>/<bb>/<sha256>``: a reader sees a
whole blob or none. The name is the content's hash, so writing the same bytes twice is a no-op
and a blob never changes; reads verify the hash again and drop a blob the disk corrupted.
No database rows: the file system is the index.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

SHA_RE = re.compile(r"^[0-9a-f]{64}$")
BLOB_URL_PREFIX = "cpnet://blobs/"
DEFAULT_MAX_BLOB_BYTES = 16 * 1024 * 1024
READ_CHUNK = 1024 * 1024


class BlobTooLarge(Exception):
    """The blob is over the store's size limit."""


class BlobCorrupt(Exception):
    """The file on disk no longer hashes to its name (it was removed)."""


class BlobStore:
    """Blobs on disk under `root`, each at most `max_bytes`."""

    def __init__(self, root: Path, max_bytes: int = DEFAULT_MAX_BLOB_BYTES) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.tmp = root / "tmp"

    def path(self, sha: str) -> Path:
        """Where the blob with this (lower-case hex) sha256 lives."""
        if not SHA_RE.match(sha):
            raise ValueError(f"{sha!r} is not 64 lower-case hex digits")
        return self.root / sha[:2] / sha[2:4] / sha

    def size(self, sha: str) -> int | None:
        """The blob's size in bytes, or None when it is not here (a stat, no hashing)."""
        try:
            return self.path(sha.lower()).stat().st_size
        except (ValueError, OSError):
            return None

    def writer(self) -> BlobWriter:
        """A writer for a new blob: `write` chunks, then `commit` (or `abort`)."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        return BlobWriter(self)

    def open_verified(self, sha: str) -> Path | None:
        """The blob's path after checking its content still hashes to `sha`; None if absent.

        Raises BlobCorrupt (and removes the file) when it does not.
        """
        path = self.path(sha)
        digest = hashlib.sha256()
        try:
            with path.open("rb") as f:
                while chunk := f.read(READ_CHUNK):
                    digest.update(chunk)
        except FileNotFoundError:
            return None
        if digest.hexdigest() != sha:
            path.unlink(missing_ok=True)
            raise BlobCorrupt(sha)
        return path


class BlobWriter:
    """One blob being written: a temp file and a running sha256 and size."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store
        fd, name = tempfile.mkstemp(dir=store.tmp, prefix="blob.", suffix=".tmp")
        self.file = os.fdopen(fd, "wb")
        self.tmp = Path(name)
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.store.max_bytes:
            raise BlobTooLarge(self.size)
        self.hash.update(chunk)
        self.file.write(chunk)

    def commit(self) -> tuple[str, bool]:
        """Make the blob visible under its sha256; return (sha256, whether it was new)."""
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        sha = self.hash.hexdigest()
        dest = self.store.path(sha)
        if dest.is_file():
            self.tmp.unlink(missing_ok=True)
            return sha, False
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.tmp, dest)
        fd = os.open(dest.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return sha, True

    def abort(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)


def chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(READ_CHUNK):
            yield chunk
