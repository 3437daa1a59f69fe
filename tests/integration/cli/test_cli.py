"""The `cpnet` command line, driven through Click's test runner against the real hub."""

from __future__ import annotations

import json
import re
import stat
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from cpnet.cli import output
from cpnet.cli.config import CliState
from cpnet.cli.main import app
from cpnet.cli.submit import build_spec, is_spec_file
from cpnet.client import Client
from cpnet.tasks.model import TaskSpec
from cpnet.tasks.states import State
from services import free_port
from tests.integration.procs import AgentProc, HubProc, kill_runners, wait_until

from .conftest import (
    ALL_COMMANDS,
    STAYS_QUEUED,
    FaultyNetworkTransport,
    Net,
    Tenant,
    gate_command,
    gpu_pool,
    wait_for_state,
)

runner = CliRunner()
KEEP_QUEUED = ("--region", "99")  # no pool is in region 99: the task stays QUEUED


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """Tables are easier to assert on when Rich does not fold their cells."""
    monkeypatch.setattr(output.console, "_width", 200)
    monkeypatch.setattr(output.errors, "_width", 200)


@pytest.fixture
def cli(tenant: Tenant):
    """Run `cpnet ARGS` against the real hub, logged in as the test's own user."""

    def run(
        *args: str,
        input: str | None = None,
        token: str | None = tenant.token,
        hub: str = tenant.url,
        transport: FaultyNetworkTransport | None = None,
    ):
        prefix = ["--hub", hub] + (["--token", token] if token else [])
        state = CliState(transport=transport)
        return runner.invoke(app, [*prefix, *args], input=input, obj=state)

    return run


@pytest.fixture
def user(tenant: Tenant):
    with tenant.client() as c:
        yield c


def only_task(c: Client):
    """The one task the test's organisation has on the hub."""
    (task,) = list(c.iter_tasks())
    return task


# ---- help -------------------------------------------------------------------------------------


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


def test_submit_a_command_builds_the_right_spec(cli, user):
    result = cli(
        "submit", "--name", "hello", "--cpus", "2", "--memory-gb", "4", "--region", "44",
        "--pool-type", "edge", "--tag", "team=nlp", "--env", "A=1", "--", "echo", "hi",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    task = only_task(user)
    assert result.stdout.strip() == task.id
    spec = task.spec  # as the hub stored it
    assert spec.name == "hello"
    assert [e.command for e in spec.executors] == [["echo", "hi"]]
    assert spec.executors[0].env == {"A": "1"}
    assert (spec.resources.cpu_cores, spec.resources.ram_gb) == (2, 4)
    assert spec.constraints.regions == ["44"]
    assert spec.constraints.pool_types == ["edge"]
    assert spec.tags == {"team": "nlp"}
    assert task.state is State.QUEUED  # no edge pool: it waits


def test_submit_sends_an_idempotency_key(cli):
    tap = FaultyNetworkTransport()
    assert cli("submit", *KEEP_QUEUED, "--", "true", transport=tap).exit_code == 0
    (sent,) = [json.loads(r.content) for r in tap.requests if r.method == "POST"]
    assert sent["idempotency_key"]  # added by the SDK


def test_submit_plain_command_keeps_defaults():
    spec = build_spec(["echo", "hi"])
    assert spec == TaskSpec(executors=[{"command": ["echo", "hi"]}])


def test_submit_keep_work_dir(cli, user):
    result = cli("submit", *KEEP_QUEUED, "--keep-work-dir", "--", "true")
    assert result.exit_code == 0, result.output
    assert only_task(user).spec.keep_work_dir is True
    assert build_spec(["true"]).keep_work_dir is False  # the default: the agent removes it


def test_command_args_that_look_like_options_pass_through(cli, user):
    result = cli("submit", *KEEP_QUEUED, "--", "python", "-c", "print(1)", "--epochs", "3")
    assert result.exit_code == 0, result.output
    assert only_task(user).spec.executors[0].command == [
        "python", "-c", "print(1)", "--epochs", "3",
    ]  # fmt: skip


def test_spec_file_detection():
    assert is_spec_file(["job.json"]) and is_spec_file(["JOB.TOML"]) and is_spec_file(["-"])
    assert not is_spec_file(["hostname"]) and not is_spec_file(["a.json", "b"])


def test_submit_a_json_file_with_flag_overrides(cli, user, tmp_path):
    path = tmp_path / "job.json"
    path.write_text(
        json.dumps({"name": "file", "executors": [{"command": ["true"]}], **STAYS_QUEUED})
    )
    result = cli("submit", str(path), "--name", "override", "--gpus", "1")
    assert result.exit_code == 0, result.output
    spec = only_task(user).spec
    assert spec.name == "override"
    assert spec.resources.gpus == 1
    assert [(e.command, e.env, e.ignore_error) for e in spec.executors] == [(["true"], {}, False)]
    assert spec.constraints.regions == ["99"]  # the file's own fields are kept


def test_submit_a_toml_file(cli, user, tmp_path):
    path = tmp_path / "job.toml"
    path.write_text('name = "toml"\n[[executors]]\ncommand = ["echo", "toml"]\n')
    assert cli("submit", str(path), *KEEP_QUEUED).exit_code == 0
    assert only_task(user).spec.executors[0].command == ["echo", "toml"]


def test_submit_json_on_stdin(cli, user):
    result = cli(
        "submit", "-", *KEEP_QUEUED, input=json.dumps({"executors": [{"command": ["cat"]}]})
    )
    assert result.exit_code == 0, result.output
    assert only_task(user).spec.executors[0].command == ["cat"]


def test_submit_an_invalid_spec_is_one_red_line(cli, user, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"executors": [{"command": ["x"]}], "max_attempts": 99}))
    result = cli("submit", str(path))
    assert result.exit_code == 1
    assert "max_attempts" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert list(user.iter_tasks()) == []  # nothing reached the hub


