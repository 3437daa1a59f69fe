"""Stage-in: every input placed under the attempt's files dir before the executors run.

An input is inline content (a file with that text) or a URL, which the scheme registered for it
fetches. Checksums: an input may carry ``sha256`` or a ``#sha256=<hex>`` URL fragment (and a
content address is its own); a file that does not match is not kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from cpnet.agent.jobfile import FileType, Input
from cpnet.agent.staging.context import Context, Remote
from cpnet.agent.staging.errors import StagingError
from cpnet.agent.staging.landing import SHA_RE, Landing
from cpnet.agent.staging.limits import DEFAULT_RETRIES, DEFAULT_TIMEOUT_S, Budget
from cpnet.agent.staging.paths import task_path
from cpnet.agent.staging.records import Progress, Transfer
from cpnet.agent.staging.registry import SCHEMES
from cpnet.agent.staging.urls import scheme_of, shown, strip_fragment

TYPE_CHECKING = False  # not typing's: the runner imports this package and must start fast
if TYPE_CHECKING:
    # Callers in the agent (and tests) pass the pydantic models; the runner, which must not pay
    # for importing pydantic, passes the jobfile dataclasses. Staging reads only the attributes
    # both have, and compares types with == (the two FileType enums are equal by value).
    from cpnet.crypto.datakey import Sealer
    from cpnet.tasks import model


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
    sealer: Sealer | None = None,
) -> int:
    """Place every input under `files_dir`; return the bytes staged.

    `max_bytes` caps the total, `max_file_bytes` each file; `file_roots`, when given, limits
    which host paths file:// may read; `remote` says where s3:// and cpnet:// URLs go.
    `on_transfer` gets a record per input, `progress` running byte counts of downloads.
    `sealer` (the task's data key) decrypts the inputs marked ``encrypted`` once they are here
    (their checksums and sizes are those of the ciphertext, as stored).
    Raises StagingError naming the input.
    """
    files_dir.mkdir(parents=True, exist_ok=True)
    budget = Budget(max_bytes, max_file_bytes)
    ctx = Context(
        files_dir, budget, timeout_s, file_roots, remote or Remote(), retries, progress, sealer
    )
    for inp in inputs:
        started = time.monotonic()
        try:
            rec = _stage_one(inp, ctx)
        except (StagingError, OSError) as exc:
            raise StagingError(f"input {inp.name or inp.path!r}: {exc}") from exc
        rec.seconds = time.monotonic() - started
        if on_transfer is not None:
            on_transfer(rec)
    return budget.used


def expected_sha(inp: Input | model.Input) -> str | None:
    """The sha256 an input must have: its ``sha256`` field or a ``#sha256=<hex>`` URL fragment
    (for TES clients, whose Input has no checksum field); both must agree when both are given.
    A URL that is a content address (``cpnet://blobs/<sha256>``) must agree too."""
    field = inp.sha256.lower() if inp.sha256 else None
    frag = None
    if inp.url and "#" in inp.url:
        fragment = inp.url.split("#", 1)[1]
        if fragment.lower().startswith("sha256="):
            frag = fragment[7:].lower()
            if not SHA_RE.match(frag):
                raise StagingError(f"URL fragment #{fragment} is not sha256=<64 hex digits>")
    scheme = SCHEMES.get(scheme_of(inp.url)) if inp.url else None
    address = scheme.checksum(inp.url) if scheme is not None and inp.url else None
    if address is not None:
        if frag is None:
            frag = address
        elif frag != address:
            raise StagingError(f"URL fragment sha256 {frag} differs from the blob's {address}")
    if field and frag and field != frag:
        raise StagingError(f"sha256 {field} differs from the URL's {frag}")
    return field or frag


def _stage_one(inp: Input | model.Input, ctx: Context) -> Transfer:
    """One input into place under the files dir; its record."""
    dest = task_path(ctx.files_dir, inp.path)
    if dest == ctx.files_dir.resolve():
        raise StagingError("an input cannot replace the whole work dir")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if inp.content is not None:
        return _stage_content(inp, dest, ctx)
    return _stage_url(inp, dest, ctx)


def _stage_content(inp: Input | model.Input, dest: Path, ctx: Context) -> Transfer:
    """Inline content: a file with that text, written whole."""
    if inp.type == FileType.DIRECTORY:
        raise StagingError("inline content makes a file, not a DIRECTORY")
    data = (inp.content or "").encode("utf-8")
    with Landing(dest, inp.path, ctx.budget) as landing:
        landing.write(data)
        sha = landing.commit(inp.sha256)
    rec = Transfer("in", inp.path, "(inline content)", len(data), 0.0, sha)
    rec.sha256_verified = inp.sha256 is not None  # commit() checked it
    return rec


def _stage_url(inp: Input | model.Input, dest: Path, ctx: Context) -> Transfer:
    """A URL input: fetched by its scheme, a file or (where the scheme has them) a DIRECTORY."""
    url = inp.url or ""
    directory = inp.type == FileType.DIRECTORY
    sha = expected_sha(inp)
    if directory and sha is not None:
        raise StagingError("sha256 applies to files, not a DIRECTORY")
    name = scheme_of(url)
    plain = strip_fragment(url)
    rec = Transfer("in", inp.path, shown(plain), 0, 0.0)
    rec.sha256_verified = sha is not None  # a file that fails the check is no record at all
    scheme = ctx.scheme(name)
    if scheme is None:
        raise StagingError(f"URL scheme {name!r} is not supported for inputs")
    if inp.encrypted and ctx.sealer is None:
        raise StagingError("it is encrypted, but the task's data key did not arrive")
    if not directory:
        rec.size_bytes, rec.sha256, rec.resumed_from = scheme.fetch(plain, dest, inp.path, sha)
    elif scheme.dir_inputs:
        rec.files, rec.size_bytes = scheme.fetch_tree(plain, dest, inp.path)
    else:
        raise StagingError(f"DIRECTORY inputs over {name} are not supported; use a file")
    if inp.encrypted:
        _decrypt(dest, ctx)
    return rec


def _decrypt(dest: Path, ctx: Context) -> None:
    """An encrypted input, in place: every file of it opened under the task's data key; one
    that does not open is removed with the rest of the input."""
    from cpnet.crypto.datakey import DataKeyError

    assert ctx.sealer is not None  # _stage_url checked before fetching
    try:
        ctx.sealer.decrypt_tree(dest)
    except DataKeyError as exc:
        _remove(dest)
        raise StagingError(f"cannot decrypt it: {exc}") from None


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
