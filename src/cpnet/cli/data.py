"""`cpnet data key|encrypt|decrypt`: a task's data key and the files encrypted under it
(docs/security.md, "Data keys")."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from cpnet.cli.output import created, fail, print_json
from cpnet.crypto.datakey import DataKeyError, Sealer, is_encrypted, new_key, parse_key

app = typer.Typer(
    help="Data keys: encrypt a task's inputs before they leave your machine, decrypt its "
    "outputs after they come back; the runner decrypts and encrypts in between.\n\n"
    "**Example:** `cpnet data key -o task.key && cpnet data encrypt -k task.key reads.fq "
    "reads.fq.enc`",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

KeyFile = Annotated[
    Path,
    typer.Option("--key", "-k", metavar="FILE", help="The data key file (`cpnet data key`)."),
]


def read_key(path: Path) -> str:
    """The data key in `path`, checked; the CLI's one-line error otherwise."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as err:
        fail(f"cannot read the data key {path}: {err.strerror or err}", "make one: cpnet data key")
    except UnicodeDecodeError:
        fail(f"{path} is not a data key (base64 text)", "make one: cpnet data key -o FILE")
    try:
        parse_key(text)
    except DataKeyError as err:
        fail(f"{path}: {err}")
    return text


@app.command("key")
def key(
    output: Annotated[
        Path,
        typer.Option("--output", "-o", metavar="FILE", help="Write the new key here (mode 0600)."),
    ],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Make a new data key (32 random bytes, base64) in a file only you can read.

    Keep it: without it nobody, the hub included, can decrypt the task's outputs.

    **Example:** `cpnet data key -o task.key`
    """
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        fail(f"{output} exists", "choose another file; a key is never overwritten")
    except OSError as err:
        fail(f"cannot create {output}: {err.strerror or err}", "check the path")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(new_key() + "\n")
    if json_out:
        print_json({"key_file": str(output)})
    else:
        created(str(output), f"wrote a new data key to {output} (mode 0600): keep it safe")


def _paths(src: Path, dst: Path | None, suffix: str, encrypting: bool) -> Path:
    if dst is not None:
        return dst
    if encrypting:
        return src.with_name(src.name + suffix)
    if src.name.endswith(suffix):
        return src.with_name(src.name[: -len(suffix)])
    fail(f"where should the plaintext of {src} go?", f"give OUTPUT, e.g. {src.name}.out")


@app.command("encrypt")
def encrypt(
    key_file: KeyFile,
    src: Annotated[Path, typer.Argument(metavar="FILE", help="The file to encrypt.")],
    dst: Annotated[
        Path | None, typer.Argument(metavar="OUTPUT", help="Where (default: FILE.enc).")
    ] = None,
) -> None:
    """Encrypt a file under a data key (AES-256-GCM, in 1 MiB chunks).

    Use the result as a task input with `"encrypted": true` and the task's `data_key`.

    **Example:** `cpnet data encrypt -k task.key reads.fq` → `reads.fq.enc`
    """
    sealer = Sealer(parse_key(read_key(key_file)))
    out = _paths(src, dst, ".enc", True)
    if not src.is_file():
        fail(f"{src} is not a file", "check the path")
    if is_encrypted(src):
        fail(f"{src} is already encrypted with a data key", "decrypt it first, or use it as is")
    try:
        sealer.encrypt_file(src, out)
    except OSError as err:
        fail(f"cannot encrypt {src}: {err.strerror or err}", "check the paths")
    created(str(out), f"encrypted {src} to {out}")


@app.command("decrypt")
def decrypt(
    key_file: KeyFile,
    src: Annotated[Path, typer.Argument(metavar="FILE", help="The encrypted file.")],
    dst: Annotated[
        Path | None,
        typer.Argument(metavar="OUTPUT", help="Where (default: FILE without .enc)."),
    ] = None,
) -> None:
    """Decrypt a file a task's runner (or `cpnet data encrypt`) encrypted under a data key.

    Every chunk is authenticated: a wrong key or an altered file is refused, never decrypted
    into garbage, and OUTPUT is then left as it was.

    **Example:** `cpnet blob get cpnet://blobs/9f2c… -o result.enc && cpnet data decrypt -k
    task.key result.enc result.txt`
    """
    sealer = Sealer(parse_key(read_key(key_file)))
    out = _paths(src, dst, ".enc", False)
    try:
        size = sealer.decrypt_file(src, out)
    except DataKeyError as err:
        fail(str(err), "check that the key is the task's data key")
    except OSError as err:
        fail(f"cannot decrypt {src}: {err.strerror or err}", "check the paths")
    created(str(out), f"decrypted {src} to {out} ({size} bytes)")
