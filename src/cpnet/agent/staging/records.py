"""What staging reports: a record per staged input or output, and progress while bytes move."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

TYPE_CHECKING = False  # not typing's: the runner imports this package and must start fast
if TYPE_CHECKING:
    from typing import Any

Progress = Callable[[str, int, "int | None"], None]  # (task path, bytes so far, total or None)


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


def sent_progress(progress: Progress | None, what: str, size: int) -> Callable[[int], None] | None:
    """An upload's progress callback (bytes sent so far) for `progress`, or None."""
    if progress is None:
        return None
    return lambda done: progress(what, done, size)
