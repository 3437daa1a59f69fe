"""The hub's small content-addressed store: files under ``<data_dir>/blobs`` keyed by sha256,
encrypted at rest.

Blobs carry inline inputs and small outputs (``cpnet://blobs/<sha256>`` URLs) so that tasks need
no object store for a few kilobytes. A blob is written to a temp file in the same directory
while its sha256 is computed, fsynced, then renamed to ``<aa>/<bb>/<sha256>``: a reader sees a
whole blob or none. The name is the plaintext's hash, so writing the same bytes twice is a no-op
and a blob never changes; reads verify the hash again and drop a blob the disk corrupted.
No database rows: the file system is the index.

**Encryption.** A copy of ``DATA_DIR/blobs`` without the hub's key file reveals no blob. The key
is the hub's one data-at-rest key, the secrets key of hub/secrets.py (``DATA_DIR/secrets.key``
or ``CPNET_SECRETS_KEY_FILE``); the store derives its own AES-256-GCM key and a key id from it
with HKDF-SHA256, so blob nonces never meet the nonces that seal secrets. A file is the chunked
layout of crypto/chunked.py with MAGIC ``cpnet-blob-v1\n``. A file without MAGIC is a blob
written before encryption (legacy plaintext): it is still read, verified by its hash, and an
upload of the same bytes replaces it with an encrypted copy; every new write is encrypted.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from cpnet.crypto import chunked
from cpnet.crypto.chunked import (
    CHUNK_BYTES,
    HEADER_BYTES,
    KEY_ID_BYTES,
    MAGIC_BYTES,
    PREFIX_BYTES,
    Damaged,
    TooManyChunks,
    plain_size,
)

SHA_RE = re.compile(r"^[0-9a-f]{64}$")
BLOB_URL_PREFIX = "cpnet://blobs/"
DEFAULT_MAX_BLOB_BYTES = 16 * 1024 * 1024
READ_CHUNK = CHUNK_BYTES

MAGIC = b"cpnet-blob-v1\n"
assert len(MAGIC) == MAGIC_BYTES


class BlobTooLarge(Exception):
    """The blob is over the store's size limit."""


class BlobCorrupt(Exception):
    """The file on disk does not decrypt, or not to bytes hashing to its name (it was removed)."""


class BlobKeyMismatch(Exception):
    """The blob was written under another key than the store's (kept: the key file is wrong,
    not the blob)."""


