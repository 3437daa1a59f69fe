"""A task's data key: 32 random bytes its owner keeps, under which the task's inputs travel and
rest encrypted, and which the runner uses to decrypt them on arrival and to encrypt everything
the attempt leaves (outputs, logs, temp files) before it leaves or ends (docs/security.md, "Data
keys").

The key is written as base64 (`new_key`, `parse_key`); the hub treats it like a secret env value
(sealed at rest, shown as "[secret]", delivered only to the agent running the attempt). Files
use the chunked AES-256-GCM layout of crypto/chunked.py with MAGIC ``cpnet-data-v1\\n``, under a
key derived from the data key, so a wrong key, a damaged file or a plaintext file where
ciphertext was expected is refused, never decrypted into garbage.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from cpnet.crypto import chunked

MAGIC = b"cpnet-data-v1\n"
KEY_BYTES = 32
READ_BYTES = chunked.CHUNK_BYTES
TMP_SUFFIX = ".cpnet-seal"  # a file being encrypted or decrypted in place


class DataKeyError(Exception):
    """A key that is not a data key, or a file that does not decrypt under it (with why)."""


def new_key() -> str:
    """A fresh data key, as base64 text."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def parse_key(text: str) -> bytes:
    """The 32 bytes of a base64 data key (standard or URL-safe alphabet, padding optional)."""
    raw = text.strip()
    try:
        key = base64.b64decode(raw.replace("-", "+").replace("_", "/") + "=" * (-len(raw) % 4))
    except (binascii.Error, ValueError):
        raise DataKeyError("a data key is base64 text (`cpnet data key` makes one)") from None
    if len(key) != KEY_BYTES:
        raise DataKeyError(
            f"a data key is {KEY_BYTES} bytes in base64, not {len(key)} "
            "(`cpnet data key` makes one)"
        )
    return key


class Sealer:
    """The ciphers of one data key (derive once, use for many files)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise DataKeyError(f"a data key is {KEY_BYTES} bytes, not {len(key)}")
        self.cipher = chunked.aead(chunked.derive(key, b"cpnet data key v1: AES-256-GCM key", 32))
        self.key_id = chunked.derive(key, b"cpnet data key v1: key id", chunked.KEY_ID_BYTES)

    def encrypt_file(self, src: Path, dst: Path) -> None:
        """Write `src` encrypted to `dst` (replaced whole: a temp file, fsynced, renamed)."""
        prefix = os.urandom(chunked.PREFIX_BYTES)
        with _replacing(dst, src) as out, src.open("rb") as f:
            out.write(MAGIC + self.key_id + prefix)
            writer = chunked.ChunkWriter(self.cipher, prefix, out.write)
            while data := f.read(READ_BYTES):
                writer.write(data)
            writer.finish()

    def decrypt_file(self, src: Path, dst: Path) -> int:
        """Write the plaintext of `src` to `dst` (replaced whole); its size. DataKeyError when
        `src` is not a data-key file, was sealed under another key, or is damaged; `dst` is then
        left as it was."""
        with src.open("rb") as f, _replacing(dst, src) as out:
            size = 0
            for plain in self._chunks(f, src):
                out.write(plain)
                size += len(plain)
            return size

    def _chunks(self, f, src: Path) -> Iterator[bytes]:  # type: ignore[no-untyped-def]
        header = f.read(chunked.HEADER_BYTES)
        if not header.startswith(MAGIC):
            raise DataKeyError(
                f"{src.name} is not encrypted with a data key (encrypt it with `cpnet data "
                "encrypt`, or do not mark it encrypted)"
            )
        if len(header) < chunked.HEADER_BYTES:
            raise DataKeyError(f"{src.name} is damaged: truncated header")
        key_id = header[len(MAGIC) : len(MAGIC) + chunked.KEY_ID_BYTES]
        if key_id != self.key_id:
            raise DataKeyError(f"{src.name} was encrypted under another data key than the task's")
        prefix = header[len(MAGIC) + chunked.KEY_ID_BYTES :]
        size = os.fstat(f.fileno()).st_size
        try:
            yield from chunked.read_chunks(f, self.cipher, prefix, size)
        except chunked.Damaged as exc:
            raise DataKeyError(f"{src.name} is damaged or was altered: {exc}") from None

    def encrypt_in_place(self, path: Path) -> None:
        self.encrypt_file(path, path)

    def decrypt_in_place(self, path: Path) -> int:
        return self.decrypt_file(path, path)

    def encrypt_tree(self, root: Path) -> int:
        """Encrypt every regular file under `root` in place (symbolic links are left alone, and
        never followed); the number of files."""
        n = 0
        for path in _regular_files(root):
            self.encrypt_in_place(path)
            n += 1
        return n

    def decrypt_tree(self, root: Path) -> int:
        """Decrypt every regular file under `root` in place (a DIRECTORY input); the number of
        files. DataKeyError naming the first that does not decrypt."""
        n = 0
        for path in _regular_files(root):
            self.decrypt_in_place(path)
            n += 1
        return n


def is_encrypted(path: Path) -> bool:
    """Whether `path` starts like a data-key file (says nothing about which key)."""
    try:
        with path.open("rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def _regular_files(root: Path) -> list[Path]:
    if root.is_symlink():
        return []
    if root.is_file():
        return [root]
    found = []
    for dirpath, _dirs, names in os.walk(root):  # does not descend into links to directories
        for name in names:
            p = Path(dirpath) / name
            if not p.is_symlink() and p.is_file() and not name.endswith(TMP_SUFFIX):
                found.append(p)
    return sorted(found)


@contextlib.contextmanager
def _replacing(dst: Path, mode_from: Path) -> Iterator:  # type: ignore[type-arg]
    """A temp file beside `dst` that replaces it when the block ends without an error (and is
    removed when it does not); it takes `mode_from`'s permission bits."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        mode = mode_from.stat().st_mode & 0o777
    except OSError:
        mode = 0o600
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
