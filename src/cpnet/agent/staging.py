"""Data staging: inputs into an attempt's files dir before it runs, outputs out of it after.

Sources: inline content, ``file://`` (a path on this host), ``http(s)://`` (streamed GET),
``s3://bucket/key`` (S3-compatible object storage, boto3) and ``cpnet://blobs/<sha256>`` (the
hub's content-addressed blob store). Destinations: ``file://``, ``http(s)://`` (PUT),
``s3://bucket/key`` and ``cpnet://blobs/`` (uploaded to the hub, recorded under its sha256).
DIRECTORY inputs and outputs map to directories (file://) and key prefixes (s3://).

Rules every transfer follows (docs/staging.md has the user's view):

- Paths: every task path is re-rooted under the files dir (TES-style ``/data/x`` becomes
  ``files/data/x``); ``..`` is refused, and so is any symlink: in a DIRECTORY input, on the path
  of an output, inside a DIRECTORY output (an executor may plant one before outputs are
  collected). S3 keys under a DIRECTORY prefix must be plain relative paths.
- Checksums: an input may carry ``sha256`` (or a ``#sha256=<hex>`` URL fragment); a mismatch
  fails the input. Every file output records its sha256 and size.
- Limits: a per-task total (``max_bytes``, per direction) and an optional per-file limit
  (``max_file_bytes``); the error names the file and the limit.
- Resumption: http(s), S3 and hub downloads land in ``.<name>.part`` next to the destination;
  a dropped connection is retried with a ranged request continuing the part file (``If-Range``
  / ``IfMatch`` guard against a changed source), and a part left by an earlier call for the same
  URL is continued too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from cpnet.agent.jobfile import FileType, Input, Output, OutputFileLog
from cpnet.tasks import wildcards

TYPE_CHECKING = False  # not typing's: the runner imports this module and must start fast
if TYPE_CHECKING:
    from typing import Any

    # Callers in the agent (and tests) pass the pydantic models; the runner, which must not pay
    # for importing pydantic, passes the jobfile dataclasses. Staging reads only the attributes
    # both have, and compares types with == (the two FileType enums are equal by value).
    from cpnet.tasks import model

CHUNK_BYTES = 1024 * 1024  # read/write unit for copies and transfers
STREAM_CHUNK_BYTES = 64 * 1024  # S3 reads: at most this much is lost (and refetched) on a drop
DEFAULT_TIMEOUT_S = 60.0  # per network operation (connect, each read/write), not per file
DEFAULT_RETRIES = 3  # extra tries of a download after a dropped connection (each resumes)
MAX_REDIRECTS = 5
BLOB_PREFIX = "cpnet://blobs/"
SHA_RE = re.compile(r"^[0-9a-f]{64}$")
RETRY_PAUSE_S = 0.2  # first pause between download tries; doubles, at most 5 s


class StagingError(Exception):
    """Raised when an input or output cannot be staged; the message says which and why."""


class _Transient(Exception):
    """A failure worth another (resuming) try: a dropped connection, a timeout."""


class _Restart(_Transient):
    """A ranged request the source refused (it changed, or the part is too long): start over."""


@dataclass(frozen=True, slots=True)
class Remote:
    """Where remote URLs point and how to authenticate there (not part of the task spec).

    S3 credentials are not here: boto3 reads them from the runner's environment
    (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, which the backend sets from the agent's
    options when given) or its usual chain (``~/.aws``, instance metadata).
    """

    s3_endpoint: str | None = None  # None: AWS_ENDPOINT_URL(_S3) or AWS itself
    s3_region: str | None = None  # None: AWS_REGION / AWS_DEFAULT_REGION, else us-east-1
    hub_url: str | None = None  # for cpnet://blobs/ URLs
    hub_token: str | None = None  # the agent's site token (reads and writes blobs)
    attempt_id: str | None = None  # blob uploads are a task's outputs: the hub grants its org


@dataclass(slots=True)
class Transfer:
    """One staged input or output, for the attempt's staging log."""

    direction: str  # "in" or "out"
    path: str  # the task path
    url: str  # as shown (no credentials, no query)
    size_bytes: int
    seconds: float
    sha256: str | None = None
    resumed_from: int = 0  # bytes a download continued from (0: from the start)
    files: int = 1  # files in a DIRECTORY
    # The bytes matched a checksum known beforehand (an input's sha256 or blob address, the
    # hub's answer to an upload), not merely hashed on the way.
    sha256_verified: bool = False
    wildcard: bool = False  # a wildcard output (path is its pattern; files may be 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "path": self.path,
            "url": self.url,
            "size_bytes": self.size_bytes,
            "seconds": round(self.seconds, 3),
            "sha256": self.sha256,
            "resumed_from": self.resumed_from,
            "files": self.files,
            "sha256_verified": self.sha256_verified,
        }

    def line(self) -> str:
        """A one-line summary for the attempt's system log."""
        if self.wildcard and self.files == 0:
            return (
                f"staged out nothing for {self.path}: no file matched the pattern (not an error "
                "for a wildcard output)"
            )
        verb, prep = ("staged in", "from") if self.direction == "in" else ("staged out", "to")
        what = f"{self.files} files, " if self.files != 1 else ""
        text = (
            f"{verb} {self.path} {prep} {self.url}: {what}{self.size_bytes} bytes "
            f"in {self.seconds:.2f} s"
        )
        if self.sha256:
            text += f", sha256 {self.sha256}" + (" (verified)" if self.sha256_verified else "")
        if self.resumed_from:
            text += f", resumed at byte {self.resumed_from}"
        return text


