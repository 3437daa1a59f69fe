"""`cpnet admin`: organisations, users and tokens (providers, sites and pools are in sites.py)."""

from __future__ import annotations

from typing import Annotated

import typer

from cpnet.auth.model import Role
from cpnet.cli import sites
from cpnet.cli.config import connect
from cpnet.cli.output import console, created, errors, print_json, show_issued, show_records, when

JsonOut = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def group(help_text: str) -> typer.Typer:
    """A sub-command group in the CLI's one style."""
    return typer.Typer(help=help_text, no_args_is_help=True, rich_markup_mode="markdown")


app = group(
    "Administer the hub: organisations, users, tokens, providers, sites and pools.\n\n"
    "**Example:** `cpnet admin org create acme`"
)
org_app = group("Organisations (tenants).\n\n**Example:** `cpnet admin org list`")
user_app = group(
    "Users.\n\n**Example:** `cpnet admin user create --org org_nexvcydqesbzjtjp alice`"
)
token_app = group("API tokens.\n\n**Example:** `cpnet admin token list`")
app.add_typer(org_app, name="org")
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")
app.add_typer(sites.provider_app, name="provider")
app.add_typer(sites.site_app, name="site")
app.add_typer(sites.pool_app, name="pool")


@org_app.command("create")
def org_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Organisation name.", show_default=False)],
    json_out: JsonOut = False,
) -> None:
    """Create an organisation.

    **Example:** `cpnet admin org create acme-research`
    """
    with connect(ctx) as hub:
        org = hub.create_org(name)
    if json_out:
        print_json(org)
    else:
        created(org.id, f"created organisation {org.id} ({org.name})")


@org_app.command("list")
def org_list(ctx: typer.Context, json_out: JsonOut = False) -> None:
    """List organisations.

    **Example:** `cpnet admin org list --json`
    """
    with connect(ctx) as hub:
        orgs = hub.orgs()
    show_records(
        orgs,
        ["id", "name", "created"],
        lambda o: [o.id, o.name, when(o.created_at)],
        "orgs",
        json_out,
    )


@user_app.command("create")
def user_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="User name.", show_default=False)],
    org: Annotated[str, typer.Option("--org", metavar="ORG", help="Organisation id.")],
    role: Annotated[Role, typer.Option("--role", case_sensitive=False)] = Role.USER,
    json_out: JsonOut = False,
) -> None:
    """Create a user and print their first API token (shown only once).

    **Example:** `cpnet admin user create --org org_nexvcydqesbzjtjp --role provider-admin bob`
    """
    with connect(ctx) as hub:
        user, issued = hub.create_user(org, name, role.value)
    if json_out:
        print_json({"user": user, "token": issued})
        return
    errors.print(f"created user {user.id} ({user.name}, role {user.role.value}, org {user.org_id})")
    show_issued(issued, "user's token")


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    user: Annotated[
        str | None, typer.Option("--user", metavar="ID", help="For this user (admins only).")
    ] = None,
    name: Annotated[str, typer.Option("--name", help="A label to recognise it by.")] = "",
    json_out: JsonOut = False,
) -> None:
    """Create an API token, for yourself or (admins) for another user; shown only once.

    **Example:** `cpnet admin token create --user usr_10rpgse4bardf0kk --name laptop`
    """
    with connect(ctx) as hub:
        issued = hub.create_token(name, user_id=user)
    if json_out:
        print_json(issued)
    else:
        show_issued(issued, "token")


@token_app.command("list")
def token_list(ctx: typer.Context, json_out: JsonOut = False) -> None:
    """List the tokens you may see (never their secrets).

    **Example:** `cpnet admin token list`
    """
    with connect(ctx) as hub:
        tokens = hub.tokens()
    show_records(
        tokens,
        ["id", "name", "role", "org", "for", "created", "revoked"],
        lambda t: [
            t.id,
            t.name,
            t.role.value,
            t.org_id,
            t.site_id or t.user_id or "-",
            when(t.created_at),
            when(t.revoked_at) if t.revoked_at else "",
        ],
        "tokens",
        json_out,
    )


@token_app.command("revoke")
def token_revoke(
    ctx: typer.Context,
    token_id: Annotated[str, typer.Argument(metavar="ID", help="Token id.", show_default=False)],
    json_out: JsonOut = False,
) -> None:
    """Revoke a token at once.

    **Example:** `cpnet admin token revoke tok_zzwyb32wak1fkwve`
    """
    with connect(ctx) as hub:
        record = hub.revoke_token(token_id)
    if json_out:
        print_json(record)
    else:
        console.print(f"revoked token {record.id} at {when(record.revoked_at)}")
