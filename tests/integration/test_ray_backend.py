"""The Ray backend end to end: a real hub, a real agent with ``backend = "ray"``, and the dev Ray
cluster (``ray_address``: a head with CPU=2 → pool ``cpu``; a worker raylet with CPU=1 and the
custom resource ``fast``=2 → pool ``fast``). One Ray cluster serves the whole session."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cpnet.agent import hostinfo
from cpnet.agent.backends.ray import RayApi
from cpnet.agent.backends.runner_job import GIB
from cpnet.tasks.states import State
from services import DEV_RAY, need_service
from tests.integration.procs import AgentProc, HubProc, World, _env, make_world, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.ray]


@pytest.fixture
def ray_api(ray_address: str) -> Iterator[RayApi]:
    api = RayApi(ray_address)
    yield api
    api.close()


@pytest.fixture
def ray_world(
    hub: HubProc, agents: list[AgentProc], tmp_path: Path, ray_api: RayApi
) -> Iterator[World]:
    world = make_world(hub, {"ai": ("intelligent", "440300")})
    agent = AgentProc(
        hub,
        world.site_tokens["ai"],
        tmp_path / "agent-ai",
        backend="ray",
        options={"ray_address": ray_api.address},
        # An agent with the Ray backend takes seconds to start (it imports Ray), and one test
        # restarts it mid-task: a busy machine must not make that look like a lost site (9 s).
        heartbeat_s=3.0,
    )
    agent.start()
    agents.append(agent)
    yield world
    # Stop whatever this test left running on Ray.
    for job in ray_api.client.list_jobs():
        meta = job.metadata or {}
        if meta.get("cpnet_attempt") and str(job.status.value) in ("PENDING", "RUNNING"):
            entry = job.entrypoint or ""
            if str(tmp_path) in entry:
                ray_api.stop(job.submission_id)


def _ray_final(api: RayApi, sid: str):  # type: ignore[no-untyped-def]
    """The Ray job's details once Ray calls it finished."""
    return wait_until(
        lambda: (i := api.info(sid)) is not None and i.status.is_terminal() and i,
        60,
        f"Ray job {sid} to end",
    )


def _two_pools(user) -> list:  # type: ignore[no-untyped-def]
    return wait_until(lambda: len(user.pools()) == 2 and user.pools(), 60, "two Ray pools")


def test_cluster_appears_as_live_pools(hub: HubProc, ray_world: World, ray_api: RayApi) -> None:
    user = hub.client(ray_world.user_token)
    pools = {p.name: p for p in _two_pools(user)}
    assert sorted(pools) == ["cpu", "fast"]
    alive = [n["resources_total"] for n in ray_api.nodes() if n["state"] == "ALIVE"]
    fast = [r for r in alive if "fast" in r]
    plain = [r for r in alive if "fast" not in r]
    assert pools["fast"].total.cpu_cores == sum(r["CPU"] for r in fast)
    assert pools["cpu"].total.cpu_cores == sum(r["CPU"] for r in plain)
    assert pools["cpu"].total.ram_gb == pytest.approx(sum(r["memory"] for r in plain) / GIB, 1e-3)
    for name, p in pools.items():
        assert p.online and p.type == "general"
        assert p.labels["scheduler"] == "ray" and p.labels["ray_pool"] == name
        assert 0 <= p.free.cpu_cores <= p.total.cpu_cores
    assert pools["fast"].labels["ray_resources"] == "fast"
    # Heartbeats carry Ray's own free capacity: never more than the total, and present.
    assert pools["cpu"].last_heartbeat is not None


def test_tasks_complete_and_fail_on_ray(hub: HubProc, ray_world: World, ray_api: RayApi) -> None:
    user = hub.client(ray_world.user_token)
    _two_pools(user)
    ok = user.submit(
        {
            "name": "hello",
            "executors": [{"command": ["sh", "-c", "echo hello from $0", "ray"]}],
            "resources": {"cpu_cores": 0.5, "ram_gb": 0.25},
        }
    )
    bad = user.submit(
        {
            "name": "fails",
            "executors": [{"command": ["sh", "-c", "echo about to fail >&2; exit 3"]}],
            "resources": {"cpu_cores": 0.5, "ram_gb": 0.25},
        }
    )
    done = user.wait(ok.id, timeout=120)
    assert done.state is State.COMPLETE, (done.reason, done.attempts[-1].system_logs)
    attempt = done.attempts[-1]
    assert attempt.executor_logs[0].stdout == "hello from ray\n"
    assert attempt.usage is not None and attempt.usage.wall_s > 0
    # The runner's verdict reaches the hub first; Ray's job ends a moment later.
    info = _ray_final(ray_api, f"cpnet-{attempt.attempt_id}")
    assert str(info.status.value) == "SUCCEEDED" and info.driver_exit_code == 0
    assert info.metadata["cpnet_task"] == ok.id

    failed = user.wait(bad.id, timeout=120)
    assert failed.state is State.EXECUTOR_ERROR, failed.reason
    logs = failed.attempts[-1].executor_logs
    assert [x.exit_code for x in logs] == [3]
    assert logs[0].stderr == "about to fail\n"


