"""`cpnet resolve`: look up a compute identifier and check its signed record."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.text import Text

from cpnet.cli.config import connect
from cpnet.cli.output import console, fail, fields, print_json
from cpnet.client import load_jwks
from cpnet.ident.grammar import parse


class Via(StrEnum):
    """Where `cpnet resolve` asks: the hub's HTTP route or DNS."""

    http = "http"
    dns = "dns"


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
    via: Annotated[
        Via,
        typer.Option(
            "--via",
            help="Ask the hub over HTTP, or DNS (then the signature is always checked).",
            case_sensitive=False,
        ),
    ] = Via.http,
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            metavar="HOST[:PORT]",
            help="DNS server to ask with --via dns (default: the system's resolver).",
        ),
    ] = None,
    apex: Annotated[
        str | None,
        typer.Option(
            "--apex",
            envvar="CPNET_DNS_APEX",
            help="DNS zone identifiers are published under, e.g. id.example.org (--via dns).",
        ),
    ] = None,
    trust_anchor: Annotated[
        str | None,
        typer.Option(
            "--trust-anchor",
            metavar="FILE",
            help="DNSKEY or DS records of the signing zone: validate DNSSEC here (--via dns).",
        ),
    ] = None,
) -> None:
    """Resolve a compute identifier to its signed record; `--verify` checks the signature.

    With `--keys FILE` the check needs nothing from the hub but the record itself. With
    `--via dns` the record comes from DNS (TXT at the identifier's DNS name under `--apex`): the
    check character is checked before asking, our signature always, and DNSSEC against
    `--trust-anchor` (or the AD bit of a validating resolver).

    **Example:** `cpnet resolve cn.gd.acme.sz1.gpu1.i0 --verify --keys ./hub-keys.json`

    **Example:** `cpnet resolve cn.gd.acme.sz1.gpu1.i0 --via dns --server 127.0.0.1:5353
    --apex id.example.org --keys ./hub-keys.json`
    """
    if via is Via.dns:
        resolve_dns(ctx, identifier, keys, json_out, server, apex, trust_anchor)
        return
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


def resolve_dns(
    ctx: typer.Context,
    identifier: str,
    keys: str | None,
    json_out: bool,
    server: str | None,
    apex: str | None,
    trust_anchor: str | None,
) -> None:
    """`cpnet resolve --via dns`: the SDK's resolve_via_dns, then a table (or the JSON envelope)."""
    from cpnet.dnsclient import load_trust_anchor, parse_server, resolve_via_dns
    from cpnet.ident import IdentifierError

    if not apex:
        fail(
            "--via dns needs the zone: --apex APEX (or CPNET_DNS_APEX)",
            "e.g. --apex id.example.org",
        )
    try:
        parse(identifier)  # the check character, before any keys are fetched or queries sent
    except IdentifierError as err:
        fail(f"{identifier!r} is not a valid identifier: {err.message}", "check what you typed")
    if keys:
        jwks = load_jwks(keys)
    else:
        with connect(ctx) as hub:
            jwks = hub.keys()
    anchors = load_trust_anchor(trust_anchor) if trust_anchor else ()
    try:
        found = resolve_via_dns(
            identifier,
            apex=apex,
            jwks=jwks,
            now=datetime.now(UTC),
            server=parse_server(server) if server else None,
            trust_anchor=anchors,
        )
    except ValueError as err:  # a bad apex, or an identifier too long for a DNS name under it
        fail(str(err), "check --apex")
    record = found.envelope["record"]
    dnssec = f"{found.dnssec}: {found.dnssec_reason}"
    if json_out:
        print_json(found.envelope)
    else:
        pairs = [(k, cell(v)) for k, v in record.items()]
        if record.get("retired"):
            pairs.insert(0, ("status", Text("RETIRED (tombstone)", style="bold red")))
        transport = "TCP" if found.tcp else "UDP"
        pairs += [
            ("dns name", found.name),
            ("dns server", f"{found.server} ({transport}, {found.answer_bytes} bytes)"),
            ("dnssec", dnssec),
        ]
        console.print(fields(pairs))
    if found.dnssec == "bogus":
        fail(f"DNSSEC validation failed: {found.dnssec_reason}", "do not trust this answer")
    if not found.verify.ok:
        if found.verify.expired:
            fail(f"signature valid but the record {found.verify.reason}", "the zone is stale")
        fail(f"signature check failed: {found.verify.reason}", "do not trust this record")
    key_id = (found.envelope.get("signature") or {}).get("key_id", "?")
    line = (
        f"signature valid (key {key_id}), expires {record.get('expires_at', '?')}; DNSSEC {dnssec}"
    )
    if json_out:
        typer.echo(line, err=True)  # keep stdout pure JSON
    else:
        console.print(Text(line, style="green"))
