"""The network map against a real hub and a real agent process (SQLite): the agent measures its
link to the hub, the CLI shows it and declares links, and bad input is refused naming the field."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from services import free_port
from tests.integration.procs import AgentProc, HubProc, make_world, pool, wait_until

pytestmark = pytest.mark.integration

ORIGIN = "url:https://data.example.org"


def cpnet(hub: HubProc, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CPNET_")}
    env.update(CPNET_HUB=hub.url, CPNET_TOKEN=token, HOME=str(hub.data_dir), COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "cpnet", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def path_of(network: dict, a: str, b: str) -> dict | None:
    for p in network["paths"]:
        if {p["a"], p["b"]} == {a, b}:
            return p
    return None


def test_agent_measures_the_hub_and_the_cli_declares_links(hub, agents, tmp_path: Path) -> None:
    world = make_world(hub, {"gz": ("general", "440100")})
    sid = world.site_ids["gz"]
    a = AgentProc(
        hub,
        world.site_tokens["gz"],
        tmp_path / "agent",
        pools=[pool("cpu", cores=2)],
        config={"network_probe_interval_s": 5, "network_probe_bytes": 1_000_000},
    )
    a.start()
    agents.append(a)
    site = f"site:{sid}"

    def measured() -> dict | None:
        out = cpnet(hub, world.user_token, "network", "--json")
        assert out.returncode == 0, out.stderr
        p = path_of(json.loads(out.stdout), "hub", site)
        return p if p and p["mbps_source"] == "measured" else None

    p = wait_until(
        measured, 60, "a measured hub link in `cpnet network --json`", every=0.5, log=a.log
    )
    assert p["rtt_source"] == "measured" and p["source"] == "measured"
    assert p["samples"] >= 1 and p["age_s"] is not None and p["age_s"] < 60
    assert p["mbps"] > 10  # loopback: far above any shaped link
    assert 0 < p["rtt_ms"] < 1000

    # A pair nobody measured: geo or default first, declared once an admin says so.
    out = cpnet(hub, world.user_token, "network", "estimate", ORIGIN, site, "10GB", "--json")
    assert out.returncode == 0, out.stderr
    before = json.loads(out.stdout)
    assert before["bytes"] == 10 * 10**9
    assert before["path"]["source"] in ("geo", "default")
    args = ("network", "link", "set", ORIGIN, site, "--rtt-ms", "40", "--mbps", "800")
    out = cpnet(hub, hub.admin_token, *args, "--egress-per-gb", "0.5")
    assert out.returncode == 0, out.stderr
    out = cpnet(hub, world.user_token, "network", "estimate", ORIGIN, site, "10GB", "--json")
    after = json.loads(out.stdout)
    assert after["path"]["source"] == "declared"
    assert after["path"]["mbps"] == 800 and after["path"]["rtt_ms"] == 40
    assert after["seconds"] == pytest.approx(0.04 + 10e9 * 8 / 800e6)
    assert after["egress"] == pytest.approx(5.0)

    # Only an admin declares; a user is told so.
    out = cpnet(hub, world.user_token, *args)
    assert out.returncode == 1 and "admin" in out.stderr
    # The table names the sources.
    out = cpnet(hub, world.user_token, "network")
    assert out.returncode == 0 and "measured" in out.stdout and "declared" in out.stdout, out.stdout
    out = cpnet(hub, hub.admin_token, "network", "link", "rm", site, ORIGIN)
    assert out.returncode == 0, out.stderr
    out = cpnet(hub, hub.admin_token, "network", "link", "rm", site, ORIGIN)
    assert out.returncode == 1 and "cpnet network" in out.stderr
    out = cpnet(hub, world.user_token, "network", "estimate", "hub", site, "ten")
    assert out.returncode == 1 and "10GB" in out.stderr


def test_bad_input_is_refused_naming_the_field(hub: HubProc) -> None:
    world = make_world(hub, {"gz": ("general", "440100"), "sh": ("general", "310000")})
    gz, sh = world.site_ids["gz"], world.site_ids["sh"]
    agent = {"authorization": f"Bearer {world.site_tokens['gz']}"}
    user = {"authorization": f"Bearer {world.user_token}"}
    admin = {"authorization": f"Bearer {hub.admin_token}"}
    url = f"{hub.url}/v1/sites/{gz}/network/samples"

    def refused(r: httpx.Response, status: int, field: str) -> None:
        assert r.status_code == status, r.text
        assert r.json()["error"]["field"] == field, r.text

    ok = {"dst": "hub", "at": 1.0e9, "rtt_ms": 3.0, "mbps": 100.0}
    r = httpx.post(url, json={"samples": [{**ok, "mbps": -1}]}, headers=agent)
    refused(r, 422, "samples.0.mbps")
    r = httpx.post(url, json={"samples": [{**ok, "dst": "site:nope"}]}, headers=agent)
    refused(r, 404, "samples.0.dst")
    r = httpx.post(url, json={"samples": [{**ok, "dst": "moon"}]}, headers=agent)
    refused(r, 422, "samples.0.dst")
    r = httpx.post(url, json={"samples": [ok] * 201}, headers=agent)
    refused(r, 422, "samples")
    r = httpx.post(f"{hub.url}/v1/sites/{sh}/network/samples", json={"samples": []}, headers=agent)
    refused(r, 403, "site_id")
    r = httpx.post(url, json={"samples": [{**ok, "dst": f"site:{sh}"}]}, headers=agent)
    assert r.status_code == 200 and r.json() == {"stored": 1}

    r = httpx.get(f"{hub.url}/v1/network/probe", params={"bytes": 8 * 2**20 + 1}, headers=agent)
    refused(r, 422, "bytes")
    r = httpx.get(f"{hub.url}/v1/network/probe", params={"bytes": 123_457}, headers=agent)
    assert r.status_code == 200 and len(r.content) == 123_457
    r = httpx.get(f"{hub.url}/v1/network/probe", params={"bytes": 10})
    assert r.status_code == 401

    est = f"{hub.url}/v1/network/estimate"
    r = httpx.get(est, params={"src": "hub", "dst": f"site:{gz}", "bytes": 10**19}, headers=user)
    refused(r, 422, "bytes")
    r = httpx.get(est, params={"src": "nowhere", "dst": "hub", "bytes": 1}, headers=user)
    refused(r, 400, "src")
    # The hub's region is not set: default figures; two placed sites: the distance model.
    r = httpx.get(est, params={"src": "hub", "dst": f"site:{sh}", "bytes": 10**9}, headers=user)
    assert r.status_code == 200, r.text
    assert r.json()["path"]["rtt_source"] == "default"
    r = httpx.get(est, params={"src": f"site:{gz}", "dst": f"site:{sh}", "bytes": 1}, headers=user)
    assert r.json()["path"]["rtt_source"] == "geo", r.text
    assert "km" in r.json()["path"]["detail"]
    links = f"{hub.url}/v1/network/links"
    r = httpx.put(links, json={"a": "hub", "b": f"site:{gz}", "mbps": -5}, headers=admin)
    refused(r, 422, "mbps")
    r = httpx.put(links, json={"a": "hub", "b": f"site:{gz}", "mbps": 5}, headers=user)
    assert r.status_code == 403


def test_agents_probe_each_other_when_the_hub_asks(hub, agents, tmp_path: Path) -> None:
    world = make_world(hub, {"a": ("general", "440100"), "b": ("general", "310000")})
    for name in ("a", "b"):
        listen = f"127.0.0.1:{free_port()}"
        agent = AgentProc(
            hub,
            world.site_tokens[name],
            tmp_path / name,
            pools=[pool("cpu", cores=1)],
            config={"network_probe_interval_s": 5, "network_probe_bytes": 500_000},
            args=["--probe-listen", listen],
        )
        agent.start()
        agents.append(agent)
    a, b = (f"site:{world.site_ids[n]}" for n in ("a", "b"))

    def between() -> dict | None:
        with hub.client(world.user_token) as c:
            for p in c.network().paths:
                if {p.a, p.b} == {a, b} and p.source == "measured":
                    return p.model_dump()
        return None

    p = wait_until(
        between, 60, "a measured path between the two sites", every=0.5, log=agents[0].log
    )
    assert p["mbps"] > 10 and p["samples"] >= 1
    # Without measurements the same pair would rest on the distance model (Guangzhou–Shanghai).
    assert "measured" in p["detail"]


def test_staged_inputs_put_their_origin_on_the_map(hub, agents, tmp_path: Path) -> None:
    """A task's http input gives a throughput sample (from the transfer itself) and, in the
    next probe round, an RTT sample (one HEAD) for the input's origin."""
    import functools
    import http.server
    import threading

    root = tmp_path / "www"
    root.mkdir()
    (root / "data.bin").write_bytes(os.urandom(3_000_000))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    origin = f"url:http://127.0.0.1:{server.server_address[1]}"
    try:
        world = make_world(hub, {"gz": ("general", "440100")})
        a = AgentProc(
            hub,
            world.site_tokens["gz"],
            tmp_path / "agent",
            pools=[pool("cpu", cores=1)],
            config={"network_probe_interval_s": 5, "network_probe_bytes": 100_000},
        )
        a.start()
        agents.append(a)
        site = f"site:{world.site_ids['gz']}"
        with hub.client(world.user_token) as c:
            task = c.submit(
                {
                    "executors": [{"command": ["true"]}],
                    "inputs": [{"url": origin[4:] + "/data.bin", "path": "/in/data.bin"}],
                }
            )
            assert c.wait(task.id, timeout=60).state.value == "COMPLETE"

            def both() -> dict | None:
                for p in c.network().paths:
                    if {p.a, p.b} == {origin, site} and p.source == "measured":
                        return p.model_dump()
                return None

            p = wait_until(both, 30, f"measured figures for {origin}", every=0.5, log=a.log)
        assert p["mbps"] > 10 and p["rtt_ms"] > 0 and p["samples"] >= 2
    finally:
        server.shutdown()
        server.server_close()