def test_submit_nothing_is_an_error(cli):
    result = cli("submit")
    assert result.exit_code == 1
    assert "nothing to run" in result.stderr


def test_submit_wait_exits_0_on_complete(cli, user):
    result = cli("submit", "--wait", "--", "true")
    assert result.exit_code == 0, result.output
    task = only_task(user)
    assert result.stdout.strip() == task.id
    assert "COMPLETE" in result.stderr and task.state is State.COMPLETE


def test_submit_wait_exits_1_when_the_task_fails(cli, user):
    result = cli("submit", "--wait", "--", "false")
    assert result.exit_code == 1
    assert "EXECUTOR_ERROR" in result.stderr and "cpnet logs" in result.stderr
    assert only_task(user).state is State.EXECUTOR_ERROR


# ---- reading tasks ----------------------------------------------------------------------------


def test_tasks_table_and_json(cli):
    for i in range(3):
        assert cli("submit", "--name", f"job-{i}", *KEEP_QUEUED, "--", "true").exit_code == 0
    table = cli("tasks")
    assert table.exit_code == 0, table.output
    assert "job-2" in table.stdout and "QUEUED" in table.stdout
    data = json.loads(cli("tasks", "--json", "--limit", "2").stdout)
    assert [t["name"] for t in data["tasks"]] == ["job-2", "job-1"]
    assert data["next_cursor"]
    everything = json.loads(cli("tasks", "--json", "--all").stdout)
    assert [t["name"] for t in everything["tasks"]] == ["job-2", "job-1", "job-0"]
    assert everything["next_cursor"] is None


def test_tasks_state_filter_is_case_insensitive(cli, user):
    kept = user.submit({"executors": [{"command": ["true"]}], **STAYS_QUEUED})
    gone = user.submit({"executors": [{"command": ["true"]}], **STAYS_QUEUED})
    user.cancel(gone.id)
    result = cli("tasks", "--state", "canceled", "--json")
    assert result.exit_code == 0, result.output
    assert [t["id"] for t in json.loads(result.stdout)["tasks"]] == [gone.id]
    queued = json.loads(cli("tasks", "--state", "Queued", "--json").stdout)
    assert [t["id"] for t in queued["tasks"]] == [kept.id]


def test_status_shows_state_and_events(cli, user, tmp_path):
    gate = tmp_path / "gate"
    task = user.submit({"name": "s", "executors": [{"command": gate_command(gate)}]})
    try:
        wait_for_state(user, task.id, State.RUNNING)
        result = cli("status", task.id)
        assert result.exit_code == 0, result.output
        assert "RUNNING" in result.stdout and "last events" in result.stdout
        data = json.loads(cli("status", task.id, "--json").stdout)
        assert data["task"]["id"] == task.id and data["task"]["state"] == "RUNNING"
        assert data["events"][0]["to_state"] == "QUEUED"
        assert data["events"][-1]["to_state"] == "RUNNING"
    finally:
        gate.touch()