Progress = Callable[[str, int, "int | None"], None]  # (task path, bytes so far, total or None)


class Budget:
    """The staging limits of one direction: a per-task total and an optional per-file cap."""

    def __init__(self, total: int, per_file: int | None = None) -> None:
        self.total = total
        self.per_file = per_file
        self.used = 0  # bytes of files finished so far

    def check(self, what: str, size: int) -> None:
        """Refuse a file of `size` bytes (known or so far) that would break a limit."""
        if self.per_file is not None and size > self.per_file:
            raise StagingError(
                f"{what} is {size} bytes or more, over the per-file limit of {self.per_file} bytes"
            )
        if self.used + size > self.total:
            raise StagingError(
                f"{what} ({size} bytes) would bring this task's staged total to "
                f"{self.used + size} bytes, over the per-task limit of {self.total} bytes"
            )

    def add(self, size: int) -> None:
        self.used += size


def task_path(files_dir: Path, path: str) -> Path:
    """Re-root a task path under `files_dir` and resolve symlinks; refuse anything outside.

    The path need not exist yet; symlinks in the part that exists are followed, so a link that
    points outside the files dir is refused like a literal ``..``.
    """
    if "\x00" in path:
        raise StagingError(f"path {path!r} contains NUL")
    parts = [p for p in PurePosixPath(path).parts if p not in ("/", ".")]
    if ".." in parts:
        raise StagingError(f"path {path!r} contains '..'; task paths stay inside the work dir")
    root = files_dir.resolve()
    resolved = root.joinpath(*parts).resolve()
    if resolved != root and not resolved.is_relative_to(root):
        raise StagingError(
            f"path {path!r} resolves to {resolved}, outside the task's work dir "
            "(a symlink points out of it)"
        )
    return resolved


def linkfree_path(files_dir: Path, path: str) -> Path:
    """`task_path`, and also refuse a symlink anywhere on the path below the files dir.

    For outputs: an executor may have planted a link (even one pointing inside the work dir, which
    could be swapped later); nothing is collected through one.
    """
    resolved = task_path(files_dir, path)
    root = files_dir.resolve()
    here = root
    for part in (p for p in PurePosixPath(path).parts if p not in ("/", ".")):
        here = here / part
        if here.is_symlink():
            raise StagingError(
                f"{path}: {here.relative_to(root)} is a symlink; outputs are never collected "
                "through symlinks"
            )
    return resolved


def shown(url: str) -> str:
    """The URL without credentials or query (pre-signed URLs carry secrets there), for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _scheme(url: str) -> str:
    return url.split(":", 1)[0].lower()


def _file_url_path(url: str, file_roots: Sequence[Path] | None) -> Path:
    """The local path a file:// URL names, checked against the allowed roots (None: any)."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise StagingError(f"file URL {url!r} names host {parts.netloc!r}; only local files")
    path = Path(unquote(parts.path))
    if not path.is_absolute():
        raise StagingError(f"file URL {url!r} has no absolute path")
    if file_roots is not None:
        real = path.resolve()
        if not any(real == r.resolve() or real.is_relative_to(r.resolve()) for r in file_roots):
            allowed = ", ".join(str(r) for r in file_roots) or "(none)"
            raise StagingError(f"{path} is outside the allowed file roots: {allowed}")
    return path


def expected_sha(inp: Input | model.Input) -> str | None:
    """The sha256 an input must have: its ``sha256`` field or a ``#sha256=<hex>`` URL fragment
    (for TES clients, whose Input has no checksum field); both must agree when both are given."""
    field = inp.sha256.lower() if inp.sha256 else None
    frag = None
    if inp.url and "#" in inp.url:
        fragment = inp.url.split("#", 1)[1]
        if fragment.lower().startswith("sha256="):
            frag = fragment[7:].lower()
            if not SHA_RE.match(frag):
                raise StagingError(f"URL fragment #{fragment} is not sha256=<64 hex digits>")
    if inp.url and _scheme(inp.url) == "cpnet":
        blob = _blob_sha(inp.url)
        if frag is None:
            frag = blob
        elif frag != blob:
            raise StagingError(f"URL fragment sha256 {frag} differs from the blob's {blob}")
    if field and frag and field != frag:
        raise StagingError(f"sha256 {field} differs from the URL's {frag}")
    return field or frag


def _strip_fragment(url: str) -> str:
    return url.split("#", 1)[0]


def _check_sha(expected: str | None, actual: str) -> None:
    if expected is not None and expected.lower() != actual:
        raise StagingError(f"sha256 mismatch: expected {expected.lower()}, got {actual}")


def _sha_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


class _Landing:
    """A temp file next to `dest` that becomes `dest` only when complete (atomic rename)."""

    def __init__(self, dest: Path, what: str, budget: Budget) -> None:
        self.dest = dest
        self.what = what
        self.budget = budget
        fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
        self.tmp = Path(name)
        self.file = os.fdopen(fd, "wb")
        self.size = 0
        self.hash = hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self.budget.check(self.what, self.size)
        self.hash.update(chunk)
        self.file.write(chunk)

    def commit(self, expected_sha: str | None, mode_from: Path | None = None) -> str:
        self.file.close()
        sha = self.hash.hexdigest()
        _check_sha(expected_sha, sha)
        if mode_from is not None:
            shutil.copymode(mode_from, self.tmp)  # keep scripts executable
        os.replace(self.tmp, self.dest)
        self.budget.add(self.size)
        return sha

    def __enter__(self) -> _Landing:
        return self

    def __exit__(self, *exc: object) -> None:
        # On success commit() renamed tmp away; on any failure remove the partial file.
        self.file.close()
        self.tmp.unlink(missing_ok=True)


