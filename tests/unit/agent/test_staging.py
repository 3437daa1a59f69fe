"""Staging on its own: path re-rooting, escapes, directories, limits, schemes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cpnet.agent.staging import StagingError, shown, stage_in, stage_out, task_path
from cpnet.tasks.model import Input, Output

MiB = 1024 * 1024


@pytest.fixture
def files(tmp_path: Path) -> Path:
    d = tmp_path / "files"
    d.mkdir()
    return d


def test_task_paths_are_rerooted(files: Path) -> None:
    root = files.resolve()
    assert task_path(files, "/data/x") == root / "data" / "x"
    assert task_path(files, "data/./x") == root / "data" / "x"
    assert task_path(files, "/") == root


@pytest.mark.parametrize("path", ["../x", "/data/../../x", "a/.."])
def test_dotdot_is_refused(files: Path, path: str) -> None:
    with pytest.raises(StagingError, match=r"'\.\.'"):
        task_path(files, path)


def test_symlinks_out_of_the_files_dir_are_refused(files: Path, tmp_path: Path) -> None:
    (files / "out").symlink_to(tmp_path)
    (files / "inside").symlink_to(files / "sub")
    with pytest.raises(StagingError, match="outside the task's work dir"):
        task_path(files, "out/x")
    assert task_path(files, "inside/x") == files.resolve() / "sub" / "x"
    with pytest.raises(StagingError, match="outside"):
        stage_in([Input(path="out/x", content="a")], files, max_bytes=MiB)
    assert not (tmp_path / "x").exists()


def test_directory_input_and_output(files: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "deep").mkdir(parents=True)
    (src / "a.txt").write_text("aa")
    (src / "deep" / "b.txt").write_text("bbb")
    n = stage_in([Input(path="/in", url=src.as_uri(), type="DIRECTORY")], files, max_bytes=MiB)
    assert n == 5 and (files / "in" / "deep" / "b.txt").read_text() == "bbb"

    dest = tmp_path / "dest"
    logs, total = stage_out(
        [Output(path="/in", url=dest.as_uri(), type="DIRECTORY")], files, max_bytes=MiB
    )
    assert total == 5 and logs[0].size_bytes == 5 and logs[0].sha256 is None
    assert (dest / "a.txt").read_text() == "aa" and (dest / "deep" / "b.txt").read_text() == "bbb"


def test_directory_output_with_escaping_symlink_is_refused(files: Path, tmp_path: Path) -> None:
    (files / "out").mkdir()
    (files / "out" / "ok.txt").write_text("ok")
    (files / "out" / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(
        StagingError, match=r"output '/out': passwd is a symlink \(to '/etc/passwd'\)"
    ):
        stage_out(
            [Output(path="/out", url=(tmp_path / "d").as_uri(), type="DIRECTORY")],
            files,
            max_bytes=MiB,
        )


def test_symlink_loop_in_directory_output_is_refused(files: Path, tmp_path: Path) -> None:
    (files / "out").mkdir()
    (files / "out" / "again").symlink_to(files / "out")
    with pytest.raises(StagingError, match="again is a symlink"):
        stage_out(
            [Output(path="out", url=(tmp_path / "d").as_uri(), type="DIRECTORY")],
            files,
            max_bytes=MiB,
        )


def test_size_limit(files: Path, tmp_path: Path) -> None:
    with pytest.raises(StagingError, match="over the per-task limit of 4 bytes"):
        stage_in([Input(path="x", content="12345")], files, max_bytes=4)
    big = tmp_path / "big"
    big.write_bytes(b"x" * 100)
    with pytest.raises(
        StagingError, match=r"input 'y': y \(100 bytes\) .* over the per-task limit of 50 bytes"
    ):
        stage_in([Input(path="y", url=big.as_uri())], files, max_bytes=50)
    assert not (files / "y").exists()
    assert [p.name for p in files.iterdir()] == []  # no partial files left behind


def test_file_input_keeps_mode_and_checks_sha(files: Path, tmp_path: Path) -> None:
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    sha = hashlib.sha256(script.read_bytes()).hexdigest()
    stage_in([Input(path="bin/run.sh", url=script.as_uri(), sha256=sha)], files, max_bytes=MiB)
    assert (files / "bin" / "run.sh").stat().st_mode & 0o111
    with pytest.raises(StagingError, match=f"expected {'a' * 64}, got {sha}"):
        stage_in([Input(path="z", url=script.as_uri(), sha256="A" * 64)], files, max_bytes=MiB)


def test_file_roots_limit_host_paths(files: Path, tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "f").write_text("f")
    stage_in(
        [Input(path="f", url=(allowed / "f").as_uri())], files, max_bytes=9, file_roots=[allowed]
    )
    with pytest.raises(StagingError, match="outside the allowed file roots"):
        stage_in(
            [Input(path="g", url="file:///etc/hostname")],
            files,
            max_bytes=MiB,
            file_roots=[allowed],
        )


def test_missing_outputs(files: Path, tmp_path: Path) -> None:
    with pytest.raises(StagingError, match="output 'nothing': nothing was not created"):
        stage_out([Output(path="nothing", url=(tmp_path / "n").as_uri())], files, max_bytes=MiB)


def test_urls_in_messages_lose_their_secrets() -> None:
    url = "https://user:pw@example.org:8443/b/k?X-Amz-Signature=secret"
    assert shown(url) == "https://example.org:8443/b/k"


# ---- path rules: absolute paths, symlinks anywhere ------------------------------------------


def test_absolute_task_paths_stay_inside(files: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    stage_in([Input(path=str(victim), content="x")], files, max_bytes=MiB)
    assert not victim.exists()
    assert (files.resolve() / str(victim).lstrip("/")).read_text() == "x"


def test_file_output_through_a_planted_symlink_is_refused(files: Path, tmp_path: Path) -> None:
    """An executor replaced the output by a link (to a secret, or even to a file inside)."""
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t")
    (files / "inside.txt").write_text("ok")
    (files / "result.txt").symlink_to(secret)
    (files / "alias.txt").symlink_to(files / "inside.txt")
    dest = tmp_path / "dest"
    with pytest.raises(StagingError, match=r"resolves to .*secret, outside the task.s work dir"):
        stage_out([Output(path="result.txt", url=dest.as_uri())], files, max_bytes=MiB)
    with pytest.raises(StagingError, match=r"alias\.txt is a symlink"):
        stage_out([Output(path="alias.txt", url=dest.as_uri())], files, max_bytes=MiB)
    assert not dest.exists()


def test_output_under_a_symlinked_directory_is_refused(files: Path, tmp_path: Path) -> None:
    (files / "real").mkdir()
    (files / "real" / "f").write_text("f")
    (files / "linked").symlink_to(files / "real")
    with pytest.raises(StagingError, match="linked/f: linked is a symlink"):
        stage_out([Output(path="linked/f", url=(tmp_path / "d").as_uri())], files, max_bytes=MiB)


def test_directory_input_with_a_symlink_is_refused(files: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a").write_text("a")
    (src / "sub" / "hosts").symlink_to("/etc/hosts")
    with pytest.raises(StagingError, match=r"input 'in': sub/hosts is a symlink"):
        stage_in([Input(path="in", url=src.as_uri(), type="DIRECTORY")], files, max_bytes=MiB)
    assert not (files / "in" / "sub" / "hosts").exists()


# ---- checksums and limits -----------------------------------------------------------------


def test_sha256_in_the_url_fragment(files: Path, tmp_path: Path) -> None:
    """TES inputs have no checksum field: ``#sha256=<hex>`` on the URL does the same."""
    src = tmp_path / "data"
    src.write_bytes(b"payload")
    good = hashlib.sha256(b"payload").hexdigest()
    records: list = []
    stage_in(
        [Input(path="ok", url=f"{src.as_uri()}#sha256={good}")],
        files,
        max_bytes=MiB,
        on_transfer=records.append,
    )
    assert (files / "ok").read_bytes() == b"payload" and records[0].sha256 == good
    with pytest.raises(StagingError, match=f"input 'bad': sha256 mismatch: expected {'0' * 64}"):
        stage_in([Input(path="bad", url=f"{src.as_uri()}#sha256={'0' * 64}")], files, max_bytes=MiB)
    assert not (files / "bad").exists()
    with pytest.raises(StagingError, match="differs from the URL's"):
        stage_in(
            [Input(path="x", url=f"{src.as_uri()}#sha256={good}", sha256="1" * 64)],
            files,
            max_bytes=MiB,
        )


