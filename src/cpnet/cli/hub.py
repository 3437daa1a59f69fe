"""`cpnet hub`: run the hub, and `cpnet hub init` to create its store, signing key and admin."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cpnet.cli.output import LogFormatOption, console, errors, fail, fields, print_json
from cpnet.config import DEFAULT_PORT, HubSettings

app = typer.Typer(
    invoke_without_command=True,
    rich_markup_mode="markdown",
)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        metavar="DIR",
        help="Where the hub keeps SQLite data and its signing key (default: CPNET_DATA, "
        "else ~/.local/share/cpnet).",
    ),
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        metavar="URL",
        help="SQLAlchemy URL, e.g. postgresql+psycopg://… (default: SQLite in the data dir).",
    ),
]
Authority = Annotated[
    str | None,
    typer.Option(
        "--authority",
        metavar="PREFIX",
        help="Identifier prefix this hub issues under (default: CPNET_AUTHORITY, else cn.dev).",
    ),
]


@app.callback()
def serve(
    ctx: typer.Context,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    host: Annotated[
        str | None, typer.Option("--host", metavar="HOST", help="Address to listen on.")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", metavar="PORT", min=1, max=65535, help=f"Default {DEFAULT_PORT}."),
    ] = None,
    authority: Authority = None,
    tls: Annotated[
        bool,
        typer.Option(
            "--tls",
            help="Serve HTTPS with the development certificate `cpnet hub init` wrote in "
            "DATA_DIR/tls/ (clients trust DATA_DIR/tls/ca.crt with --ca-file).",
        ),
    ] = False,
    tls_cert: Annotated[
        Path | None,
        typer.Option("--tls-cert", metavar="PEM", help="Serve HTTPS with this certificate."),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", metavar="PEM", help="The certificate's key.")
    ] = None,
    mtls: Annotated[
        str | None,
        typer.Option(
            "--mtls",
            metavar="MODE",
            help="Agents' client certificates: off, optional, or require (the agent API "
            "refuses an agent without one of its own site). Default: CPNET_MTLS, else off.",
        ),
    ] = None,
    log_format: LogFormatOption = None,
    log_level: Annotated[
        str | None,
        typer.Option(
            "--log-level",
            metavar="LEVEL",
            help="debug, info, warning or error (default: CPNET_LOG_LEVEL, else info).",
        ),
    ] = None,
    access_log: Annotated[
        bool | None,
        typer.Option(
            "--access-log/--no-access-log",
            help="One log line per HTTP request, with its route, status, time and request id "
            "(default: CPNET_ACCESS_LOG, else off).",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            metavar="N",
            min=1,
            max=64,
            help="Run N hub replicas on this machine, sharing the port (needs PostgreSQL: "
            "--database-url). Replicas elsewhere may share the same database: "
            "docs/operations.md.",
        ),
    ] = 1,
    dns: Annotated[
        bool,
        typer.Option(
            "--dns",
            help="Also run the DNS gateway: a Knot DNS server (Debian package `knot`) serving "
            "the zone --dns-apex, DNSSEC-signed, kept in step with the registry "
            '(default: CPNET_DNS). docs/identifiers.md, "Running the DNS gateway".',
        ),
    ] = False,
    dns_apex: Annotated[
        str | None,
        typer.Option(
            "--dns-apex",
            metavar="ZONE",
            help="The zone identifiers are published under, e.g. id.example.org "
            "(default: CPNET_DNS_APEX).",
        ),
    ] = None,
    dns_zone: Annotated[
        str | None,
        typer.Option(
            "--dns-zone",
            metavar="ZONE",
            help="The zone this hub's DNS server serves: the apex (default), or for a hub "
            "delegated a prefix, its name, e.g. gd.cn.id.example.org for cn.gd "
            '(default: CPNET_DNS_ZONE). docs/identifiers.md, "Delegation".',
        ),
    ] = None,
    dns_listen: Annotated[
        str | None,
        typer.Option(
            "--dns-listen",
            metavar="HOST:PORT",
            help="Where the DNS server answers (default: CPNET_DNS_LISTEN, else 127.0.0.1:8453; "
            "0.0.0.0:53 to serve the internet).",
        ),
    ] = None,
    dns_knotd: Annotated[
        str | None,
        typer.Option(
            "--dns-knotd",
            metavar="PATH",
            help="knotd's path when it is not on PATH or in /usr/sbin (default: CPNET_DNS_KNOTD).",
        ),
    ] = None,
) -> None:
    """Run the hub (the interconnection service) in the foreground until Ctrl-C.

    On a new data dir or database, run `cpnet hub init` first: it creates the store and the
    signing key, and prints the admin token.

    **Example:** `cpnet hub --data-dir ./hub-data --host 0.0.0.0 --port 8470`

    **With TLS and agents' certificates:** `cpnet hub --data-dir ./hub-data --tls --mtls require`

    **JSON logs for a log pipeline, one line per request:** `cpnet hub --log-format json
    --access-log` (metrics: GET /metrics with an admin token; docs/operations.md)

    **With the DNS gateway** (identifiers resolvable through DNS, DNSSEC-signed):
    `cpnet hub --data-dir ./hub-data --dns --dns-apex id.example.org --dns-listen 0.0.0.0:53`,
    then `kdig @127.0.0.1 +dnssec TXT gpu1.sz1.acme.dev.cn.id.example.org`

    **Four replicas on one PostgreSQL:** `cpnet hub --data-dir ./hub-data --database-url
    postgresql+psycopg://cpnet@db.example.org/cpnet --workers 4` (docs/operations.md)
    """
    if ctx.invoked_subcommand is not None:
        return
    dns_flags = {
        "dns": True if dns else None,
        "dns_apex": dns_apex,
        "dns_zone": dns_zone,
        "dns_listen": dns_listen,
        "dns_knotd": dns_knotd,
    }
    settings = _settings(
        data_dir=data_dir,
        database_url=database_url,
        host=host,
        port=port,
        authority=authority,
        **dns_flags,
    )
    if tls and tls_cert is None:
        tls_cert, tls_key = settings.tls_dir / "server.crt", settings.tls_dir / "server.key"
        if not tls_cert.exists():
            fail(
                f"no development certificate in {settings.tls_dir}",
                "run `cpnet hub dev-cert` (or `cpnet hub init` on a new hub), or give "
                "--tls-cert and --tls-key",
            )
    settings = _settings(
        data_dir=data_dir,
        database_url=database_url,
        host=host,
        port=port,
        authority=authority,
        tls_cert=tls_cert,
        tls_key=tls_key,
        mtls=mtls.strip().lower() if mtls else None,
        log_format=log_format.strip().lower() if log_format else None,
        log_level=log_level.strip().lower() if log_level else None,
        access_log=access_log,
        **dns_flags,
    )
    try:
        settings.check_tls()
    except ValueError as exc:
        fail(str(exc), "see `cpnet hub --help`")
    if settings.dns:
        _check_dns(settings)
        from cpnet.dns.knot import ToolMissing, find_tools

        try:
            find_tools(settings.dns_knotd or None)
        except ToolMissing as exc:
            fail(str(exc), "or run the hub without --dns")
        from cpnet.dns.zonekey import key_path

        if not key_path(settings.data_dir / "dns").is_file():
            fail(
                f"no DNS zone key at {key_path(settings.data_dir / 'dns')}",
                "a hub initialised before the DNS gateway existed: run `cpnet dns init` with "
                "the same --data-dir",
            )
    from cpnet.api.replicas import ReplicasRefused, check

    try:
        check(settings, workers)
    except ReplicasRefused as exc:
        fail(str(exc), "see `cpnet hub --help` and docs/operations.md")
    if settings.log_format == "text":  # JSON logs: uvicorn's own line says where, as JSON
        errors.print(
            f"cpnet hub listening on {settings.scheme}://{settings.host}:{settings.port}"
            + (f" (mTLS {settings.mtls})" if settings.mtls != "off" else "")
            + (f" ({workers} replicas)" if workers > 1 else ""),
            style="dim",
        )
    if workers > 1:
        from cpnet.api.replicas import serve_replicas

        serve_replicas(settings, workers)
        return
    from cpnet.api.server import serve as run_server

    run_server(settings)


@app.command()
def init(
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    authority: Authority = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Create the hub's database, signing key and first admin; print the admin token once.

    **Example:** `cpnet hub init --data-dir ./hub-data --authority cn.gd`
    """
    settings = _settings(data_dir=data_dir, database_url=database_url, authority=authority)
    from cpnet.hub.bootstrap import init_hub, write_dev_cert

    result = init_hub(settings)
    result.update(write_dev_cert(settings, result["authority"]))
    if json_out:
        keep = ("admin_token", "public_key", "key_id", "ca_file", "tls_cert", "tls_key")
        keep += ("dns_key", "dns_public_key", "dns_ds", "dns_dnskey")
        print_json({k: result[k] for k in keep if k in result})
        return
    console.print(
        fields(
            [
                ("database", result.get("database_url", settings.url)),
                ("authority", settings.authority),
                ("key id", result.get("key_id", "")),
                ("public key", result.get("public_key", "")),
                ("admin token", result.get("admin_token", "")),
                ("TLS (dev)", f"{result['tls_cert']} (serve with `cpnet hub --tls`)"),
                ("CA for clients", f"{result['ca_file']} (--ca-file)"),
                ("DNS zone key", f"{result['dns_key']} (Ed25519, for `cpnet hub --dns`)"),
                (
                    "DNSSEC DS",
                    result.get("dns_ds")
                    or "set CPNET_DNS_APEX, then `cpnet dns anchor --dns-apex ZONE`",
                ),
            ]
        )
    )
    console.print(
        "[bold yellow]Store the admin token now: it is shown only this once.[/] "
        f"Log in with: cpnet login --hub http://{settings.host}:{settings.port} --token <token>",
        soft_wrap=True,
    )


