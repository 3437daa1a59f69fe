"""The Slurm backend end to end: a real hub, a real agent with ``backend = "slurm"``, and the
throw-away dev Slurm cluster (``slurm_env``: partition ``cpu`` = n1, n2 with 1 CPU each, ``big`` =
n3, n4 with 2 CPUs each)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cpnet.tasks.states import State
from services import need_service
from tests.integration.procs import (
    HEARTBEAT_S,
    AgentProc,
    HubProc,
    World,
    make_world,
    wait_until,
)

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


def _slurm_log(attempt) -> str:  # type: ignore[no-untyped-def]
    """The backend's `slurm: job N STATE, elapsed ...` system log line."""
    lines = [x for x in attempt.system_logs if x.startswith("slurm: job ")]
    assert lines, attempt.system_logs
    return lines[-1]


def _slurm_job_id(attempt) -> str:  # type: ignore[no-untyped-def]
    return _slurm_log(attempt).split()[2]


TRANSPORTS = ["cli", "rest"]


@pytest.fixture
def slurm_transport(request: pytest.FixtureRequest) -> str:
    """The agent's Slurm transport: "cli" unless a test is parametrized over TRANSPORTS."""
    return str(getattr(request, "param", "cli"))


def _transport_options(transport: str, slurm_env: dict[str, str], tmp_path: Path) -> dict:
    options = {"slurm_conf": slurm_env["SLURM_CONF"]}
    if transport == "cli":
        return options
    url_file = Path(slurm_env["SLURM_CONF"]).parent / "slurmrestd.url"
    if not url_file.is_file():
        need_service(
            "slurmrestd",
            f"no {url_file}: install slurmrestd slurm-wlm-jwt-plugin, then restart "
            "scripts/dev-slurm.sh",
        )
    token = _slurm(slurm_env, "scontrol", "token", "username=root", "lifespan=3600")
    token_file = tmp_path / "slurm.jwt"
    token_file.write_text(token)  # "SLURM_JWT=..." as scontrol prints it
    token_file.chmod(0o600)
    return {
        **options,
        "transport": "rest",
        "slurmrestd_url": url_file.read_text().strip(),
        "slurm_user": "root",
        "slurm_jwt_file": str(token_file),
    }


@pytest.fixture
def slurm_heartbeat_s(request: pytest.FixtureRequest) -> float:
    """The agent's heartbeat interval: the fast test default unless a test asks for another
    (the hub takes a site for lost after 3 missed intervals)."""
    return float(getattr(request, "param", HEARTBEAT_S))


