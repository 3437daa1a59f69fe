"""`cpnet hub`: run the hub, and `cpnet hub init` to create its store, signing key and admin."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cpnet.cli.output import console, errors, fail, fields, print_json
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
) -> None:
    """Run the hub (the interconnection service) in the foreground until Ctrl-C.

    On a new data dir or database, run `cpnet hub init` first: it creates the store and the
    signing key, and prints the admin token.

    **Example:** `cpnet hub --data-dir ./hub-data --host 0.0.0.0 --port 8470`
    """
    if ctx.invoked_subcommand is not None:
        return
    settings = _settings(
        data_dir=data_dir, database_url=database_url, host=host, port=port, authority=authority
    )
    from cpnet.api.server import serve as run_server

    errors.print(f"cpnet hub listening on http://{settings.host}:{settings.port}", style="dim")
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
    from cpnet.hub.bootstrap import init_hub

    result = init_hub(settings)
    if json_out:
        keep = ("admin_token", "public_key", "key_id")
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
            ]
        )
    )
    console.print(
        "[bold yellow]Store the admin token now: it is shown only this once.[/] "
        f"Log in with: cpnet login --hub http://{settings.host}:{settings.port} --token <token>",
        soft_wrap=True,
    )


def _settings(**flags: object) -> HubSettings:
    """The hub's settings, or one red line naming the CPNET_* variable that is wrong."""
    try:
        return HubSettings.from_env(**flags)
    except ValueError as exc:
        fail(str(exc), "fix the variable (or unset it) and start again")
