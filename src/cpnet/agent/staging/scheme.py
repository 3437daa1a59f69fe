"""The interface of one URL scheme: how files move between such URLs and the work dir.

Each scheme (file.py, http.py, s3.py, blobs.py) subclasses `Scheme`; registry.py maps URL schemes
to them. The orchestration (inputs.py, outputs.py, filesets.py) does what all share: task
paths and their safety rules, the limits over the whole task, checksums asked for, records.
A scheme moves bytes, charging each file to ``ctx.budget`` as it lands or leaves.

What a scheme can do is data (the class attributes below): the orchestration refuses a DIRECTORY
or a set of files over a scheme that cannot take one before anything moves, naming the scheme.
The methods a scheme's attributes do not promise are never called.
"""

from __future__ import annotations

from pathlib import Path

TYPE_CHECKING = False  # not typing's: the runner imports this package and must start fast
if TYPE_CHECKING:
    from collections.abc import Sequence

    from cpnet.agent.jobfile import OutputFileLog
    from cpnet.agent.staging.context import Context
    from cpnet.agent.staging.records import Progress

    # One file of a set going to a directory URL: (the file, its task path, its size, its path
    # below the URL, a plain relative path).
    Member = tuple[Path, str, int, str]


class Scheme:
    """Moves files between one kind of URL and the work dir; one instance per staging call."""

    dir_inputs = False  # DIRECTORY inputs (a directory tree, a key prefix): `fetch_tree`
    dir_outputs = False  # DIRECTORY outputs as one directory with one log: `put_tree(whole=True)`
    # Many files below one URL, a log each (`put_tree`): wildcard outputs, and DIRECTORY outputs
    # where the far end has no directories (then dir_outputs is False).
    file_sets = False
    verifies_uploads = False  # `put` checks the far end's sha256 against the file's

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @staticmethod
    def checksum(url: str) -> str | None:
        """The sha256 the URL itself names (a content address), or None; raises StagingError
        for a URL of this scheme that is malformed that way."""
        return None

    def fetch(self, url: str, dest: Path, what: str, sha: str | None) -> tuple[int, str, int]:
        """Land the file `url` names at `dest` (its parent exists), refused unless its sha256 is
        `sha` (when given); return (size, sha256, bytes a resumed download continued from).

        `what` names the file in messages and limits; `url` has no fragment.
        """
        raise NotImplementedError

    def fetch_tree(self, url: str, dest: Path, what: str) -> tuple[int, int]:
        """Land every file below `url` under the directory `dest` (made even when there are
        none); return (files, bytes). Only where `dir_inputs`."""
        raise NotImplementedError

    def put(self, src: Path, url: str, what: str) -> OutputFileLog:
        """Send the regular file `src` (the task path `what`) to `url`; return its output log:
        the URL it is at (a blob's address for the hub's store), its size and sha256."""
        raise NotImplementedError

    def put_tree(
        self, url: str, members: Sequence[Member], progress: Progress | None, whole: bool = False
    ) -> list[OutputFileLog]:
        """Send each member to its path below the directory `url`, after the limits were checked
        for all of them; return a log per member. `whole`: the members are a DIRECTORY output,
        and `url` becomes that directory even when empty (where directories exist). Only where
        `file_sets` or `dir_outputs`."""
        raise NotImplementedError

    def log_url_bytes(self, url: str, rel: str) -> int:
        """About how many bytes the URL logged for the member `rel` below `url` takes (the output
        logs of a set must fit one update to the hub: checked before anything moves). Only where
        `file_sets`."""
        raise NotImplementedError
