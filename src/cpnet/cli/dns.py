"""`cpnet dns`: the DNS gateway's key, trust anchor and delegations (the server runs with
`cpnet hub --dns`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cpnet.cli.hub import DataDir, _settings
from cpnet.cli.output import console, fail, fields, print_json

app = typer.Typer(
    rich_markup_mode="markdown",
    help="The DNS gateway's zone key, trust anchor and delegations (serve with "
    "`cpnet hub --dns`).\n\n"
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

Zone = Annotated[
    str | None,
    typer.Option(
        "--dns-zone",
        metavar="ZONE",
        help="The zone this hub serves when its parent delegated it a prefix, e.g. "
        "gd.cn.id.example.org (default: CPNET_DNS_ZONE, else the apex).",
    ),
]


@app.command()
def anchor(
    data_dir: DataDir = None,
    dns_apex: Apex = None,
    dns_zone: Zone = None,
    hub_url: Annotated[
        str | None,
        typer.Option(
            "--hub",
            metavar="URL",
            help="Fetch the anchor from this running hub's "
            "/.well-known/cpnet/dns-anchor.json instead of reading the key in --data-dir.",
        ),
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="DIR",
            help="With --hub: write trust-anchor.ds, .dnskey and .conf into DIR.",
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print the zone's DNSSEC trust anchor: the DS record for the parent zone and the DNSKEY
    for validators (also written to DATA_DIR/dns/trust-anchor.* when the gateway starts).
    With `--hub URL` it is fetched from a running hub instead (use https: the anchor is only as
    trustworthy as the connection it came over).

    **Example:** `cpnet dns anchor --data-dir ./hub-data --dns-apex id.example.org`

    **From a hub:** `cpnet dns anchor --hub https://hub.example.org:8470 --out ./anchor`
    """
    from cpnet.dns import zonekey
    from cpnet.dns.gateway import zone_of

    if hub_url is not None:
        _anchor_from_hub(hub_url, out_dir, json_out)
        return
    if out_dir is not None:
        fail("--out goes with --hub", "the files of a local key are written to DATA_DIR/dns")
    settings = _settings(data_dir=data_dir, dns_apex=dns_apex, dns_zone=dns_zone)
    if not settings.dns_apex:
        fail("no zone given", "add --dns-apex ZONE or set CPNET_DNS_APEX")
    dns_dir = settings.data_dir / "dns"
    try:
        apex = zone_of(settings)
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


def _anchor_from_hub(hub_url: str, out_dir: Path | None, json_out: bool) -> None:
    import httpx

    from cpnet.dns import zonekey

    url = hub_url.rstrip("/") + "/.well-known/cpnet/dns-anchor.json"
    if not url.startswith(("http://", "https://")):
        fail(f"--hub: {hub_url!r} is not an http(s) URL", "e.g. https://hub.example.org:8470")
    try:
        response = httpx.get(url, timeout=10, follow_redirects=True)
    except httpx.HTTPError as exc:
        fail(f"cannot fetch {url}: {exc}", "check the hub URL and that the hub runs")
    if response.status_code != 200:
        try:
            message = response.json().get("error", {}).get("message") or response.text
        except ValueError:
            message = response.text
        fail(f"{url}: HTTP {response.status_code}: {str(message)[:300]}")
    try:
        doc = response.json()
        anchors = zonekey.anchors_from_document(doc)
    except ValueError as exc:
        fail(f"{url} did not answer a consistent trust anchor: {exc}")
    files: list[str] = []
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "trust-anchor.ds").write_text("".join(a.ds + "\n" for a in anchors))
        (out_dir / "trust-anchor.dnskey").write_text("".join(a.dnskey + "\n" for a in anchors))
        (out_dir / "trust-anchor.conf").write_text(
            "trust-anchors {\n"
            + "".join(a.bind_anchor.splitlines(keepends=True)[1] for a in anchors)
            + "};\n"
        )
        files = [str(out_dir / f"trust-anchor.{ext}") for ext in ("ds", "dnskey", "conf")]
    if json_out:
        print_json(
            {
                "apex": anchors[0].apex,
                "ds": [a.ds for a in anchors],
                "dnskey": [a.dnskey for a in anchors],
                "key_tags": [a.key_tag for a in anchors],
                "source": url,
                "files": files,
            }
        )
        return
    rows = [("zone", anchors[0].apex), ("from", url)]
    rows += [("DS (give the parent zone)", a.ds) for a in anchors]
    rows += [("DNSKEY (for validators)", a.dnskey) for a in anchors]
    if files:
        rows.append(("files", ", ".join(files)))
    console.print(fields(rows), soft_wrap=True)


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


