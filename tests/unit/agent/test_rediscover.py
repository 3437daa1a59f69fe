"""Pools that follow the cluster's shape: when a re-discovery counts as a change, and the
``rediscover_interval_s`` setting. (The whole loop, with a Ray raylet joining and leaving, is in
tests/integration/test_ray_backend.py.)"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from cpnet.agent.backends.base import PoolCapacity, PoolDecl
from cpnet.agent.main import pools_changed
from cpnet.agent.settings import AgentConfigError, AgentSettings, read_agent_file


def decl(name: str, cpus: float = 2.0, **labels: str) -> PoolDecl:
    return PoolDecl(
        name=name,
        type="general",
        total=PoolCapacity(cpu_cores=cpus, ram_gb=4.0, disk_gb=0.0, gpus=0),
        cpu_model="unknown",
        gpu_model=None,
        gpu_memory_gb=None,
        labels={"scheduler": "ray", **labels},
    )


def test_the_same_pools_in_another_order_are_no_change() -> None:
    before = [decl("cpu"), decl("fast", 1.0)]
    assert pools_changed(before, list(reversed(before))) == ([], [])
    # Equal values, not the same objects: a fresh discovery builds new ones.
    assert pools_changed(before, [decl("fast", 1.0), decl("cpu")]) == ([], [])


def test_a_new_pool_and_a_vanished_pool_are_named() -> None:
    before = [decl("cpu"), decl("fast", 1.0)]
    assert pools_changed(before, [*before, decl("turbo", 1.0)]) == (["turbo"], [])
    assert pools_changed(before, [decl("cpu")]) == ([], ["fast"])
    assert pools_changed(before, [decl("cpu"), decl("turbo")]) == (["turbo"], ["fast"])
    assert pools_changed([], [decl("cpu")]) == (["cpu"], [])


def test_changed_hardware_or_labels_count_as_changed() -> None:
    cpu = decl("cpu")
    more = replace(cpu, total=PoolCapacity(cpu_cores=3.0, ram_gb=4.0, disk_gb=0.0, gpus=0))
    assert pools_changed([cpu], [more]) == (["cpu"], [])
    relabelled = decl("cpu", ray_resources="nvme")
    assert pools_changed([cpu], [relabelled]) == (["cpu"], [])
    assert pools_changed([cpu], [replace(cpu, type="intelligent")]) == (["cpu"], [])


def test_rediscover_interval_setting(tmp_path: Path) -> None:
    assert AgentSettings(hub_url="http://h", token="t").rediscover_interval_s == 60.0
    cfg = tmp_path / "agent.toml"
    cfg.write_text("rediscover_interval_s = 30\n")
    assert read_agent_file(cfg)["rediscover_interval_s"] == 30.0
    cfg.write_text("rediscover_interval_s = 0\n")
    assert read_agent_file(cfg)["rediscover_interval_s"] == 0.0
    for bad in ("0.5", "-1", "100000"):
        cfg.write_text(f"rediscover_interval_s = {bad}\n")
        with pytest.raises(AgentConfigError, match="rediscover_interval_s must be 0"):
            read_agent_file(cfg)
