"""Host facts and /proc parsing, and the Job record round trip."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from cpnet.agent import hostinfo
from cpnet.agent.backends.base import Job, PoolCapacity
from cpnet.tasks.model import TaskSpec


def test_cpu_model_and_memory_from_proc_files(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Test CPU @ 3.0GHz\nflags\t: x\n")
    assert hostinfo.cpu_model(cpuinfo) == "Test CPU @ 3.0GHz"
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16777216 kB\nMemFree:  1 kB\n")
    assert hostinfo.memory_gb(meminfo) == 16.0
    assert hostinfo.memory_gb(tmp_path / "missing") == 0.0


def test_this_host() -> None:
    facts = hostinfo.host_facts(Path("/tmp"))
    assert facts.cpu_cores == os.cpu_count() and facts.ram_gb > 0 and facts.disk_gb > 0
    me = hostinfo.proc_stat(os.getpid())
    assert me is not None and me.ppid == os.getppid() and me.sid == os.getsid(0)
    assert hostinfo.alive(os.getpid(), me.start_ticks)
    assert not hostinfo.alive(os.getpid(), me.start_ticks + 1)  # a reused pid is not ours


def test_job_round_trip_and_capacity() -> None:
    spec = TaskSpec.model_validate(
        {"executors": [{"command": ["true"]}], "resources": {"cpu_cores": 2, "gpus": 1}}
    )
    job = Job("a", "t", "p", spec, Path("/w/a"))
    assert Job.from_dict(job.to_dict()) == job
    demand = PoolCapacity.of(spec)
    total = PoolCapacity(cpu_cores=2, ram_gb=1, disk_gb=0, gpus=1)
    assert total.covers(demand) and not total.minus(demand).covers(demand)


def test_own_children_are_the_live_direct_children() -> None:
    before = set(hostinfo.own_children())
    procs = [subprocess.Popen(["sleep", "30"]) for _ in range(2)]
    try:
        assert set(hostinfo.own_children()) - before == {p.pid for p in procs}
        assert set(hostinfo.children(os.getpid())) - before == {p.pid for p in procs}
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert not {p.pid for p in procs} & set(hostinfo.own_children())
