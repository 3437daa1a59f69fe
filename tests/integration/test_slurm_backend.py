"""The Slurm backend end to end: a real hub, a real agent with ``backend = "slurm"``, and the
throw-away dev Slurm cluster (``slurm_env``: partition ``cpu`` = n1, n2 with 1 CPU each, ``big`` =
n3, n4 with 2 CPUs each)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cpnet.tasks.states import State
from tests.integration.procs import AgentProc, HubProc, World, make_world, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slurm]


def _slurm(env: dict[str, str], *argv: str) -> str:
    return subprocess.run(
        list(argv),
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout


def _squeue(env: dict[str, str]) -> list[dict]:
    out = subprocess.run(
        ["squeue", "--json"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return json.loads(out)["jobs"]


@pytest.fixture
def slurm_world(
    hub: HubProc, agents: list[AgentProc], tmp_path: Path, slurm_env: dict[str, str]
) -> Iterator[World]:
    world = make_world(hub, {"hpc": ("supercomputing", "440300")})
    agent = AgentProc(
        hub,
        world.site_tokens["hpc"],
        tmp_path / "agent-hpc",
        backend="slurm",
        options={"slurm_conf": slurm_env["SLURM_CONF"]},
    )
    agent.start()
    agents.append(agent)
    yield world
    # Cancel whatever this test left in Slurm (jobs running in its work dirs).
    ours = [
        str(j["job_id"])
        for j in _squeue(slurm_env)
        if str(j.get("current_working_directory", "")).startswith(str(tmp_path))
        and j.get("job_state") in ("PENDING", "RUNNING")
    ]
    if ours:
        subprocess.run(["scancel", *ours], env={**os.environ, **slurm_env}, timeout=30)


def test_partitions_are_live_pools(hub: HubProc, slurm_world: World) -> None:
    user = hub.client(slurm_world.user_token)
    pools = wait_until(lambda: len(user.pools()) == 2 and user.pools(), 30, "two Slurm pools")
    by_name = {p.name: p for p in pools}
    assert sorted(by_name) == ["big", "cpu"]
    assert by_name["cpu"].total.cpu_cores == 2 and by_name["big"].total.cpu_cores == 4
    assert by_name["cpu"].total.ram_gb == 2 and by_name["big"].total.ram_gb == 4
    for name, p in by_name.items():
        assert p.type == "supercomputing"
        assert p.labels == {"scheduler": "slurm", "partition": name}


def test_task_completes_and_fails_on_slurm(hub: HubProc, slurm_world: World) -> None:
    user = hub.client(slurm_world.user_token)
    wait_until(lambda: len(user.pools()) == 2, 30, "two Slurm pools")
    ok = user.submit(
        {"name": "hello", "executors": [{"command": ["sh", "-c", "echo hello from $0", "slurm"]}]}
    )
    bad = user.submit({"name": "fails", "executors": [{"command": ["sh", "-c", "exit 3"]}]})
    done = user.wait(ok.id, timeout=90)
    assert done.state is State.COMPLETE, done.reason
    assert done.attempts[-1].executor_logs[0].stdout == "hello from slurm\n"
    failed = user.wait(bad.id, timeout=90)
    assert failed.state is State.EXECUTOR_ERROR, failed.reason
    assert [x.exit_code for x in failed.attempts[-1].executor_logs] == [3]


def test_cancel_running_task_stops_the_slurm_job(
    hub: HubProc, slurm_world: World, slurm_env: dict[str, str], tmp_path: Path
) -> None:
    user = hub.client(slurm_world.user_token)
    wait_until(lambda: len(user.pools()) == 2, 30, "two Slurm pools")
    t = user.submit({"name": "sleeper", "executors": [{"command": ["sleep", "60"]}]})
    wait_until(lambda: user.task(t.id).state is State.RUNNING, 60, "sleeper running")

    def mine() -> list[dict]:
        return [
            j
            for j in _squeue(slurm_env)
            if str(j.get("current_working_directory", "")).startswith(str(tmp_path))
        ]

    assert [j["job_state"] for j in mine()] == ["RUNNING"]
    user.cancel(t.id)
    assert user.wait(t.id, timeout=60).state is State.CANCELED
    wait_until(
        lambda: all(j["job_state"] not in ("PENDING", "RUNNING") for j in mine()),
        30,
        "the Slurm job to end",
    )


def test_heartbeat_carries_slurms_own_queue(
    hub: HubProc, slurm_world: World, slurm_env: dict[str, str], tmp_path: Path
) -> None:
    """Jobs submitted to Slurm outside cpnet fill partition ``cpu`` (2 × 1 CPU): the pool's free
    CPUs, queue length and running count in the hub come from Slurm."""
    user = hub.client(slurm_world.user_token)
    wait_until(lambda: len(user.pools()) == 2, 30, "two Slurm pools")
    outside = [
        _slurm(
            slurm_env,
            "sbatch",
            "--parsable",
            "-p",
            "cpu",
            "-J",
            "someone-else",
            "-D",
            str(tmp_path),
            "-o",
            "/dev/null",
            "--wrap",
            "sleep 120",
        ).strip()
        for _ in range(3)
    ]
    try:

        def cpu_pool():  # type: ignore[no-untyped-def]
            return next(p for p in user.pools() if p.name == "cpu")

        p = wait_until(
            lambda: (
                ((c := cpu_pool()).queue_length == 1 and c.running == 2 and c.free.cpu_cores == 0)
                and c
            ),
            30,
            "the cpu pool to show Slurm's queue",
        )
        assert p.free.ram_gb == 1  # 2 × 1 GiB less 2 × 512 MiB (DefMemPerCPU)
        big = next(x for x in user.pools() if x.name == "big")
        assert (big.queue_length, big.running, big.free.cpu_cores) == (0, 0, 4)
    finally:
        _slurm(slurm_env, "scancel", *outside)