def test_status_watch_runs_until_terminal(cli, user):
    task = user.submit({"executors": [{"command": ["sleep", "0.5"]}]})
    result = cli("status", task.id, "--watch")
    assert result.exit_code == 0, result.output
    assert "COMPLETE" in result.stdout
    assert user.task(task.id).state is State.COMPLETE


def test_logs_print_the_tail_on_stdout(cli, user):
    task = user.submit({"executors": [{"command": ["sh", "-c", "echo hi; echo warn >&2"]}]})
    assert user.wait(task.id, timeout=60, poll=0.05).state is State.COMPLETE
    out = cli("logs", task.id)
    assert out.exit_code == 0, out.output
    assert out.stdout == "hi\n"
    assert "executor 0" in out.stderr and "staged 0 inputs" in out.stderr
    assert cli("logs", task.id, "--stderr").stdout == "warn\n"
    missing = cli("logs", task.id, "--attempt", "7")
    assert missing.exit_code == 1 and "no attempt 7" in missing.stderr


def test_cancel(cli, user):
    task = user.submit({"executors": [{"command": ["sleep", "9"]}], **STAYS_QUEUED})
    result = cli("cancel", task.id)
    assert result.exit_code == 0, result.output
    assert "CANCELED" in result.stdout
    assert user.task(task.id).state is State.CANCELED


def test_explain_shows_ranking_and_rejections(cli, user, net: Net):
    task = user.submit({"executors": [{"command": ["true"]}], "resources": {"gpus": 1}})
    user.wait(task.id, timeout=60, poll=0.05)
    result = cli("explain", task.id)
    assert result.exit_code == 0, result.output
    assert net.pool_ids["gpu1"] in result.stdout  # the only pool with GPUs: chosen
    assert "fits now" in result.stdout
    assert net.pool_ids["cpu"] in result.stdout and "needs 1 gpus, 0 in total" in result.stdout


def test_unknown_task_is_one_red_line_and_exit_1(cli):
    result = cli("status", "tsk_nope")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "tsk_nope" in lines[0]
    assert "cpnet tasks" in lines[0]


def test_usage_errors_exit_2(cli):
    assert cli("tasks", "--limit", "0").exit_code == 2
    assert cli("tasks", "--state", "SLEEPING").exit_code == 2
    assert cli("submit", "--tag", "novalue", "--", "true").exit_code == 2


def test_an_unreachable_hub_is_retried_with_one_notice_then_one_red_line(dead_url):
    started = time.monotonic()
    result = runner.invoke(app, ["--hub", dead_url, "--retry-window", "1", "pools"])
    assert time.monotonic() - started >= 1
    assert result.exit_code == 1
    notice, error = result.stderr.strip().splitlines()
    assert notice == f"hub at {dead_url} unreachable (ConnectError); retrying for up to 1 s…"
    assert error.startswith("error: cannot reach the hub") and "cpnet hub" in error


def test_the_retry_window_can_be_set_with_CPNET_RETRY_WINDOW_S(dead_url):
    result = runner.invoke(app, ["--hub", dead_url, "pools"], env={"CPNET_RETRY_WINDOW_S": "0"})
    assert result.exit_code == 1
    (error,) = result.stderr.strip().splitlines()  # no retry notice: it failed at once
    assert error.startswith("error: cannot reach the hub")


# ---- discovery and identifiers ----------------------------------------------------------------


def test_pools_json_is_valid_json(cli, net: Net):
    result = cli("pools", "--json", "--type", "intelligent", "--label", "rack=a1", "--all")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [p["id"] for p in data["pools"]] == [net.pool_ids["gpu1"]]
    assert cli("pools", "--json", "--label", "rack=b9").stdout.count('"id"') == 0


def test_pools_table_summarises_hardware_and_price(cli):
    result = cli("pools")
    assert result.exit_code == 0, result.output
    assert "64c 512G 8×H100" in result.stdout
    assert re.search(r"\b[0-8]/8 GPUs", result.stdout)
    assert "CNY 0.05/core 12/GPU" in result.stdout


