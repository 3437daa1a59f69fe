"""``cpnet://blobs/`` URLs: the hub's content-addressed blob store, over the hub's HTTP API.

An input ``cpnet://blobs/<sha256>`` is its own checksum and is downloaded (resumably) from
``<hub>/v1/blobs/<sha256>``; an output to ``cpnet://blobs/`` is uploaded and logged under the
address the hub answers, which must be the file's sha256. The store has no directories: a
DIRECTORY output is its files, each a blob logged with its task path. The agent's token
authenticates; uploads name the attempt, whose org the hub grants the blob to.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from cpnet.agent.jobfile import OutputFileLog
from cpnet.agent.staging.errors import StagingError
from cpnet.agent.staging.http import get, send
from cpnet.agent.staging.landing import SHA_RE, file_sha, measured
from cpnet.agent.staging.records import sent_progress
from cpnet.agent.staging.scheme import Scheme
from cpnet.agent.staging.urls import strip_fragment

TYPE_CHECKING = False  # not typing's: the runner imports this package and must start fast
if TYPE_CHECKING:
    from cpnet.agent.staging.context import Remote
    from cpnet.agent.staging.records import Progress
    from cpnet.agent.staging.scheme import Member

BLOB_PREFIX = "cpnet://blobs/"


def blob_sha(url: str) -> str:
    """The sha256 a ``cpnet://blobs/<sha256>`` URL names (the fragment aside)."""
    sha = strip_fragment(url)[len(BLOB_PREFIX) :].lower()
    if not strip_fragment(url).lower().startswith(BLOB_PREFIX) or not SHA_RE.match(sha):
        raise StagingError(f"{url!r} is not {BLOB_PREFIX}<64 hex digits of sha256>")
    return sha


def _hub(remote: Remote) -> tuple[str, dict[str, str]]:
    """The hub's base URL and the headers that authenticate the agent there."""
    if not remote.hub_url or not remote.hub_token:
        raise StagingError(
            "cpnet://blobs URLs need the hub's address and the agent's token, which this "
            "backend did not pass to the runner"
        )
    return remote.hub_url.rstrip("/"), {"authorization": f"Bearer {remote.hub_token}"}


class Blobs(Scheme):
    """The hub's blob store: files in by address, files out to addresses the hub confirms."""

    file_sets = True
    verifies_uploads = True

    @staticmethod
    def checksum(url: str) -> str | None:
        return blob_sha(url)

    def fetch(self, url: str, dest: Path, what: str, sha: str | None) -> tuple[int, str, int]:
        base, headers = _hub(self.ctx.remote)
        return get(f"{base}/v1/blobs/{blob_sha(url)}", headers, dest, what, sha, self.ctx)

    def put(self, src: Path, url: str, what: str) -> OutputFileLog:
        size, sha = measured(src, what, self.ctx.budget)
        stored = self._upload(src, url, size, sha, what, self.ctx.progress)
        self.ctx.budget.add(size)
        return OutputFileLog(url=stored, path=what, size_bytes=size, sha256=sha)

    def put_tree(
        self, url: str, members: Sequence[Member], progress: Progress | None, whole: bool = False
    ) -> list[OutputFileLog]:
        logs = []
        for src, task, size, _rel in members:
            sha = file_sha(src)
            stored = self._upload(src, url, size, sha, task, progress)
            self.ctx.budget.add(size)
            logs.append(OutputFileLog(url=stored, path=task, size_bytes=size, sha256=sha))
        return logs

    def log_url_bytes(self, url: str, rel: str) -> int:
        return len(BLOB_PREFIX) + 64  # every member's URL is an address

    def _upload(
        self, src: Path, url: str, size: int, sha: str, what: str, progress: Progress | None
    ) -> str:
        """Store the file in the hub's blob store; return its ``cpnet://blobs/<sha256>`` URL."""
        if strip_fragment(url).rstrip("/") + "/" != BLOB_PREFIX:
            raise StagingError(f"an output to the hub's blob store has the URL {BLOB_PREFIX!r}")
        base, headers = _hub(self.ctx.remote)
        attempt = quote(self.ctx.remote.attempt_id or "", safe="")
        target = f"{base}/v1/blobs?attempt_id={attempt}"
        sent = sent_progress(progress, what, size)
        resp = send(src, target, size, self.ctx.timeout_s, headers, sent)
        got = str(resp.json().get("sha256", "")).removeprefix("sha256:")
        if got != sha:
            raise StagingError(f"the hub stored sha256 {got or '(none)'}, the file has {sha}")
        return BLOB_PREFIX + sha
