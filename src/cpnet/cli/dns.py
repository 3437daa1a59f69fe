"""`cpnet dns`: the DNS gateway's key and trust anchor (the server runs with `cpnet hub --dns`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cpnet.cli.hub import DataDir, _settings
from cpnet.cli.output import console, fail, fields, print_json

app = typer.Typer(
    rich_markup_mode="markdown",
    help="The DNS gateway's zone key and trust anchor (serve with `cpnet hub --dns`).\n\n"
    "**Example:** `cpnet dns anchor --data-dir ./hub-data --dns-apex id.example.org` "
    "(the DS record to hand to the parent zone)",
    no_args_is_help=True,
)

Apex = Annotated[
    str | None,
    typer.Option(
        "--dns-apex", metavar="ZONE", help="The gateway's zone (default: CPNET_DNS_APEX)."
    ),
]


@app.command()
def anchor(
    data_dir: DataDir = None,
    dns_apex: Apex = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print the zone's DNSSEC trust anchor: the DS record for the parent zone and the DNSKEY
    for validators (also written to DATA_DIR/dns/trust-anchor.* when the gateway starts).

    **Example:** `cpnet dns anchor --data-dir ./hub-data --dns-apex id.example.org`
    """
    from cpnet.dns import zonekey
    from cpnet.ident import dns as idns

    settings = _settings(data_dir=data_dir, dns_apex=dns_apex)
    if not settings.dns_apex:
        fail("no zone given", "add --dns-apex ZONE or set CPNET_DNS_APEX")
    dns_dir = settings.data_dir / "dns"
    try:
        apex = idns.normalise_apex(settings.dns_apex)
        pem = zonekey.key_path(dns_dir).read_bytes()
    except ValueError as exc:
        fail(f"--dns-apex: {exc}", "give a DNS name such as id.example.org")
    except FileNotFoundError:
        fail(f"no zone key in {dns_dir}", "run `cpnet hub init` (or `cpnet dns init`) first")
    a = zonekey.anchor(apex, pem)
    zonekey_files = _write(dns_dir, a)
    if json_out:
        print_json(
            {
                "apex": apex,
                "ds": a.ds,
                "dnskey": a.dnskey,
                "key_tag": a.key_tag,
                "files": zonekey_files,
            }
        )
        return
    console.print(
        fields(
            [
                ("zone", apex),
                ("DS (give the parent zone)", a.ds),
                ("DNSKEY (for validators)", a.dnskey),
                ("files", ", ".join(zonekey_files)),
            ]
        ),
        soft_wrap=True,
    )


@app.command()
def init(data_dir: DataDir = None) -> None:
    """Make the zone's Ed25519 key for a hub initialised before the DNS gateway existed (new
    hubs get it from `cpnet hub init`); does nothing when the key exists.

    **Example:** `cpnet dns init --data-dir ./hub-data`
    """
    from cpnet.dns import zonekey

    dns_dir = _settings(data_dir=data_dir).data_dir / "dns"
    _, made = zonekey.ensure_key(dns_dir)
    state = "made" if made else "already there"
    console.print(f"zone key {zonekey.key_path(dns_dir)}: {state}")


def _write(dns_dir: Path, a) -> list[str]:  # type: ignore[no-untyped-def]
    from cpnet.dns.knot import write_anchor_files

    write_anchor_files(dns_dir, a)
    return [str(dns_dir / f"trust-anchor.{ext}") for ext in ("ds", "dnskey", "conf")]
