"""`cpnet resolve`: look up a compute identifier and check its signed record."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.text import Text

from cpnet.cli.config import connect
from cpnet.cli.output import console, fail, fields, print_json
from cpnet.client import load_jwks


def cell(value: Any) -> str:
    """A record value for the key/value table (nested objects as compact JSON)."""
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    return str(value)


def resolve(
    ctx: typer.Context,
    identifier: Annotated[
        str, typer.Argument(metavar="ID", help="A compute identifier.", show_default=False)
    ],
    verify: Annotated[
        bool,
        typer.Option("--verify", help="Check the signature and expiry; exit 1 if they fail."),
    ] = False,
    keys: Annotated[
        str | None,
        typer.Option(
            "--keys",
            metavar="FILE_OR_URL",
            help="JWKS to verify with (default: the hub's /.well-known/cpnet/keys.json).",
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the signed envelope.")] = False,
) -> None:
    """Resolve a compute identifier to its signed record; `--verify` checks the signature.

    With `--keys FILE` the check needs nothing from the hub but the record itself.

    **Example:** `cpnet resolve cn.gd.acme.sz1.gpu1.i0 --verify --keys ./hub-keys.json`
    """
    with connect(ctx) as hub:
        envelope = hub.resolve(identifier)
        jwks = None
        if verify:
            jwks = load_jwks(keys) if keys else hub.keys()
    record = envelope.get("record") if isinstance(envelope, dict) else None
    if not isinstance(record, dict):
        fail("the hub answered without a record", "is this hub the same cpnet version?")
    if json_out:
        print_json(envelope)
    else:
        pairs = [(k, cell(v)) for k, v in record.items()]
        if record.get("retired"):
            pairs.insert(0, ("status", Text("RETIRED (tombstone)", style="bold red")))
        console.print(fields(pairs))
    if jwks is None:
        return
    from cpnet.ident.records import verify_envelope

    result = verify_envelope(envelope, jwks, now=datetime.now(UTC))
    key_id = (envelope.get("signature") or {}).get("key_id", "?")
    if result.ok:
        line = f"signature valid (key {key_id}), expires {record.get('expires_at', '?')}"
        if json_out:
            typer.echo(line, err=True)  # keep stdout pure JSON
        else:
            console.print(Text(line, style="green"))
        return
    if result.expired:
        fail(f"signature valid but the record {result.reason}", "resolve it again for a fresh one")
    fail(f"signature check failed: {result.reason}", "do not trust this record")