def test_cancel_running_task_stops_the_ray_job(
    hub: HubProc, ray_world: World, ray_api: RayApi
) -> None:
    user = hub.client(ray_world.user_token)
    _two_pools(user)
    t = user.submit(
        {
            "name": "sleeper",
            "executors": [{"command": ["sleep", "120"]}],
            "resources": {"cpu_cores": 0.5, "ram_gb": 0.25},
        }
    )
    running = wait_until(
        lambda: (v := user.task(t.id)).state is State.RUNNING and v, 90, "sleeper running"
    )
    sid = f"cpnet-{running.attempts[-1].attempt_id}"
    info = ray_api.info(sid)
    assert info is not None and str(info.status.value) == "RUNNING"
    # Its pool's free capacity, as heartbeats carry it, is Ray's own: the job holds 0.5 CPU.
    pool_id = running.attempts[-1].pool_id
    total = next(p for p in user.pools() if p.id == pool_id).total.cpu_cores
    wait_until(
        lambda: next(p for p in user.pools() if p.id == pool_id).free.cpu_cores == total - 0.5,
        60,
        "the pool's free CPUs to drop by the job's 0.5",
    )
    user.cancel(t.id)
    assert user.wait(t.id, timeout=60).state is State.CANCELED
    assert str(_ray_final(ray_api, sid).status.value) == "STOPPED"


def test_custom_resource_task_lands_on_the_fast_node(
    hub: HubProc, ray_world: World, ray_api: RayApi
) -> None:
    user = hub.client(ray_world.user_token)
    pools = {p.name: p for p in _two_pools(user)}
    fast_nodes = {
        n["node_id"]
        for n in ray_api.nodes()
        if n["state"] == "ALIVE" and "fast" in n["resources_total"]
    }
    assert len(fast_nodes) == 1
    tasks = [
        user.submit(
            {
                "name": f"fast-{i}",
                "executors": [{"command": ["sleep", "1"]}],
                "resources": {
                    "cpu_cores": 0.25,
                    "ram_gb": 0.25,
                    "backend_parameters": {"ray_resources": '{"fast": 1}'},
                },
                "constraints": {"labels": {"ray_resources": "fast"}},
            }
        )
        for i in range(2)
    ]
    plain = user.submit(
        {
            "name": "plain",
            "executors": [{"command": ["true"]}],
            "resources": {"cpu_cores": 0.25, "ram_gb": 0.25},
            "constraints": {"labels": {"ray_pool": "cpu"}},
        }
    )
    for t in tasks:
        done = user.wait(t.id, timeout=120)
        assert done.state is State.COMPLETE, (done.reason, done.attempts[-1].system_logs)
        attempt = done.attempts[-1]
        assert attempt.pool_id == pools["fast"].id
        info = _ray_final(ray_api, f"cpnet-{attempt.attempt_id}")
        assert info.driver_node_id in fast_nodes
    done = user.wait(plain.id, timeout=120)
    assert done.state is State.COMPLETE, done.reason
    info = _ray_final(ray_api, f"cpnet-{done.attempts[-1].attempt_id}")
    assert info.driver_node_id is not None and info.driver_node_id not in fast_nodes


