"""Data keys (crypto/datakey.py): keys, files round trip, and everything that must be refused;
the runner's stage-in decrypting encrypted inputs; `cpnet data`."""

from __future__ import annotations

import base64
import os
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cpnet.agent.jobfile import Input
from cpnet.agent.staging import StagingError, stage_in
from cpnet.cli.main import app
from cpnet.crypto import chunked
from cpnet.crypto.datakey import (
    MAGIC,
    DataKeyError,
    Sealer,
    is_encrypted,
    new_key,
    parse_key,
)

C = chunked.CHUNK_BYTES
KEY = parse_key(new_key())


def data_of(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def test_keys_are_32_random_bytes_in_either_base64_alphabet() -> None:
    k = new_key()
    raw = parse_key(k)
    assert len(raw) == 32 and new_key() != k
    urlsafe = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert parse_key(urlsafe) == raw and parse_key(f"  {k}\n") == raw
    for bad in ("", "not base64!", base64.b64encode(bytes(16)).decode(), "a" * 100):
        with pytest.raises(DataKeyError, match="data key"):
            parse_key(bad)


@pytest.mark.parametrize("n", [0, 1, C - 1, C, C + 1, 2 * C + 7])
def test_round_trip_in_place_and_nothing_in_clear(tmp_path: Path, n: int) -> None:
    sealer = Sealer(KEY)
    data = data_of(n, n)
    f = tmp_path / "f"
    f.write_bytes(data)
    f.chmod(0o640)
    sealer.encrypt_in_place(f)
    sealed = f.read_bytes()
    assert sealed.startswith(MAGIC) and is_encrypted(f)
    assert chunked.plain_size(len(sealed)) == n
    assert n < 32 or data[:32] not in sealed
    assert f.stat().st_mode & 0o777 == 0o640  # the file keeps its permission bits
    assert sealer.decrypt_in_place(f) == n
    assert f.read_bytes() == data
    assert [p.name for p in tmp_path.iterdir()] == ["f"]  # no temp files left


@settings(max_examples=30)
@given(st.binary(max_size=4096), st.integers(0, 4095))
def test_any_flipped_byte_is_refused_and_leaves_the_target(data: bytes, where: int) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d) / "src", Path(d) / "dst"
        src.write_bytes(data)
        Sealer(KEY).encrypt_file(src, src)
        bad = bytearray(src.read_bytes())
        bad[where % len(bad)] ^= 0x20
        src.write_bytes(bad)
        dst.write_bytes(b"before")
        with pytest.raises(DataKeyError):
            Sealer(KEY).decrypt_file(src, dst)
        assert dst.read_bytes() == b"before"
        assert sorted(p.name for p in Path(d).iterdir()) == ["dst", "src"]


def test_another_key_plaintext_and_truncation_are_refused_with_why(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(data_of(C + 10))
    Sealer(KEY).encrypt_in_place(f)
    with pytest.raises(DataKeyError, match="another data key"):
        Sealer(parse_key(new_key())).decrypt_file(f, tmp_path / "out")
    plain = tmp_path / "plain"
    plain.write_bytes(b"just text")
    with pytest.raises(DataKeyError, match="not encrypted with a data key"):
        Sealer(KEY).decrypt_file(plain, tmp_path / "out")
    good = f.read_bytes()
    for cut in (chunked.HEADER_BYTES - 1, chunked.HEADER_BYTES + chunked.STRIDE, len(good) - 1):
        f.write_bytes(good[:cut])
        with pytest.raises(DataKeyError, match="damaged"):
            Sealer(KEY).decrypt_file(f, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_tree_is_encrypted_in_place_without_following_links(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("not the task's")
    root = tmp_path / "files"
    (root / "a" / "b").mkdir(parents=True)
    (root / "x.txt").write_text("x")
    (root / "a" / "b" / "y.txt").write_text("y")
    (root / "link").symlink_to(outside)
    (root / "dirlink").symlink_to(tmp_path)
    assert Sealer(KEY).encrypt_tree(root) == 2
    assert is_encrypted(root / "x.txt") and is_encrypted(root / "a" / "b" / "y.txt")
    assert outside.read_text() == "not the task's"
    assert Sealer(KEY).decrypt_tree(root) == 2
    assert (root / "a" / "b" / "y.txt").read_text() == "y"


def test_stage_in_decrypts_inputs_marked_encrypted_and_refuses_the_rest(tmp_path: Path) -> None:
    sealer = Sealer(KEY)
    src = tmp_path / "src"
    src.mkdir()
    (src / "secret.txt").write_bytes(b"private reads")
    sealer.encrypt_in_place(src / "secret.txt")
    (src / "public.txt").write_bytes(b"public reference")
    files = tmp_path / "files"
    inputs = [
        Input(path="in/secret.txt", url=f"file://{src / 'secret.txt'}", encrypted=True),
        Input(path="in/public.txt", url=f"file://{src / 'public.txt'}"),
    ]
    stage_in(inputs, files, max_bytes=10**6, sealer=sealer)
    assert (files / "in" / "secret.txt").read_bytes() == b"private reads"
    assert (files / "in" / "public.txt").read_bytes() == b"public reference"
    # Marked encrypted but plaintext, under another key, or without the key: refused, removed.
    cases = [
        (Input(path="p", url=f"file://{src / 'public.txt'}", encrypted=True), sealer, "not enc"),
        (Input(path="q", url=f"file://{src / 'secret.txt'}", encrypted=True),
         Sealer(parse_key(new_key())), "another data key"),
        (Input(path="r", url=f"file://{src / 'secret.txt'}", encrypted=True), None, "did not arr"),
    ]  # fmt: skip
    for inp, s, words in cases:
        with pytest.raises(StagingError, match=words):
            stage_in([inp], files, max_bytes=10**6, sealer=s)
        assert not (files / inp.path).exists()


def test_cli_key_encrypt_decrypt(tmp_path: Path) -> None:
    run = CliRunner().invoke
    key = tmp_path / "task.key"
    assert run(app, ["data", "key", "-o", str(key)]).exit_code == 0
    assert key.stat().st_mode & 0o777 == 0o600 and parse_key(key.read_text())
    again = run(app, ["data", "key", "-o", str(key)])
    assert again.exit_code == 1 and "exists" in again.output  # never overwritten
    src = tmp_path / "reads.fq"
    src.write_bytes(data_of(C + 3))
    assert run(app, ["data", "encrypt", "-k", str(key), str(src)]).exit_code == 0
    enc = tmp_path / "reads.fq.enc"
    assert is_encrypted(enc)
    src.rename(tmp_path / "original")
    result = run(app, ["data", "decrypt", "-k", str(key), str(enc)])
    assert result.exit_code == 0, result.output
    assert src.read_bytes() == (tmp_path / "original").read_bytes()
    other = tmp_path / "other.key"
    run(app, ["data", "key", "-o", str(other)])
    wrong = run(app, ["data", "decrypt", "-k", str(other), str(enc), str(tmp_path / "w")])
    assert wrong.exit_code == 1 and "another data key" in wrong.output
    assert not (tmp_path / "w").exists()
    os.chmod(key, 0o600)
    (tmp_path / "bad.key").write_text("nope")
    bad = run(app, ["data", "encrypt", "-k", str(tmp_path / "bad.key"), str(enc)])
    assert bad.exit_code == 1 and "data key" in bad.output