@pytest.fixture
def slurm_world(
    hub: HubProc,
    agents: list[AgentProc],
    tmp_path: Path,
    slurm_env: dict[str, str],
    slurm_transport: str,
    slurm_heartbeat_s: float,
) -> Iterator[World]:
    world = make_world(hub, {"hpc": ("supercomputing", "440300")})
    agent = AgentProc(
        hub,
        world.site_tokens["hpc"],
        tmp_path / "agent-hpc",
        backend="slurm",
        options=_transport_options(slurm_transport, slurm_env, tmp_path),
        heartbeat_s=slurm_heartbeat_s,
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


@pytest.mark.parametrize("slurm_transport", TRANSPORTS, indirect=True)
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


@pytest.mark.parametrize("slurm_transport", TRANSPORTS, indirect=True)
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
    # Slurm's own record of the job (jobcomp via sacct -c, or the controller's) is in the usage
    usage = done.attempts[-1].usage
    assert usage is not None and usage.alloc_cpu_s == usage.wall_s  # one CPU allocated
    assert " COMPLETED, elapsed " in _slurm_log(done.attempts[-1])
    failed = user.wait(bad.id, timeout=90)
    assert failed.state is State.EXECUTOR_ERROR, failed.reason
    assert [x.exit_code for x in failed.attempts[-1].executor_logs] == [3]


@pytest.mark.parametrize("slurm_transport", TRANSPORTS, indirect=True)
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
            # None while the pool is not in discovery (a late heartbeat on a busy machine can take
            # it offline for a moment): keep waiting rather than fail.
            return next((p for p in user.pools() if p.name == "cpu"), None)

        p = wait_until(
            lambda: (
                (c := cpu_pool()) is not None
                and (c.queue_length == 1 and c.running == 2 and c.free.cpu_cores == 0)
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


def _pools_up(hub: HubProc, world: World):  # type: ignore[no-untyped-def]
    user = hub.client(world.user_token)
    wait_until(lambda: len(user.pools()) == 2, 30, "two Slurm pools")
    return user


def _runs_task(runs: Path, then: str, **extra: object) -> dict:
    """A task that appends a line to `runs` (so a test can count how often it ran), then `then`."""
    return {
        "executors": [
            {"command": ["sh", "-c", f'echo run >> "$RUNS"; {then}'], "env": {"RUNS": str(runs)}}
        ],
        **extra,
    }


def _our_running_job(slurm_env: dict[str, str], tmp_path: Path) -> dict:
    """The one Slurm job of this test (its work dir is under tmp_path), once it runs."""
    return wait_until(
        lambda: next(
            (
                j
                for j in _squeue(slurm_env)
                if str(j.get("current_working_directory", "")).startswith(str(tmp_path))
                and j["job_state"] == "RUNNING"
            ),
            None,
        ),
        60,
        "the Slurm job running",
    )


def test_time_limit_ends_executor_error(
    hub: HubProc, slurm_world: World, slurm_env: dict[str, str], tmp_path: Path
) -> None:
    """``time_limit_s`` becomes ``--time`` (whole minutes: 30 s → 1); Slurm's TIMEOUT is the
    task's fault: EXECUTOR_ERROR "time limit exceeded", not retried.

    Test-only shortcut: instead of waiting out the minute (60–90 s: Slurm checks limits every
    30 s), the test moves the job's end time to now (``scontrol update EndTime=now``, as root),
    and Slurm's next periodic check ends it TIMEOUT through its real time-limit path."""
    user = _pools_up(hub, slurm_world)
    t = user.submit(
        {
            "name": "too-long",
            "executors": [{"command": ["sleep", "600"]}],
            "resources": {"backend_parameters": {"slurm.time_limit_s": "30"}},
        }
    )
    job = _our_running_job(slurm_env, tmp_path)
    assert job["time_limit"] == 1  # minutes
    _slurm(slurm_env, "scontrol", "update", f"jobid={job['job_id']}", "EndTime=now")
    done = user.wait(t.id, timeout=120)
    assert done.state is State.EXECUTOR_ERROR, (done.reason, done.attempts[-1].system_logs)
    assert len(done.attempts) == 1
    assert "time limit exceeded" in (done.attempts[0].reason or ""), done.attempts[0].reason
    assert "TIMEOUT" in (done.attempts[0].reason or "")


def _node_state(slurm_env: dict[str, str], node: str) -> str:
    return _slurm(slurm_env, "sinfo", "-h", "-n", node, "-o", "%t").strip()


def _return_to_service(slurm_env: dict[str, str], node: str) -> None:
    """Resume `node` and wait until it is idle. ReturnToService=2 may already have brought it
    back when its slurmd registered (then "resume" is refused)."""
    subprocess.run(
        ["scontrol", "update", f"nodename={node}", "state=resume"],
        env={**os.environ, **slurm_env},
        capture_output=True,
        timeout=30,
    )
    wait_until(lambda: _node_state(slurm_env, node) == "idle", 60, f"{node} idle", every=0.2)


def test_node_failure_is_system_error_and_retried(
    hub: HubProc, slurm_world: World, slurm_env: dict[str, str], tmp_path: Path
) -> None:
    """The node under a running job goes down: the attempt ends SYSTEM_ERROR (node failure),
    the hub retries the task, and the retry completes on the partition's other node."""
    user = _pools_up(hub, slurm_world)
    runs = tmp_path / "runs"
    t = user.submit(
        _runs_task(
            runs,
            '[ "$(wc -l < "$RUNS")" -ge 2 ] || sleep 300',
            constraints={"labels": {"partition": "big"}},
        )
    )
    wait_until(lambda: runs.is_file(), 60, "the first run to start")
    job = _our_running_job(slurm_env, tmp_path)
    node = job["nodes"]
    assert node in ("n3", "n4")
    _slurm(slurm_env, "scontrol", "update", f"nodename={node}", "state=down", "reason=cpnet-test")
    try:
        done = user.wait(t.id, timeout=120)
    finally:
        _return_to_service(slurm_env, node)
    first = done.attempts[0]
    assert first.state is State.SYSTEM_ERROR, (first.reason, first.system_logs)
    assert "node failure" in (first.reason or "") and "NODE_FAIL" in (first.reason or "")
    assert done.state is State.COMPLETE, (done.reason, [a.reason for a in done.attempts])
    assert len(done.attempts) == 2
    assert runs.read_text() == "run\nrun\n"


@pytest.mark.parametrize("slurm_transport", TRANSPORTS, indirect=True)
def test_multi_node_job_runs_srun_across_the_allocation(hub: HubProc, slurm_world: World) -> None:
    """``nodes=2`` on ``big`` (n3, n4): the executor runs on the batch host and its ``srun``
    reaches both nodes; the task's result is the batch step's."""
    user = _pools_up(hub, slurm_world)
    t = user.submit(
        {
            "name": "two-nodes",
            "executors": [
                {"command": ["srun", "sh", "-c", 'echo "$SLURMD_NODENAME $SLURM_PROCID"']},
                {"command": ["sh", "-c", 'echo "$SLURM_JOB_NUM_NODES"; exit 4']},
            ],
            "resources": {"backend_parameters": {"slurm.nodes": "2"}},
            "constraints": {"labels": {"partition": "big"}},
        }
    )
    done = user.wait(t.id, timeout=90)
    assert done.state is State.EXECUTOR_ERROR, (done.reason, done.attempts[-1].system_logs)
    logs = done.attempts[-1].executor_logs
    assert sorted(logs[0].stdout.splitlines()) == ["n3 0", "n4 1"], logs[0]
    assert logs[0].exit_code == 0
    assert (logs[1].stdout, logs[1].exit_code) == ("2\n", 4)


@pytest.mark.parametrize("slurm_transport", TRANSPORTS, indirect=True)
def test_ranks_per_node_are_slurm_tasks_srun_starts(hub: HubProc, slurm_world: World) -> None:
    """``nodes=2, ntasks_per_node=2`` on ``big`` (n3, n4: 2 CPUs each) with 4 cores: one
    ``srun`` starts four ranks, two on each node, as an MPI job's launcher would."""
    user = _pools_up(hub, slurm_world)
    t = user.submit(
        {
            "name": "ranks",
            "executors": [
                {"command": ["srun", "sh", "-c", 'echo "$SLURMD_NODENAME $SLURM_PROCID"']},
                {"command": ["sh", "-c", 'echo "$SLURM_NTASKS"']},
            ],
            "resources": {
                "cpu_cores": 4,
                "backend_parameters": {"slurm.nodes": "2", "slurm.ntasks_per_node": "2"},
            },
            "constraints": {"labels": {"partition": "big"}},
        }
    )
    done = user.wait(t.id, timeout=90)
    assert done.state is State.COMPLETE, (done.reason, done.attempts[-1].system_logs)
    logs = done.attempts[-1].executor_logs
    ranks = sorted(line.split() for line in logs[0].stdout.splitlines())
    assert [r[1] for r in sorted(ranks, key=lambda r: int(r[1]))] == ["0", "1", "2", "3"], ranks
    assert sorted(r[0] for r in ranks) == ["n3", "n3", "n4", "n4"], ranks
    assert logs[1].stdout.split() == ["4"], logs[1]


# A 5 s heartbeat gives the restarted agent 15 s before the hub takes the site for lost and
# places its tasks again (0.5 s, the test default, allows only 1.5 s: too short under load).
@pytest.mark.parametrize("slurm_heartbeat_s", [5.0], indirect=True)
def test_agent_restart_reattaches_running_jobs(
    hub: HubProc,
    slurm_world: World,
    agents: list[AgentProc],
    slurm_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """SIGKILL the agent while two Slurm jobs run, start it again on the same work dir: both
    tasks complete with one attempt each and each command ran exactly once. The usage is Slurm's
    own record of the job (the job completion log, read with ``sacct -c``)."""
    user = _pools_up(hub, slurm_world)
    runs = [tmp_path / "runs-a", tmp_path / "runs-b"]
    tasks = [user.submit(_runs_task(r, "sleep 6")) for r in runs]
    wait_until(lambda: all(r.is_file() for r in runs), 60, "both jobs running")
    old = agents[-1]
    old.kill()
    assert not any(user.task(t.id).state.terminal for t in tasks)  # killed mid-job
    again = AgentProc(
        hub,
        old.token,
        old.work_dir,
        backend="slurm",
        options=old.options,
        heartbeat_s=old.heartbeat_s,
    )
    again.start()
    agents.append(again)
    for t in tasks:
        done = user.wait(t.id, timeout=90)
        assert done.state is State.COMPLETE, (done.reason, done.attempts[-1].system_logs)
        assert len(done.attempts) == 1
        attempt = done.attempts[0]
        job_id = _slurm_job_id(attempt)
        out = _slurm(
            slurm_env, "sacct", "-c", "-n", "-P", "-j", job_id, "-o", "state,elapsedraw,ncpus"
        )
        state, elapsed, ncpus = out.strip().splitlines()[-1].split("|")
        assert state == "COMPLETED"
        assert attempt.usage is not None
        assert attempt.usage.wall_s == float(elapsed) >= 5
        assert attempt.usage.alloc_cpu_s == float(elapsed) * int(ncpus)
    assert [r.read_text() for r in runs] == ["run\n", "run\n"]


@pytest.mark.parametrize("slurm_transport", TRANSPORTS, indirect=True)
def test_more_cpus_than_a_node_spread_over_nodes(hub: HubProc, slurm_world: World) -> None:
    """4 CPUs on ``big`` (2 CPUs per node): no single node can hold the task, so it runs as
    4 tasks on both nodes, and ``srun`` reaches all of them."""
    user = _pools_up(hub, slurm_world)
    t = user.submit(
        {
            "executors": [
                {"command": ["sh", "-c", 'echo "$SLURM_JOB_NUM_NODES $SLURM_NTASKS"']},
                {"command": ["srun", "sh", "-c", 'echo "$SLURMD_NODENAME"']},
            ],
            "resources": {"cpu_cores": 4, "ram_gb": 1},
            "constraints": {"labels": {"partition": "big"}},
        }
    )
    done = user.wait(t.id, timeout=90)
    assert done.state is State.COMPLETE, (done.reason, done.attempts[-1].system_logs)
    logs = done.attempts[-1].executor_logs
    assert logs[0].stdout == "2 4\n"
    assert sorted(logs[1].stdout.split()) == ["n3", "n3", "n4", "n4"]


def test_staging_progress_of_a_slurm_job_reaches_the_hub(
    hub: HubProc, slurm_world: World, agents: list[AgentProc]
) -> None:
    """The runner inside the batch job writes status.json; the agent's poll reads it like the
    local backend's, so the hub sees the download half-way (the source holds it there)."""
    from tests.integration.test_staging_progress import (
        StandinThrottledServer,
        progress_on_any_backend,
    )

    source = StandinThrottledServer()
    try:
        user = hub.client(slurm_world.user_token)
        progress_on_any_backend(user, source, pools=2, agent=agents[-1])
    finally:
        source.close()


def _slurmd_pid(slurm_conf: str, node: str) -> int | None:
    """The pid of the dev cluster's ``slurmd -f <slurm_conf> -N <node>`` (found in /proc: the
    dev script starts one slurmd per node on this host), None when it does not run."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        named = any(a == "-N" and b == node for a, b in itertools.pairwise(argv))
        if Path(argv[0]).name.startswith("slurmd") and slurm_conf in argv and named:
            return int(proc.name)
    return None


@pytest.fixture
def kill_slurmd(slurm_env: dict[str, str]) -> Iterator[Callable[[str], None]]:
    """``kill_slurmd(node)`` SIGKILLs that node's slurmd (the node "dies" while its jobs'
    slurmstepd and processes live on). Afterwards, pass or fail, the slurmd is started again and
    the node returned to service, so later tests see a healthy cluster."""
    conf = slurm_env["SLURM_CONF"]
    killed: list[str] = []

    def kill(node: str) -> None:
        pid = _slurmd_pid(conf, node)
        if pid is None:
            pytest.skip(f"no local slurmd -N {node} for {conf}: needs scripts/dev-slurm.sh")
        killed.append(node)
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: _slurmd_pid(conf, node) is None, 10, f"slurmd {node} gone")

    yield kill
    for node in killed:
        if _slurmd_pid(conf, node) is None:
            subprocess.run(
                ["/usr/sbin/slurmd", "-f", conf, "-N", node],
                env={**os.environ, **slurm_env},
                check=True,
                timeout=30,
                stdin=subprocess.DEVNULL,
            )
        _return_to_service(slurm_env, node)


def test_node_whose_slurmd_dies_is_retried_and_its_orphan_stopped(
    hub: HubProc,
    slurm_world: World,
    slurm_env: dict[str, str],
    tmp_path: Path,
    kill_slurmd: Callable[[str], None],
) -> None:
    """A real node failure: the slurmd of the node running the task is SIGKILLed mid-job. Its
    slurmstepd, the runner and the executor live on, unseen by Slurm. slurmctld takes the node
    for dead after SlurmdTimeout (the job ends NODE_FAIL); the attempt ends SYSTEM_ERROR naming
    the node; the orphaned first run is stopped (the backend's fence) before the hub's retry on
    the partition's other node runs the command, which completes. The side-effect file shows
    each run's lines: the first run never ticks after the second started, and never ends."""
    user = _pools_up(hub, slurm_world)
    runs = tmp_path / "runs"
    t = user.submit(
        {
            "name": "outlives-its-node",
            "executors": [
                {
                    "command": [
                        "sh",
                        "-c",
                        'echo "start $CPNET_ATTEMPT_ID" >> "$RUNS"; '
                        'if [ "$(grep -c ^start "$RUNS")" -lt 2 ]; then '
                        'while :; do echo "tick $CPNET_ATTEMPT_ID" >> "$RUNS"; sleep 0.2; done; '
                        'fi; echo "end $CPNET_ATTEMPT_ID" >> "$RUNS"',
                    ],
                    "env": {"RUNS": str(runs)},
                }
            ],
            "constraints": {"labels": {"partition": "big"}},
            "keep_work_dir": True,  # the first run's status.json names its runner, read below
        }
    )
    wait_until(lambda: runs.is_file() and "tick" in runs.read_text(), 60, "the first run ticks")
    job = _our_running_job(slurm_env, tmp_path)
    node = job["nodes"]
    assert node in ("n3", "n4")
    kill_slurmd(node)
    # slurmctld notices within its timeouts (SlurmdTimeout=10 plus its ping cycle).
    wait_until(lambda: _node_state(slurm_env, node).startswith("down"), 60, f"{node} down")
    done = user.wait(t.id, timeout=90)
    assert done.state is State.COMPLETE, (done.reason, [a.reason for a in done.attempts])
    assert len(done.attempts) == 2
    first, second = done.attempts
    assert first.state is State.SYSTEM_ERROR, (first.reason, first.system_logs)
    assert f"node failure on {node}" in (first.reason or ""), first.reason
    assert "NODE_FAIL" in (first.reason or "")
    assert second.state is State.COMPLETE
    # The orphan's own account of the executor it stopped is the attempt's record: killed by
    # the runner's SIGTERM (143), its CPU time counted; the wall time is Slurm's.
    assert [x.exit_code for x in first.executor_logs] == [143], first.executor_logs
    assert first.usage is not None and first.usage.cpu_s > 0
    assert " NODE_FAIL, elapsed " in _slurm_log(first)
    assert first.usage.wall_s == float(_slurm_log(first).split("elapsed ")[1].split()[0])
    # Never twice at once: the first run's last line comes before the second run's first.
    lines = runs.read_text().splitlines()
    a1, a2 = first.attempt_id, second.attempt_id
    assert lines[0] == f"start {a1}" and f"end {a1}" not in lines
    assert lines[-2:] == [f"start {a2}", f"end {a2}"], lines
    assert all(x.endswith(a1) for x in lines[:-2]), lines
    # ... and the first run's processes are gone although the node's slurmd still is.
    assert _slurmd_pid(slurm_env["SLURM_CONF"], node) is None
    pid = json.loads((Path(job["current_working_directory"]) / "status.json").read_text())["pid"]
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), 30, "the orphaned runner to exit")
    assert runs.read_text().splitlines() == lines
