"""Capacity vectors end to end: an agent measures its pool on join, discovery in SCUs, predicted
run times in explain, resolution records, and clear errors for bad capacity input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from cpnet.measure import scu
from tests.integration.procs import AgentProc, HubProc, World, make_world, pool, wait_until

pytestmark = pytest.mark.integration


def cli(hub: HubProc, token: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CPNET_")}
    env["COLUMNS"] = "250"
    out = subprocess.run(
        [sys.executable, "-m", "cpnet", "--hub", hub.url, "--token", token, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def api(hub: HubProc, token: str) -> httpx.Client:
    return httpx.Client(base_url=hub.url, headers={"authorization": f"Bearer {token}"}, timeout=30)


@pytest.fixture
def measured(hub: HubProc, agents: list[AgentProc], tmp_path: Path) -> tuple[World, str]:
    """A site whose agent probes its one local pool on join (3 s budget); returns the pool id."""
    world = make_world(hub, {"cpu": ("general", "440300")})
    agent = AgentProc(
        hub,
        world.site_tokens["cpu"],
        tmp_path / "agent",
        pools=[pool("cpu", cores=2, memory_gb=4, price=0.5)],
        measure=True,
        measure_budget_s=3.0,
    )
    agent.start()
    agents.append(agent)
    with hub.client(world.user_token) as c:
        pid = wait_until(lambda: next((p.id for p in c.pools()), None), 60, "pool registered")

        def vector() -> dict | None:
            cap = c.pool(pid).capacity
            return cap if cap and cap.get("measured_at") else None

        wait_until(vector, 180, "pool measured by its agent")
    return world, pid


def test_agent_measures_its_pool_and_discovery_speaks_scu(
    hub: HubProc, measured: tuple[World, str]
) -> None:
    world, pid = measured
    with hub.client(world.user_token) as c:
        cap = c.pool(pid).capacity
        assert cap is not None
        cpu = cap["cpu"]
        # "test cpu" is not in the catalogue: every figure the SCU uses is a measured one.
        assert cpu["catalogue"] is None
        assert {cpu["figures"][f]["source"] for f in ("fp64", "fp32", "mem_bw")} == {"measured"}
        assert cap["probe_s"] > 0
        rate = cap["scu"]["hpc"]
        assert rate > 0 and set(cap["scu"]) == set(scu.PROFILES)

        found = c.pools(profile="hpc", min_scu=rate / 2)
        assert [p.id for p in found] == [pid]
        hourly = 2 * 0.5  # 2 cores at 0.5 per core-hour
        assert found[0].scu_rate == rate
        assert found[0].price_per_scu_hour == pytest.approx(hourly / rate, rel=1e-3)
        assert c.pools(profile="hpc", min_scu=rate * 2) == []

        envelope = c.resolve(pid)
        assert envelope["record"]["capacity"]["vector"]["scu"]["hpc"] == rate
        assert envelope["record"]["capacity"]["vector"]["measured"] is True

        # Work in SCU-hours: the run time is predicted per pool and shown by explain.
        task = c.submit(
            {
                "executors": [{"command": ["true"]}],
                "work": {"profile": "hpc", "scu_hours": rate / 60},  # one minute here
            }
        )
        data = c.explain(task.id)
        assert data["predicted_runtime_s"][pid] == pytest.approx(60.0, rel=1e-3)
        # A reference run time on a reference pool becomes SCU-hours at submission.
        ref = c.submit(
            {
                "executors": [{"command": ["true"]}],
                "work": {"profile": "hpc", "reference_pool": pid, "reference_runtime_s": 120},
            }
        )
        assert ref.spec.work.scu_hours == pytest.approx(120 / 3600 * rate)

    out = cli(hub, world.user_token, "pools", "--profile", "hpc")
    assert "SCU (hpc)" in out and "price/SCU-h" in out and "measured" in out
    out = cli(hub, world.user_token, "explain", task.id)
    assert "predicted run time" in out and pid in out
    out = cli(hub, world.user_token, "measure", "--pool", pid)
    assert "capacity vector" in out and "measured" in out and "not in the catalogue" in out


def test_bad_capacity_input_gets_clear_errors(hub: HubProc) -> None:
    world = make_world(hub, {"gpu": ("intelligent", "110000")})
    sid = world.site_ids["gpu"]
    agent = api(hub, world.site_tokens["gpu"])
    user = api(hub, world.user_token)

    def register(pool_body: dict) -> httpx.Response:
        return agent.post(f"/v1/sites/{sid}/register", json={"pools": [pool_body]})

    h100 = {
        "name": "h100",
        "type": "intelligent",
        "hardware": {
            "cpu_model": "Intel(R) Xeon(R) Platinum 8480+",
            "cpu_cores": 112,
            "memory_gb": 2048,
            "accelerators": [{"model": "NVIDIA H100 80GB HBM3", "count": 8}],
        },
    }
    too_many = {
        **h100,
        "hardware": {
            **h100["hardware"],
            "accelerators": [{"model": "NVIDIA H100 80GB HBM3", "count": 10_000}],
        },
    }
    r = register(too_many)
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "pools.0.hardware.accelerators.0.count"
    for bad in (-1.0, 1e9):
        r = register({**h100, "declared": {"accelerator": {"bf16": bad}}})
        assert r.status_code == 422
        assert r.json()["error"]["field"] == "pools.0.declared.accelerator.bf16"

    # More than the catalogue's peak: accepted, flagged, kept apart, not priced.
    r = register({**h100, "declared": {"accelerator": {"bf16": 100_000}}})
    assert r.status_code == 200, r.text
    pid = r.json()["pools"]["h100"]
    (note,) = r.json()["capacity_notes"]["h100"]
    assert note.startswith("accelerator.bf16: declared 100000 TFLOP/s is above")
    rec = user.get(f"/v1/pools/{pid}").json()
    cap = rec["capacity"]
    assert cap["accelerator"]["catalogue"] == "NVIDIA H100 SXM5 80GB"
    assert [f["field"] for f in cap["flags"]] == ["accelerator.bf16"]
    assert cap["accelerator"]["figures"]["bf16"]["declared"] is None
    assert cap["accelerator"]["figures"]["bf16"]["source"] == "nominal"

    r = user.get("/v1/pools", params={"profile": "crypto"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "profile"
    assert "ai-train" in r.json()["error"]["message"]
    r = user.get("/v1/pools", params={"min_scu": 5})
    assert r.status_code == 400 and r.json()["error"]["field"] == "min_scu"
    r = user.get("/v1/pools", params={"profile": "ai-train", "min_scu": -1})
    assert r.status_code == 422 and r.json()["error"]["field"] == "min_scu"
    r = user.get("/v1/pools", params={"profile": "ai-train", "min_scu": 100})
    assert [p["id"] for p in r.json()["pools"]] == [pid]

    r = agent.post(
        f"/v1/sites/{sid}/measurements",
        json={"pools": [{"name": "nope", "probe": {"cpu": {"fp64": 1.0}}}]},
    )
    assert r.status_code == 404 and r.json()["error"]["field"] == "pools"
    r = agent.post(
        f"/v1/sites/{sid}/measurements",
        json={"pools": [{"name": "h100", "probe": {"cpu": {"fp64": 1e7}}}]},
    )
    assert r.status_code == 422 and r.json()["error"]["field"] == "pools.0.probe.cpu.fp64"

    r = user.get("/v1/catalogue/match", params={"model": "NVIDIA GeForce RTX 4090"})
    assert r.status_code == 404 and r.json()["error"]["field"] == "model"
    r = user.get("/v1/catalogue/match", params={"model": "Ascend910B3"})
    assert r.status_code == 200 and r.json()["name"] == "Huawei Ascend 910B3"

    # A reference pool with no rate for the profile cannot convert a run time into SCU-hours.
    r = register(
        {"name": "mystery", "hardware": {"cpu_model": "Mystery", "cpu_cores": 2, "memory_gb": 2}}
    )
    # Unknown hardware is accepted (it can still be measured) and the reply says what it lacks.
    assert "no CPU in the catalogue matches 'Mystery'" in r.json()["capacity_notes"]["mystery"][0]
    mystery = user.get("/v1/pools", params={"online": "any"}).json()["pools"]
    mid = next(p["id"] for p in mystery if p["name"] == "mystery")
    r = user.post(
        "/v1/tasks",
        json={
            "executors": [{"command": ["true"]}],
            "work": {"profile": "hpc", "reference_pool": mid, "reference_runtime_s": 60},
        },
    )
    assert r.status_code == 400 and r.json()["error"]["field"] == "work.reference_pool"
    r = user.post(
        "/v1/tasks",
        json={"executors": [{"command": ["true"]}], "work": {"profile": "x", "scu_hours": 1}},
    )
    assert r.status_code == 422 and r.json()["error"]["field"] == "work.profile"


def test_measurement_on_demand_through_the_agent(
    hub: HubProc, agents: list[AgentProc], tmp_path: Path
) -> None:
    world = make_world(hub, {"edge": ("edge", "440300")})
    agent = AgentProc(
        hub,
        world.site_tokens["edge"],
        tmp_path / "agent",
        pools=[pool("box", cores=1, memory_gb=2)],
        measure=False,  # nothing on join: only on demand
        measure_budget_s=2.0,
    )
    agent.start()
    agents.append(agent)
    with hub.client(world.padmin_token) as c:
        pid = wait_until(lambda: next((p.id for p in c.pools()), None), 60, "pool registered")
        assert c.pool(pid).capacity["measured_at"] is None
    with hub.client(world.user_token) as c, pytest.raises(Exception, match="provider-admin"):
        c.request_measurement(pid)  # users may not make a provider's agent burn CPU
    out = cli(hub, world.padmin_token, "measure", "--pool", pid, "--run", "--timeout", "180")
    assert "measured on" in out and "capacity vector" in out
    with hub.client(world.padmin_token) as c:
        cap = c.pool(pid).capacity
        assert cap["measured_at"] is not None
        assert cap["cpu"]["figures"]["fp64"]["source"] == "measured"


@pytest.mark.slurm
def test_slurm_pools_are_measured_by_jobs_on_their_nodes(
    hub: HubProc, agents: list[AgentProc], tmp_path: Path, slurm_env: dict[str, str]
) -> None:
    world = make_world(hub, {"hpc": ("supercomputing", "440300")})
    agent = AgentProc(
        hub,
        world.site_tokens["hpc"],
        tmp_path / "agent-hpc",
        backend="slurm",
        options={"slurm_conf": slurm_env["SLURM_CONF"]},
        measure=True,
        measure_budget_s=3.0,
        config={"keep_work_dirs": True},  # the probes' dirs show where they ran
    )
    agent.start()
    agents.append(agent)
    with hub.client(world.user_token) as c:

        def measured() -> dict[str, dict] | None:
            caps = {p.name: p.capacity for p in c.pools()}
            done = {n: cap for n, cap in caps.items() if cap and cap.get("measured_at")}
            return done if len(caps) == 2 and len(done) == 2 else None

        caps = wait_until(measured, 240, "both partitions measured")
    # Each probe ran as an sbatch job on a node of its own partition (dev cluster: cpu = n1, n2;
    # big = n3, n4), not on the agent's host.
    assert caps["cpu"]["measured_on"] in {"n1", "n2"}
    assert caps["big"]["measured_on"] in {"n3", "n4"}
    for cap in caps.values():
        assert cap["cpu"]["figures"]["fp64"]["source"] == "measured"
        assert cap["scu"]["hpc"] > 0
    probes = sorted((tmp_path / "agent-hpc" / "attempts").glob("probe-*"))
    assert len(probes) == 2 and all((d / "slurm_job_id").is_file() for d in probes)
