"""``file://`` URLs: paths on this host, copied (never linked) in and out.

Only local paths (no host, or ``localhost``), absolute, and under the agent's ``file_roots``
when it sets them. A DIRECTORY is a directory tree, copied file by file without symlinks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from cpnet.agent.jobfile import OutputFileLog
from cpnet.agent.staging.errors import StagingError
from cpnet.agent.staging.landing import copy_file
from cpnet.agent.staging.paths import tree_files
from cpnet.agent.staging.scheme import Scheme
from cpnet.agent.staging.urls import join_url

TYPE_CHECKING = False  # not typing's: the runner imports this package and must start fast
if TYPE_CHECKING:
    from cpnet.agent.staging.records import Progress
    from cpnet.agent.staging.scheme import Member


def file_url_path(url: str, file_roots: Sequence[Path] | None) -> Path:
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


class File(Scheme):
    """Copies to and from this host's file system."""

    dir_inputs = True
    dir_outputs = True
    file_sets = True

    def fetch(self, url: str, dest: Path, what: str, sha: str | None) -> tuple[int, str, int]:
        src = file_url_path(url, self.ctx.file_roots)
        if not src.is_file():
            raise StagingError(f"{src} is not a file (for a directory declare type DIRECTORY)")
        got = copy_file(src, dest, what, self.ctx.budget, sha, self.ctx.progress)
        return dest.stat().st_size, got, 0

    def fetch_tree(self, url: str, dest: Path, what: str) -> tuple[int, int]:
        src = file_url_path(url, self.ctx.file_roots)
        if not src.is_dir():
            raise StagingError(f"{src} is not a directory")
        entries = tree_files(src)
        size = 0
        for path, rel, _n in entries:
            target = dest / rel
            copy_file(path, target, f"{what}/{rel}", self.ctx.budget)
            size += target.stat().st_size
        dest.mkdir(parents=True, exist_ok=True)
        return len(entries), size

    def put(self, src: Path, url: str, what: str) -> OutputFileLog:
        dest = file_url_path(url, self.ctx.file_roots)
        sha = copy_file(src, dest, what, self.ctx.budget, None, self.ctx.progress)
        return OutputFileLog(url=url, path=what, size_bytes=dest.stat().st_size, sha256=sha)

    def put_tree(
        self, url: str, members: Sequence[Member], progress: Progress | None, whole: bool = False
    ) -> list[OutputFileLog]:
        base = file_url_path(url, self.ctx.file_roots)
        if whole:
            base.mkdir(parents=True, exist_ok=True)
        logs = []
        for src, task, size, rel in members:
            sha = copy_file(src, base / rel, task, self.ctx.budget, None, progress)
            member = self.member_url(url, rel)
            logs.append(OutputFileLog(url=member, path=task, size_bytes=size, sha256=sha))
        return logs

    def log_url_bytes(self, url: str, rel: str) -> int:
        return len(self.member_url(url, rel).encode())

    @staticmethod
    def member_url(url: str, rel: str) -> str:
        """The URL of the file `rel` below the directory `url` (the path percent-encoded)."""
        return join_url(url, quote(rel))
