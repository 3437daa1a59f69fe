"""The Slurm backend's batch script never carries task text; hostile strings run literally."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from cpnet.agent import hostinfo
from cpnet.agent.backends import get_backend
from cpnet.agent.backends.base import (
    BackendConfig,
    BackendError,
    Handle,
    Job,
    PoolCapacity,
    PoolDecl,
    PoolLive,
)
from cpnet.agent.backends.slurm import (
    SCRIPT_FILE,
    SlurmBackend,
    SlurmFinal,
    SlurmJobRequest,
    SlurmOptions,
    SlurmTransport,
    batch_script,
    make_transport,
    map_final,
    parse_gres,
    parse_sacct_line,
    parse_scontrol_partitions,
    parse_slurm_minutes,
)
from cpnet.agent.backends.slurm.rest import SlurmRest
from cpnet.tasks.model import TaskSpec
from cpnet.tasks.states import State

HOSTILE = ["'; rm -rf / #", "$(touch /tmp/pwned)", "a\nb", "`id`", '"; echo x; "']
HOSTILE_TEXT = "".join(HOSTILE)


def test_registered() -> None:
    assert get_backend("slurm") is SlurmBackend


def test_batch_script_quotes_the_paths_only(tmp_path: Path) -> None:
    work_dir = tmp_path / "it's $(touch /tmp/pwned) `id`" / "a1"
    script = batch_script(work_dir)
    lines = script.splitlines()
    assert lines[0] == "#!/bin/sh" and len(lines) == 2
    assert lines[1].startswith("exec ") and "-m cpnet.agent.runner" in lines[1]
    assert shlex.split(lines[1]) == [
        "exec",
        sys.executable,
        "-m",
        "cpnet.agent.runner",
        str(work_dir),
    ]


@pytest.mark.integration
@pytest.mark.slurm
def test_hostile_task_strings_never_reach_the_script(
    slurm_env: dict[str, str], tmp_path: Path
) -> None:
    pwned = Path("/tmp/pwned")
    pwned.unlink(missing_ok=True)
    root = tmp_path / "root '; $(x) `y` #"
    backend = SlurmBackend(
        BackendConfig(work_root=root, options={"slurm_conf": slurm_env["SLURM_CONF"]})
    )
    spec = TaskSpec.model_validate(
        {
            "name": HOSTILE_TEXT.replace("\n", " "),
            "executors": [
                {"command": ["printf", "%s|", *HOSTILE]},
                {
                    "command": ["sh", "-c", 'printf "%s" "$HOSTILE"'],
                    "env": {"HOSTILE": HOSTILE_TEXT},
                },
            ],
        }
    )
    handle = backend.submit(Job("att-1", "task-1", "cpu", spec, Path("/ignored")))
    assert backend.submit(Job("att-1", "task-1", "cpu", spec, Path("/ignored"))) == handle
    work_dir = Path(handle)
    script = (work_dir / SCRIPT_FILE).read_text()
    assert script == batch_script(work_dir)
    for s in [*HOSTILE, "rm -rf", "pwned", "printf", "HOSTILE"]:
        assert s not in script.replace(str(root).replace("'", "'\"'\"'"), ""), s

    deadline = time.monotonic() + 60
    while not (status := backend.poll(handle)).final:
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    assert status.state is State.COMPLETE, (status.reason, status.system_logs)
    logs = status.executor_logs
    assert logs[0].stdout == "".join(f"{s}|" for s in HOSTILE)
    assert logs[1].stdout == HOSTILE_TEXT
    assert not pwned.exists()


# ---- parsers over real-format Slurm 22.05 output ------------------------------------------------


@pytest.mark.parametrize(
    ("gres", "expected"),
    [
        ("", {}),
        ("(null)", {}),
        ("gpu:2", {None: 2}),
        ("gpu:a100:2(S:0-1)", {"a100": 2}),
        ("gpu:a100:2(S:0-1),gpu:v100:4(S:1)", {"a100": 2, "v100": 4}),
        ("gpu:tesla:4(S:0),mps:400(S:0)", {"tesla": 4}),
        ("mps:100,shard:8", {}),
        # gres_used as sinfo --json reports it
        ("gpu:a100:1(IDX:0),mps:0(IDX:N/A)", {"a100": 1}),
        ("gpu:a100:0(IDX:N/A)", {"a100": 0}),
        ("gpu:h100:3(IDX:0-1,3)", {"h100": 3}),
    ],
)
def test_parse_gres(gres: str, expected: dict[str | None, int]) -> None:
    assert parse_gres(gres) == expected


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("UNLIMITED", None),
        ("INFINITE", None),
        ("30", 30),
        ("1:30", 2),  # minutes:seconds, rounded up as Slurm does
        ("01:00:00", 60),
        ("2-00:00:00", 2880),
        ("1-12", 2160),
        ("0:00:01", 1),
    ],
)
def test_parse_slurm_minutes(text: str, minutes: int | None) -> None:
    assert parse_slurm_minutes(text) == minutes


SCONTROL_PARTITIONS = (
    "PartitionName=cpu AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL AllocNodes=ALL Default=YES "
    "QoS=N/A DefaultTime=NONE DisableRootJobs=NO ExclusiveUser=NO GraceTime=0 Hidden=NO "
    "MaxNodes=UNLIMITED MaxTime=UNLIMITED MinNodes=0 LLN=NO MaxCPUsPerNode=UNLIMITED "
    "Nodes=n[1-2] PriorityJobFactor=1 PriorityTier=1 RootOnly=NO ReqResv=NO OverSubscribe=NO "
    "OverTimeLimit=NONE PreemptMode=OFF State=UP TotalCPUs=2 TotalNodes=2 "
    "SelectTypeParameters=NONE JobDefaults=(null) DefMemPerNode=UNLIMITED "
    "MaxMemPerNode=UNLIMITED TRES=cpu=2,mem=2G,node=2,billing=2\n"
    "PartitionName=gpu AllowGroups=ALL Default=NO MaxTime=2-00:00:00 Nodes=g[01-02] "
    "State=DRAIN TotalCPUs=128 TRES=cpu=128,mem=1000G,node=2,billing=128,gres/gpu=8\n"
)


def test_parse_scontrol_partitions() -> None:
    parts = parse_scontrol_partitions(SCONTROL_PARTITIONS)
    assert parts == {
        "cpu": {"state": "UP", "max_time_min": None, "nodes": "n[1-2]"},
        "gpu": {"state": "DRAIN", "max_time_min": 2880, "nodes": "g[01-02]"},
    }


def test_parse_sacct_line() -> None:
    # sacct -c -n -P -o state,elapsedraw,ncpus,nodelist (the jobcomp file, no slurmdbd)
    assert parse_sacct_line("TIMEOUT|61|1|n1\n") == SlurmFinal("TIMEOUT", 61.0, 1, "n1")
    assert parse_sacct_line("COMPLETED|0|4|n[3-4]\n") == SlurmFinal("COMPLETED", 0.0, 4, "n[3-4]")
    assert parse_sacct_line("CANCELLED by 0|12|2|n3\n").state == "CANCELLED"
    assert parse_sacct_line("") is None


@pytest.mark.parametrize(
    ("slurm_state", "state", "words"),
    [
        ("TIMEOUT", State.EXECUTOR_ERROR, "time limit exceeded"),
        ("OUT_OF_MEMORY", State.EXECUTOR_ERROR, "out of memory"),
        ("NODE_FAIL", State.SYSTEM_ERROR, "node failure"),
        ("PREEMPTED", State.SYSTEM_ERROR, "preempted"),
        ("CANCELLED by 0", State.SYSTEM_ERROR, "not by cpnet"),
        ("WEIRD", State.SYSTEM_ERROR, "ended WEIRD"),
    ],
)
def test_map_final(slurm_state: str, state: State, words: str) -> None:
    got, reason = map_final(slurm_state, "42")
    assert got is state and words in reason and "42" in reason
    assert map_final("NODE_FAIL", "42", "n3")[1] == "node failure on n3 (Slurm job 42 NODE_FAIL)"


def standin_gpu_node(name: str, partitions: list[str], gres: str, used: str, idle: int) -> dict:
    """A node as ``sinfo --json`` (22.05, data_parser v0.0.38) shows one with GPUs; we have no
    GPU node to run, so this is a stand-in at the Slurm boundary."""
    return {
        "architecture": "x86_64",
        "cpus": 64,
        "idle_cpus": idle,
        "alloc_cpus": 64 - idle,
        "real_memory": 512000,
        "alloc_memory": 0,
        "temporary_disk": 0,
        "gres": gres,
        "gres_used": used,
        "name": name,
        "partitions": partitions,
        "state": "mixed" if idle < 64 else "idle",
        "state_flags": [],
    }


class StandinGpuSlurm(SlurmTransport):
    """Stand-in for a GPU Slurm cluster (none can run here): answers the read calls with
    real-format records; submitting is refused."""

    def __init__(self) -> None:
        self.node_list = [
            standin_gpu_node("g01", ["gpu"], "gpu:a100:4(S:0-1)", "gpu:a100:1(IDX:0)", 48),
            standin_gpu_node("g02", ["gpu"], "gpu:a100:4(S:0-1)", "gpu:a100:0(IDX:N/A)", 64),
            standin_gpu_node("c01", ["cpu"], "(null)", "", 64),
        ]
        self.part_state = "UP"

    def nodes(self) -> list[dict]:
        return self.node_list

    def partitions(self) -> dict[str, dict]:
        return parse_scontrol_partitions(
            f"PartitionName=gpu MaxTime=1-00:00:00 Nodes=g[01-02] State={self.part_state}\n"
            "PartitionName=cpu MaxTime=UNLIMITED Nodes=c01 State=UP\n"
        )

    def jobs(self) -> list[dict]:
        return [
            {"job_id": 1, "name": "other-user", "partition": "gpu", "job_state": "RUNNING"},
            {"job_id": 2, "name": "x", "partition": "gpu", "job_state": "PENDING"},
            {"job_id": 3, "name": "y", "partition": "cpu,gpu", "job_state": "PENDING"},
            {"job_id": 4, "name": "z", "partition": "cpu", "job_state": "COMPLETED"},
        ]

    def submit(self, request: SlurmJobRequest, script: Path) -> str:
        raise BackendError("stand-in: no submissions")

    def cancel(self, job_id: str) -> None:
        raise BackendError("stand-in: no jobs")

    def final(self, job_id: str) -> SlurmFinal | None:
        return None


def test_gpu_partitions_from_gres(tmp_path: Path) -> None:
    slurm = StandinGpuSlurm()
    backend = SlurmBackend(BackendConfig(work_root=tmp_path), cli=slurm)
    pools = {p.name: p for p in backend.discover()}
    assert pools["gpu"].total.gpus == 8 and pools["gpu"].gpu_model == "a100"
    assert pools["gpu"].labels["max_time_min"] == "1440"
    assert pools["cpu"].total.gpus == 0 and pools["cpu"].gpu_model is None
    live = {p.name: p for p in backend.live()}
    assert live["gpu"].free.gpus == 7 and live["gpu"].free.cpu_cores == 112
    # every user's jobs count, and a job waiting for either partition counts in both
    assert (live["gpu"].queue_length, live["gpu"].running) == (2, 1)
    assert (live["cpu"].queue_length, live["cpu"].running) == (1, 0)
    slurm.part_state = "DRAIN"
    live = {p.name: p for p in backend.live()}
    assert live["gpu"].free.cpu_cores == 0 and live["gpu"].free.gpus == 0


def test_job_request_from_the_task(tmp_path: Path) -> None:
    backend = SlurmBackend(
        BackendConfig(work_root=tmp_path, options={"time_limit_factor": "3"}),
        cli=StandinGpuSlurm(),
    )
    backend.discover()

    def request(pool: str, **spec: object) -> list[str]:
        task = TaskSpec.model_validate({"executors": [{"command": ["true"]}], **spec})
        job = Job("a1", "t1", pool, task, tmp_path)
        return backend.job_request(job, "cpnet-a1", tmp_path / "a1").sbatch_args()

    args = request("gpu", resources={"gpus": 2, "gpu_model": "a100", "cpu_cores": 1.5})
    assert args[args.index("--gres") + 1] == "gpu:a100:2"
    assert args[args.index("--cpus-per-task") + 1] == "2"
    assert "--no-requeue" in args
    assert args[args.index("--time") + 1] == "30"  # 3 × the default 600 s expected runtime
    args = request("gpu", expected_runtime_s=86400)
    assert args[args.index("--time") + 1] == "1440"  # capped at the partition's MaxTime
    args = request("cpu", resources={"backend_parameters": {"slurm.time_limit_s": "61"}})
    assert args[args.index("--time") + 1] == "2"
    # By default an expected runtime (an estimate) sets no limit: the partition's DefaultTime does.
    backend = SlurmBackend(BackendConfig(work_root=tmp_path), cli=StandinGpuSlurm())
    backend.discover()
    task = TaskSpec.model_validate({"executors": [{"command": ["true"]}]})
    args = backend.job_request(Job("a2", "t2", "cpu", task, tmp_path), "cpnet-a2", tmp_path / "a2")
    assert "--time" not in args.sbatch_args()
    args = request("cpu", resources={"backend_parameters": {"slurm.nodes": "2"}})
    assert args[args.index("--nodes") + 1] == "2"
    assert "--ntasks" not in args
    # more CPUs than the largest node (64) has: spread over nodes, one task per CPU
    args = request("cpu", resources={"cpu_cores": 100, "ram_gb": 10})
    assert args[args.index("--nodes") + 1] == "2"
    assert args[args.index("--ntasks") + 1] == "100"
    assert args[args.index("--cpus-per-task") + 1] == "1"
    assert args[args.index("--mem") + 1] == "5120"  # per node
    with pytest.raises(ValueError, match="nodes"):
        request("cpu", resources={"backend_parameters": {"nodes": "-1"}})
    # MPI ranks: 2 nodes × 2 tasks share 8 cores (2 per task); memory per node
    args = request(
        "cpu",
        resources={
            "cpu_cores": 8,
            "ram_gb": 4,
            "backend_parameters": {"slurm.nodes": "2", "slurm.ntasks_per_node": "2"},
        },
    )
    assert args[args.index("--nodes") + 1] == "2"
    assert args[args.index("--ntasks") + 1] == "4"
    assert args[args.index("--ntasks-per-node") + 1] == "2"
    assert args[args.index("--cpus-per-task") + 1] == "2"
    assert args[args.index("--mem") + 1] == "2048"
    args = request(
        "cpu", resources={"cpu_cores": 3, "backend_parameters": {"ntasks_per_node": "3"}}
    )
    assert args[args.index("--nodes") + 1] == "1" and args[args.index("--ntasks") + 1] == "3"
    with pytest.raises(ValueError, match="at least 4 cpu_cores"):
        request(
            "cpu",
            resources={
                "cpu_cores": 2,
                "backend_parameters": {"nodes": "2", "ntasks_per_node": "2"},
            },
        )
    with pytest.raises(ValueError, match="ntasks_per_node"):
        request("cpu", resources={"backend_parameters": {"ntasks_per_node": "0"}})
    with pytest.raises(ValueError, match="gpu_model"):
        request("gpu", resources={"gpus": 1, "gpu_model": "a100,gpu:9"})


def test_rest_transport_options_are_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def options(**raw: str) -> SlurmOptions:
        return SlurmOptions.parse(raw, "slurm")

    with pytest.raises(BackendError, match="slurmrestd_url"):
        make_transport(options(transport="rest"))
    with pytest.raises(BackendError, match="http"):
        make_transport(options(transport="rest", slurmrestd_url="slurm-head:6820"))
    with pytest.raises(BackendError, match="transport='grpc' unknown"):
        make_transport(options(transport="grpc"))
    monkeypatch.delenv("SLURM_JWT", raising=False)
    rest = make_transport(
        options(transport="rest", slurmrestd_url="http://127.0.0.1:9", slurm_user="cpnet")
    )
    assert isinstance(rest, SlurmRest)
    with pytest.raises(BackendError, match="scontrol token username=cpnet"):
        rest.jobs()
    token_file = tmp_path / "jwt"
    token_file.write_text("SLURM_JWT=abc.def.ghi\n")
    rest = SlurmRest.from_options(
        options(slurmrestd_url="http://127.0.0.1:9", slurm_jwt_file=str(token_file))
    )
    assert rest._token() == "abc.def.ghi"
    token_file.write_text("renewed\n")  # re-read on every request
    assert rest._token() == "renewed"


@pytest.mark.integration
@pytest.mark.slurm
def test_live_without_a_controller_reports_no_free_capacity(
    slurm_env: dict[str, str], tmp_path: Path
) -> None:
    """The real clients against a controller that does not answer (the dev cluster's
    slurm.conf with a closed port): live() still answers, with nothing free."""
    conf = Path(slurm_env["SLURM_CONF"]).read_text()
    dead = tmp_path / "slurm.conf"
    dead.write_text(
        "\n".join(
            "SlurmctldPort=9" if line.startswith("SlurmctldPort=") else line
            for line in conf.splitlines()
        )
    )
    cpu = PoolDecl(
        name="cpu",
        type="supercomputing",
        total=PoolCapacity(cpu_cores=2, ram_gb=2),
        cpu_model="x86_64",
        gpu_model=None,
        gpu_memory_gb=None,
        labels={},
    )
    backend = SlurmBackend(
        BackendConfig(
            work_root=tmp_path / "work",
            pools=[cpu],
            options={"slurm_conf": str(dead), "command_timeout_s": "2"},
        )
    )
    assert backend.live() == [PoolLive("cpu", PoolCapacity(), 0, 0)]


def test_rediscover_follows_partitions_added_and_removed(
    slurm_env: dict[str, str], tmp_path: Path
) -> None:
    """A partition created while the backend runs is a pool after `rediscover` (not before:
    `discover` keeps what it found), and is gone again after the partition is deleted."""
    backend = get_backend("slurm")(
        BackendConfig(work_root=tmp_path / "w", options={"slurm_conf": slurm_env["SLURM_CONF"]})
    )
    before = {d.name for d in backend.discover()}
    name = f"re{uuid.uuid4().hex[:6]}"
    env = {**os.environ, **slurm_env}

    def scontrol(*args: str) -> None:
        proc = subprocess.run(["scontrol", *args], env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr

    scontrol("create", f"PartitionName={name}", "Nodes=ALL", "State=UP")
    try:
        assert {d.name for d in backend.discover()} == before
        found = {d.name: d for d in backend.rediscover()}
        assert set(found) == before | {name}
        assert found[name].labels["partition"] == name and found[name].total.cpu_cores > 0
        assert name in {p.name for p in backend.live()}
    finally:
        scontrol("delete", f"PartitionName={name}")
    assert {d.name for d in backend.rediscover()} == before
    assert name not in {p.name for p in backend.live()}


class StandinLostNodeSlurm(SlurmTransport):
    """Stand-in for a controller that lost a node's slurmd: ``submit`` runs the batch script
    here (on the "node") and nothing Slurm does reaches it; the job's state is what the test
    sets (RUNNING, then NODE_FAIL as slurmctld records once SlurmdTimeout passed)."""

    def __init__(self) -> None:
        self.state = "RUNNING"
        self.procs: list[subprocess.Popen[bytes]] = []

    def nodes(self) -> list[dict]:
        return [standin_gpu_node("n9", ["cpu"], "(null)", "", 64)]

    def partitions(self) -> dict[str, dict]:
        return parse_scontrol_partitions("PartitionName=cpu MaxTime=UNLIMITED Nodes=n9 State=UP")

    def jobs(self) -> list[dict]:
        return [{"job_id": 7, "name": "x", "partition": "cpu", "job_state": self.state}]

    def submit(self, request: SlurmJobRequest, script: Path) -> str:
        self.procs.append(subprocess.Popen([str(script)], cwd=request.work_dir))
        return "7"

    def cancel(self, job_id: str) -> None:
        raise BackendError("stand-in: the node does not answer")

    def final(self, job_id: str) -> SlurmFinal | None:
        if self.state == "RUNNING":
            return None
        return SlurmFinal(self.state, elapsed_s=12.0, cpus=1, nodes="n9")


@pytest.fixture
def lost_node(tmp_path: Path):  # type: ignore[no-untyped-def]
    slurm = StandinLostNodeSlurm()
    yield slurm
    for proc in slurm.procs:
        proc.kill()
        proc.wait(10)


def _lost_node_backend(slurm: StandinLostNodeSlurm, tmp_path: Path, **opts: str) -> SlurmBackend:
    options = {"squeue_cache_s": "0", **opts}  # every poll asks the controller
    return SlurmBackend(BackendConfig(work_root=tmp_path / "work", options=options), cli=slurm)


def _wait_poll(backend: SlurmBackend, handle: Handle, pred, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = backend.poll(handle)
        if pred(status):
            return status
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}: {status}")


def _submit_sleeper(backend: SlurmBackend, tmp_path: Path, runs: Path) -> Handle:
    task = TaskSpec.model_validate(
        {
            "executors": [
                {"command": ["sh", "-c", f"echo run >> {runs}; sleep 60; echo end >> {runs}"]}
            ]
        }
    )
    handle = backend.submit(Job("a1", "t1", "cpu", task, tmp_path))
    _wait_poll(backend, handle, lambda s: s.state is State.RUNNING and runs.is_file(), "a run")
    return handle


def test_node_failure_fences_the_orphaned_runner(
    lost_node: StandinLostNodeSlurm, tmp_path: Path
) -> None:
    """Slurm records NODE_FAIL while the runner lives on: the backend leaves the fence and the
    attempt stays RUNNING until the runner stopped its executor and wrote its account; then it
    is SYSTEM_ERROR naming the node, with the runner's executor log and Slurm's elapsed time,
    and the runner never touched status.json after the fence."""
    backend = _lost_node_backend(lost_node, tmp_path, fence_poll_s="0.1")
    runs = tmp_path / "runs"
    handle = _submit_sleeper(backend, tmp_path, runs)
    work = Path(handle)
    lost_node.state = "NODE_FAIL"
    first = backend.poll(handle)
    assert (work / "fence").is_file()
    assert first.state is State.RUNNING or (work / "status.fenced.json").is_file()
    done = _wait_poll(backend, handle, lambda s: s.state.terminal, "the final state")
    assert done.state is State.SYSTEM_ERROR
    assert done.reason == "node failure on n9 (Slurm job 7 NODE_FAIL)"
    assert [x.exit_code for x in done.executor_logs] == [143]
    assert done.usage is not None and done.usage.wall_s == 12.0
    assert any("after the fence the runner recorded CANCELED" in x for x in done.system_logs)
    assert lost_node.procs[0].wait(10) == 0  # the runner exited
    assert runs.read_text() == "run\n"  # the executor was stopped, not finished
    assert backend.poll(handle).reason == done.reason  # status.json stays the backend's
    backend.forget(handle)
    backend.remove_work_dir(handle)  # the runner answered: nothing needs the fence any more
    assert not handle.work_dir.exists()


def test_node_failure_of_a_dead_machine_is_final_after_fence_wait(
    lost_node: StandinLostNodeSlurm, tmp_path: Path
) -> None:
    """The machine itself died (the runner is gone and can never answer the fence): the
    attempt ends SYSTEM_ERROR once ``fence_wait_s`` passed, saying the runner did not answer."""
    backend = _lost_node_backend(lost_node, tmp_path, fence_wait_s="0.5")
    runs = tmp_path / "runs"
    handle = _submit_sleeper(backend, tmp_path, runs)
    runner = lost_node.procs[0]
    executors = hostinfo.children(runner.pid)  # each leads its own process group
    runner.kill()  # the "machine" dies: the runner and its executor with it
    runner.wait(10)
    for pgid in executors:
        os.killpg(pgid, signal.SIGKILL)
    lost_node.state = "NODE_FAIL"
    assert backend.poll(handle).state is State.RUNNING  # waits for the runner's word first
    done = _wait_poll(backend, handle, lambda s: s.state.terminal, "the final state")
    assert done.state is State.SYSTEM_ERROR and "node failure on n9" in (done.reason or "")
    assert any("did not answer the fence" in x for x in done.system_logs)
    # Its work dir stays, fence included: a runner that was only cut off must still find it.
    backend.forget(handle)
    backend.remove_work_dir(handle)
    assert (handle.work_dir / "fence").exists()
    assert backend.remove_work_dirs([handle]) == [None]  # the agent's batched path keeps it too
    assert (handle.work_dir / "fence").exists()


def test_an_executor_killed_by_slurms_signal_on_a_node_failure_is_slurms_verdict(
    tmp_path: Path,
) -> None:
    """On a node going down the executor can die of slurmd's SIGTERM before the runner takes it
    as a cancel; the runner then records EXECUTOR_ERROR. Slurm's NODE_FAIL decides (a system
    error, retried), unless cpnet cancelled it or the executor died otherwise."""
    from cpnet.agent.backends.slurm.backend import _stopped_by_slurm
    from cpnet.agent.runner import CANCEL_FILE

    killed = {"state": "EXECUTOR_ERROR", "executor_logs": [{"exit_code": 143}]}
    assert _stopped_by_slurm(tmp_path, killed, "NODE_FAIL")
    assert _stopped_by_slurm(tmp_path, killed, "PREEMPTED")
    assert not _stopped_by_slurm(tmp_path, killed, "FAILED")  # the task's own failure
    assert not _stopped_by_slurm(tmp_path, killed, "TIMEOUT")  # Slurm maps it the same way
    failed = {"state": "EXECUTOR_ERROR", "executor_logs": [{"exit_code": 1}]}
    assert not _stopped_by_slurm(tmp_path, failed, "NODE_FAIL")  # it failed by itself first
    (tmp_path / CANCEL_FILE).write_text("")
    assert not _stopped_by_slurm(tmp_path, killed, "NODE_FAIL")  # cpnet asked for it
