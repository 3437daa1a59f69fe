"""The `cpnet` command line, driven through Click's test runner against the stand-in hub."""

from __future__ import annotations

import json
import stat
import sys
import types
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cpnet.cli import output
from cpnet.cli.config import CliState
from cpnet.cli.main import app
from cpnet.cli.submit import build_spec, is_spec_file
from cpnet.registry.model import PoolDescriptor
from cpnet.tasks.model import TaskSpec

from .conftest import TOKEN, FakeHub

HUB = "http://hub.test:8470"
runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """Tables are easier to assert on when Rich does not fold their cells."""
    monkeypatch.setattr(output.console, "_width", 200)
    monkeypatch.setattr(output.errors, "_width", 200)


@pytest.fixture
def cli(fake_hub_transport):
    """Run `cpnet ARGS` against the stand-in hub, logged in with a valid token."""

    def run(*args: str, input: str | None = None, token: str | None = TOKEN, hub: str = HUB):
        prefix = ["--hub", hub] + (["--token", token] if token else [])
        state = CliState(transport=fake_hub_transport)
        return runner.invoke(app, [*prefix, *args], input=input, obj=state)

    return run


def sent_specs(fake_hub: FakeHub) -> list[dict]:
    return [
        json.loads(r.content)
        for r in fake_hub.requests
        if r.method == "POST" and r.url.path == "/v1/tasks"
    ]


# ---- help -------------------------------------------------------------------------------------


