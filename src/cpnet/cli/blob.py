"""`cpnet blob put|get`: the hub's small content-addressed store (docs/staging.md)."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Annotated

import typer

from cpnet.cli.config import connect
from cpnet.cli.output import created, fail, print_json

app = typer.Typer(
    help="The hub's blob store: small files by sha256, usable as task inputs "
    "(`cpnet://blobs/<sha256>`).\n\n**Example:** `cpnet blob put params.txt`",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)


@app.command("put")
def put(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(help="File to store ('-' reads stdin).", show_default=False)
    ],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Store a file (up to the hub's limit, 16 MiB by default); print its `cpnet://blobs/` URL.

    Use the URL as a task input's `url`; storing the same bytes again gives the same URL.

    **Example:** `cpnet blob put params.txt` → `cpnet://blobs/3a7b…`
    """
    try:
        data = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
    except OSError as err:
        fail(f"cannot read {file}: {err.strerror or err}", "check the path")
    with connect(ctx) as hub:
        url = hub.put_blob(data)
    if json_out:
        sha = url.rsplit("/", 1)[-1]
        print_json({"url": url, "sha256": sha, "size_bytes": len(data)})
    else:
        created(url, f"stored {len(data)} bytes from {file} as {url}")


@app.command("get")
def get(
    ctx: typer.Context,
    blob: Annotated[
        str, typer.Argument(help="sha256, or a cpnet://blobs/<sha256> URL.", show_default=False)
    ],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="FILE", help="Write here instead of stdout."),
    ] = None,
) -> None:
    """Fetch a blob (checked against its sha256) to stdout or a file.

    **Example:** `cpnet blob get cpnet://blobs/3a7b… -o params.txt`
    """
    sha = blob.removeprefix("cpnet://blobs/").removeprefix("sha256:").lower()
    with connect(ctx) as hub:
        data = hub.get_blob(sha)
    if hashlib.sha256(data).hexdigest() != sha:
        fail(f"the hub sent bytes that do not hash to {sha}", "try again; report it if it persists")
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        output.write_bytes(data)
