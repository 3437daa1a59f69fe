"""``s3://bucket/key`` URLs: S3-compatible object storage through boto3.

boto3 is imported only when an s3:// URL is staged (the runner must start fast; agents without
the ``s3`` extra stage everything else). Downloads are ranged GETs guarded by ``IfMatch`` on the
ETag, read in small chunks (a drop loses at most one); uploads go multipart over 64 MiB and carry
the file's sha256 as object metadata. A DIRECTORY is a key prefix: every object below it in, each
file of the tree at ``prefix/<relative path>`` out.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from cpnet.agent.jobfile import OutputFileLog
from cpnet.agent.staging.download import Body, Opener, Restart, Transient, content_range, fetch
from cpnet.agent.staging.errors import StagingError
from cpnet.agent.staging.landing import file_sha, measured
from cpnet.agent.staging.paths import safe_rel
from cpnet.agent.staging.records import sent_progress
from cpnet.agent.staging.scheme import Scheme
from cpnet.agent.staging.urls import join_url, shown

TYPE_CHECKING = False  # not typing's: the runner imports this package and must start fast
if TYPE_CHECKING:
    from cpnet.agent.staging.context import Context, Remote
    from cpnet.agent.staging.records import Progress
    from cpnet.agent.staging.scheme import Member

STREAM_CHUNK_BYTES = 64 * 1024  # S3 reads: at most this much is lost (and refetched) on a drop


def s3_parts(url: str) -> tuple[str, str]:
    """(bucket, key) of an s3:// URL; the key may be empty or a prefix."""
    parts = urlsplit(url)
    bucket, key = parts.netloc, parts.path[1:]
    if len(bucket) < 3:
        raise StagingError(f"S3 URL {url!r} needs a bucket name of 3 or more characters")
    return bucket, key


def _prefix(key: str) -> str:
    """A key as the prefix of a DIRECTORY: empty (the whole bucket) or ending in ``/``."""
    return key if not key or key.endswith("/") else key + "/"


class S3(Scheme):
    """Objects in S3-compatible storage; one boto3 client per staging call, made when needed."""

    dir_inputs = True
    dir_outputs = True
    file_sets = True

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self._client: _Client | None = None

    @property
    def client(self) -> _Client:
        """The boto3 client, made on first use (boto3 is imported then)."""
        if self._client is None:
            self._client = _Client(self.ctx.remote, self.ctx.timeout_s)
        return self._client

    def fetch(self, url: str, dest: Path, what: str, sha: str | None) -> tuple[int, str, int]:
        client = self.client
        bucket, key = s3_parts(url)
        if not key or key.endswith("/"):
            raise StagingError(f"{shown(url)} names no object (for a prefix declare DIRECTORY)")
        return fetch(client.opener(shown(url), bucket, key), url, dest, what, sha, self.ctx)

    def fetch_tree(self, url: str, dest: Path, what: str) -> tuple[int, int]:
        client = self.client
        bucket, key = s3_parts(url)
        prefix = _prefix(key)
        listed = client.listing(shown(url), bucket, prefix)
        objects = [(k, n) for k, n in listed if not k.endswith("/")]  # no directory markers
        self.ctx.budget.check(f"{what} (all of {shown(url)})", sum(n for _k, n in objects))
        dest.mkdir(parents=True, exist_ok=True)
        size = 0
        for k, _n in objects:
            rel = safe_rel(k[len(prefix) :], f"object {k!r} under {shown(url)}")
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            opener = client.opener(f"s3://{bucket}/{k}", bucket, k)
            got, _sha, _resumed = fetch(
                opener, f"s3://{bucket}/{k}", target, f"{what}/{rel}", None, self.ctx
            )
            size += got
        return len(objects), size

    def put(self, src: Path, url: str, what: str) -> OutputFileLog:
        size, sha = measured(src, what, self.ctx.budget)
        bucket, key = s3_parts(url)
        if not key or key.endswith("/"):
            raise StagingError(f"{shown(url)} names no object key for a file output")
        moved = _adding(sent_progress(self.ctx.progress, what, size))
        self.client.upload(src, shown(url), bucket, key, sha, moved)
        self.ctx.budget.add(size)
        return OutputFileLog(url=url, path=what, size_bytes=size, sha256=sha)

    def put_tree(
        self, url: str, members: Sequence[Member], progress: Progress | None, whole: bool = False
    ) -> list[OutputFileLog]:
        client = self.client
        bucket, key = s3_parts(url)
        prefix = _prefix(key)
        logs = []
        for src, task, size, rel in members:
            member = f"s3://{bucket}/{prefix}{rel}"
            sha = file_sha(src)
            moved = _adding(sent_progress(progress, task, size))
            client.upload(src, member, bucket, f"{prefix}{rel}", sha, moved)
            self.ctx.budget.add(size)
            logs.append(OutputFileLog(url=member, path=task, size_bytes=size, sha256=sha))
        return logs

    def log_url_bytes(self, url: str, rel: str) -> int:
        return len(join_url(url, rel).encode())  # keys are not percent-encoded