def command_paths(command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and group in the tree, as argument paths from the root."""
    paths = [path]
    if hasattr(command, "list_commands"):  # a group (Typer bundles its own Click)
        ctx = typer.Context(command)
        for name in command.list_commands(ctx):
            paths += command_paths(command.get_command(ctx, name), (*path, name))
    return paths


ALL_COMMANDS = command_paths(typer.main.get_command(app))


def test_the_tree_has_every_documented_command():
    names = {" ".join(p) for p in ALL_COMMANDS}
    expected = {
        "hub", "hub init", "agent", "login", "submit", "tasks", "status", "logs", "cancel",
        "pools", "resolve", "explain", "demo", "version",
        "admin org create", "admin org list", "admin user create", "admin token create",
        "admin token list", "admin token revoke", "admin provider create", "admin provider list",
        "admin site create", "admin site list", "admin site token", "admin pool retire",
    }  # fmt: skip
    assert expected <= names


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=lambda p: " ".join(p) or "cpnet")
def test_every_help_exits_0_and_shows_an_example(path):
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output


# ---- submit -----------------------------------------------------------------------------------


def test_submit_a_command_builds_the_right_spec(cli, fake_hub: FakeHub):
    result = cli(
        "submit", "--name", "hello", "--cpus", "2", "--memory-gb", "4", "--region", "44",
        "--pool-type", "edge", "--tag", "team=nlp", "--env", "A=1", "--", "echo", "hi",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == fake_hub.tasks[0]["id"]
    (sent,) = sent_specs(fake_hub)
    spec = TaskSpec.model_validate(sent)
    assert spec.name == "hello"
    assert [e.command for e in spec.executors] == [["echo", "hi"]]
    assert spec.executors[0].env == {"A": "1"}
    assert (spec.resources.cpu_cores, spec.resources.ram_gb) == (2, 4)
    assert spec.constraints.regions == ["44"]
    assert spec.constraints.pool_types == ["edge"]
    assert spec.tags == {"team": "nlp"}
    assert spec.idempotency_key  # added by the SDK


def test_submit_plain_command_keeps_defaults():
    spec = build_spec(["echo", "hi"])
    assert spec == TaskSpec(executors=[{"command": ["echo", "hi"]}])


def test_command_args_that_look_like_options_pass_through(cli, fake_hub: FakeHub):
    result = cli("submit", "--", "python", "-c", "print(1)", "--epochs", "3")
    assert result.exit_code == 0, result.output
    assert sent_specs(fake_hub)[0]["executors"][0]["command"] == [
        "python", "-c", "print(1)", "--epochs", "3",
    ]  # fmt: skip


def test_spec_file_detection():
    assert is_spec_file(["job.json"]) and is_spec_file(["JOB.TOML"]) and is_spec_file(["-"])
    assert not is_spec_file(["hostname"]) and not is_spec_file(["a.json", "b"])


def test_submit_a_json_file_with_flag_overrides(cli, fake_hub: FakeHub, tmp_path):
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"name": "file", "executors": [{"command": ["true"]}]}))
    result = cli("submit", str(path), "--name", "override", "--gpus", "1")
    assert result.exit_code == 0, result.output
    (sent,) = sent_specs(fake_hub)
    assert sent["name"] == "override"
    assert sent["resources"]["gpus"] == 1
    assert sent["executors"] == [{"command": ["true"], "env": {}, "ignore_error": False}]


def test_submit_a_toml_file(cli, fake_hub: FakeHub, tmp_path):
    path = tmp_path / "job.toml"
    path.write_text('name = "toml"\n[[executors]]\ncommand = ["echo", "toml"]\n')
    assert cli("submit", str(path)).exit_code == 0
    assert sent_specs(fake_hub)[0]["executors"][0]["command"] == ["echo", "toml"]


def test_submit_json_on_stdin(cli, fake_hub: FakeHub):
    result = cli("submit", "-", input=json.dumps({"executors": [{"command": ["cat"]}]}))
    assert result.exit_code == 0, result.output
    assert sent_specs(fake_hub)[0]["executors"][0]["command"] == ["cat"]


def test_submit_an_invalid_spec_is_one_red_line(cli, fake_hub: FakeHub, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"executors": [{"command": ["x"]}], "max_attempts": 99}))
    result = cli("submit", str(path))
    assert result.exit_code == 1
    assert "max_attempts" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert sent_specs(fake_hub) == []


def test_submit_nothing_is_an_error(cli):
    result = cli("submit")
    assert result.exit_code == 1
    assert "nothing to run" in result.stderr


def test_submit_wait_exits_0_on_complete(cli, fake_hub: FakeHub):
    result = cli("submit", "--wait", "--", "true")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == fake_hub.tasks[0]["id"]
    assert "COMPLETE" in result.stderr


def test_submit_wait_exits_1_when_the_task_fails(cli, fake_hub: FakeHub):
    fake_hub.progress = ["QUEUED", "EXECUTOR_ERROR"]
    result = cli("submit", "--wait", "--", "false")
    assert result.exit_code == 1
    assert "EXECUTOR_ERROR" in result.stderr and "cpnet logs" in result.stderr


# ---- reading tasks ----------------------------------------------------------------------------


def test_tasks_table_and_json(cli, fake_hub: FakeHub):
    for i in range(3):
        fake_hub.add_task({"name": f"job-{i}", "executors": [{"command": ["true"]}]})
    table = cli("tasks")
    assert table.exit_code == 0, table.output
    assert "job-2" in table.stdout and "QUEUED" in table.stdout
    data = json.loads(cli("tasks", "--json", "--limit", "2").stdout)
    assert [t["name"] for t in data["tasks"]] == ["job-2", "job-1"]
    assert data["next_cursor"] == "2"
    everything = json.loads(cli("tasks", "--json", "--all").stdout)
    assert len(everything["tasks"]) == 3 and everything["next_cursor"] is None


def test_tasks_state_filter_is_case_insensitive(cli, fake_hub: FakeHub):
    assert cli("tasks", "--state", "running", "--json").exit_code == 0
    assert fake_hub.requests[-1].url.params.get_list("state") == ["RUNNING"]


def test_status_shows_state_and_events(cli, fake_hub: FakeHub):
    fake_hub.add_task({"name": "s", "executors": [{"command": ["true"]}]})
    result = cli("status", "t-0000")
    assert result.exit_code == 0, result.output
    assert "RUNNING" in result.stdout and "last events" in result.stdout
    data = json.loads(cli("status", "t-0000", "--json").stdout)
    assert data["task"]["id"] == "t-0000" and len(data["events"]) == 2


def test_status_watch_runs_until_terminal(cli, fake_hub: FakeHub, monkeypatch):
    monkeypatch.setattr("cpnet.cli.tasks.WATCH_INTERVAL_S", 0.0)
    fake_hub.add_task({"executors": [{"command": ["true"]}]})
    result = cli("status", "t-0000", "--watch")
    assert result.exit_code == 0, result.output
    assert "COMPLETE" in result.stdout


def test_logs_print_the_tail_on_stdout(cli, fake_hub: FakeHub):
    fake_hub.add_task({"executors": [{"command": ["echo", "hi"]}]})
    out = cli("logs", "t-0000")
    assert out.exit_code == 0, out.output
    assert out.stdout == "hi\n"
    assert "executor 0" in out.stderr and "staged 0 inputs" in out.stderr
    assert cli("logs", "t-0000", "--stderr").stdout == "warn\n"
    missing = cli("logs", "t-0000", "--attempt", "7")
    assert missing.exit_code == 1 and "no attempt 7" in missing.stderr


def test_cancel(cli, fake_hub: FakeHub):
    fake_hub.add_task({"executors": [{"command": ["sleep", "9"]}]})
    result = cli("cancel", "t-0000")
    assert result.exit_code == 0, result.output
    assert "CANCELED" in result.stdout


def test_explain_shows_ranking_and_rejections(cli, fake_hub: FakeHub):
    fake_hub.add_task({"executors": [{"command": ["true"]}]})
    result = cli("explain", "t-0000")
    assert result.exit_code == 0, result.output
    assert "cn.dev.acme.sz1.gpu1.i8" in result.stdout
    assert "fastest" in result.stdout and "needs 1 GPU, has 0" in result.stdout


def test_unknown_task_is_one_red_line_and_exit_1(cli):
    result = cli("status", "t-nope")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no task t-nope")
    assert "cpnet tasks" in lines[0]


def test_usage_errors_exit_2(cli):
    assert cli("tasks", "--limit", "0").exit_code == 2
    assert cli("tasks", "--state", "SLEEPING").exit_code == 2
    assert cli("submit", "--tag", "novalue", "--", "true").exit_code == 2


def test_an_unreachable_hub_is_one_red_line(monkeypatch):
    import httpx

    def refuse(request):
        raise httpx.ConnectError("connection refused")

    state = CliState(transport=httpx.MockTransport(refuse))
    result = runner.invoke(app, ["--hub", HUB, "pools"], obj=state)
    assert result.exit_code == 1
    assert "cpnet hub" in result.stderr and len(result.stderr.strip().splitlines()) == 1


# ---- discovery and identifiers ----------------------------------------------------------------


def test_pools_json_is_valid_json(cli, fake_hub: FakeHub):
    result = cli("pools", "--json", "--type", "intelligent", "--label", "rack=a1", "--all")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["pools"][0]["id"] == "cn.dev.acme.sz1.gpu1.i8"
    params = fake_hub.requests[-1].url.params
    assert params["online"] == "any" and params.get_list("label") == ["rack=a1"]


def test_pools_table_summarises_hardware_and_price(cli):
    result = cli("pools")
    assert result.exit_code == 0, result.output
    assert "64c 512G 8×H100" in result.stdout
    assert "6/8 GPUs" in result.stdout
    assert "CNY 0.05/core 12/GPU" in result.stdout


def test_resolve_verify_with_hub_keys(cli):
    result = cli("resolve", "cn.dev.acme.sz1.gpu1.i8", "--verify")
    assert result.exit_code == 0, result.output
    assert "signature valid (key" in result.stdout


def test_resolve_verify_offline_with_a_keys_file(cli, fake_hub: FakeHub, tmp_path):
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"keys": [fake_hub.key.jwk()]}))
    result = cli("resolve", "cn.dev.acme.sz1.gpu1.i8", "--verify", "--keys", str(keys), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["record"]["id"] == "cn.dev.acme.sz1.gpu1.i8"
    assert "/.well-known/cpnet/keys.json" not in [r.url.path for r in fake_hub.requests]


def test_resolve_verify_fails_with_the_wrong_key(cli, tmp_path):
    from cpnet.ident.keys import SigningKey

    keys = tmp_path / "other.json"
    keys.write_text(json.dumps({"keys": [SigningKey.generate().jwk()]}))
    result = cli("resolve", "cn.dev.acme.sz1.gpu1.i8", "--verify", "--keys", str(keys))
    assert result.exit_code == 1
    assert "signature check failed: unknown key id" in result.stderr


def test_resolve_a_malformed_id_shows_the_hubs_message(cli):
    result = cli("resolve", "cn.bad!id")
    assert result.exit_code == 1
    assert "'!' is not allowed" in result.stderr


# ---- login ------------------------------------------------------------------------------------


def test_login_writes_the_config_file_with_mode_0600(fake_hub_transport, isolated_config):
    state = CliState(transport=fake_hub_transport)
    result = runner.invoke(app, ["login", "--hub", HUB + "/", "--token", TOKEN], obj=state)
    assert result.exit_code == 0, result.output
    assert "user u-1" in result.stdout
    assert stat.S_IMODE(isolated_config.stat().st_mode) == 0o600
    assert f'hub = "{HUB}"' in isolated_config.read_text()
    # Later commands need no flags.
    who = runner.invoke(app, ["whoami", "--json"], obj=CliState(transport=fake_hub_transport))
    assert who.exit_code == 0, who.output
    assert json.loads(who.stdout)["hub"] == HUB


def test_login_with_a_bad_token_writes_nothing(fake_hub_transport, isolated_config):
    state = CliState(transport=fake_hub_transport)
    result = runner.invoke(app, ["login", "--hub", HUB, "--token", "cpn_bad"], obj=state)
    assert result.exit_code == 1
    assert "cpnet login" in result.stderr
    assert not isolated_config.exists()


def test_cli_hub_flag_beats_env_and_env_beats_file(
    fake_hub_transport, isolated_config, monkeypatch
):
    isolated_config.write_text(f'hub = "http://file:1"\ntoken = "{TOKEN}"\n')

    def hub_seen(*args: str) -> str:
        state = CliState(transport=fake_hub_transport)
        result = runner.invoke(app, [*args, "--token", TOKEN, "whoami", "--json"], obj=state)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["hub"]

    assert hub_seen() == "http://file:1"
    monkeypatch.setenv("CPNET_HUB", "http://env:2")
    assert hub_seen() == "http://env:2"
    assert hub_seen("--hub", "http://flag:3") == "http://flag:3"


# ---- admin ------------------------------------------------------------------------------------


def test_admin_user_create_prints_the_token_once(cli, fake_hub: FakeHub):
    import httpx

    issued = {
        "id": "tok-2", "name": "", "role": "user", "org_id": "o-1", "user_id": "u-2",
        "created_at": "2025-05-01T12:00:00Z", "token": "cpn_secret-for-bob",
    }  # fmt: skip
    user = {"id": "u-2", "org_id": "o-1", "name": "bob", "role": "user",
            "created_at": "2025-05-01T12:00:00Z"}  # fmt: skip
    fake_hub.forced["/v1/users"] = httpx.Response(201, json={"user": user, "token": issued})
    result = cli("admin", "user", "create", "--org", "o-1", "bob")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("cpn_secret-for-bob") == 1
    assert "shown only once" in result.stderr
    sent = json.loads(fake_hub.requests[-1].content)
    assert sent == {"org_id": "o-1", "name": "bob", "role": "user"}


# ---- commands that start processes ------------------------------------------------------------


def fake_module(monkeypatch, name: str, **attrs) -> None:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    monkeypatch.setitem(sys.modules, name, module)


def test_hub_init_json(monkeypatch, tmp_path):
    seen = {}

    def init_hub(settings):
        seen["settings"] = settings
        return {"admin_token": "cpn_admin", "public_key": "pk", "key_id": "k1", "database_url": "x"}

    fake_module(monkeypatch, "cpnet.hub.bootstrap", init_hub=init_hub)
    result = runner.invoke(app, ["hub", "init", "--data-dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "admin_token": "cpn_admin",
        "public_key": "pk",
        "key_id": "k1",
    }
    assert seen["settings"].data_dir == tmp_path


def test_hub_serves_with_settings_from_flags(monkeypatch, tmp_path):
    seen = {}
    fake_module(monkeypatch, "cpnet.api.server", serve=lambda s: seen.setdefault("s", s))
    result = runner.invoke(app, ["hub", "--port", "9999", "--authority", "cn.gd"])
    assert result.exit_code == 0, result.output
    assert (seen["s"].port, seen["s"].authority) == (9999, "cn.gd")


def test_agent_builds_settings_from_flags_and_file(monkeypatch, tmp_path):
    seen = {}
    fake_module(monkeypatch, "cpnet.agent.main", run_agent=lambda s: seen.setdefault("s", s))
    config = tmp_path / "agent.toml"
    config.write_text(
        'backend = "local"\nwork_dir = "/tmp/w"\n[options]\npartition = "gpu"\n'
        '[[pool]]\nname = "big"\ntype = "intelligent"\n'
        "hardware = { cpu_cores = 96, memory_gb = 1024, "
        'accelerators = [{ model = "H100", count = 8 }] }\n'
        "price = { gpu_hour = 12.0 }\n"
    )
    result = runner.invoke(
        app,
        [
            "agent", "--hub", "hub.test:8470", "--token", "cpn_site", "--config", str(config),
            "--pool-name", "cpu", "--cpus", "16", "--memory-gb", "64", "--price-cpu", "0.05",
            "--label", "rack=a1", "--heartbeat", "2",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    s = seen["s"]
    assert (s.hub_url, s.token, s.backend) == ("http://hub.test:8470", "cpn_site", "local")
    assert s.work_dir == Path("/tmp/w") and s.heartbeat_interval_s == 2.0
    assert s.options == {"partition": "gpu"}
    assert [p.name for p in s.pools] == ["big", "cpu"]
    assert all(isinstance(p, PoolDescriptor) for p in s.pools)
    assert s.pools[0].hardware.gpus == 8 and s.pools[0].price.gpu_hour == 12.0
    assert s.pools[1].labels == {"rack": "a1"} and s.pools[1].price.cpu_core_hour == 0.05
    assert "cpn_site" not in repr(s)


def test_agent_without_pool_flags_lets_the_backend_discover(monkeypatch):
    seen = {}
    fake_module(monkeypatch, "cpnet.agent.main", run_agent=lambda s: seen.setdefault("s", s))
    result = runner.invoke(app, ["agent", "--hub", HUB, "--token", "cpn_site"])
    assert result.exit_code == 0, result.output
    assert seen["s"].pools == []


def test_agent_pool_flags_need_cpus_and_memory(monkeypatch):
    fake_module(monkeypatch, "cpnet.agent.main", run_agent=lambda s: None)
    result = runner.invoke(app, ["agent", "--hub", HUB, "--token", "t", "--pool-name", "x"])
    assert result.exit_code == 1
    assert "--cpus and --memory-gb" in result.stderr


def test_agent_needs_a_token(monkeypatch):
    fake_module(monkeypatch, "cpnet.agent.main", run_agent=lambda s: None)
    result = runner.invoke(app, ["agent", "--hub", HUB])
    assert result.exit_code == 1 and "no agent token" in result.stderr


def test_demo_exits_with_the_demos_code(monkeypatch):
    calls = []
    fake_module(monkeypatch, "cpnet.demo", run_demo=lambda d, k, n: calls.append((d, k, n)) or 3)
    result = runner.invoke(app, ["demo", "--tasks", "5", "--keep"])
    assert result.exit_code == 3
    assert calls == [(None, True, 5)]


def test_version():
    result = runner.invoke(app, ["version", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["version"]