def test_ray_local_starts_keeps_and_stops_its_own_head(hub: HubProc, tmp_path: Path) -> None:
    world = make_world(hub, {"laptop": ("general", "440300")})
    work = tmp_path / "agent-local"
    log = tmp_path / "agent-local.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cpnet",
                "agent",
                "--hub",
                hub.url,
                "--token",
                world.site_tokens["laptop"],
                "--work-dir",
                str(work),
                "--heartbeat",
                "0.5",
                "--ray-local",
                "--option",
                "ray_local_cpus=1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_env(),
        )
    heads = []
    try:
        user = hub.client(world.user_token)
        pools = wait_until(lambda: user.pools(), 120, "the local head's pool")
        assert [(p.name, p.total.cpu_cores) for p in pools] == [("cpu", 1.0)]
        heads.append(wait_until(lambda: _head_of(proc.pid), 60, "the head", log=log))
        t = user.submit({"name": "hi", "executors": [{"command": ["echo", "local head"]}]})
        done = user.wait(t.id, timeout=120)
        assert done.state is State.COMPLETE, (done.reason, log.read_text()[-2000:])
        assert done.attempts[-1].executor_logs[0].stdout == "local head\n"

        # A Ray process of the head dies: `ray start --block` then stops the whole head, and the
        # agent logs why and starts a new one, which takes work again.
        raylet = _session_member(heads[0], "raylet")
        assert raylet is not None, "no raylet in the head's session"
        os.kill(raylet, signal.SIGKILL)
        heads.append(
            wait_until(
                lambda: (h := _head_of(proc.pid)) is not None and h != heads[0] and h,
                150,
                "a new head",
                log=log,
            )
        )
        wait_until(lambda: "the new local Ray head answers" in log.read_text(), 150, "it", log=log)
        assert "the local Ray head exited" in log.read_text()
        t = user.submit({"name": "again", "executors": [{"command": ["echo", "new head"]}]})
        done = user.wait(t.id, timeout=120)
        assert done.state is State.COMPLETE, (done.reason, log.read_text()[-2000:])
        assert done.attempts[-1].executor_logs[0].stdout == "new head\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=90)
    assert proc.returncode == 0, log.read_text()[-2000:]
    # No live process is left of either head's session, and the dashboard no longer answers.
    for head in heads:
        assert not hostinfo.session_members(head)
    for url in _dashboards_of(log):
        with pytest.raises(httpx.TransportError):
            httpx.get(url, timeout=2)


def _head_of(agent_pid: int) -> int | None:
    """The `ray start --head` process the agent started (its child, leading a session).

    Read from /proc, not `ps`: `ps` cuts its output at 80 columns when not on a terminal, and in
    a clone with a long path that cut falls before `--head`."""
    for pid in hostinfo.children(agent_pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in argv]
        if any(Path(a).name == "ray" for a in args) and "start" in args and "--head" in args:
            return pid
    return None


def _session_member(sid: int, name: str) -> int | None:
    """A live process of session `sid` whose program is called `name`."""
    for pid in hostinfo.session_members(sid):
        try:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if Path(argv0.decode(errors="replace")).name == name:
            return pid
    return None


def _dashboards_of(log: Path) -> list[str]:
    found = [
        line.rsplit("Jobs API ", 1)[1].rstrip(")")
        for line in log.read_text().splitlines()
        if "starting a local Ray head" in line
    ]
    assert found, f"no local head in the agent's log: {log.read_text()[-2000:]}"
    return found


