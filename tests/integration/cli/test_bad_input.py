"""Values a user types that no request could carry end in one line saying what is wrong and what
to do, never in a traceback: a token or hub URL with a typographic dash (pasted from a document),
a URL that is not one, ids with spaces or dots.

The token is tried on every command in the tree (so a new command is covered without touching
this file), each run as a real `cpnet` process: what is asserted is what a user sees.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w
from typer.testing import CliRunner

from cpnet.cli.config import CliState
from cpnet.cli.main import app

from .conftest import ALL_COMMANDS, Tenant

runner = CliRunner()
BAD_TOKEN = "abc—def"  # an em dash where a hyphen was
BAD_TOKEN_SAID = (
    "has '—' (U+2014) at position 4, which no cpnet token contains; "
    "copy it again from where it was issued"
)


def cpnet(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `cpnet ARGS` as a process with its own HOME and config, no CPNET_* from outside."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("CPNET_")}
    base.update(
        HOME=str(tmp_path),
        CPNET_CONFIG=str(tmp_path / "config.toml"),
        CPNET_DATA=str(tmp_path / "data"),
        **env,
    )
    try:
        return subprocess.run(
            [sys.executable, "-m", "cpnet", *args],
            env=base,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"`cpnet {' '.join(args)}` ran on instead of refusing the value at once")


def one_error_line(out: subprocess.CompletedProcess[str]) -> str:
    """The single line a refused command printed on stderr (nothing on stdout, no traceback)."""
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    assert out.stdout == ""
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("error: ")
    return line


@pytest.mark.parametrize("path", [p for p in ALL_COMMANDS if p], ids=" ".join)
def test_every_command_refuses_a_token_no_token_has(path, tmp_path):
    out = cpnet(tmp_path, "--token", BAD_TOKEN, *path)
    assert one_error_line(out) == f"error: the token given with --token {BAD_TOKEN_SAID}"


@pytest.mark.parametrize(
    "args", [("pools",), ("submit", "--", "true"), ("agent",), ("version",)], ids=" ".join
)
def test_a_bad_CPNET_TOKEN_is_named(args, tmp_path):
    out = cpnet(tmp_path, *args, CPNET_TOKEN=BAD_TOKEN)
    assert one_error_line(out) == f"error: the token in CPNET_TOKEN {BAD_TOKEN_SAID}"


def test_the_agent_refuses_a_bad_token_or_hub_url_at_start(tmp_path):
    hub = "http://127.0.0.1:1"
    out = cpnet(tmp_path, "agent", "--hub", hub, "--token", BAD_TOKEN)
    assert one_error_line(out) == f"error: the token given with --token {BAD_TOKEN_SAID}"
    out = cpnet(tmp_path, "agent", "--hub", "http://hub—x:8470", "--token", "cpn_x")
    line = one_error_line(out)
    assert "the hub URL given with --hub ('http://hub—x:8470') has '—' (U+2014)" in line
    config = tmp_path / "agent.toml"
    config.write_text(tomli_w.dumps({"hub": hub, "token": "cpn_x\u2011y"}))  # non-breaking hyphen
    out = cpnet(tmp_path, "agent", "--config", str(config))
    assert f"the token in {config} has '\u2011' (U+2011) at position 6" in one_error_line(out)


# ---- in-process: the same checks on hub URLs, config files and ids -----------------------------


def refused(result) -> str:  # type: ignore[no-untyped-def]
    """The one error line of a CliRunner result that exited cleanly with 1 (no exception)."""
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 1, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ")
    return line


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://hub—x:8470", "has '—' (U+2014) at position 11"),
        ("not a url", "has ' ' (U+0020) at position 4"),
        ("", "is empty"),
        ("ftp://hub:8470", "its scheme is 'ftp'"),
        ("hub:port", "Invalid port: 'port'"),
    ],
)
def test_a_hub_url_that_is_not_one_is_one_line(url, said):
    line = refused(runner.invoke(app, ["--hub", url, "pools"]))
    assert line.startswith("error: the hub URL given with --hub")
    assert said in line and "http://HOST:PORT" in line


def test_a_bad_CPNET_HUB_is_named():
    line = refused(runner.invoke(app, ["pools"], env={"CPNET_HUB": "http://hub—x:8470"}))
    assert line.startswith("error: the hub URL in CPNET_HUB ('http://hub—x:8470') has '—'")


def test_a_bad_token_in_the_config_file_is_named(tenant: Tenant, isolated_config):
    isolated_config.write_text(tomli_w.dumps({"hub": tenant.url, "token": BAD_TOKEN}))
    line = refused(runner.invoke(app, ["pools"]))
    assert line == f"error: the token in {isolated_config} {BAD_TOKEN_SAID}"


def test_login_refuses_a_bad_token(tenant: Tenant, isolated_config):
    line = refused(runner.invoke(app, ["login", "--hub", tenant.url, "--token", BAD_TOKEN]))
    assert line == f"error: the token {BAD_TOKEN_SAID}"
    assert not isolated_config.exists()


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("status", "abc—"), "no task 'abc—'"),
        (("logs", "x y"), "no task 'x y'"),
        (("status", ".."), "no task '..'"),  # not a relative path to another endpoint
        (("cancel", "."), "no task '.'"),
        (("explain", ""), "an empty id was given"),
        (("resolve", "x y"), "character ' ' at position 2"),  # the hub's words
        (("blob", "get", "x—y"), "a blob is named by 64 hex digits of its sha256"),
        (("admin", "token", "revoke", "a b"), "no token 'a b'"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else "",
)
def test_odd_ids_are_one_line(tenant: Tenant, args, said):
    prefix = ["--hub", tenant.url, "--token", tenant.token]
    line = refused(runner.invoke(app, [*prefix, *args], obj=CliState()))
    assert said in line
