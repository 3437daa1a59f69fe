"""How the CLI finds its hub and token, and writes them down for `cpnet login`.

Order of precedence: ``--hub`` / ``--token`` flags, then CPNET_HUB / CPNET_TOKEN, then the config
file (``~/.config/cpnet/config.toml``, or the path in CPNET_CONFIG). The lookup itself lives in the
SDK (:func:`cpnet.client.resolve_target`) so scripts see the same hub as the CLI.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import tomli_w
import typer

from cpnet.cli.output import errors
from cpnet.client import Client, config_path, read_config


@dataclass(slots=True)
class CliState:
    """What the root command learned from its options; kept on the Click context."""

    hub: str | None = None
    token: str | None = None
    retry_window_s: float | None = None  # None: CPNET_RETRY_WINDOW_S, else the SDK's default
    # Tests put a fault injector at the network boundary here (it forwards to a real hub);
    # normal runs use the network.
    transport: httpx.BaseTransport | None = None


def state(ctx: typer.Context) -> CliState:
    """The CLI state from the root context (created empty if the root callback did not run)."""
    return ctx.find_root().ensure_object(CliState)


def connect(ctx: typer.Context, *, hub: str | None = None, token: str | None = None) -> Client:
    """A Client for this invocation: explicit arguments, then root flags, env, config file.

    While the hub is unreachable the Client retries (--retry-window); it says so once, as one
    line on stderr.
    """
    s = state(ctx)
    return Client(
        hub or s.hub,
        token or s.token,
        retry_window_s=s.retry_window_s,
        on_retry=lambda message: errors.print(message, style="yellow", soft_wrap=True),
        transport=s.transport,
    )


def write_config(hub: str, token: str, path: Path | None = None) -> Path:
    """Save hub and token to the config file, readable by the owner only (mode 0600).

    Other keys already in the file are kept. The file is written next to its final place and
    renamed over it, so a crash never leaves half a token behind.
    """
    path = path or config_path()
    data = read_config(path)
    data.update(hub=hub, token=token)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".config-", suffix=".toml", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            tomli_w.dump(data, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    os.chmod(path, 0o600)
    return path