def _copy_file(
    src: Path,
    dest: Path,
    what: str,
    budget: Budget,
    sha: str | None = None,
    progress: Progress | None = None,
) -> str:
    """Copy one regular file via a landing file; return its sha256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    size = src.stat().st_size
    budget.check(what, size)
    with _Landing(dest, what, budget) as landing, src.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            landing.write(chunk)
            if progress is not None:
                progress(what, landing.size, size)
        return landing.commit(sha, mode_from=src)


def tree_files(top: Path) -> list[tuple[Path, PurePosixPath, int]]:
    """Every regular file under `top` as (path, path relative to top, size), sorted.

    Symlinks are never followed: one anywhere in the tree is refused, and so is anything that
    is neither a file nor a directory (a fifo, a socket).
    """
    found: list[tuple[Path, PurePosixPath, int]] = []
    stack = [(top, PurePosixPath())]
    while stack:
        directory, rel = stack.pop()
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            entry_rel = rel / entry.name
            if entry.is_symlink():
                raise StagingError(
                    f"{entry_rel} is a symlink (to {os.readlink(entry.path)!r}); "
                    "directories are staged without symlinks"
                )
            if entry.is_dir(follow_symlinks=False):
                stack.append((Path(entry.path), entry_rel))
            elif entry.is_file(follow_symlinks=False):
                found.append((Path(entry.path), entry_rel, entry.stat().st_size))
            else:
                raise StagingError(f"{entry_rel} is neither a file nor a directory")
    return sorted(found, key=lambda f: f[1])


def safe_rel(rel: str, where: str) -> PurePosixPath:
    """A relative path from a remote listing (an S3 key below a prefix), refused unless plain."""
    parts = rel.split("/")
    if rel.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\x00" in rel:
        raise StagingError(
            f"{where}: {rel!r} is not a plain relative path ('..', '.', empty or absolute "
            "parts would land outside the task's directory)"
        )
    return PurePosixPath(*parts)


# ---- resumable downloads ---------------------------------------------------------------------


@dataclass(slots=True)
class _Body:
    """One (possibly ranged) response: where it starts, the whole object's size, a validator."""

    start: int
    total: int | None
    validator: str | None
    chunks: Iterator[bytes]


Opener = Callable[[int, "str | None"], "contextlib.AbstractContextManager[_Body]"]


class _Part:
    """``.<name>.part`` next to the destination, with a ``.meta`` saying what it is part of."""

    def __init__(self, dest: Path, source: str) -> None:
        self.path = dest.with_name(f".{dest.name}.part")
        self.meta = dest.with_name(f".{dest.name}.part.meta")
        self.source = source
        self.validator: str | None = None
        self.hash = hashlib.sha256()
        self.size = 0
        meta: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            meta = json.loads(self.meta.read_text(encoding="utf-8"))
        if self.path.is_file() and not self.path.is_symlink() and meta.get("source") == source:
            self.validator = meta.get("validator")
            with self.path.open("rb") as f:
                while chunk := f.read(CHUNK_BYTES):
                    self.hash.update(chunk)
                    self.size += len(chunk)
        else:
            self.reset()

    def reset(self) -> None:
        self.path.unlink(missing_ok=True)
        self.meta.unlink(missing_ok=True)
        self.path.touch()
        self.hash = hashlib.sha256()
        self.size = 0
        self.validator = None

    def remember(self, validator: str | None) -> None:
        self.validator = validator
        self.meta.write_text(json.dumps({"source": self.source, "validator": validator}))

    def drop(self) -> None:
        self.path.unlink(missing_ok=True)
        self.meta.unlink(missing_ok=True)


def _fetch(
    opener: Opener,
    url: str,
    dest: Path,
    what: str,
    budget: Budget,
    sha: str | None,
    retries: int,
    progress: Progress | None,
) -> tuple[int, str, int]:
    """Download through a resumable part file; return (size, sha256, bytes resumed from)."""
    part = _Part(dest, url)
    resumed_from = 0  # the latest offset a ranged request continued from
    tries = 0
    while True:
        try:
            with opener(part.size, part.validator) as body, part.path.open("ab") as f:
                if body.start != part.size:  # the server sent the whole object again
                    if body.start != 0:
                        raise StagingError(f"asked for bytes from {part.size}, got {body.start}")
                    f.truncate(0)
                    part.hash, part.size = hashlib.sha256(), 0
                elif part.size:
                    resumed_from = part.size
                part.remember(body.validator)
                if body.total is not None:
                    budget.check(what, body.total)
                for chunk in body.chunks:
                    f.write(chunk)
                    part.hash.update(chunk)
                    part.size += len(chunk)
                    budget.check(what, part.size)
                    if progress is not None:
                        progress(what, part.size, body.total)
                if body.total is not None and part.size < body.total:
                    raise _Transient(f"connection ended at byte {part.size} of {body.total}")
            break
        except _Transient as exc:
            tries += 1
            if isinstance(exc, _Restart):
                part.reset()
            if tries > retries:
                raise StagingError(
                    f"GET {shown(url)}: {exc} (gave up after {tries} tries; {part.size} bytes "
                    f"kept in {part.path.name} for a later resume)"
                ) from None
            time.sleep(min(5.0, RETRY_PAUSE_S * 2 ** (tries - 1)))
        except BaseException:
            # a limit, a refused request, a cancel: nothing worth resuming
            part.drop()
            raise
    actual = part.hash.hexdigest()
    try:
        _check_sha(sha, actual)
    except StagingError:
        part.drop()
        raise
    os.replace(part.path, dest)
    part.meta.unlink(missing_ok=True)
    budget.add(part.size)
    return part.size, actual, resumed_from


