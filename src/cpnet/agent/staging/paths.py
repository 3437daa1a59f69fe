"""Task paths and their safety rules: everything stays under the files dir, nothing via a link.

Every task path is re-rooted under the files dir (TES-style ``/data/x`` becomes ``files/data/x``);
``..`` is refused, and so is any symlink: in a DIRECTORY input, on the path of an output, inside
a DIRECTORY output (an executor may plant one before outputs are collected). Relative paths from
a remote listing (S3 keys under a DIRECTORY prefix) must be plain.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from cpnet.agent.staging.errors import StagingError


def _parts(path: str) -> list[str]:
    """The components of a task path, without the root and ``.``."""
    return [p for p in PurePosixPath(path).parts if p not in ("/", ".")]


def task_path(files_dir: Path, path: str) -> Path:
    """Re-root a task path under `files_dir` and resolve symlinks; refuse anything outside.

    The path need not exist yet; symlinks in the part that exists are followed, so a link that
    points outside the files dir is refused like a literal ``..``.
    """
    if "\x00" in path:
        raise StagingError(f"path {path!r} contains NUL")
    parts = _parts(path)
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
    for part in _parts(path):
        here = here / part
        if here.is_symlink():
            raise StagingError(
                f"{path}: {here.relative_to(root)} is a symlink; outputs are never collected "
                "through symlinks"
            )
    return resolved


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