def _adding(sent: Callable[[int], None] | None) -> Callable[[int], None] | None:
    """boto3's upload callback (bytes sent since the last call) feeding `sent` (bytes so far)."""
    if sent is None:
        return None
    total = [0]

    def add(n: int) -> None:
        total[0] += n
        sent(total[0])

    return add


class _Client:
    """A boto3 S3 client for one staging call (imported only when an s3:// URL is staged)."""

    def __init__(self, remote: Remote, timeout_s: float) -> None:
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:
            raise StagingError(
                "s3:// staging needs boto3 on the agent: pip install 'cpnet[s3]'"
            ) from exc
        region = (
            remote.s3_region
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or "us-east-1"
        )
        config = Config(
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
            retries={"max_attempts": 3, "mode": "standard"},
            # S3-compatible stores do not all know the newer default checksum headers
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": "path"},
        )
        self.client = boto3.client(
            "s3", endpoint_url=remote.s3_endpoint or None, region_name=region, config=config
        )

    @staticmethod
    def error(url: str, exc: Exception, verb: str = "GET") -> StagingError:
        """A StagingError for a boto3 failure, naming the verb and the URL."""
        from botocore.exceptions import ClientError, NoCredentialsError

        if isinstance(exc, NoCredentialsError):
            return StagingError(
                f"{verb} {url}: no S3 credentials; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY for the agent, or its options s3_access_key_id and "
                "s3_secret_access_key"
            )
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return StagingError(
                f"{verb} {url}: {err.get('Code', 'error')} (HTTP {status}): "
                f"{err.get('Message', '')}".rstrip(": ")
            )
        return StagingError(f"{verb} {url}: {type(exc).__name__}: {exc}")

    def opener(self, url: str, bucket: str, key: str) -> Opener:
        """How to ask for the bytes of the object from an offset (a download.Opener)."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        @contextlib.contextmanager
        def open_(offset: int, validator: str | None) -> Iterator[Body]:
            kw: dict[str, str] = {}
            if offset:
                kw["Range"] = f"bytes={offset}-"
                if validator:
                    kw["IfMatch"] = validator
            try:
                resp = self.client.get_object(Bucket=bucket, Key=key, **kw)
            except ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if offset and status in (412, 416):  # changed since, or the part is too long
                    raise Restart(f"ranged GET refused (HTTP {status}); starting over") from exc
                raise self.error(url, exc) from exc
            except NoCredentialsError as exc:
                raise self.error(url, exc) from exc
            except BotoCoreError as exc:
                raise Transient(f"{type(exc).__name__}: {exc}") from exc
            stream = resp["Body"]
            parsed = content_range(resp.get("ContentRange"))
            start, total = parsed if parsed else (0, resp.get("ContentLength"))
            try:
                yield Body(start, total, resp.get("ETag"), stream.iter_chunks(STREAM_CHUNK_BYTES))
            except (BotoCoreError, OSError) as exc:
                raise Transient(f"{type(exc).__name__}: {exc}") from exc
            finally:
                stream.close()

        return open_

    def listing(self, url: str, bucket: str, prefix: str) -> list[tuple[str, int]]:
        """(key, size) of every object under `prefix`."""
        from botocore.exceptions import BotoCoreError, ClientError

        found: list[tuple[str, int]] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix
            )
            for page in pages:
                found.extend((o["Key"], int(o["Size"])) for o in page.get("Contents", []))
        except (BotoCoreError, ClientError) as exc:
            raise self.error(url, exc, "LIST") from exc
        return found

    def upload(
        self, src: Path, url: str, bucket: str, key: str, sha: str, progress: Callable | None
    ) -> None:
        """Upload the file to `key`, its sha256 as object metadata; multipart over 64 MiB."""
        from boto3.exceptions import S3UploadFailedError
        from boto3.s3.transfer import TransferConfig
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.upload_file(
                str(src),
                bucket,
                key,
                ExtraArgs={"Metadata": {"sha256": sha}},
                Config=TransferConfig(multipart_threshold=64 * 1024 * 1024, use_threads=False),
                Callback=progress,
            )
        except (BotoCoreError, ClientError, S3UploadFailedError) as exc:
            cause = exc.__cause__ if isinstance(exc, S3UploadFailedError) else exc
            raise self.error(url, cause if isinstance(cause, Exception) else exc, "PUT") from exc
