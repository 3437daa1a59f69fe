"""Stage-out: every output copied out of the attempt's files dir after the executors succeed.

An output is a file, a DIRECTORY (one directory at the URL, or its files one by one where the
far end has no directories: the hub's blob store, filesets.py), or a wildcard pattern
(filesets.py). Nothing
is collected through a symlink; every file output is logged with its sha256 and size.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from cpnet.agent.jobfile import FileType, Output, OutputFileLog
from cpnet.agent.staging.blobs import BLOB_PREFIX
from cpnet.agent.staging.context import Context, Remote
from cpnet.agent.staging.errors import StagingError
from cpnet.agent.staging.filesets import stage_dir_as_files, stage_wildcard_out
from cpnet.agent.staging.limits import DEFAULT_TIMEOUT_S, Budget
from cpnet.agent.staging.paths import linkfree_path, tree_files
from cpnet.agent.staging.records import Progress, Transfer
from cpnet.agent.staging.urls import scheme_of, shown
from cpnet.tasks import wildcards

TYPE_CHECKING = False  # not typing's: the runner imports this package and must start fast
if TYPE_CHECKING:
    from cpnet.agent.staging.scheme import Scheme
    from cpnet.tasks import model


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
    ctx = Context(files_dir, budget, timeout_s, file_roots, remote or Remote(), 0, progress)
    for out in outputs:
        started = time.monotonic()
        try:
            some, rec = _stage_one(out, ctx)
        except (StagingError, OSError) as exc:
            raise StagingError(f"output {out.name or out.path!r}: {exc}") from exc
        rec.seconds = time.monotonic() - started
        logs.extend(some)
        if on_transfer is not None:
            on_transfer(rec)
    return logs, budget.used


def _stage_one(out: Output | model.Output, ctx: Context) -> tuple[list[OutputFileLog], Transfer]:
    """One output, whatever its kind: its file logs and its record."""
    if wildcards.has_wildcards(out.path):
        return stage_wildcard_out(out, ctx)
    scheme = ctx.scheme(scheme_of(out.url))
    directory = out.type == FileType.DIRECTORY
    if directory and scheme is not None and scheme.file_sets and not scheme.dir_outputs:
        return stage_dir_as_files(out, ctx)
    src = linkfree_path(ctx.files_dir, out.path)  # path_prefix: ignored without wildcards
    if not src.exists():
        raise StagingError(f"{out.path} was not created by the executors")
    if scheme is None:
        raise StagingError(f"URL scheme {scheme_of(out.url)!r} is not supported for outputs")
    rec = Transfer("out", out.path, shown(out.url), 0, 0.0)
    if directory:
        return [_stage_dir(out, src, scheme, ctx, rec)], rec
    if src.is_symlink() or not src.is_file():
        raise StagingError(f"{out.path} is not a file (for a directory declare type DIRECTORY)")
    log = scheme.put(src, out.url, out.path)
    rec.size_bytes, rec.sha256, rec.url = log.size_bytes, log.sha256, shown(log.url)
    rec.sha256_verified = scheme.verifies_uploads  # the far end answered the same sha256
    return [log], rec


def _stage_dir(
    out: Output | model.Output, src: Path, scheme: Scheme, ctx: Context, rec: Transfer
) -> OutputFileLog:
    """A DIRECTORY output kept as one directory: one log with the total size, no sha256."""
    if not src.is_dir():
        raise StagingError(f"{out.path} is not a directory")
    if not scheme.dir_outputs:
        raise StagingError(
            f"DIRECTORY outputs over {scheme_of(out.url)} are not supported; use file, s3 or "
            f"{BLOB_PREFIX}"
        )
    members = [(path, f"{out.path}/{rel}", n, str(rel)) for path, rel, n in tree_files(src)]
    for _p, task, n, _r in members:
        ctx.budget.check(task, n)
    total = sum(n for _p, _t, n, _r in members)
    ctx.budget.check(f"{out.path} (all files)", total)
    scheme.put_tree(out.url, members, None, whole=True)
    rec.size_bytes, rec.files = total, len(members)
    return OutputFileLog(url=out.url, path=out.path, size_bytes=rec.size_bytes)
