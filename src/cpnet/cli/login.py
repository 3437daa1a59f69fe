"""`cpnet login` (check a token and save it) and `cpnet whoami`."""

from __future__ import annotations

from typing import Annotated

import typer

from cpnet.auth.model import WhoAmI
from cpnet.cli.config import connect, state, write_config
from cpnet.cli.output import console, fail, fields, print_json


def describe(who: WhoAmI) -> str:
    """One line saying who a token belongs to."""
    subject = (
        f"user {who.user_id}"
        if who.user_id
        else (f"site {who.site_id}" if who.site_id else f"token {who.token_id}")
    )
    return f"{subject} (role {who.role.value}, org {who.org_id})"


def login(
    ctx: typer.Context,
    hub_url: Annotated[
        str | None, typer.Option("--hub", metavar="URL", help="The hub to log in to.")
    ] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", metavar="TOKEN", help="Your API token (from your hub admin)."),
    ] = None,
) -> None:
    """Check a token against a hub and save both to the config file (mode 0600).

    Later commands then need neither `--hub` nor `--token`.

    **Example:** `cpnet login --hub https://hub.example.org:8470 --token cpn_3x…`
    """
    root = state(ctx)
    url, secret = hub_url or root.hub, token or root.token
    if not url or not secret:
        fail("login needs a hub URL and a token", "pass --hub URL --token TOKEN")
    with connect(ctx, hub=url, token=secret) as hub:
        who = hub.whoami()
        path = write_config(hub.url, secret)
        console.print(f"logged in to {hub.url} as {describe(who)}; saved to {path}", soft_wrap=True)


def whoami(
    ctx: typer.Context,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show who the current token belongs to, and which hub it talks to.

    **Example:** `cpnet whoami --json`
    """
    with connect(ctx) as hub:
        who = hub.whoami()
        if json_out:
            print_json({"hub": hub.url, **who.model_dump(mode="json")})
            return
        console.print(
            fields(
                [
                    ("hub", hub.url),
                    ("role", who.role.value),
                    ("org", who.org_id),
                    ("user", who.user_id or "-"),
                    ("site", who.site_id or "-"),
                    ("token", who.token_id),
                ]
            )
        )