@app.command()
def delegate(
    prefix: Annotated[str, typer.Argument(help="The identifier prefix to delegate, e.g. cn.gd.")],
    ns: Annotated[
        list[str] | None,
        typer.Option(
            "--ns",
            metavar="NAME=ADDR",
            help="A name server of the child's zone, with its address (glue) when the name is "
            "inside that zone; repeat for each (NAME=ADDR1,ADDR2 for several addresses).",
        ),
    ] = None,
    ds: Annotated[
        list[str] | None,
        typer.Option(
            "--ds",
            metavar="DS",
            help="The child's DS record, as the child's `cpnet dns anchor` prints it "
            "(whole line, or KEYTAG 15 2 DIGEST); repeat during a key change.",
        ),
    ] = None,
    remove: Annotated[
        bool, typer.Option("--remove", help="Stop delegating PREFIX (publish it here again).")
    ] = False,
    data_dir: DataDir = None,
    dns_apex: Apex = None,
    dns_zone: Zone = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Delegate an identifier prefix to another hub's DNS server: this hub's zone then
    publishes the child's NS, glue and DS at the prefix's name and no records of its own under
    it. Writes DATA_DIR/dns/delegations.toml; a running `cpnet hub --dns` publishes it within a
    second.

    **Example:** `cpnet dns delegate cn.gd --ns ns.gd.cn.id.example.org=192.0.2.53 --ds
    "gd.cn.id.example.org. IN DS 2371 15 2 3F5A…" --data-dir ./hub-data --dns-apex
    id.example.org`
    """
    from cpnet.dns import delegation
    from cpnet.dns.gateway import delegation_file
    from cpnet.errors import Invalid

    settings, authority = _hub(data_dir, dns_apex, dns_zone)
    try:
        file = delegation_file(settings, authority)
        current = list(file.load())
        if remove:
            path = delegation.parse_prefix(
                prefix, authority=authority, apex=file.apex, zone=file.zone
            )
            if path not in {d.prefix for d in current}:
                fail(f"prefix {path!r} is not delegated", "see `cpnet dns delegations`")
            new = [d for d in current if d.prefix != path]
        else:
            declared = delegation.declare(
                prefix, ns or [], ds or [], authority=authority, apex=file.apex, zone=file.zone
            )
            new = delegation.replace_one(current, declared)
    except ValueError as exc:
        fail(str(exc), "check --dns-apex and --dns-zone")
    except Invalid as exc:
        fail(f"{exc.field}: {exc.message}" if exc.field else exc.message, "nothing was written")
    _write_file(file.path, delegation.to_toml(new))
    _show(new, file.apex, file.path, json_out)


@app.command()
def delegations(
    data_dir: DataDir = None,
    dns_apex: Apex = None,
    dns_zone: Zone = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the prefixes this hub's zone delegates (DATA_DIR/dns/delegations.toml).

    **Example:** `cpnet dns delegations --data-dir ./hub-data --dns-apex id.example.org`
    """
    from cpnet.dns.gateway import delegation_file
    from cpnet.errors import Invalid

    settings, authority = _hub(data_dir, dns_apex, dns_zone)
    try:
        file = delegation_file(settings, authority)
        current = list(file.load())
    except ValueError as exc:
        fail(str(exc), "check --dns-apex and --dns-zone")
    except Invalid as exc:
        fail(exc.message, "fix the file with `cpnet dns delegate`")
    _show(current, file.apex, file.path, json_out)


def _hub(data_dir, dns_apex, dns_zone):  # type: ignore[no-untyped-def]
    """The settings and the hub's authority (from its store)."""
    from cpnet.hub.bootstrap import hub_authority
    from cpnet.store.db import Store

    settings = _settings(data_dir=data_dir, dns_apex=dns_apex, dns_zone=dns_zone)
    if not settings.dns_apex:
        fail("no apex given", "add --dns-apex ZONE or set CPNET_DNS_APEX")
    store = Store(settings.url)
    try:
        authority = hub_authority(store, settings.authority)
    finally:
        store.close()
    return settings, authority


def _write_file(path: Path, text: str) -> None:
    """Replace the file in one rename: the running hub never reads half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _show(items, apex: str, path: Path, json_out: bool) -> None:  # type: ignore[no-untyped-def]
    from cpnet.dns import delegation

    rows = [
        {
            "prefix": d.prefix,
            "zone": delegation.cut_name(d.prefix, apex),
            "ns": [{"name": s.name, "addresses": list(s.addresses)} for s in d.ns],
            "ds": list(d.ds),
        }
        for d in items
    ]
    if json_out:
        print_json({"file": str(path), "delegations": rows})
        return
    if not rows:
        console.print(f"no delegations ({path})")
        return
    for r in rows:
        servers = ", ".join(
            s["name"] + (f" ({', '.join(s['addresses'])})" if s["addresses"] else "")
            for s in r["ns"]
        )
        console.print(
            fields(
                [
                    ("prefix", r["prefix"]),
                    ("zone cut", r["zone"]),
                    ("NS", servers),
                    ("DS", "; ".join(r["ds"])),
                ]
            ),
            soft_wrap=True,
        )
    console.print(f"file: {path}")


@app.command("roll-zsk")
def roll_zsk(
    data_dir: DataDir = None,
    dns_apex: Apex = None,
    dns_zone: Zone = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Roll the zone-signing key (ZSK) by pre-publication, on the running gateway or before
    the next start: the new key is published now, signs from one DNSKEY TTL (plus 5 s) later,
    and the old one leaves the zone as long again. The trust anchor (the KSK that `cpnet hub
    init` made, whose DS the parent holds) does not change; the zone validates throughout.
    Run it from cron (e.g. monthly) on the hub's machine, as the hub's user.

    **Example:** `cpnet dns roll-zsk --data-dir ./hub-data --dns-apex id.example.org`
    """
    from cpnet.dns import knot
    from cpnet.dns.gateway import server_config

    settings, authority = _hub(data_dir, dns_apex, dns_zone)
    try:
        cfg = server_config(settings, authority)
        tools = knot.find_tools(settings.dns_knotd or None)
    except ValueError as exc:
        fail(str(exc), "check --dns-apex and --dns-zone")
    except knot.ToolMissing as exc:
        fail(str(exc))
    if not cfg.conf.exists() or not cfg.kasp.exists():
        fail(
            f"no Knot key store in {cfg.dns_dir}",
            "start the hub with --dns once first: it imports the zone key and makes the ZSK",
        )
    try:
        roll = knot.KnotServer(cfg, tools).roll_zsk()
    except knot.KnotError as exc:
        fail(str(exc))
    if json_out:
        print_json(
            {
                "zone": cfg.apex,
                "new": roll.new.tag,
                "old": [k.tag for k in roll.old],
                "switch_at": roll.switch_at,
                "removed_at": roll.removed_at,
            }
        )
        return
    from datetime import UTC, datetime

    def at(t: int) -> str:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

    console.print(
        fields(
            [
                ("zone", cfg.apex),
                ("new ZSK", f"{roll.new.tag}: published now, signs from {at(roll.switch_at)}"),
                *[
                    (
                        f"old ZSK {k.tag}",
                        f"signs until {at(roll.switch_at)}, removed at {at(roll.removed_at)}",
                    )
                    for k in roll.old
                ],
                ("trust anchor", "unchanged (the KSK)"),
            ]
        ),
        soft_wrap=True,
    )
