"""The `cpnet` command: the root Typer app, its global options, and where each command lives."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from cpnet import __version__
from cpnet.agent.settings import AgentConfigError
from cpnet.cli import (
    admin,
    agent,
    auctions,
    audit,
    blob,
    data,
    dns,
    hub,
    ident,
    login,
    market,
    measure,
    network,
    pools,
    prices,
    quote,
    sim,
    sla,
    submit,
    tasks,
    usage,
)
from cpnet.cli.config import CliState
from cpnet.cli.output import fail, print_json
from cpnet.client import CpnetError, check_hub_url, check_token
from cpnet.errors import DomainError


class CliGroup(TyperGroup):
    """The root group: turns every expected error into one red line and exit code 1."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CpnetError as err:
            fail(err.message, err.hint)
        except AgentConfigError as err:
            fail(str(err), "fix the agent config or flags and start the agent again")
        except DomainError as err:  # raised in-process by `hub init` and friends
            where = f" (field {err.field})" if err.field else ""
            fail(f"{err.message}{where}")


app = typer.Typer(
    name="cpnet",
    cls=CliGroup,
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_show_locals=False,  # locals would include tokens
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def root(
    ctx: typer.Context,
    hub_url: Annotated[
        str | None,
        typer.Option(
            "--hub",
            envvar="CPNET_HUB",
            metavar="URL",
            help="Hub URL (default: CPNET_HUB, then the config file, then http://127.0.0.1:8470).",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="CPNET_TOKEN",
            metavar="TOKEN",
            help="API token (default: CPNET_TOKEN, then the config file).",
            show_envvar=True,
        ),
    ] = None,
    retry_window: Annotated[
        float | None,
        typer.Option(
            "--retry-window",
            envvar="CPNET_RETRY_WINDOW_S",
            metavar="S",
            min=0,
            help="Keep retrying for up to S seconds while the hub is unreachable, e.g. "
            "restarting (default: CPNET_RETRY_WINDOW_S, else 30; 0: fail at once).",
            show_envvar=True,
        ),
    ] = None,
    ca_file: Annotated[
        Path | None,
        typer.Option(
            "--ca-file",
            envvar="CPNET_CA_FILE",
            metavar="PEM",
            help="The CA that signed the hub's TLS certificate, for an https:// hub with a "
            "private CA, e.g. its DATA_DIR/tls/ca.crt (default: CPNET_CA_FILE).",
            show_envvar=True,
        ),
    ] = None,
) -> None:
    """cpnet: one network of many compute providers.

    The hub URL and token come from `--hub` / `--token`, then `CPNET_HUB` / `CPNET_TOKEN`, then
    `~/.config/cpnet/config.toml` (written by `cpnet login`; path overridable by `CPNET_CONFIG`).

    **Example:** `cpnet --hub http://127.0.0.1:8470 pools --type intelligent`
    """
    s = ctx.ensure_object(CliState)
    # Checked before any command runs, so a mistyped value is one line naming it, never a
    # traceback from deep in the HTTP library.
    if hub_url is not None:
        hub_url = check_hub_url(hub_url, _given(ctx, "hub_url", "--hub", "CPNET_HUB"))
    if token is not None:
        token = check_token(token, _given(ctx, "token", "--token", "CPNET_TOKEN"))
    s.hub = hub_url or s.hub
    s.token = token or s.token
    if retry_window is not None:
        s.retry_window_s = retry_window
    if ca_file is not None:
        if not ca_file.is_file():
            raise typer.BadParameter(f"no such file: {ca_file}", param_hint="--ca-file")
        # Every Client this command makes reads it (cpnet.client.Client's ca_file default).
        os.environ["CPNET_CA_FILE"] = str(ca_file)


def _given(ctx: typer.Context, param: str, flag: str, env: str) -> str:
    """Where a root option's value came from, for error messages."""
    source = ctx.get_parameter_source(param)  # an enum of the Click that Typer bundles
    from_env = source is not None and source.name == "ENVIRONMENT"
    return f"in {env}" if from_env else f"given with {flag}"


def version(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print the version of this cpnet.

    **Example:** `cpnet version --json`
    """
    if json_out:
        print_json({"version": __version__})
    else:
        typer.echo(f"cpnet {__version__}")


def demo(
    data_dir: Annotated[
        str | None,
        typer.Option("--data-dir", metavar="DIR", help="Where the demo hub keeps its data."),
    ] = None,
    keep: Annotated[
        bool, typer.Option("--keep", help="Leave the hub and agents running at the end.")
    ] = False,
    n_tasks: Annotated[
        int, typer.Option("--tasks", min=1, max=10_000, help="How many tasks to submit.")
    ] = 20,
) -> None:
    """Run the whole network on this machine: a hub, several local sites, a mixed workload.

    **Example:** `cpnet demo --tasks 20 --keep`
    """
    from pathlib import Path

    from cpnet.demo import run_demo

    code = run_demo(Path(data_dir) if data_dir else None, keep, n_tasks)
    raise typer.Exit(code)


# Registered in the order `cpnet --help` lists them: users first, then operators.
app.command("submit")(submit.submit)
app.command("tasks")(tasks.list_tasks)
app.command("status")(tasks.status)
app.command("logs")(tasks.logs)
app.command("cancel")(tasks.cancel)
app.command("explain")(tasks.explain)
app.command("pools")(pools.pools)
app.add_typer(prices.app, name="prices")
app.command("quote")(quote.quote)
app.add_typer(sla.app, name="sla")
app.command("reputation")(sla.reputation)
app.command("measure")(measure.measure)
app.command("measure-match")(measure.catalogue_match)
app.add_typer(network.app, name="network")
app.command("resolve")(ident.resolve)
app.add_typer(blob.app, name="blob")
app.add_typer(data.app, name="data")
app.command("login")(login.login)
app.command("whoami")(login.whoami)
app.add_typer(hub.app, name="hub")
app.add_typer(dns.app, name="dns")
app.command("agent")(agent.agent)
app.add_typer(admin.app, name="admin")
app.add_typer(market.account_app, name="account")
app.command("bill")(market.bill)
app.add_typer(market.ledger_app, name="ledger")
app.add_typer(audit.app, name="audit")
app.command("usage")(usage.usage)
app.add_typer(auctions.app, name="auction")
app.add_typer(auctions.lease_app, name="lease")
app.command("demo")(demo)
app.command("sim")(sim.sim)
app.command("version")(version)
