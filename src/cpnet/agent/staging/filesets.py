"""Outputs staged as sets of files, a log each: wildcard outputs (TES 1.1 ``path_prefix``) and
DIRECTORY outputs to the hub's blob store (which has no directories).

A wildcard output stages every file its pattern matches in the work dir to the output's URL plus
the file's path without the prefix. The logs of a set travel to the hub in one update, so the
number of files and the size of their logs are limited per attempt, as well as the bytes; every
limit is checked before the first byte of a set moves.
"""

from __future__ import annotations

import os
from pathlib import Path

from cpnet.agent.jobfile import Output, OutputFileLog
from cpnet.agent.staging.blobs import BLOB_PREFIX
from cpnet.agent.staging.errors import StagingError
from cpnet.agent.staging.limits import MAX_OUTPUT_LOG_BYTES
from cpnet.agent.staging.paths import linkfree_path, safe_rel, tree_files
from cpnet.agent.staging.records import Transfer
from cpnet.agent.staging.urls import scheme_of, shown
from cpnet.tasks import wildcards

TYPE_CHECKING = False  # not typing's: the runner imports this package and must start fast
if TYPE_CHECKING:
    from cpnet.agent.staging.context import Context
    from cpnet.tasks import model

# Bytes of an output file log as JSON besides its URL and task path: the keys, a sha256, a size.
LOG_OVERHEAD_BYTES = 140


def stage_wildcard_out(
    out: Output | model.Output, ctx: Context
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
    logs = put_file_set(out, entries, ctx) if entries else []
    rec.files, rec.size_bytes = len(logs), sum(log.size_bytes for log in logs)
    return logs, rec


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
    for depth, comp in enumerate(comps):
        last = depth == len(comps) - 1
        nxt: list[tuple[Path, str]] = []
        for directory, shown_as in level:
            for name in _names(directory, comp):
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
                    raise StagingError(
                        f"{pattern} matches more than {limit} files; match fewer (or archive them "
                        "into one file) — the limit keeps each attempt's output logs reportable"
                    )
        level = nxt
    return sorted(found, key=lambda f: f[1])


def _names(directory: Path, comp: wildcards.Component) -> list[str]:
    """The names in `directory` one pattern component matches (none if it is no directory)."""
    if comp.literal is not None:
        return [comp.literal] if os.path.lexists(directory / comp.literal) else []
    try:
        return sorted(e.name for e in os.scandir(directory) if comp.matches(e.name))
    except (FileNotFoundError, NotADirectoryError):
        return []


def stage_dir_as_files(
    out: Output | model.Output, ctx: Context
) -> tuple[list[OutputFileLog], Transfer]:
    """A DIRECTORY output where the far end has no directories (the hub's blob store): each file
    stored on its own, logged with its path."""
    src = linkfree_path(ctx.files_dir, out.path)
    if not src.is_dir():
        raise StagingError(f"{out.path} is not a directory")
    entries = [
        (path, f"{out.path.rstrip('/')}/{rel}", size, str(rel))
        for path, rel, size in tree_files(src)
    ]
    rec = Transfer("out", out.path, shown(out.url), 0, 0.0)
    logs = put_file_set(out, entries, ctx)
    rec.files, rec.size_bytes = len(logs), sum(log.size_bytes for log in logs)
    return logs, rec


def put_file_set(
    out: Output | model.Output, entries: list[tuple[Path, str, int, str]], ctx: Context
) -> list[OutputFileLog]:
    """Upload each (file, task path, size, name under the URL) to `out.url`; a log per file.

    Every limit is checked before the first byte moves: per file, per task, the files of one
    attempt and the size of their logs.
    """
    name = scheme_of(out.url)
    scheme = ctx.scheme(name)
    if scheme is None or not scheme.file_sets:
        raise StagingError(
            f"many files go to a directory under file://, s3:// or {BLOB_PREFIX}, not {name}"
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
    for _src, task, _size, rel in entries:
        url_bytes = scheme.log_url_bytes(out.url, rel)
        ctx.log_bytes += url_bytes + len(task.encode()) + LOG_OVERHEAD_BYTES
    if ctx.log_bytes > MAX_OUTPUT_LOG_BYTES:
        raise StagingError(
            f"the output logs of {ctx.many_files} files would take about {ctx.log_bytes} "
            f"bytes, over the {MAX_OUTPUT_LOG_BYTES} an attempt reports to the hub; match "
            "fewer files or use a DIRECTORY output to file:// or s3://"
        )
    return scheme.put_tree(out.url, entries, ctx.progress)