def _content_range(value: str | None) -> tuple[int, int | None] | None:
    """``bytes START-END/TOTAL`` → (START, TOTAL or None)."""
    m = re.match(r"^bytes (\d+)-\d+/(\d+|\*)$", (value or "").strip())
    if not m:
        return None
    return int(m.group(1)), None if m.group(2) == "*" else int(m.group(2))


def _http_opener(url: str, timeout_s: float, headers: dict[str, str]) -> Opener:
    import httpx  # only tasks with http inputs pay for it: the runner must start fast

    @contextlib.contextmanager
    def open_(offset: int, validator: str | None) -> Iterator[_Body]:
        h = dict(headers)
        if offset:
            h["Range"] = f"bytes={offset}-"
            if validator:
                h["If-Range"] = validator
        try:
            with (
                httpx.Client(
                    timeout=timeout_s, follow_redirects=True, max_redirects=MAX_REDIRECTS
                ) as client,
                client.stream("GET", url, headers=h) as resp,
            ):
                if resp.status_code == 416 and offset:
                    raise _Restart("the server refused the range (416); starting over")
                if not resp.is_success:
                    raise StagingError(
                        f"GET {shown(url)}: HTTP {resp.status_code}{_error_detail(resp)}"
                    )
                start, total = 0, None
                if resp.status_code == 206:
                    parsed = _content_range(resp.headers.get("content-range"))
                    if parsed is None:
                        raise StagingError(f"GET {shown(url)}: 206 without a usable Content-Range")
                    start, total = parsed
                else:
                    declared = resp.headers.get("content-length")
                    total = int(declared) if declared and declared.isdigit() else None
                etag = resp.headers.get("etag")
                strong = etag if etag and not etag.startswith("W/") else None
                yield _Body(
                    start,
                    total,
                    strong or resp.headers.get("last-modified"),
                    # as the network delivers: a sized iterator would lose up to a whole
                    # chunk when the connection drops (it buffers before yielding)
                    resp.iter_bytes(),
                )
        except httpx.TransportError as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from exc
        except httpx.HTTPError as exc:
            raise StagingError(f"GET {shown(url)}: {type(exc).__name__}: {exc}") from exc

    return open_


# ---- S3 ----------------------------------------------------------------------------------------