def test_resolve_verify_with_hub_keys(cli, net: Net):
    result = cli("resolve", net.pool_ids["gpu1"], "--verify")
    assert result.exit_code == 0, result.output
    assert "signature valid (key" in result.stdout


def test_resolve_verify_offline_with_a_keys_file(cli, net: Net, tmp_path):
    keys = tmp_path / "keys.json"
    with net.hub.client() as c:
        keys.write_text(json.dumps(c.keys()))
    tap = FaultyNetworkTransport()
    pool_id = net.pool_ids["gpu1"]
    result = cli("resolve", pool_id, "--verify", "--keys", str(keys), "--json", transport=tap)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["record"]["id"] == pool_id
    paths = [r.url.path for r in tap.requests]
    assert f"/v1/resolve/{pool_id}" in paths and "/.well-known/cpnet/keys.json" not in paths


def test_resolve_verify_fails_with_the_wrong_key(cli, net: Net, tmp_path):
    from cpnet.ident.keys import SigningKey

    keys = tmp_path / "other.json"
    keys.write_text(json.dumps({"keys": [SigningKey.generate().jwk()]}))
    result = cli("resolve", net.pool_ids["gpu1"], "--verify", "--keys", str(keys))
    assert result.exit_code == 1
    assert "signature check failed: unknown key id" in result.stderr


def test_resolve_a_malformed_id_shows_the_hubs_message(cli, net: Net):
    said = httpx.get(f"{net.hub.url}/v1/resolve/cn.bad!id").json()["error"]["message"]
    result = cli("resolve", "cn.bad!id")
    assert result.exit_code == 1
    assert said in result.stderr and "'!'" in said


# ---- login ------------------------------------------------------------------------------------


def test_login_writes_the_config_file_with_mode_0600(tenant: Tenant, isolated_config):
    result = runner.invoke(app, ["login", "--hub", tenant.url + "/", "--token", tenant.token])
    assert result.exit_code == 0, result.output
    with tenant.client() as c:
        assert f"user {c.whoami().user_id}" in result.stdout
    assert stat.S_IMODE(isolated_config.stat().st_mode) == 0o600
    assert f'hub = "{tenant.url}"' in isolated_config.read_text()
    # Later commands need no flags.
    who = runner.invoke(app, ["whoami", "--json"])
    assert who.exit_code == 0, who.output
    data = json.loads(who.stdout)
    assert data["hub"] == tenant.url and data["org_id"] == tenant.world.org_id


def test_login_with_a_bad_token_writes_nothing(net: Net, isolated_config):
    result = runner.invoke(app, ["login", "--hub", net.hub.url, "--token", "cpn_bad"])
    assert result.exit_code == 1
    assert "cpnet login" in result.stderr
    assert not isolated_config.exists()


