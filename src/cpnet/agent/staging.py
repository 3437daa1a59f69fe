"""Data staging: inputs into an attempt's files dir before it runs, outputs out of it after.

Sources: inline content, ``file://`` (a path on this host), ``http(s)://`` (streamed GET).
Destinations: ``file://`` and ``http(s)://`` (PUT). Every task path is re-rooted under the files
dir (TES-style ``/data/x`` becomes ``files/data/x``) and must stay there after symlinks are
resolved, so neither a task spec nor a symlink an executor created can reach outside.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit, urlunsplit

from cpnet.agent.jobfile import FileType, Input, Output, OutputFileLog

TYPE_CHECKING = False  # not typing's: the runner imports this module and must start fast
if TYPE_CHECKING:
    # Callers in the agent (and tests) pass the pydantic models; the runner, which must not pay
    # for importing pydantic, passes the jobfile dataclasses. Staging reads only the attributes
    # both have, and compares types with == (the two FileType enums are equal by value).
    from cpnet.tasks import model

CHUNK_BYTES = 1024 * 1024  # read/write unit for copies and transfers
DEFAULT_TIMEOUT_S = 60.0  # per network operation (connect, each read/write), not per file
MAX_REDIRECTS = 5


class StagingError(Exception):
    """Raised when an input or output cannot be staged; the message says which and why."""


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


def _check_sha(expected: str | None, actual: str) -> None:
    if expected is not None and expected.lower() != actual:
        raise StagingError(f"sha256 mismatch: expected {expected.lower()}, got {actual}")


def _budget(size: int, budget: int) -> None:
    if size > budget:
        raise StagingError(f"{size} bytes exceed the {budget} bytes left of the staging limit")


class _Landing:
    """A temp file next to `dest` that becomes `dest` only when complete (atomic rename)."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        self.tmp = Path(name)
        self.file = os.fdopen(fd, "wb")
        self.size = 0
        self.hash = hashlib.sha256()

    def write(self, chunk: bytes, budget: int) -> None:
        self.size += len(chunk)
        _budget(self.size, budget)
        self.hash.update(chunk)
        self.file.write(chunk)

    def commit(self, expected_sha: str | None, mode_from: Path | None = None) -> None:
        self.file.close()
        _check_sha(expected_sha, self.hash.hexdigest())
        if mode_from is not None:
            shutil.copymode(mode_from, self.tmp)  # keep scripts executable
        os.replace(self.tmp, self.dest)

    def __enter__(self) -> _Landing:
        return self

    def __exit__(self, *exc: object) -> None:
        # On success commit() renamed tmp away; on any failure remove the partial file.
        self.file.close()
        self.tmp.unlink(missing_ok=True)