def _s3_parts(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    bucket, key = parts.netloc, parts.path[1:]
    if len(bucket) < 3:
        raise StagingError(f"S3 URL {url!r} needs a bucket name of 3 or more characters")
    return bucket, key


class _S3:
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
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        @contextlib.contextmanager
        def open_(offset: int, validator: str | None) -> Iterator[_Body]:
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
                    raise _Restart(f"ranged GET refused (HTTP {status}); starting over") from exc
                raise self.error(url, exc) from exc
            except NoCredentialsError as exc:
                raise self.error(url, exc) from exc
            except BotoCoreError as exc:
                raise _Transient(f"{type(exc).__name__}: {exc}") from exc
            stream = resp["Body"]
            parsed = _content_range(resp.get("ContentRange"))
            start, total = parsed if parsed else (0, resp.get("ContentLength"))
            try:
                yield _Body(start, total, resp.get("ETag"), stream.iter_chunks(STREAM_CHUNK_BYTES))
            except (BotoCoreError, OSError) as exc:
                raise _Transient(f"{type(exc).__name__}: {exc}") from exc
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


# ---- the hub's blob store ----------------------------------------------------------------------


def _blob_sha(url: str) -> str:
    sha = _strip_fragment(url)[len(BLOB_PREFIX) :].lower()
    if not _strip_fragment(url).lower().startswith(BLOB_PREFIX) or not SHA_RE.match(sha):
        raise StagingError(f"{url!r} is not {BLOB_PREFIX}<64 hex digits of sha256>")
    return sha


def _hub(remote: Remote | None) -> tuple[str, dict[str, str]]:
    if remote is None or not remote.hub_url or not remote.hub_token:
        raise StagingError(
            "cpnet://blobs URLs need the hub's address and the agent's token, which this "
            "backend did not pass to the runner"
        )
    return remote.hub_url.rstrip("/"), {"authorization": f"Bearer {remote.hub_token}"}


# ---- inputs ------------------------------------------------------------------------------------


def stage_in(
    inputs: Sequence[Input | model.Input],
    files_dir: Path,
    *,
    max_bytes: int,
    max_file_bytes: int | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    file_roots: Sequence[Path] | None = None,
    remote: Remote | None = None,
    retries: int = DEFAULT_RETRIES,
    on_transfer: Callable[[Transfer], None] | None = None,
    progress: Progress | None = None,
) -> int:
    """Place every input under `files_dir`; return the bytes staged.

    `max_bytes` caps the total, `max_file_bytes` each file; `file_roots`, when given, limits
    which host paths file:// may read; `remote` says where s3:// and cpnet:// URLs go.
    `on_transfer` gets a record per input, `progress` running byte counts of downloads.
    Raises StagingError naming the input.
    """
    files_dir.mkdir(parents=True, exist_ok=True)
    budget = Budget(max_bytes, max_file_bytes)
    ctx = _Ctx(files_dir, budget, timeout_s, file_roots, remote, retries, progress)
    for inp in inputs:
        started = time.monotonic()
        try:
            rec = _stage_one_in(inp, ctx)
        except (StagingError, OSError) as exc:
            raise StagingError(f"input {inp.name or inp.path!r}: {exc}") from exc
        rec.seconds = time.monotonic() - started
        if on_transfer is not None:
            on_transfer(rec)
    return budget.used


@dataclass(slots=True)
class _Ctx:
    files_dir: Path
    budget: Budget
    timeout_s: float
    file_roots: Sequence[Path] | None
    remote: Remote | None
    retries: int
    progress: Progress | None
    s3: _S3 | None = None
    many_files: int = 0  # output file logs of wildcard and blob-DIRECTORY outputs so far
    log_bytes: int = 0  # their size as JSON (they travel in one update to the hub)

    def s3_client(self) -> _S3:
        if self.s3 is None:
            self.s3 = _S3(self.remote or Remote(), self.timeout_s)
        return self.s3


def _stage_one_in(inp: Input | model.Input, ctx: _Ctx) -> Transfer:
    dest = task_path(ctx.files_dir, inp.path)
    if dest == ctx.files_dir.resolve():
        raise StagingError("an input cannot replace the whole work dir")
    dest.parent.mkdir(parents=True, exist_ok=True)
    budget = ctx.budget
    directory = inp.type == FileType.DIRECTORY
    if inp.content is not None:
        if directory:
            raise StagingError("inline content makes a file, not a DIRECTORY")
        data = inp.content.encode("utf-8")
        with _Landing(dest, inp.path, budget) as landing:
            landing.write(data)
            sha = landing.commit(inp.sha256)
        rec = Transfer("in", inp.path, "(inline content)", len(data), 0.0, sha)
        rec.sha256_verified = inp.sha256 is not None  # commit() checked it
        return rec
    url = inp.url or ""
    sha = expected_sha(inp)
    if directory and sha is not None:
        raise StagingError("sha256 applies to files, not a DIRECTORY")
    scheme = _scheme(url)
    plain = _strip_fragment(url)
    rec = Transfer("in", inp.path, shown(plain), 0, 0.0)
    rec.sha256_verified = sha is not None  # a file that fails the check is no record at all
    if scheme == "file":
        src = _file_url_path(plain, ctx.file_roots)
        if directory:
            if not src.is_dir():
                raise StagingError(f"{src} is not a directory")
            entries = tree_files(src)
            rec.files = len(entries)
            for path, rel, _n in entries:
                target = dest / rel
                _copy_file(path, target, f"{inp.path}/{rel}", budget)
                rec.size_bytes += target.stat().st_size
            dest.mkdir(parents=True, exist_ok=True)
            return rec
        if not src.is_file():
            raise StagingError(f"{src} is not a file (for a directory declare type DIRECTORY)")
        rec.sha256 = _copy_file(src, dest, inp.path, budget, sha, ctx.progress)
        rec.size_bytes = dest.stat().st_size
        return rec
    if scheme in ("http", "https", "cpnet"):
        if directory:
            raise StagingError(f"DIRECTORY inputs over {scheme} are not supported; use a file")
        headers: dict[str, str] = {}
        if scheme == "cpnet":
            base, headers = _hub(ctx.remote)
            plain = f"{base}/v1/blobs/{_blob_sha(url)}"
        opener = _http_opener(plain, ctx.timeout_s, headers)
        rec.size_bytes, rec.sha256, rec.resumed_from = _fetch(
            opener, plain, dest, inp.path, budget, sha, ctx.retries, ctx.progress
        )
        return rec
    if scheme == "s3":
        s3 = ctx.s3_client()
        bucket, key = _s3_parts(plain)
        if not directory:
            if not key or key.endswith("/"):
                raise StagingError(f"{rec.url} names no object (for a prefix declare DIRECTORY)")
            rec.size_bytes, rec.sha256, rec.resumed_from = _fetch(
                s3.opener(rec.url, bucket, key),
                plain,
                dest,
                inp.path,
                budget,
                sha,
                ctx.retries,
                ctx.progress,
            )
            return rec
        prefix = key if not key or key.endswith("/") else key + "/"
        objects = [(k, n) for k, n in s3.listing(rec.url, bucket, prefix) if not k.endswith("/")]
        budget.check(f"{inp.path} (all of {rec.url})", sum(n for _k, n in objects))
        dest.mkdir(parents=True, exist_ok=True)
        for k, _n in objects:
            rel = safe_rel(k[len(prefix) :], f"object {k!r} under {rec.url}")
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            size, _sha, _resumed = _fetch(
                s3.opener(f"s3://{bucket}/{k}", bucket, k),
                f"s3://{bucket}/{k}",
                target,
                f"{inp.path}/{rel}",
                budget,
                None,
                ctx.retries,
                ctx.progress,
            )
            rec.size_bytes += size
        rec.files = len(objects)
        return rec
    raise StagingError(f"URL scheme {scheme!r} is not supported for inputs")


# ---- outputs -----------------------------------------------------------------------------------


def stage_out(
    outputs: Sequence[Output | model.Output],
    files_dir: Path,
    *,
    max_bytes: int,
    max_file_bytes: int | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    file_roots: Sequence[Path] | None = None,
    remote: Remote | None = None,
    on_transfer: Callable[[Transfer], None] | None = None,
    progress: Progress | None = None,
) -> tuple[list[OutputFileLog], int]:
    """Copy every output out of `files_dir`; return what was written and the bytes moved.

    The records are the lightweight `jobfile.OutputFileLog` (``to_dict`` gives the JSON form
    ``cpnet.tasks.model.OutputFileLog`` reads); a file's record has its sha256 and size.

    Raises StagingError naming the output (missing file, path escaping the work dir, a symlink,
    upload failure, size limit).
    """
    logs: list[OutputFileLog] = []
    budget = Budget(max_bytes, max_file_bytes)
    ctx = _Ctx(files_dir, budget, timeout_s, file_roots, remote, 0, progress)
    for out in outputs:
        started = time.monotonic()
        try:
            if wildcards.has_wildcards(out.path):
                some, rec = _stage_wildcard_out(out, ctx)
            elif out.type == FileType.DIRECTORY and _scheme(out.url) == "cpnet":
                some, rec = _stage_dir_to_blobs(out, ctx)
            else:
                log, rec = _stage_one_out(out, ctx)
                some = [log]
        except (StagingError, OSError) as exc:
            raise StagingError(f"output {out.name or out.path!r}: {exc}") from exc
        rec.seconds = time.monotonic() - started
        logs.extend(some)
        if on_transfer is not None:
            on_transfer(rec)
    return logs, budget.used


def _stage_one_out(out: Output | model.Output, ctx: _Ctx) -> tuple[OutputFileLog, Transfer]:
    src = linkfree_path(ctx.files_dir, out.path)  # path_prefix: ignored without wildcards
    if not src.exists():
        raise StagingError(f"{out.path} was not created by the executors")
    scheme = _scheme(out.url)
    if scheme not in ("file", "http", "https", "s3", "cpnet"):
        raise StagingError(f"URL scheme {scheme!r} is not supported for outputs")
    budget = ctx.budget
    rec = Transfer("out", out.path, shown(out.url), 0, 0.0)
    if out.type == FileType.DIRECTORY:
        if not src.is_dir():
            raise StagingError(f"{out.path} is not a directory")
        if scheme not in ("file", "s3"):
            raise StagingError(
                f"DIRECTORY outputs over {scheme} are not supported; use file, s3 or {BLOB_PREFIX}"
            )
        entries = tree_files(src)
        for _p, rel, n in entries:
            budget.check(f"{out.path}/{rel}", n)
        budget.check(f"{out.path} (all files)", sum(n for _p, _r, n in entries))
        if scheme == "file":
            dest = _file_url_path(out.url, ctx.file_roots)
            dest.mkdir(parents=True, exist_ok=True)
            for path, rel, _n in entries:
                _copy_file(path, dest / rel, f"{out.path}/{rel}", budget)
        else:
            s3 = ctx.s3_client()
            bucket, key = _s3_parts(out.url)
            prefix = key if not key or key.endswith("/") else key + "/"
            for path, rel, n in entries:
                sha = _sha_of(path)
                s3.upload(path, f"s3://{bucket}/{prefix}{rel}", bucket, f"{prefix}{rel}", sha, None)
                budget.add(n)
        rec.size_bytes = sum(n for _p, _r, n in entries)
        rec.files = len(entries)
        return OutputFileLog(url=out.url, path=out.path, size_bytes=rec.size_bytes), rec
    if src.is_symlink() or not src.is_file():
        raise StagingError(f"{out.path} is not a file (for a directory declare type DIRECTORY)")
    url = out.url
    if scheme == "file":
        dest = _file_url_path(out.url, ctx.file_roots)
        sha = _copy_file(src, dest, out.path, budget, None, ctx.progress)
        size = dest.stat().st_size
    else:
        size = src.stat().st_size
        budget.check(out.path, size)
        sha = _sha_of(src)
        if scheme == "s3":
            bucket, key = _s3_parts(out.url)
            if not key or key.endswith("/"):
                raise StagingError(f"{rec.url} names no object key for a file output")
            sent = [0]

            def moved(n: int) -> None:
                sent[0] += n
                if ctx.progress is not None:
                    ctx.progress(out.path, sent[0], size)

            ctx.s3_client().upload(src, rec.url, bucket, key, sha, moved)
        elif scheme == "cpnet":
            url = _upload_blob(src, out.url, size, sha, ctx, out.path)
            rec.sha256_verified = True  # the hub answered the same sha256
        else:
            _put(src, out.url, size, ctx.timeout_s, {}, _sent(ctx.progress, out.path, size))
        budget.add(size)
    rec.size_bytes, rec.sha256, rec.url = size, sha, shown(url)
    return OutputFileLog(url=url, path=out.path, size_bytes=size, sha256=sha), rec


def _sent(progress: Progress | None, what: str, size: int) -> Callable[[int], None] | None:
    """An upload's progress callback (bytes sent so far) for `progress`, or None."""
    if progress is None:
        return None
    return lambda done: progress(what, done, size)


def _body(src: Path, sent: Callable[[int], None] | None = None) -> Iterator[bytes]:
    done = 0
    with src.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            yield chunk
            done += len(chunk)  # asked for the next chunk: this one went out
            if sent is not None:
                sent(done)


def _put(
    src: Path,
    url: str,
    size: int,
    timeout_s: float,
    headers: dict[str, str],
    sent: Callable[[int], None] | None = None,
) -> Any:
    """PUT the file at `url` (with an explicit length: pre-signed URLs refuse chunked uploads);
    return the response."""
    import httpx

    try:
        with httpx.Client(timeout=timeout_s, follow_redirects=False) as client:
            resp = client.put(
                url, content=_body(src, sent), headers={**headers, "Content-Length": str(size)}
            )
    except httpx.HTTPError as exc:
        raise StagingError(f"PUT {shown(url)}: {type(exc).__name__}: {exc}") from exc
    if not resp.is_success:
        raise StagingError(f"PUT {shown(url)}: HTTP {resp.status_code}{_error_detail(resp)}")
    return resp


def _error_detail(resp: Any) -> str:
    """': <message>' from a cpnet-shaped JSON error body (the hub's), else ''; reads at most
    4 KiB of a streamed body."""
    body = b""
    with contextlib.suppress(Exception):
        for chunk in resp.iter_bytes():
            body += chunk
            if len(body) > 4096:
                return ""
    if not body:
        with contextlib.suppress(Exception):
            body = resp.content[:4096]
    with contextlib.suppress(ValueError, KeyError, TypeError):
        return ": " + str(json.loads(body)["error"]["message"])[:512]
    return ""


def _upload_blob(src: Path, url: str, size: int, sha: str, ctx: _Ctx, what: str) -> str:
    """Store the file in the hub's blob store; return its ``cpnet://blobs/<sha256>`` URL."""
    if _strip_fragment(url).rstrip("/") + "/" != BLOB_PREFIX:
        raise StagingError(f"an output to the hub's blob store has the URL {BLOB_PREFIX!r}")
    base, headers = _hub(ctx.remote)
    attempt = quote((ctx.remote.attempt_id if ctx.remote else None) or "", safe="")
    sent = _sent(ctx.progress, what, size)
    resp = _put(src, f"{base}/v1/blobs?attempt_id={attempt}", size, ctx.timeout_s, headers, sent)
    got = str(resp.json().get("sha256", "")).removeprefix("sha256:")
    if got != sha:
        raise StagingError(f"the hub stored sha256 {got or '(none)'}, the file has {sha}")
    return BLOB_PREFIX + sha


# ---- wildcard outputs (TES 1.1 path_prefix) and DIRECTORY outputs to the blob store -----------

MAX_OUTPUT_LOG_BYTES = 512 * 1024  # an attempt's output file logs as JSON: they ride one update


def match_files(
    files_dir: Path, pattern: str, limit: int = wildcards.MAX_MATCHES
) -> list[tuple[Path, str, int]]:
    """Every regular file `pattern` matches under `files_dir`: (path, task path, size), sorted.

    The task path has the pattern's form (``/data/out/a.txt`` for ``/data/*/a.txt``). A matched
    directory adds every file below it. Symlinks are never followed: one that a pattern
    component reaches (or that lies below a matched directory) is an error, and so is a fifo or
    socket the pattern names; more than `limit` files is an error too.
    """
    if "\x00" in pattern or ".." in pattern.split("/"):
        raise StagingError(f"path {pattern!r} contains '..' or NUL; outputs stay in the work dir")
    comps = wildcards.compile_pattern(pattern)
    lead = "/" if pattern.startswith("/") else ""
    level: list[tuple[Path, str]] = [(files_dir.resolve(), "")]
    found: list[tuple[Path, str, int]] = []
    seen = 0  # names matched at any depth: a pattern over a huge tree stops too

    def too_many() -> StagingError:
        return StagingError(
            f"{pattern} matches more than {limit} files; match fewer (or archive them into one "
            "file) — the limit keeps each attempt's output logs reportable"
        )

    for depth, comp in enumerate(comps):
        last = depth == len(comps) - 1
        nxt: list[tuple[Path, str]] = []
        for directory, shown_as in level:
            if comp.literal is not None:
                names = [comp.literal]
                if not os.path.lexists(directory / comp.literal):
                    continue
            else:
                try:
                    names = sorted(e.name for e in os.scandir(directory) if comp.matches(e.name))
                except (FileNotFoundError, NotADirectoryError):
                    continue
            for name in names:
                seen += 1
                if seen > limit * 10:
                    raise StagingError(
                        f"{pattern} matches more than {limit * 10} names on its way (directories "
                        "included); use a narrower pattern"
                    )
                here, task = directory / name, f"{shown_as}/{name}" if shown_as else name
                if here.is_symlink():
                    raise StagingError(
                        f"{lead}{task} is a symlink (to {os.readlink(here)!r}); outputs are "
                        "never collected through symlinks"
                    )
                if not last:
                    if here.is_dir():
                        nxt.append((here, task))
                elif here.is_dir():
                    for path, rel, size in tree_files(here):
                        found.append((path, f"{lead}{task}/{rel}", size))
                elif here.is_file():
                    found.append((here, lead + task, here.stat().st_size))
                else:
                    raise StagingError(f"{lead}{task} is neither a file nor a directory")
                if len(found) > limit:
                    raise too_many()
        level = nxt
    return sorted(found, key=lambda f: f[1])


def _join_url(url: str, rel: str) -> str:
    """`rel` (a plain relative path) under the directory `url` names; no query or fragment."""
    parts = urlsplit(url)
    base = parts.path.rstrip("/")
    path = f"{base}/{rel}" if parts.scheme.lower() == "s3" else f"{base}/{quote(rel)}"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _upload_many(
    out: Output | model.Output, entries: list[tuple[Path, str, int, str]], ctx: _Ctx
) -> list[OutputFileLog]:
    """Upload each (file, task path, size, name under the URL) to `out.url`; a log per file.

    Every limit is checked before the first byte moves: per file, per task, the files of one
    attempt and the size of their logs.
    """
    scheme = _scheme(out.url)
    if scheme not in ("file", "s3", "cpnet"):
        raise StagingError(
            f"many files go to a directory under file://, s3:// or {BLOB_PREFIX}, not {scheme}"
        )
    budget = ctx.budget
    for _src, task, size, _rel in entries:
        budget.check(task, size)
    budget.check(f"{out.path} (all {len(entries)} files)", sum(e[2] for e in entries))
    ctx.many_files += len(entries)
    if ctx.many_files > wildcards.MAX_MATCHES:
        raise StagingError(
            f"the task's outputs name {ctx.many_files} files, more than the "
            f"{wildcards.MAX_MATCHES} one attempt may log"
        )
    blob_url = len(BLOB_PREFIX) + 64
    for _src, task, _size, rel in entries:
        url_len = blob_url if scheme == "cpnet" else len(_join_url(out.url, rel).encode())
        ctx.log_bytes += url_len + len(task.encode()) + 140  # the other keys, a sha256, a size
    if ctx.log_bytes > MAX_OUTPUT_LOG_BYTES:
        raise StagingError(
            f"the output logs of {ctx.many_files} files would take about {ctx.log_bytes} "
            f"bytes, over the {MAX_OUTPUT_LOG_BYTES} an attempt reports to the hub; match "
            "fewer files or use a DIRECTORY output to file:// or s3://"
        )
    logs: list[OutputFileLog] = []
    base = _file_url_path(out.url, ctx.file_roots) if scheme == "file" else None
    bucket, key = _s3_parts(out.url) if scheme == "s3" else ("", "")
    prefix = key if not key or key.endswith("/") else key + "/"
    for src, task, size, rel in entries:
        if base is not None:
            sha = _copy_file(src, base / rel, task, budget, None, ctx.progress)
            url = _join_url(out.url, rel)
        elif scheme == "s3":
            url = f"s3://{bucket}/{prefix}{rel}"
            sha = _sha_of(src)
            moved = _adding(_sent(ctx.progress, task, size))
            ctx.s3_client().upload(src, url, bucket, f"{prefix}{rel}", sha, moved)
            budget.add(size)
        else:
            sha = _sha_of(src)
            url = _upload_blob(src, out.url, size, sha, ctx, task)
            budget.add(size)
        logs.append(OutputFileLog(url=url, path=task, size_bytes=size, sha256=sha))
    return logs


def _adding(sent: Callable[[int], None] | None) -> Callable[[int], None] | None:
    """boto3's upload callback (bytes sent since the last call) feeding `sent` (bytes so far)."""
    if sent is None:
        return None
    total = [0]

    def add(n: int) -> None:
        total[0] += n
        sent(total[0])

    return add


def _stage_wildcard_out(
    out: Output | model.Output, ctx: _Ctx
) -> tuple[list[OutputFileLog], Transfer]:
    """Every file `out.path` matches, each to `out.url` + its path without `path_prefix`.

    No match is not an error (the spec says nothing; Funnel uploads nothing and goes on): the
    record says so and the runner puts that in the system log.
    """
    problem = wildcards.check_output(out.path, out.path_prefix)
    if problem is not None:
        raise StagingError(f"{problem[0]}: {problem[1]}")
    assert out.path_prefix is not None  # check_output requires it
    rec = Transfer("out", out.path, shown(out.url), 0, 0.0, wildcard=True)
    matches = match_files(ctx.files_dir, out.path)
    entries = []
    for src, task, size in matches:
        try:
            rel = wildcards.prune(task, out.path_prefix)
        except ValueError as exc:
            raise StagingError(str(exc)) from None
        entries.append((src, task, size, str(safe_rel(rel, f"{task} without path_prefix"))))
    logs = _upload_many(out, entries, ctx) if entries else []
    rec.files, rec.size_bytes = len(logs), sum(log.size_bytes for log in logs)
    return logs, rec


def _stage_dir_to_blobs(
    out: Output | model.Output, ctx: _Ctx
) -> tuple[list[OutputFileLog], Transfer]:
    """A DIRECTORY output to the hub's blob store: each file a blob, logged with its path."""
    src = linkfree_path(ctx.files_dir, out.path)
    if not src.is_dir():
        raise StagingError(f"{out.path} is not a directory")
    entries = [
        (path, f"{out.path.rstrip('/')}/{rel}", size, str(rel))
        for path, rel, size in tree_files(src)
    ]
    rec = Transfer("out", out.path, shown(out.url), 0, 0.0)
    logs = _upload_many(out, entries, ctx)
    rec.files, rec.size_bytes = len(logs), sum(log.size_bytes for log in logs)
    return logs, rec