def test_per_file_limit_names_the_file_and_the_limit(files: Path, tmp_path: Path) -> None:
    (tmp_path / "small").write_bytes(b"s" * 10)
    (tmp_path / "large").write_bytes(b"l" * 30)
    inputs = [
        Input(path="small", url=(tmp_path / "small").as_uri()),
        Input(name="big one", path="data/large", url=(tmp_path / "large").as_uri()),
    ]
    with pytest.raises(
        StagingError,
        match=r"input 'big one': data/large is 30 bytes or more, over the per-file limit of 20",
    ):
        stage_in(inputs, files, max_bytes=MiB, max_file_bytes=20)
    assert (files / "small").exists() and not (files / "data" / "large").exists()
    (files / "out").write_bytes(b"o" * 30)
    with pytest.raises(StagingError, match=r"output 'out': out is 30 bytes or more, over the per"):
        stage_out(
            [Output(path="out", url=(tmp_path / "o").as_uri())],
            files,
            max_bytes=MiB,
            max_file_bytes=20,
        )


def test_outputs_record_sha256_size_and_transfers(files: Path, tmp_path: Path) -> None:
    (files / "r.bin").write_bytes(b"result" * 100)
    records: list = []
    logs, total = stage_out(
        [Output(path="r.bin", url=(tmp_path / "r.bin").as_uri())],
        files,
        max_bytes=MiB,
        on_transfer=records.append,
    )
    sha = hashlib.sha256(b"result" * 100).hexdigest()
    assert (logs[0].sha256, logs[0].size_bytes, total) == (sha, 600, 600)
    rec = records[0]
    assert (rec.direction, rec.path, rec.size_bytes, rec.sha256) == ("out", "r.bin", 600, sha)
    assert rec.line().startswith(f"staged out r.bin to {(tmp_path / 'r.bin').as_uri()}: 600 bytes")


def test_blob_urls_in_the_task_model() -> None:
    from pydantic import ValidationError

    sha = "a" * 64
    assert Input(path="p", url=f"cpnet://blobs/{sha}").url == f"cpnet://blobs/{sha}"
    assert Output(path="o", url="cpnet://blobs/").url == "cpnet://blobs/"
    with pytest.raises(ValidationError, match="a blob input is cpnet://blobs/<64 hex digits"):
        Input(path="p", url="cpnet://blobs/xyz")
    with pytest.raises(ValidationError, match="an output to the blob store has the URL"):
        Output(path="o", url=f"cpnet://blobs/{sha}")
    with pytest.raises(ValidationError, match="cpnet URLs name the hub's blob store"):
        Input(path="p", url="cpnet://tasks/x")