def test_ray_flags_are_checked(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cpnet",
            "agent",
            "--hub",
            "http://127.0.0.1:9",
            "--token",
            "x",
            "--backend",
            "slurm",
            "--ray-local",
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    assert out.returncode != 0
    assert "--backend ray" in out.stderr + out.stdout
    # No address: one clear line saying what to pass, no traceback.
    out = subprocess.run(
        [
            *(sys.executable, "-m", "cpnet", "agent", "--hub", "http://127.0.0.1:9"),
            *("--token", "x", "--backend", "ray", "--work-dir", str(tmp_path)),
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    assert out.returncode == 1
    assert "error: the Ray backend needs" in out.stderr and "--ray-address" in out.stderr
    assert "Traceback" not in out.stderr


def test_agent_restart_reattaches_the_running_ray_job(
    hub: HubProc, ray_world: World, ray_api: RayApi, agents: list[AgentProc]
) -> None:
    user = hub.client(ray_world.user_token)
    _two_pools(user)
    t = user.submit(
        {
            "name": "outlives-agent",
            "executors": [{"command": ["sh", "-c", "sleep 4; echo still here"]}],
            "resources": {"cpu_cores": 0.5, "ram_gb": 0.25},
        }
    )
    wait_until(lambda: user.task(t.id).state is State.RUNNING, 90, "task running")
    old = agents[0]
    old.kill()  # SIGKILL: the Ray job goes on without it
    new = AgentProc(
        hub,
        old.token,
        old.work_dir,
        backend="ray",
        options=old.options,
        heartbeat_s=old.heartbeat_s,
    )
    new.start()
    agents.append(new)
    done = user.wait(t.id, timeout=120)
    assert done.state is State.COMPLETE, (done.reason, done.attempts[-1].system_logs)
    assert len(done.attempts) == 1
    assert done.attempts[-1].executor_logs[0].stdout == "still here\n"
    ours = [j for j in ray_api.client.list_jobs() if (j.metadata or {}).get("cpnet_task") == t.id]
    assert len(ours) == 1  # one Ray job: nothing ran twice


class DevRaylets:
    """Extra worker raylets joining the dev Ray cluster (``scripts/dev-ray.sh add/remove``)."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    @staticmethod
    def _run(*args: str) -> None:
        proc = subprocess.run(
            ["bash", str(DEV_RAY), *args], capture_output=True, text=True, timeout=240
        )
        assert proc.returncode == 0, f"dev-ray.sh {' '.join(args)}: {proc.stderr[-2000:]}"

    def add(self, name: str, resources: str) -> None:
        self.names.add(name)
        self._run("add", name, resources)

    def remove(self, name: str) -> None:
        self._run("remove", name)
        self.names.discard(name)


@pytest.fixture
def dev_raylets(ray_address: str) -> Iterator[DevRaylets]:
    url = subprocess.run(
        ["bash", str(DEV_RAY), "url"], capture_output=True, text=True, timeout=30
    ).stdout.strip()
    if url != ray_address:
        need_service("ray", f"{ray_address} is not the cluster of scripts/dev-ray.sh ({url!r})")
    raylets = DevRaylets()
    yield raylets
    for name in list(raylets.names):
        raylets.remove(name)


def test_pools_follow_the_clusters_shape_without_a_restart(
    hub: HubProc,
    agents: list[AgentProc],
    tmp_path: Path,
    ray_api: RayApi,
    dev_raylets: DevRaylets,
) -> None:
    """A raylet with a new custom resource becomes a pool while the agent runs, takes a task,
    goes offline (same identifier) when it stops and comes back under that identifier."""
    world = make_world(hub, {"ai": ("intelligent", "440300")})
    # No timer: only the backend's own signal (Ray's nodes seen at each heartbeat) triggers.
    agent = AgentProc(
        hub,
        world.site_tokens["ai"],
        tmp_path / "agent-ai",
        backend="ray",
        options={"ray_address": ray_api.address},
        rediscover_s=0,
    )
    agent.start()
    agents.append(agent)
    user = hub.client(world.user_token)
    _two_pools(user)

    def turbo(online: bool | str = True):  # type: ignore[no-untyped-def]
        return next((p for p in user.pools(online=online) if p.name == "turbo"), None)

    dev_raylets.add("turbo", '{"turbo": 1}')
    pool = wait_until(turbo, 90, "pool turbo to appear")
    assert pool.online and pool.labels["ray_resources"] == "turbo"
    assert pool.total.cpu_cores == 1
    assert sorted(p.name for p in user.pools()) == ["cpu", "fast", "turbo"]
    turbo_nodes = {
        n["node_id"]
        for n in ray_api.nodes()
        if n["state"] == "ALIVE" and "turbo" in n["resources_total"]
    }
    assert len(turbo_nodes) == 1

    t = user.submit(
        {
            "name": "on-turbo",
            "executors": [{"command": ["sh", "-c", "echo turbo"]}],
            "resources": {
                "cpu_cores": 0.25,
                "ram_gb": 0.25,
                "backend_parameters": {"ray_resources": '{"turbo": 1}'},
            },
            "constraints": {"labels": {"ray_pool": "turbo"}},
        }
    )
    done = user.wait(t.id, timeout=120)
    assert done.state is State.COMPLETE, (done.reason, done.attempts[-1].system_logs)
    assert done.attempts[-1].pool_id == pool.id
    assert done.attempts[-1].executor_logs[0].stdout == "turbo\n"
    info = _ray_final(ray_api, f"cpnet-{done.attempts[-1].attempt_id}")
    assert info.driver_node_id in turbo_nodes

    dev_raylets.remove("turbo")
    wait_until(lambda: turbo() is None, 90, "pool turbo to go offline")
    gone = turbo("any")
    assert gone is not None and gone.id == pool.id and not gone.online
    assert sorted(p.name for p in user.pools()) == ["cpu", "fast"]

    dev_raylets.add("turbo", '{"turbo": 1}')
    back = wait_until(turbo, 90, "pool turbo to come back")
    assert back.id == pool.id and back.online
