"""A file encrypted in chunks with AES-256-GCM, read and written one chunk at a time.

Layout (the hub's blob store and tasks' data keys share it; each has its own MAGIC)::

    header   MAGIC              (14 bytes: the format and what wrote it)
             key id              (8 bytes: which key wrote it, from `derive`; another key is
                                  refused, not mistaken for damage)
             nonce prefix        (8 random bytes, one per file)
    chunks   length (4 bytes, big-endian) || AES-GCM ciphertext + 16-byte tag, for each chunk
             of the plaintext: every chunk but the last holds exactly CHUNK_BYTES (1 MiB), the
             last 1..CHUNK_BYTES (0 only for an empty file, which is one empty last chunk);
             nonce = prefix || chunk index (4 bytes, big-endian),
             associated data = chunk index (4 bytes) || 1 if last else 0 (1 byte)

So chunk i starts at HEADER_BYTES + i * STRIDE, the plaintext size follows from the file size
(`plain_size` decrypts nothing), and reordering, dropping, appending or truncating chunks fails
to decrypt (the reader takes the chunk that ends the file as the last one). The random prefix
makes two files sharing a nonce unlikely below some 2^32 files per key.

`cryptography` is imported by the functions that need it: the task runner imports this module
and must start fast.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

MAGIC_BYTES = 14
KEY_ID_BYTES = 8
PREFIX_BYTES = 8
HEADER_BYTES = MAGIC_BYTES + KEY_ID_BYTES + PREFIX_BYTES
LENGTH_BYTES = 4
TAG_BYTES = 16
CHUNK_BYTES = 1024 * 1024  # part of the format: changing it means a new MAGIC
OVERHEAD = LENGTH_BYTES + TAG_BYTES  # what each chunk adds to its plaintext
STRIDE = CHUNK_BYTES + OVERHEAD  # the stored size of every chunk but the last
MAX_CHUNKS = 2**32  # the chunk index is 4 bytes of the nonce


class Damaged(Exception):
    """A chunk that does not open, or a file that does not fit the layout."""


class TooManyChunks(Exception):
    """More plaintext than 2^32 chunks."""


def derive(key: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 of `key` for `info` (no salt): one key, several uses kept apart."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(key)


def aead(key: bytes) -> Any:
    """The AES-256-GCM cipher for a 32-byte key."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(key)


def nonce(prefix: bytes, index: int) -> bytes:
    return prefix + index.to_bytes(4, "big")


def aad(index: int, last: bool) -> bytes:
    return index.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


def plain_size(file_size: int) -> int | None:
    """The plaintext size of an encrypted file of `file_size` bytes (None: not this layout)."""
    body = file_size - HEADER_BYTES
    if body < OVERHEAD:
        return None
    n = -(-body // STRIDE)  # chunks: all full but the last, which is OVERHEAD..STRIDE bytes
    if body - (n - 1) * STRIDE < OVERHEAD:
        return None
    return body - n * OVERHEAD


class ChunkWriter:
    """Seals plaintext as it comes and hands the sealed chunks to `emit`: a full chunk once more
    data follows it (only `finish` knows which chunk is the last). At most one chunk and the
    last `write` are held in memory."""

    def __init__(self, cipher: Any, prefix: bytes, emit: Callable[[bytes], object]) -> None:
        self.cipher = cipher
        self.prefix = prefix
        self.emit = emit
        self.index = 0
        self.pending = bytearray()

    def write(self, data: bytes) -> None:
        self.pending += data
        while len(self.pending) > CHUNK_BYTES:
            self._seal(bytes(self.pending[:CHUNK_BYTES]), last=False)
            del self.pending[:CHUNK_BYTES]

    def finish(self) -> None:
        self._seal(bytes(self.pending), last=True)
        self.pending.clear()

    def _seal(self, plain: bytes, last: bool) -> None:
        if self.index >= MAX_CHUNKS:
            raise TooManyChunks(self.index)
        sealed = self.cipher.encrypt(nonce(self.prefix, self.index), plain, aad(self.index, last))
        self.emit(len(sealed).to_bytes(LENGTH_BYTES, "big") + sealed)
        self.index += 1


def read_chunks(
    f: BinaryIO, cipher: Any, prefix: bytes, file_size: int, first: int = 0
) -> Iterator[bytes]:
    """The plaintext of chunks `first`..last of the open file `f` (`file_size` bytes), each
    opened with its index and whether it ends the file; Damaged for anything that does not
    open or does not fit the layout."""
    from cryptography.exceptions import InvalidTag

    index, pos = first, HEADER_BYTES + first * STRIDE
    f.seek(pos)
    while True:
        head = f.read(LENGTH_BYTES)
        if len(head) != LENGTH_BYTES:
            raise Damaged("no last chunk (truncated)")
        length = int.from_bytes(head, "big")
        if not TAG_BYTES <= length <= CHUNK_BYTES + TAG_BYTES:
            raise Damaged(f"chunk {index}: length {length}")
        sealed = f.read(length)
        if len(sealed) != length:
            raise Damaged(f"chunk {index}: truncated")
        pos += LENGTH_BYTES + length
        last = pos >= file_size
        if not last and length != CHUNK_BYTES + TAG_BYTES:
            raise Damaged(f"chunk {index}: short but not last")
        try:
            plain = cipher.decrypt(nonce(prefix, index), sealed, aad(index, last))
        except InvalidTag:
            raise Damaged(f"chunk {index} does not open") from None
        yield plain
        if last:
            return
        index += 1
        if index >= MAX_CHUNKS:
            raise Damaged("too many chunks")