def _copy_file(src: Path, dest: Path, budget: int, expected_sha: str | None = None) -> str:
    """Copy one file via a landing file; return its sha256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    _budget(src.stat().st_size, budget)
    with _Landing(dest) as landing, src.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            landing.write(chunk, budget)
        landing.commit(expected_sha, mode_from=src)
        return landing.hash.hexdigest()


def _tree_bytes(root: Path) -> int:
    """Bytes in the regular files under `root`, not following symlinks."""
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if not os.path.islink(os.path.join(dirpath, name)):
                total += st.st_size
    return total


# ---- inputs ------------------------------------------------------------------------------------


def stage_in(
    inputs: Sequence[Input | model.Input],
    files_dir: Path,
    *,
    max_bytes: int,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    file_roots: Sequence[Path] | None = None,
) -> int:
    """Place every input under `files_dir`; return the bytes staged.

    `max_bytes` caps the total; `file_roots`, when given, limits which host paths file:// may
    read. Raises StagingError naming the input.
    """
    files_dir.mkdir(parents=True, exist_ok=True)
    total = 0
    for inp in inputs:
        try:
            total += _stage_one_in(inp, files_dir, max_bytes - total, timeout_s, file_roots)
        except StagingError as exc:
            raise StagingError(f"input {inp.name or inp.path!r}: {exc}") from exc
        except OSError as exc:
            raise StagingError(f"input {inp.name or inp.path!r}: {exc}") from exc
    return total


def _stage_one_in(
    inp: Input | model.Input,
    files_dir: Path,
    budget: int,
    timeout_s: float,
    file_roots: Sequence[Path] | None,
) -> int:
    dest = task_path(files_dir, inp.path)
    if dest == files_dir.resolve():
        raise StagingError("an input cannot replace the whole work dir")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if inp.content is not None:
        if inp.type == FileType.DIRECTORY:
            raise StagingError("inline content makes a file, not a DIRECTORY")
        data = inp.content.encode("utf-8")
        with _Landing(dest) as landing:
            landing.write(data, budget)
            landing.commit(inp.sha256)
        return len(data)
    url = inp.url or ""
    scheme = _scheme(url)
    if scheme == "file":
        src = _file_url_path(url, file_roots)
        if inp.type == FileType.DIRECTORY:
            if not src.is_dir():
                raise StagingError(f"{src} is not a directory")
            if inp.sha256 is not None:
                raise StagingError("sha256 applies to files, not a DIRECTORY")
            size = _tree_bytes(src)
            _budget(size, budget)
            # Links are kept as links: following them could copy half the host.
            shutil.copytree(src, dest, symlinks=True, dirs_exist_ok=True)
            return size
        if not src.is_file():
            raise StagingError(f"{src} is not a file (for a directory declare type DIRECTORY)")
        _copy_file(src, dest, budget, inp.sha256)
        return dest.stat().st_size
    if scheme in ("http", "https"):
        if inp.type == FileType.DIRECTORY:
            raise StagingError("DIRECTORY inputs over http(s) are not supported; use a file")
        return _download(url, dest, budget, timeout_s, inp.sha256)
    if scheme == "s3":
        raise StagingError("s3 staging arrives with the object-storage backend")
    raise StagingError(f"URL scheme {scheme!r} is not supported for inputs")


def _download(url: str, dest: Path, budget: int, timeout_s: float, sha: str | None) -> int:
    """GET `url` into `dest` through a landing file, within `budget` bytes."""
    import httpx  # only tasks with http inputs pay for it: the runner must start fast

    try:
        with (
            httpx.Client(
                timeout=timeout_s, follow_redirects=True, max_redirects=MAX_REDIRECTS
            ) as client,
            client.stream("GET", url) as resp,
        ):
            if not resp.is_success:
                raise StagingError(f"GET {shown(url)}: HTTP {resp.status_code}")
            declared = resp.headers.get("content-length")
            if declared is not None and declared.isdigit():
                _budget(int(declared), budget)
            with _Landing(dest) as landing:
                for chunk in resp.iter_bytes(CHUNK_BYTES):
                    landing.write(chunk, budget)
                landing.commit(sha)
                return landing.size
    except httpx.HTTPError as exc:
        raise StagingError(f"GET {shown(url)}: {type(exc).__name__}: {exc}") from exc


# ---- outputs -----------------------------------------------------------------------------------


def stage_out(
    outputs: Sequence[Output | model.Output],
    files_dir: Path,
    *,
    max_bytes: int,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    file_roots: Sequence[Path] | None = None,
) -> tuple[list[OutputFileLog], int]:
    """Copy every output out of `files_dir`; return what was written and the bytes moved.

    The records are the lightweight `jobfile.OutputFileLog` (``to_dict`` gives the JSON form
    ``cpnet.tasks.model.OutputFileLog`` reads).

    Raises StagingError naming the output (missing file, path escaping the work dir, upload
    failure, size limit).
    """
    logs: list[OutputFileLog] = []
    total = 0
    for out in outputs:
        try:
            log = _stage_one_out(out, files_dir, max_bytes - total, timeout_s, file_roots)
        except StagingError as exc:
            raise StagingError(f"output {out.name or out.path!r}: {exc}") from exc
        except OSError as exc:
            raise StagingError(f"output {out.name or out.path!r}: {exc}") from exc
        logs.append(log)
        total += log.size_bytes
    return logs, total


def _stage_one_out(
    out: Output | model.Output,
    files_dir: Path,
    budget: int,
    timeout_s: float,
    file_roots: Sequence[Path] | None,
) -> OutputFileLog:
    if out.path_prefix is not None:
        raise StagingError("path_prefix (wildcard outputs) is not supported yet")
    src = task_path(files_dir, out.path)
    if not src.exists():
        raise StagingError(f"{out.path} was not created by the executors")
    scheme = _scheme(out.url)
    if scheme == "s3":
        raise StagingError("s3 staging arrives with the object-storage backend")
    if scheme not in ("file", "http", "https"):
        raise StagingError(f"URL scheme {scheme!r} is not supported for outputs")
    if out.type == FileType.DIRECTORY:
        if not src.is_dir():
            raise StagingError(f"{out.path} is not a directory")
        if scheme != "file":
            raise StagingError("DIRECTORY outputs over http(s) are not supported; use file://")
        entries = _tree(src, files_dir.resolve())
        size = sum(n for _src, _rel, n in entries)
        _budget(size, budget)
        dest = _file_url_path(out.url, file_roots)
        dest.mkdir(parents=True, exist_ok=True)
        for file_src, rel, _n in entries:
            _copy_file(file_src, dest / rel, budget)
        return OutputFileLog(url=out.url, path=out.path, size_bytes=size)
    if not src.is_file():
        raise StagingError(f"{out.path} is not a file (for a directory declare type DIRECTORY)")
    if scheme == "file":
        dest = _file_url_path(out.url, file_roots)
        sha = _copy_file(src, dest, budget)
        size = dest.stat().st_size
    else:
        size, sha = _upload(src, out.url, budget, timeout_s)
    return OutputFileLog(url=out.url, path=out.path, size_bytes=size, sha256=sha)


def _tree(top: Path, root: Path) -> list[tuple[Path, PurePosixPath, int]]:
    """Every regular file under `top` as (real path, path relative to top, size).

    Symlinks are followed but must stay inside `root`; a directory reached twice (a symlink
    loop) and anything that is neither file nor directory (dangling link, fifo) is refused.
    """
    found: list[tuple[Path, PurePosixPath, int]] = []
    seen: set[tuple[int, int]] = set()
    stack = [(top, PurePosixPath())]
    while stack:
        directory, rel = stack.pop()
        st = directory.stat()
        if (st.st_dev, st.st_ino) in seen:
            raise StagingError(f"{rel} is reached twice (a symlink loop or a duplicate link)")
        seen.add((st.st_dev, st.st_ino))
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            entry_rel = rel / entry.name
            real = Path(entry.path).resolve()
            if real != root and not real.is_relative_to(root):
                raise StagingError(f"{entry_rel} resolves to {real}, outside the task's work dir")
            if real.is_dir():
                stack.append((real, entry_rel))
            elif real.is_file():
                found.append((real, entry_rel, real.stat().st_size))
            else:
                raise StagingError(f"{entry_rel} is neither a file nor a directory")
    return found


def _upload(src: Path, url: str, budget: int, timeout_s: float) -> tuple[int, str]:
    """PUT the file at `url`; return (bytes, sha256)."""
    size = src.stat().st_size
    _budget(size, budget)
    digest = hashlib.sha256()
    with src.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)

    def body() -> Iterator[bytes]:
        with src.open("rb") as f:
            while chunk := f.read(CHUNK_BYTES):
                yield chunk

    import httpx

    try:
        with httpx.Client(timeout=timeout_s, follow_redirects=False) as client:
            # An explicit length: pre-signed object-store URLs refuse chunked uploads.
            resp = client.put(url, content=body(), headers={"Content-Length": str(size)})
    except httpx.HTTPError as exc:
        raise StagingError(f"PUT {shown(url)}: {type(exc).__name__}: {exc}") from exc
    if not resp.is_success:
        raise StagingError(f"PUT {shown(url)}: HTTP {resp.status_code}")
    return size, digest.hexdigest()
