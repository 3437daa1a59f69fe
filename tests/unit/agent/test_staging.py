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
    with pytest.raises(StagingError, match=r"output '/out': passwd resolves to .* outside"):
        stage_out(
            [Output(path="/out", url=(tmp_path / "d").as_uri(), type="DIRECTORY")],
            files,
            max_bytes=MiB,
        )


def test_symlink_loop_in_directory_output_is_refused(files: Path, tmp_path: Path) -> None:
    (files / "out").mkdir()
    (files / "out" / "again").symlink_to(files / "out")
    with pytest.raises(StagingError, match="reached twice"):
        stage_out(
            [Output(path="out", url=(tmp_path / "d").as_uri(), type="DIRECTORY")],
            files,
            max_bytes=MiB,
        )


def test_size_limit(files: Path, tmp_path: Path) -> None:
    with pytest.raises(StagingError, match="exceed"):
        stage_in([Input(path="x", content="12345")], files, max_bytes=4)
    big = tmp_path / "big"
    big.write_bytes(b"x" * 100)
    with pytest.raises(StagingError, match="100 bytes exceed the 50 bytes"):
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


def test_s3_and_missing_outputs(files: Path, tmp_path: Path) -> None:
    with pytest.raises(StagingError, match="s3 staging arrives with the object-storage backend"):
        stage_in([Input(path="x", url="s3://bucket/key")], files, max_bytes=MiB)
    with pytest.raises(StagingError, match="output 'nothing': nothing was not created"):
        stage_out([Output(path="nothing", url=(tmp_path / "n").as_uri())], files, max_bytes=MiB)


def test_urls_in_messages_lose_their_secrets() -> None:
    url = "https://user:pw@example.org:8443/b/k?X-Amz-Signature=secret"
    assert shown(url) == "https://example.org:8443/b/k"
