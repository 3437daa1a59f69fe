"""s3:// staging against a real S3 server (SeaweedFS, started by the ``s3_endpoint`` fixture)."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

import pytest

from cpnet.agent.staging import Remote, StagingError, Transfer, safe_rel, stage_in, stage_out
from cpnet.tasks.model import Input, Output

pytestmark = pytest.mark.s3
MiB = 1024 * 1024


@pytest.fixture
def s3(s3_endpoint: str, s3_env: dict[str, str]) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"cpnet-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def remote(s3_endpoint: str) -> Remote:
    return Remote(s3_endpoint=s3_endpoint)


def test_file_input_with_checksum(s3: Any, bucket: str, remote: Remote, tmp_path: Path) -> None:
    data = b"genome " * 50_000
    sha = hashlib.sha256(data).hexdigest()
    s3.put_object(Bucket=bucket, Key="in/ref.fa", Body=data)
    records: list[Transfer] = []
    n = stage_in(
        [Input(path="/data/ref.fa", url=f"s3://{bucket}/in/ref.fa", sha256=sha)],
        tmp_path,
        max_bytes=MiB,
        remote=remote,
        on_transfer=records.append,
    )
    assert n == len(data) and (tmp_path / "data" / "ref.fa").read_bytes() == data
    assert records[0].sha256 == sha and records[0].url == f"s3://{bucket}/in/ref.fa"
    with pytest.raises(StagingError, match=f"input 'bad': sha256 mismatch: expected {'e' * 64}"):
        stage_in(
            [Input(name="bad", path="x", url=f"s3://{bucket}/in/ref.fa", sha256="e" * 64)],
            tmp_path,
            max_bytes=MiB,
            remote=remote,
        )
    assert not (tmp_path / "x").exists() and not (tmp_path / ".x.part").exists()


def test_missing_object_and_short_bucket(bucket: str, remote: Remote, tmp_path: Path) -> None:
    with pytest.raises(StagingError, match=r"GET s3://.*/nope: NoSuchKey \(HTTP 404\)"):
        stage_in(
            [Input(path="x", url=f"s3://{bucket}/nope")], tmp_path, max_bytes=MiB, remote=remote
        )
    with pytest.raises(StagingError, match="bucket name of 3 or more characters"):
        stage_in([Input(path="x", url="s3://ab/k")], tmp_path, max_bytes=MiB, remote=remote)


def test_ranged_get_resumes_a_part_file(
    s3: Any, bucket: str, remote: Remote, tmp_path: Path
) -> None:
    """A part left by an interrupted download is continued with a ranged GET, not refetched."""
    data = bytes(range(256)) * 2000
    s3.put_object(Bucket=bucket, Key="big", Body=data)
    url = f"s3://{bucket}/big"
    (tmp_path / ".big.part").write_bytes(data[:100_000])
    (tmp_path / ".big.part.meta").write_text(f'{{"source": "{url}", "validator": null}}')
    records: list[Transfer] = []
    stage_in(
        [Input(path="big", url=url, sha256=hashlib.sha256(data).hexdigest())],
        tmp_path,
        max_bytes=MiB,
        remote=remote,
        on_transfer=records.append,
    )
    assert (tmp_path / "big").read_bytes() == data
    assert records[0].resumed_from == 100_000


def test_directory_prefix_in_and_out(s3: Any, bucket: str, remote: Remote, tmp_path: Path) -> None:
    for key, body in {"set/a.txt": b"a", "set/deep/b.txt": b"bb", "other/c": b"ccc"}.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    files = tmp_path / "files"
    n = stage_in(
        [Input(path="in", url=f"s3://{bucket}/set", type="DIRECTORY")],
        files,
        max_bytes=MiB,
        remote=remote,
    )
    assert n == 3
    assert (files / "in" / "a.txt").read_bytes() == b"a"
    assert (files / "in" / "deep" / "b.txt").read_bytes() == b"bb"
    assert not (files / "in" / "c").exists()

    records: list[Transfer] = []
    logs, total = stage_out(
        [Output(path="in", url=f"s3://{bucket}/results/run1/", type="DIRECTORY")],
        files,
        max_bytes=MiB,
        remote=remote,
        on_transfer=records.append,
    )
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="results/run1/")["Contents"]
    assert sorted(o["Key"] for o in listed) == ["results/run1/a.txt", "results/run1/deep/b.txt"]
    assert total == 3 and logs[0].size_bytes == 3 and records[0].files == 2


def test_file_output_records_sha256_and_stores_it(
    s3: Any, bucket: str, remote: Remote, tmp_path: Path
) -> None:
    data = b"result\n" * 1000
    (tmp_path / "out.txt").write_bytes(data)
    logs, total = stage_out(
        [Output(path="out.txt", url=f"s3://{bucket}/out/out.txt")],
        tmp_path,
        max_bytes=MiB,
        remote=remote,
    )
    sha = hashlib.sha256(data).hexdigest()
    assert (logs[0].sha256, logs[0].size_bytes, total) == (sha, len(data), len(data))
    got = s3.get_object(Bucket=bucket, Key="out/out.txt")
    assert got["Body"].read() == data and got["Metadata"]["sha256"] == sha


@pytest.mark.parametrize("rel", ["../x", "a/../../x", "/abs", "a//b", "./a", "a/."])
def test_keys_that_would_escape_the_directory_are_refused(rel: str) -> None:
    """SeaweedFS normalises such keys itself, but other stores keep them: the check is ours."""
    with pytest.raises(StagingError, match="is not a plain relative path"):
        safe_rel(rel, "object under s3://b/p/")
    assert str(safe_rel("a/b.txt", "x")) == "a/b.txt"


def test_directory_output_with_symlink_is_refused(
    bucket: str, remote: Remote, tmp_path: Path
) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "ok").write_text("ok")
    (tmp_path / "out" / "link").symlink_to(tmp_path / "out" / "ok")
    with pytest.raises(StagingError, match="link is a symlink"):
        stage_out(
            [Output(path="out", url=f"s3://{bucket}/o/", type="DIRECTORY")],
            tmp_path,
            max_bytes=MiB,
            remote=remote,
        )
