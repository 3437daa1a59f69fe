"""Limits the local backend enforces on executors: memory (RLIMIT_AS), private /tmp, GPUs, CPUs."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import pytest

from cpnet.agent.backends.base import BackendConfig, Handle, PoolCapacity, PoolDecl
from cpnet.agent.backends.local import LocalBackend
from cpnet.agent.runner import address_space_limit, probe_cpu_affinity, probe_private_tmp
from cpnet.tasks.states import State

from .conftest import gate_command, job, small_pool, wait_final, wait_for

GIB = 1024**3
ALLOC_2G = [sys.executable, "-c", "x = bytearray(2 * 1024**3)"]
PROBE = "/tmp/cpnet-private-test"


def pool(gpus: int = 0) -> PoolDecl:
    return PoolDecl(
        name="p",
        type="general",
        total=PoolCapacity(cpu_cores=16.0, ram_gb=16.0, disk_gb=10.0, gpus=gpus),
        cpu_model="test cpu",
        gpu_model="test gpu" if gpus else None,
        gpu_memory_gb=16.0 if gpus else None,
        labels={},
    )


# ---- memory --------------------------------------------------------------------------------------


def test_address_space_limit_has_a_floor_and_slack() -> None:
    assert address_space_limit(0.1) == 512 * 1024**2
    assert address_space_limit(4) == 4 * GIB + 256 * 1024**2


def test_executor_over_its_memory_limit_fails_with_the_limit_in_the_reason(make_backend) -> None:
    backend = make_backend(pools=[small_pool()])
    spec = {"executors": [{"command": ALLOC_2G}], "resources": {"ram_gb": 0.25}}
    status = wait_final(backend, backend.submit(job(spec, "small", "p2")))
    assert status.state is State.EXECUTOR_ERROR
    assert status.reason == (
        f"executor 0 ({sys.executable}) failed: exit code 1 "
        "(ran under a 0.25 GiB memory limit: RLIMIT_AS)"
    )
    assert "MemoryError" in status.executor_logs[0].stderr
    assert any("RLIMIT_AS" in line for line in status.system_logs)


def test_executor_within_its_memory_limit_completes(make_backend) -> None:
    backend = make_backend(pools=[small_pool()])
    spec = {"executors": [{"command": ALLOC_2G}], "resources": {"ram_gb": 4}}
    status = wait_final(backend, backend.submit(job(spec, "big", "p2")))
    assert status.state is State.COMPLETE, status.reason


def test_memory_limit_can_be_turned_off(make_backend) -> None:
    backend = make_backend(pools=[small_pool()], memory_limit="false")
    spec = {"executors": [{"command": ALLOC_2G}], "resources": {"ram_gb": 0.25}}
    status = wait_final(backend, backend.submit(job(spec, "off", "p2")))
    assert status.state is State.COMPLETE, status.reason
    assert not any("RLIMIT_AS" in line for line in status.system_logs)


# ---- private /tmp --------------------------------------------------------------------------------


def make_outside(root: Path, **options: str) -> LocalBackend:
    config = BackendConfig(work_root=root / "work", pools=[pool()], options=options)
    return LocalBackend(config)


def write_wait_read(content: str, gate: Path) -> list[dict]:
    return [
        {"command": ["sh", "-c", f"printf %s {content} > {PROBE}"]},
        # not gate_command: the test's python may live under /tmp, which the executors cannot see
        {"command": ["sh", "-c", f"until [ -e {gate} ]; do sleep 0.02; done"]},
        {"command": ["cat", PROBE]},
    ]


@pytest.mark.skipif(
    os.geteuid() != 0 or probe_private_tmp(Path("/var/tmp")) is not None,
    reason="no private /tmp here",
)
def test_concurrent_tasks_each_have_their_own_tmp(outside_tmp: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(PROBE)
    backend = make_outside(outside_tmp)
    gate = outside_tmp / "gate"
    handles = [
        backend.submit(job({"executors": write_wait_read(name, gate)}, name, "p"))
        for name in ("alpha", "beta")
    ]
    for h in handles:  # both wrote their file before either reads it back
        wait_for(lambda h=h: len(backend.poll(h).executor_logs) >= 2, what="both writes")
    gate.touch()
    statuses = [wait_final(backend, h) for h in handles]
    assert [s.state for s in statuses] == [State.COMPLETE] * 2, [s.reason for s in statuses]
    assert [s.executor_logs[2].stdout for s in statuses] == ["alpha", "beta"]
    assert not os.path.exists(PROBE)  # nothing leaked to the host's /tmp
    for s in statuses:
        assert any("/tmp: private" in line for line in s.system_logs), s.system_logs


def test_private_tmp_off_falls_back_to_tmpdir(outside_tmp: Path) -> None:
    backend = make_outside(outside_tmp, private_tmp="false")
    spec = {"executors": [{"command": ["sh", "-c", 'echo "$TMPDIR"']}]}
    handle = backend.submit(job(spec, "off", "p"))
    status = wait_final(backend, handle)
    assert status.executor_logs[0].stdout == f"{handle}/tmp\n"
    assert any(
        "shared with the host" in line and "turned off" in line for line in status.system_logs
    )


# ---- GPUs ----------------------------------------------------------------------------------------


def gpu_job(name: str, gpus: int, gate: Path) -> object:
    spec = {
        "executors": [
            {"command": ["sh", "-c", 'printf %s "${CUDA_VISIBLE_DEVICES-unset}"']},
            {"command": gate_command(gate)},
        ],
        "resources": {"gpus": gpus, "cpu_cores": 1},
    }
    return job(spec, name, "p")


def seen_devices(backend: LocalBackend, handle: Handle) -> str:
    def first_done() -> str | None:
        logs = backend.poll(handle).executor_logs
        return logs[0].stdout or "empty" if len(logs) >= 2 else None

    return wait_for(first_done, what=f"{handle}'s first executor")


def test_gpus_are_assigned_disjointly_and_reused(make_backend, tmp_path: Path) -> None:
    backend = make_backend(pools=[pool(gpus=4)])
    gates = [tmp_path / f"gate{i}" for i in range(3)]
    handles = [backend.submit(gpu_job(f"g{i}", 2, gates[i])) for i in range(3)]
    first, second = (seen_devices(backend, h) for h in handles[:2])
    assert {first, second} == {"0,1", "2,3"}
    assert backend.gpus_of(handles[0]) == tuple(int(g) for g in first.split(","))
    assert backend.poll(handles[2]).state is State.QUEUED

    gates[0].touch()
    assert wait_final(backend, handles[0]).state is State.COMPLETE
    assert seen_devices(backend, handles[2]) == first  # the indices the first one freed
    for g in gates[1:]:
        g.touch()
    assert all(wait_final(backend, h).state is State.COMPLETE for h in handles)


def test_no_gpus_asked_on_a_gpu_pool_sees_none(make_backend, tmp_path: Path) -> None:
    backend = make_backend(pools=[pool(gpus=4)])
    gate = tmp_path / "gate"
    gate.touch()
    status = wait_final(backend, backend.submit(gpu_job("none", 0, gate)))
    assert status.executor_logs[0].stdout == ""


def test_no_cuda_variable_on_a_pool_without_gpus(make_backend, tmp_path: Path) -> None:
    backend = make_backend(pools=[pool(gpus=0)])
    gate = tmp_path / "gate"
    gate.touch()
    status = wait_final(backend, backend.submit(gpu_job("cpu", 0, gate)))
    assert status.executor_logs[0].stdout == "unset"


def test_gpu_assignment_survives_a_restart(make_backend, tmp_path: Path) -> None:
    backend = make_backend(pools=[pool(gpus=4)])
    gates = [tmp_path / "gate0", tmp_path / "gate1"]
    h0 = backend.submit(gpu_job("r0", 2, gates[0]))
    assert seen_devices(backend, h0) == "0,1"
    backend.close()
    again: LocalBackend = make_backend(pools=[pool(gpus=4)])
    h1 = again.submit(gpu_job("r1", 2, gates[1]))
    assert seen_devices(again, h1) == "2,3"
    for g in gates:
        g.touch()
    assert wait_final(again, h0).state is State.COMPLETE
    assert wait_final(again, h1).state is State.COMPLETE


# ---- CPUs ----------------------------------------------------------------------------------------

USABLE = sorted(os.sched_getaffinity(0))
PRINT_AFFINITY = [
    sys.executable,
    "-c",
    "import os; print(','.join(map(str, sorted(os.sched_getaffinity(0)))), end='')",
]


def cpu_pool(cores: float) -> PoolDecl:
    return small_pool("c", cores=cores)


def cpu_job(name: str, cores: float, gate: Path) -> object:
    spec = {
        "executors": [{"command": PRINT_AFFINITY}, {"command": gate_command(gate)}],
        "resources": {"cpu_cores": cores, "ram_gb": 0},
    }
    return job(spec, name, "c")


def test_executor_is_pinned_to_its_assigned_cpus(make_backend, tmp_path: Path) -> None:
    backend = make_backend(pools=[cpu_pool(len(USABLE))])
    gate = tmp_path / "gate"
    gate.touch()
    cores = min(2, len(USABLE))
    handle = backend.submit(cpu_job("pin", cores, gate))
    status = wait_final(backend, handle)
    assert status.state is State.COMPLETE, status.reason
    assigned = backend.cpus_of(handle)
    assert len(assigned) == cores
    assert status.executor_logs[0].stdout == ",".join(map(str, assigned))
    shown = ",".join(map(str, assigned))
    assert f"cpu: pinned to CPUs {shown} ({cores} cores asked)" in status.system_logs


def test_fractional_cores_round_up(make_backend, tmp_path: Path) -> None:
    if len(USABLE) < 2:
        pytest.skip("needs 2 CPUs")
    backend = make_backend(pools=[cpu_pool(len(USABLE))])
    gate = tmp_path / "gate"
    gate.touch()
    handle = backend.submit(cpu_job("frac", 1.5, gate))
    assert wait_final(backend, handle).state is State.COMPLETE
    assert len(backend.cpus_of(handle)) == 2


@pytest.mark.skipif(len(USABLE) < 2, reason="needs 2 CPUs")
def test_concurrent_attempts_get_different_cpus(make_backend, tmp_path: Path) -> None:
    backend = make_backend(pools=[cpu_pool(2)])
    gates = [tmp_path / "gate0", tmp_path / "gate1"]
    handles = [backend.submit(cpu_job(f"c{i}", 1, gates[i])) for i in range(2)]
    seen = [seen_devices(backend, h) for h in handles]
    assert seen[0] != seen[1]
    assert {int(s) for s in seen} <= set(USABLE)
    assert [backend.cpus_of(h) for h in handles] == [(int(s),) for s in seen]
    for g in gates:
        g.touch()
    assert all(wait_final(backend, h).state is State.COMPLETE for h in handles)


@pytest.mark.skipif(len(USABLE) < 2, reason="needs 2 CPUs")
def test_cpu_assignment_survives_a_restart(make_backend, tmp_path: Path) -> None:
    backend = make_backend(pools=[cpu_pool(2)])
    gates = [tmp_path / "gate0", tmp_path / "gate1"]
    h0 = backend.submit(cpu_job("r0", 1, gates[0]))
    first = seen_devices(backend, h0)
    backend.close()
    again: LocalBackend = make_backend(pools=[cpu_pool(2)])
    h1 = again.submit(cpu_job("r1", 1, gates[1]))
    second = seen_devices(again, h1)
    assert again.cpus_of(h0) == (int(first),)  # read back from job.json
    assert second != first
    for g in gates:
        g.touch()
    assert wait_final(again, h0).state is State.COMPLETE
    assert wait_final(again, h1).state is State.COMPLETE


@pytest.mark.skipif(len(USABLE) > 8, reason="one attempt per CPU plus one")
def test_oversubscribed_pool_shares_cpus_round_robin(make_backend, tmp_path: Path) -> None:
    backend = make_backend(pools=[cpu_pool(64)])
    n = len(USABLE) + 1
    gates = [tmp_path / f"gate{i}" for i in range(n)]
    handles = [backend.submit(cpu_job(f"o{i}", 1, gates[i])) for i in range(n)]
    seen = [int(seen_devices(backend, h)) for h in handles]
    assert sorted(seen[:-1]) == USABLE  # every CPU once before any is shared
    assert seen[-1] in USABLE
    for g in gates:
        g.touch()
    assert all(wait_final(backend, h).state is State.COMPLETE for h in handles)


def test_cpu_pinning_can_be_turned_off(make_backend, tmp_path: Path) -> None:
    backend = make_backend(pools=[cpu_pool(len(USABLE))], cpu_pinning="false")
    gate = tmp_path / "gate"
    gate.touch()
    handle = backend.submit(cpu_job("off", 1, gate))
    status = wait_final(backend, handle)
    assert status.state is State.COMPLETE, status.reason
    assert status.executor_logs[0].stdout == ",".join(map(str, USABLE))
    assert backend.cpus_of(handle) == ()
    assert not any(line.startswith("cpu:") for line in status.system_logs)


def test_refused_affinity_is_reported() -> None:
    assert probe_cpu_affinity(USABLE) is None
    why = probe_cpu_affinity([4095])  # no such CPU: EINVAL
    assert why is not None and why.startswith("sched_setaffinity refused")


def test_executor_limit_is_hard_as_well_as_soft(make_backend) -> None:
    # The limit is lent to the executor through vfork (cpnet issue 15), no longer set in a
    # preexec_fn: it must still be its hard limit too, so that it cannot raise it itself.
    backend = make_backend(pools=[small_pool()])
    script = (
        "import resource; soft, hard = resource.getrlimit(resource.RLIMIT_AS); "
        "print(soft, hard); resource.setrlimit(resource.RLIMIT_AS, (hard + 1, hard + 1))"
    )
    spec = {"executors": [{"command": [sys.executable, "-c", script]}], "resources": {"ram_gb": 1}}
    status = wait_final(backend, backend.submit(job(spec, "hard", "p2")))
    want = address_space_limit(1)
    assert status.executor_logs[0].stdout.split() == [str(want), str(want)]
    assert status.state is State.EXECUTOR_ERROR  # raising it was refused
    assert "not allowed to raise maximum limit" in status.executor_logs[0].stderr


@pytest.mark.skipif(
    os.geteuid() != 0 or probe_private_tmp(Path("/var/tmp")) is not None,
    reason="no private /tmp here",
)
def test_an_attempts_executors_share_one_mount_namespace_the_runner_leaves(
    outside_tmp: Path,
) -> None:
    # The namespace is entered once per attempt by the runner's main thread (cpnet issue 15):
    # every executor of the attempt is in the same one, which is not the host's, and stage-out
    # runs back in the host's (an output under the host's /tmp is written there).
    backend = make_outside(outside_tmp)
    host_ns = os.readlink("/proc/self/ns/mnt")
    out = outside_tmp / "out.txt"
    spec = {
        "executors": [
            {"command": ["sh", "-c", "readlink /proc/self/ns/mnt; echo one > /tmp/x"]},
            {"command": ["sh", "-c", "readlink /proc/self/ns/mnt; cat /tmp/x"]},
        ],
        "outputs": [{"path": "/tmp/x", "url": f"file://{out}"}],
    }
    status = wait_final(backend, backend.submit(job(spec, "ns", "p")))
    assert status.state is State.COMPLETE, status.reason
    first, second = (log.stdout.split("\n") for log in status.executor_logs)
    assert first[0] == second[0] != host_ns
    assert second[1] == "one"
    assert out.read_text() == "one\n"
    assert not os.path.exists("/tmp/x")
