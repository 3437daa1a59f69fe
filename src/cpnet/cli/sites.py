"""`cpnet admin provider|site|pool`: admitting providers, their sites, and retiring pools."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from cpnet.cli.config import connect
from cpnet.cli.output import console, created, print_json, show_issued, show_records, when
from cpnet.registry.model import PoolType

JsonOut = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _group(help_text: str) -> typer.Typer:
    return typer.Typer(help=help_text, no_args_is_help=True, rich_markup_mode="markdown")


provider_app = _group("Providers.\n\n**Example:** `cpnet admin provider create acme-cloud`")
site_app = _group("Sites.\n\n**Example:** `cpnet admin site list`")
pool_app = _group("Pools.\n\n**Example:** `cpnet admin pool retire cn.gd.acme.sz1.gpu1.i0`")


@provider_app.command("create")
def provider_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Provider name.", show_default=False)],
    org: Annotated[
        str | None, typer.Option("--org", metavar="ORG", help="Owning organisation (admins).")
    ] = None,
    json_out: JsonOut = False,
) -> None:
    """Admit a provider (an organisation offering compute).

    **Example:** `cpnet admin provider create acme-cloud --org org_nexvcydqesbzjtjp`
    """
    with connect(ctx) as hub:
        provider = hub.create_provider(name, org_id=org)
    if json_out:
        print_json(provider)
    else:
        created(
            provider.id, f"created provider {provider.id} ({provider.name}, org {provider.org_id})"
        )


@provider_app.command("list")
def provider_list(ctx: typer.Context, json_out: JsonOut = False) -> None:
    """List providers.

    **Example:** `cpnet admin provider list --json`
    """
    with connect(ctx) as hub:
        providers = hub.providers()
    show_records(
        providers,
        ["id", "name", "org", "created", "retired"],
        lambda p: [p.id, p.name, p.org_id, when(p.created_at), "yes" if p.retired else ""],
        "providers",
        json_out,
    )


@site_app.command("create")
def site_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Site name.", show_default=False)],
    provider: Annotated[str, typer.Option("--provider", metavar="ID", help="Provider id.")],
    region_code: Annotated[
        str, typer.Option("--region-code", metavar="C", help="Region code, e.g. 440300.")
    ],
    site_type: Annotated[
        PoolType, typer.Option("--type", case_sensitive=False, help="Kind of compute.")
    ] = PoolType.GENERAL,
    region_name: Annotated[
        str, typer.Option("--region-name", metavar="N", help="e.g. Shenzhen.")
    ] = "",
    lat: Annotated[float | None, typer.Option("--lat", min=-90, max=90)] = None,
    lon: Annotated[float | None, typer.Option("--lon", min=-180, max=180)] = None,
    json_out: JsonOut = False,
) -> None:
    """Create a site (one scheduler, one agent) under a provider.

    **Example:** `cpnet admin site create --provider cn.gd.acme.xf --type intelligent
    --region-code 440300 --region-name Shenzhen --lat 22.54 --lon 114.06 sz1`
    """
    with connect(ctx) as hub:
        site = hub.create_site(
            provider,
            name,
            type=site_type.value,
            region_code=region_code,
            region_name=region_name,
            lat=lat,
            lon=lon,
        )
    if json_out:
        print_json(site)
    else:
        created(
            site.id,
            f"created site {site.id} ({site.name}, {site.type.value}, {site.region.code}); "
            f"next: cpnet admin site token {site.id}  (the agent's credential)",
        )


@site_app.command("list")
def site_list(ctx: typer.Context, json_out: JsonOut = False) -> None:
    """List sites with their liveness.

    **Example:** `cpnet admin site list`
    """
    with connect(ctx) as hub:
        found = hub.sites()
    show_records(
        found,
        ["id", "name", "provider", "type", "region", "pools", "online", "last heartbeat"],
        lambda s: [
            s.id,
            s.name,
            s.provider_id,
            s.type.value,
            f"{s.region.code} {s.region.name}".strip(),
            str(len(s.pools)),
            Text("yes", style="green") if s.online else Text("no", style="red"),
            when(s.last_heartbeat),
        ],
        "sites",
        json_out,
    )


@site_app.command("token")
def site_token(
    ctx: typer.Context,
    site_id: Annotated[str, typer.Argument(metavar="SITE_ID", show_default=False)],
    name: Annotated[str, typer.Option("--name", help="A label to recognise it by.")] = "",
    json_out: JsonOut = False,
) -> None:
    """Issue an agent token bound to one site (what `cpnet agent --token` takes); shown once.

    **Example:** `cpnet admin site token cn.gd.acme.sz1.i7 --name sz1-agent`
    """
    with connect(ctx) as hub:
        issued = hub.create_site_token(site_id, name)
    if json_out:
        print_json(issued)
    else:
        show_issued(issued, "agent token")


@site_app.command("certs")
def site_certs(
    ctx: typer.Context,
    site_id: Annotated[str, typer.Argument(metavar="SITE_ID", show_default=False)],
    json_out: JsonOut = False,
) -> None:
    """The client certificates the hub issued to a site's agent for mutual TLS.

    **Example:** `cpnet admin site certs cn.gd.acme.sz1.i7`
    """
    with connect(ctx) as hub:
        rows = hub.site_certificates(site_id)
    if json_out:
        print_json({"certificates": rows})
        return
    from cpnet.cli.output import table

    grid = table(f"client certificates of {site_id}", ["serial", "issued", "expires", "revoked"])
    for r in rows:
        grid.add_row(r["serial"], r["issued_at"], r["not_after"], r["revoked_at"] or "-")
    console.print(grid)


@site_app.command("revoke")
def site_revoke(
    ctx: typer.Context,
    site_id: Annotated[str, typer.Argument(metavar="SITE_ID", show_default=False)],
    json_out: JsonOut = False,
) -> None:
    """Revoke a site's client certificates and agent tokens: its agent is refused from its next
    request on; issue a new token (`cpnet admin site token`) to let it join again.

    **Example:** `cpnet admin site revoke cn.gd.acme.sz1.i7`
    """
    with connect(ctx) as hub:
        done = hub.revoke_site(site_id)
    if json_out:
        print_json(done)
        return
    console.print(
        f"revoked {done['certificates_revoked']} certificates and "
        f"{done['agent_tokens_revoked']} agent tokens of {site_id}"
    )


@pool_app.command("retire")
def pool_retire(
    ctx: typer.Context,
    pool_id: Annotated[str, typer.Argument(metavar="POOL_ID", show_default=False)],
    json_out: JsonOut = False,
) -> None:
    """Retire a pool for good: it leaves discovery and its identifier resolves to a tombstone.

    **Example:** `cpnet admin pool retire cn.gd.acme.sz1.gpu1.i0`
    """
    with connect(ctx) as hub:
        pool = hub.retire_pool(pool_id)
    if json_out:
        print_json(pool)
    else:
        console.print(f"retired pool {pool.id} ({pool.name})")