@app.command("dev-cert")
def dev_cert(
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    host_names: Annotated[
        list[str] | None,
        typer.Option(
            "--host",
            metavar="NAME",
            help="A name or address the certificate covers (repeat; default: localhost, "
            "127.0.0.1, ::1 and this machine's name).",
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Write a development TLS certificate signed by the hub's CA into DATA_DIR/tls/ (again:
    e.g. for another host name). Clients trust DATA_DIR/tls/ca.crt.

    **Example:** `cpnet hub dev-cert --data-dir ./hub-data --host hub.example.org`
    """
    from cpnet.hub.bootstrap import hub_authority, write_dev_cert
    from cpnet.store.db import Store

    settings = _settings(data_dir=data_dir, database_url=database_url)
    store = Store(settings.url)
    try:
        authority = hub_authority(store, settings.authority)
    finally:
        store.close()
    hosts = None
    if host_names:
        from cpnet.hub.pki import dev_hosts

        hosts = [*dev_hosts(settings.host), *host_names]
    out = write_dev_cert(settings, authority, hosts)
    if json_out:
        print_json(out)
        return
    console.print(
        fields(
            [
                ("certificate", out["tls_cert"]),
                ("key", out["tls_key"]),
                ("CA for clients", out["ca_file"]),
            ]
        )
    )


def _check_dns(settings: HubSettings) -> None:
    """Refuse to start a DNS gateway whose zone or delegations file is wrong."""
    from cpnet.dns.gateway import check
    from cpnet.errors import Invalid
    from cpnet.hub.bootstrap import hub_authority
    from cpnet.store.db import Store

    try:
        store = Store(settings.url)
        try:
            authority = hub_authority(store, settings.authority)
        finally:
            store.close()
    except Exception:  # the hub itself reports a store it cannot open
        return
    try:
        check(settings, authority)
    except ValueError as exc:
        fail(str(exc), "see `cpnet hub --help`")
    except Invalid as exc:
        fail(exc.message, "fix it with `cpnet dns delegate` (or edit the file) and start again")


def _settings(**flags: object) -> HubSettings:
    """The hub's settings, or one red line naming the CPNET_* variable that is wrong."""
    try:
        return HubSettings.from_env(**flags)
    except ValueError as exc:
        fail(str(exc), "fix the variable (or unset it) and start again")