def test_cli_hub_flag_beats_env_and_env_beats_file(tenant: Tenant, isolated_config, monkeypatch):
    """Only the hub the precedence picks is live; any other choice would fail to connect."""
    live = tenant.url

    def hub_seen(*args: str) -> str:
        result = runner.invoke(app, [*args, "--token", tenant.token, "whoami", "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["hub"]

    isolated_config.write_text(f'hub = "{live}"\n')
    assert hub_seen() == live
    isolated_config.write_text(f'hub = "http://127.0.0.1:{free_port()}"\n')
    monkeypatch.setenv("CPNET_HUB", live)
    assert hub_seen() == live
    monkeypatch.setenv("CPNET_HUB", f"http://127.0.0.1:{free_port()}")
    assert hub_seen("--hub", live) == live


# ---- admin ------------------------------------------------------------------------------------


def test_admin_user_create_prints_the_token_once(cli, tenant: Tenant, net: Net):
    org = tenant.world.org_id
    result = cli("admin", "user", "create", "--org", org, "bob", token=net.hub.admin_token)
    assert result.exit_code == 0, result.output
    (secret,) = set(re.findall(r"cpn_[A-Za-z0-9_-]+", result.stdout))
    assert result.stdout.count(secret) == 1
    assert "shown only once" in result.stderr
    with Client(tenant.url, secret) as bob:  # the printed token is bob's, in that org
        who = bob.whoami()
    assert (who.role.value, who.org_id) == ("user", org)


# ---- commands that start processes ------------------------------------------------------------


def test_hub_init_json_then_the_hub_serves_with_flags(tmp_path):
    data = tmp_path / "hub"
    result = runner.invoke(
        app, ["hub", "init", "--data-dir", str(data), "--authority", "cn.gd", "--json"]
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert set(printed) == {
        "admin_token",
        "public_key",
        "key_id",
        "ca_file",
        "tls_cert",
        "tls_key",
        "dns_key",  # the DNS zone's Ed25519 key (docs/identifiers.md, "Running the DNS gateway")
        "dns_public_key",  # its DNSKEY key field; no DS without CPNET_DNS_APEX
    }
    assert Path(printed["dns_key"]).stat().st_mode & 0o077 == 0
    # The development TLS pair and the CA clients trust (docs/security.md)
    assert Path(printed["ca_file"]).is_file() and Path(printed["tls_cert"]).is_file()
    assert Path(printed["tls_key"]).stat().st_mode & 0o077 == 0
    hub = HubProc(data, free_port(), args=["--authority", "cn.gd"])
    try:
        hub.start()
        with Client(hub.url, printed["admin_token"]) as admin:
            assert admin.health()["authority"] == "cn.gd"
            assert admin.whoami().role.value == "admin"
            assert admin.keys()["keys"][0]["kid"] == printed["key_id"]
    finally:
        hub.kill()


def _site(net: Net, name: str) -> tuple[str, str]:
    """A new site of the shared provider: (site id, agent token)."""
    with net.hub.client(net.provider.padmin_token) as c:
        site = c.create_site(net.provider.provider_id, name, type="general", region_code="110000")
        return site.id, c.create_site_token(site.id).token


def _run_agent(net: Net, tmp_path: Path, pools: list[dict], args: list[str]) -> list:
    """Start `cpnet agent` for a new site; return the pools the hub then lists for it (they are
    retired again afterwards, so the shared hub's discovery is as before)."""
    site_id, token = _site(net, f"s{free_port()}")
    agent = AgentProc(net.hub, token, tmp_path / "agent", pools=pools, args=args)
    agent.start()
    admin = net.hub.client()
    try:
        mine = wait_until(
            lambda: [p for p in admin.pools() if p.site_id == site_id], 60, "the agent's pools"
        )
        assert token not in agent.log.read_text()
        return mine
    finally:
        agent.kill()
        kill_runners(agent.work_dir)
        for p in admin.pools(online="any"):
            if p.site_id == site_id:
                admin.retire_pool(p.id)
        admin.close()


def test_agent_builds_pools_from_flags_and_file(net: Net, tmp_path):
    big = gpu_pool() | {"name": "big", "labels": {}}
    flags = ["--pool-name", "cpu", "--cpus", "3", "--memory-gb", "2", "--price-cpu", "0.07"]
    pools = _run_agent(net, tmp_path, [big], [*flags, "--label", "rack=a1"])
    by_name = {p.name: p for p in pools}
    assert sorted(by_name) == ["big", "cpu"]
    assert by_name["big"].hardware.gpus == 8 and by_name["big"].price.gpu_hour == 12.0
    cpu = by_name["cpu"]
    assert (cpu.hardware.cpu_cores, cpu.hardware.memory_gb) == (3, 2)
    assert cpu.labels == {"rack": "a1"} and cpu.price.cpu_core_hour == 0.07


def test_agent_without_pool_flags_lets_the_backend_discover(net: Net, tmp_path):
    (found,) = _run_agent(net, tmp_path, [], [])
    assert found.hardware.cpu_cores > 0 and found.hardware.memory_gb > 0


def test_agent_pool_flags_need_cpus_and_memory():
    result = runner.invoke(
        app, ["agent", "--hub", "http://127.0.0.1:1", "--token", "t", "--pool-name", "x"]
    )
    assert result.exit_code == 1
    assert "--cpus and --memory-gb" in result.stderr


def test_agent_needs_a_token():
    result = runner.invoke(app, ["agent", "--hub", "http://127.0.0.1:1"])
    assert result.exit_code == 1 and "no agent token" in result.stderr


def test_version():
    result = runner.invoke(app, ["version", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["version"]
