"""The hub's blob store encrypted at rest (hub/blobs.py): round trips, what is on disk, damage
and tampering detected, legacy plaintext blobs, another key; and the GET route's byte ranges."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cpnet.api.routers.blobs import Unsatisfiable, byte_range
from cpnet.config import HubSettings
from cpnet.crypto.chunked import (
    CHUNK_BYTES,
    HEADER_BYTES,
    KEY_ID_BYTES,
    OVERHEAD,
    STRIDE,
    plain_size,
)
from cpnet.hub import tasks
from cpnet.hub.blobs import (
    MAGIC,
    READ_CHUNK,
    BlobCorrupt,
    BlobKeyMismatch,
    BlobStore,
)
from cpnet.hub.bootstrap import init_hub
from cpnet.hub.service import Hub
from cpnet.tasks.model import TaskSpec

KEY = bytes(range(32))
C = READ_CHUNK
SIZES = [0, 1, C - 1, C, C + 1, 3 * C + 5]


def data_of(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def put(store: BlobStore, data: bytes, pieces: int = 64 * 1024) -> tuple[str, bool]:
    w = store.writer()
    for i in range(0, len(data), pieces):
        w.write(data[i : i + pieces])
        assert len(w.pending) <= CHUNK_BYTES  # never the whole blob in memory
    return w.commit()


def read(store: BlobStore, sha: str, start: int = 0, end: int | None = None) -> bytes:
    blob = store.open(sha)
    assert blob is not None
    return b"".join(blob.stream(start, end))


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs", KEY)


@pytest.mark.parametrize("n", SIZES)
def test_round_trip_at_the_chunk_boundaries(store: BlobStore, n: int) -> None:
    data = data_of(n, n)
    sha, new = put(store, data)
    assert sha == hashlib.sha256(data).hexdigest() and new
    assert store.size(sha) == n  # from the file size and layout, nothing decrypted
    on_disk = store.path(sha).read_bytes()
    assert on_disk.startswith(MAGIC) and plain_size(len(on_disk)) == n
    assert len(on_disk) == HEADER_BYTES + max(1, -(-n // C)) * OVERHEAD + n
    assert read(store, sha) == data
    for start, end in [(0, 1), (C - 1, C + 2), (n // 2, n), (max(n - 1, 0), n), (2 * C, 3 * C + 1)]:
        assert read(store, sha, start, end) == data[start:end]
    assert put(store, data) == (sha, False)  # the same bytes again: a no-op
    assert list(store.tmp.iterdir()) == []


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.one_of(st.sampled_from(SIZES), st.integers(0, 2 * C + 100)),
    pieces=st.sampled_from([1000, 65536, C - 1, C, C + 7, 4 * C]),
    seed=st.integers(0, 2**16),
    cut=st.tuples(st.integers(0, 3 * C), st.integers(0, 3 * C)),
)
def test_round_trip_any_size_written_in_any_pieces(
    tmp_path: Path, n: int, pieces: int, seed: int, cut: tuple[int, int]
) -> None:
    store = BlobStore(tmp_path / f"blobs-{os.urandom(4).hex()}", KEY)
    data = data_of(n, seed)
    sha, _ = put(store, data, pieces)
    assert store.size(sha) == n
    assert read(store, sha) == data
    start, end = sorted(cut)
    assert read(store, sha, start, end) == data[start:end]


def test_the_file_holds_no_plaintext_and_the_writer_streams(store: BlobStore) -> None:
    marker = b"CPNET-DISTINCTIVE-PLAINTEXT-MARKER"
    data = marker * (2 * C // len(marker) + 10)
    w = store.writer()
    w.write(data[: 2 * C + 1])
    # Two full chunks are sealed and on disk already; the rest waits for more data or commit.
    assert w.tmp.stat().st_size == HEADER_BYTES + 2 * STRIDE and len(w.pending) == 1
    w.write(data[2 * C + 1 :])
    sha, _ = w.commit()
    on_disk = store.path(sha).read_bytes()
    assert marker not in on_disk and marker[:16] not in on_disk
    assert read(store, sha) == data


def small_blob(store: BlobStore) -> tuple[str, Path, bytes]:
    sha, _ = put(store, b"a small blob, one chunk")
    path = store.path(sha)
    return sha, path, path.read_bytes()


def assert_corrupt(store: BlobStore, sha: str) -> None:
    with pytest.raises(BlobCorrupt):
        store.open(sha)
    assert not store.path(sha).exists()  # removed
    assert store.open(sha) is None


def test_any_flipped_byte_is_detected(store: BlobStore) -> None:
    sha, path, good = small_blob(store)
    key_id = range(len(MAGIC), len(MAGIC) + KEY_ID_BYTES)
    for i in range(len(good)):
        bad = bytearray(good)
        bad[i] ^= 0x01
        path.write_bytes(bad)
        if i in key_id:  # reads as another key's blob: refused, but kept
            with pytest.raises(BlobKeyMismatch):
                store.open(sha)
            assert path.exists()
        else:
            assert_corrupt(store, sha)
    # ...and in a blob of several chunks: a length, a ciphertext byte, a tag, the last byte.
    data = data_of(3 * C + 5)
    sha, _ = put(store, data)
    path = store.path(sha)
    good = path.read_bytes()
    for i in [HEADER_BYTES + 1, HEADER_BYTES + STRIDE + 100, HEADER_BYTES + 2 * STRIDE - 1, -1]:
        bad = bytearray(good)
        bad[i] ^= 0x80
        path.write_bytes(bad)
        assert_corrupt(store, sha)


def test_truncating_or_extending_is_detected(store: BlobStore) -> None:
    sha, path, good = small_blob(store)
    for n in range(len(good)):
        path.write_bytes(good[:n])
        assert_corrupt(store, sha)
    path.write_bytes(good + b"\0")
    assert_corrupt(store, sha)
    data = data_of(3 * C + 5)
    sha, _ = put(store, data)
    path = store.path(sha)
    good = path.read_bytes()
    # Whole chunks dropped from the end: what is left is a valid layout of full chunks, but the
    # one that now ends the file was not sealed as the last.
    for chunks in (1, 2, 3):
        path.write_bytes(good[: HEADER_BYTES + chunks * STRIDE])
        assert_corrupt(store, sha)
    # The last chunk repeated after itself: the first copy no longer ends the file.
    path.write_bytes(good + good[HEADER_BYTES + 3 * STRIDE :])
    assert_corrupt(store, sha)


def test_reordered_or_dropped_chunks_are_detected(store: BlobStore) -> None:
    data = data_of(3 * C + 5)
    sha, _ = put(store, data)
    path = store.path(sha)
    good = path.read_bytes()
    head, body = good[:HEADER_BYTES], good[HEADER_BYTES:]
    chunks = [body[i : i + STRIDE] for i in range(0, len(body), STRIDE)]
    assert len(chunks) == 4
    for order in ([1, 0, 2, 3], [0, 2, 1, 3], [0, 1, 3], [1, 2, 3], [0, 0, 1, 2, 3]):
        path.write_bytes(head + b"".join(chunks[i] for i in order))
        assert_corrupt(store, sha)


def test_a_blob_copied_to_another_name_is_detected(store: BlobStore) -> None:
    one, _ = put(store, b"blob one")
    two, _ = put(store, b"blob two")
    shutil.copyfile(store.path(one), store.path(two))
    assert_corrupt(store, two)
    assert read(store, one) == b"blob one"
    # The header of one with the chunks of the other: the nonces differ.
    three, _ = put(store, b"blob 3")
    a, b = store.path(one).read_bytes(), store.path(three).read_bytes()
    store.path(three).write_bytes(a[:HEADER_BYTES] + b[HEADER_BYTES:])
    assert_corrupt(store, three)


def test_damage_after_the_check_stops_the_stream(store: BlobStore) -> None:
    data = data_of(3 * C + 5)
    sha, _ = put(store, data)
    blob = store.open(sha)
    assert blob is not None
    with store.path(sha).open("r+b") as f:  # the same file, changed in place
        f.seek(HEADER_BYTES + 2 * STRIDE + 10)
        f.write(b"\xff\xff")
    got = blob.stream()
    assert next(got) == data[:C]
    with pytest.raises(BlobCorrupt):
        list(got)
    assert not store.path(sha).exists() and blob.file.closed


def test_a_legacy_plaintext_blob_is_still_read_and_replaced_on_upload(store: BlobStore) -> None:
    data = data_of(C + 3, 7)
    sha = hashlib.sha256(data).hexdigest()
    path = store.path(sha)
    path.parent.mkdir(parents=True)
    path.write_bytes(data)  # as the store wrote it before encryption
    assert store.size(sha) == len(data)
    assert read(store, sha) == data
    assert read(store, sha, C, C + 2) == data[C : C + 2]
    # The same bytes uploaded again: not new, but now encrypted.
    assert put(store, data) == (sha, False)
    assert path.read_bytes().startswith(MAGIC) and store.size(sha) == len(data)
    assert read(store, sha) == data
    # A damaged legacy blob is caught by its hash, as before.
    other = b"legacy, then damaged"
    osha = hashlib.sha256(other).hexdigest()
    store.path(osha).parent.mkdir(parents=True, exist_ok=True)
    store.path(osha).write_bytes(other[:-1] + b"!")
    assert_corrupt(store, osha)


def test_another_key_cannot_read_and_does_not_delete(tmp_path: Path, store: BlobStore) -> None:
    data = b"written under the first key"
    sha, _ = put(store, data)
    other = BlobStore(store.root, bytes(32))
    with pytest.raises(BlobKeyMismatch):
        other.open(sha)
    assert read(store, sha) == data  # kept: the key file was wrong, not the blob
    # A file claiming the other key's id (the header forged) still does not open under it.
    forged = bytearray(store.path(sha).read_bytes())
    forged[len(MAGIC) : len(MAGIC) + KEY_ID_BYTES] = other.key_id
    store.path(sha).write_bytes(forged)
    assert_corrupt(other, sha)
    # Uploading the bytes under the other key replaces what that key could not read.
    put(store, data)
    assert put(other, data) == (sha, False)
    assert read(other, sha) == data


def test_size_without_a_blob(store: BlobStore) -> None:
    assert store.size("a" * 64) is None
    assert store.size("not a hash") is None
    sha, _ = put(store, b"abc")
    assert store.size(sha.upper()) == 3
    store.path(sha).write_bytes(MAGIC + bytes(KEY_ID_BYTES))  # not a v1 layout
    assert store.size(sha) is None


def test_the_hub_stores_blobs_under_its_key_file_and_sizes_inputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CPNET_SECRETS_KEY_FILE", raising=False)
    s = HubSettings(data_dir=tmp_path)
    init_hub(s)
    h = Hub(s)
    assert (tmp_path / "secrets.key").stat().st_mode & 0o777 == 0o600
    data = data_of(C + 1)
    sha, _ = put(h.blobs, data)
    assert data[:64] not in h.blobs.path(sha).read_bytes()
    spec = TaskSpec.model_validate(
        {
            "executors": [{"command": ["true"]}],
            "inputs": [{"path": "/in", "url": f"cpnet://blobs/{sha}"}],
        }
    )
    assert tasks.with_input_sizes(h, spec).inputs[0].size_bytes == len(data)
    # A second hub process on the same data dir (or a restart) reads it.
    assert read(Hub(s).blobs, sha) == data


ETAG = '"' + "a" * 64 + '"'


@pytest.mark.parametrize(
    ("range_", "if_range", "size", "want"),
    [
        (None, None, 10, None),
        ("bytes=0-", None, 10, (0, 10)),
        ("bytes=3-", None, 10, (3, 10)),
        ("bytes=3-5", None, 10, (3, 6)),
        ("bytes=3-50", None, 10, (3, 10)),
        ("bytes=-4", None, 10, (6, 10)),
        ("bytes=-40", None, 10, (0, 10)),
        ("bytes=3-", ETAG, 10, (3, 10)),
        ("bytes=3-", '"other"', 10, None),  # changed since: the whole blob
        ("bytes=3-", "Wed, 21 Oct 2015 07:28:00 GMT", 10, None),
        ("bytes=0-1,4-5", None, 10, None),  # several ranges: the whole blob
        ("bytes=5-3", None, 10, None),
        ("items=0-1", None, 10, None),
        ("bytes=-", None, 10, None),
    ],
)
def test_byte_range(range_: str | None, if_range: str | None, size: int, want: object) -> None:
    assert byte_range(range_, if_range, ETAG, size) == want


@pytest.mark.parametrize(("range_", "size"), [("bytes=10-", 10), ("bytes=0-", 0), ("bytes=-0", 5)])
def test_byte_range_unsatisfiable(range_: str, size: int) -> None:
    with pytest.raises(Unsatisfiable):
        byte_range(range_, None, ETAG, size)