class BlobStore:
    """Blobs on disk under `root`, each at most `max_bytes`, sealed with a key derived from
    `key` (the hub's 32-byte data-at-rest key, hub/secrets.load_key)."""

    def __init__(self, root: Path, key: bytes, max_bytes: int = DEFAULT_MAX_BLOB_BYTES) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.tmp = root / "tmp"
        self.aead = chunked.aead(chunked.derive(key, b"cpnet blob store v1: AES-256-GCM key", 32))
        self.key_id = chunked.derive(key, b"cpnet blob store v1: key id", KEY_ID_BYTES)

    def path(self, sha: str) -> Path:
        """Where the blob with this (lower-case hex) sha256 lives."""
        if not SHA_RE.match(sha):
            raise ValueError(f"{sha!r} is not 64 lower-case hex digits")
        return self.root / sha[:2] / sha[2:4] / sha

    def size(self, sha: str) -> int | None:
        """The blob's plaintext size in bytes, or None when it is not here (a stat and a look at
        the header: nothing is decrypted or hashed)."""
        try:
            with self.path(sha.lower()).open("rb") as f:
                file_size = os.fstat(f.fileno()).st_size
                encrypted = f.read(len(MAGIC)) == MAGIC
        except (ValueError, OSError):
            return None
        return plain_size(file_size) if encrypted else file_size

    def writer(self) -> BlobWriter:
        """A writer for a new blob: `write` chunks, then `commit` (or `abort`)."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        return BlobWriter(self)

    def open(self, sha: str) -> OpenBlob | None:
        """The blob, its content checked against `sha`, open for reading; None if absent.

        Raises BlobCorrupt (and removes the file) when it does not decrypt or hash to `sha`, and
        BlobKeyMismatch (keeping it) when another key wrote it.

        Reading is two passes over one open file: this one decrypts every chunk into the hash
        and keeps nothing; `OpenBlob.stream` decrypts (and authenticates) again what is sent.
        That costs a second AES-GCM pass over the blob (milliseconds for 16 MiB, the default
        limit) and holds one chunk at a time in memory; the alternatives were a decrypted temp
        file (the plaintext back on disk while it is served, and after a crash) or the whole
        blob in memory per reader. The file stays open between the passes, so a blob replaced
        under the same name meanwhile is not what gets sent.
        """
        path = self.path(sha)
        try:
            f = path.open("rb")
        except FileNotFoundError:
            return None
        try:
            blob = self._verified(sha, path, f)
        except BlobCorrupt:
            f.close()
            path.unlink(missing_ok=True)
            raise
        except BaseException:
            f.close()
            raise
        return blob

    def _verified(self, sha: str, path: Path, f: BinaryIO) -> OpenBlob:
        st = os.fstat(f.fileno())
        header = f.read(HEADER_BYTES)
        digest = hashlib.sha256()
        if not header.startswith(MAGIC):  # legacy plaintext, written before encryption
            blob = OpenBlob(sha, st.st_size, st.st_mtime, path, f, st.st_size)
        else:
            if len(header) < HEADER_BYTES:
                raise BlobCorrupt(sha)
            key_id = header[len(MAGIC) : len(MAGIC) + KEY_ID_BYTES]
            if key_id != self.key_id:
                raise BlobKeyMismatch(sha)
            size = plain_size(st.st_size)
            if size is None:
                raise BlobCorrupt(sha)
            prefix = header[len(MAGIC) + KEY_ID_BYTES :]
            blob = OpenBlob(sha, size, st.st_mtime, path, f, st.st_size, self.aead, prefix)
        seen = 0
        try:  # every chunk, to the one that ends the file
            chunks = blob._plain(0, blob.size) if blob.aead is None else blob._chunks(0)
            for chunk in chunks:
                digest.update(chunk)
                seen += len(chunk)
        except Damaged:
            raise BlobCorrupt(sha) from None
        if seen != blob.size or digest.hexdigest() != sha:
            raise BlobCorrupt(sha)
        return blob

    def _current(self, path: Path) -> bool:
        """Whether the file at `path` is encrypted under this store's key (not a legacy
        plaintext blob, nor one another key wrote)."""
        try:
            with path.open("rb") as f:
                return f.read(len(MAGIC) + KEY_ID_BYTES) == MAGIC + self.key_id
        except OSError:
            return False


@dataclass
class OpenBlob:
    """A blob whose content was checked against its name, open for reading any byte range.

    `stream` decrypts again the chunks it returns, each authenticated by AES-GCM: bytes that
    changed on disk since `BlobStore.open` raise BlobCorrupt rather than reach the reader.
    `stream` closes the file when it ends; otherwise close it (or use it as a context manager).
    """

    sha: str
    size: int  # plaintext bytes
    mtime: float
    path: Path
    file: BinaryIO
    file_size: int
    aead: Any = None  # the AES-GCM cipher; None: a legacy plaintext blob
    prefix: bytes = field(default=b"", repr=False)

    def stream(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The plaintext bytes [start, end) (to the end when `end` is None), in pieces of at
        most READ_CHUNK; closes the file when done. A chunk that no longer opens raises
        BlobCorrupt (and removes the file)."""
        start = max(start, 0)
        end = self.size if end is None else min(end, self.size)
        try:
            yield from self._range(start, end)
        except Damaged:
            self.path.unlink(missing_ok=True)
            raise BlobCorrupt(self.sha) from None
        finally:
            self.close()

    def _range(self, start: int, end: int) -> Iterator[bytes]:
        if self.aead is None:
            yield from self._plain(start, end)
            return
        if start >= end:
            return
        first = start // CHUNK_BYTES
        offset = first * CHUNK_BYTES  # where the next chunk starts in the plaintext
        for chunk in self._chunks(first):
            piece = chunk[max(start - offset, 0) : end - offset]
            offset += len(chunk)
            if piece:
                yield piece
            if offset >= end:
                return

    def _plain(self, start: int, end: int) -> Iterator[bytes]:
        self.file.seek(start)
        left = end - start
        while left > 0 and (chunk := self.file.read(min(READ_CHUNK, left))):
            left -= len(chunk)
            yield chunk

    def _chunks(self, first: int) -> Iterator[bytes]:
        """The plaintext of chunks `first`..last (crypto/chunked.read_chunks)."""
        assert self.aead is not None
        return chunked.read_chunks(self.file, self.aead, self.prefix, self.file_size, first)

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> OpenBlob:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()


class BlobWriter:
    """One blob being written: a temp file, a running sha256 and size, and the plaintext not yet
    sealed (less than one chunk, plus what the last `write` brought)."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store
        fd, name = tempfile.mkstemp(dir=store.tmp, prefix="blob.", suffix=".tmp")
        self.file = os.fdopen(fd, "wb")
        self.tmp = Path(name)
        self.hash = hashlib.sha256()
        self.size = 0
        prefix = os.urandom(PREFIX_BYTES)
        self.file.write(MAGIC + store.key_id + prefix)
        self.sealer = chunked.ChunkWriter(store.aead, prefix, self.file.write)

    @property
    def pending(self) -> bytearray:
        """The plaintext not sealed yet."""
        return self.sealer.pending

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.store.max_bytes:
            raise BlobTooLarge(self.size)
        self.hash.update(chunk)
        try:
            self.sealer.write(chunk)
        except TooManyChunks:
            raise BlobTooLarge(self.size) from None

    def commit(self) -> tuple[str, bool]:
        """Make the blob visible under its sha256; return (sha256, whether it was new)."""
        self.sealer.finish()
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        sha = self.hash.hexdigest()
        dest = self.store.path(sha)
        if self.store._current(dest):
            self.tmp.unlink(missing_ok=True)
            return sha, False
        # New, or a legacy plaintext (or other key's) file of the same bytes: this copy replaces
        # it atomically, so re-uploading a blob is how an old one gets encrypted.
        existed = dest.is_file()
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.tmp, dest)
        fd = os.open(dest.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return sha, not existed

    def abort(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)
