"""Transport security through real processes: a hub serving HTTPS with the development
certificate `cpnet hub init` wrote, users trusting its CA, and an agent with mutual TLS — its
client certificate got with its token, renewed without a restart, refused for another site, and
refused at once when its site is revoked (docs/security.md)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from cpnet import pki
from cpnet.client import BadSetting, Client, tls_context
from cpnet.tasks.states import State
from services import free_port
from tests.integration.procs import AgentProc, HubProc, make_world, pool, wait_until

pytestmark = pytest.mark.integration

CERT_TTL_S = 6  # renewed at 2/3 of it: every 4 s while the test runs


@pytest.fixture
def tls_hub(tmp_path: Path, agents):
    h = HubProc(
        tmp_path / "hub",
        free_port(),
        args=["--tls", "--mtls", "require"],
        env={"CPNET_CLIENT_CERT_TTL_S": str(CERT_TTL_S)},
        tls=True,
    )
    h.data_dir.mkdir()
    h.init()
    h.start()
    yield h
    h.kill()


def _serials(padmin: Client, site_id: str) -> list[str]:
    return [c["serial"] for c in padmin.site_certificates(site_id)]


def test_https_and_mutual_tls_for_agents(tls_hub: HubProc, agents, tmp_path):
    hub = tls_hub
    assert hub.url.startswith("https://")
    world = make_world(hub, {"a": ("general", "440100"), "b": ("general", "440300")})
    user = hub.client(world.user_token)  # users trust the CA and need no certificate
    assert user.health()["status"] == "ok"

    # A client that does not trust the hub's CA is told what to pass, at once (no retrying).
    with pytest.raises(BadSetting) as err, Client(hub.url, world.user_token) as blind:
        blind.health()
    assert "--ca-file" in str(err.value)

    # The agent of site a gets a certificate with its token and serves its pool over mTLS.
    agent = AgentProc(
        hub,
        world.site_tokens["a"],
        tmp_path / "agent-a",
        [pool("cpu", cores=2)],
        config={"ca_file": str(hub.ca_file), "client_cert": "auto"},
    )
    agent.start()
    agents.append(agent)
    wait_until(lambda: user.pools(), 60, "site a's pool online over mTLS", log=agent.log)
    cert_file = agent.work_dir / "tls" / "agent.crt"
    key_file = agent.work_dir / "tls" / "agent.key"
    assert key_file.stat().st_mode & 0o077 == 0  # the key is the agent's alone
    cert = pki.load_cert(cert_file.read_bytes())
    site_a = world.site_ids["a"]
    assert pki.site_of(cert, "cn.dev") == site_a

    # A task runs there, fetching a cpnet://blobs input from the hub over TLS (the runner trusts
    # the hub's CA through the bundle the agent wrote).
    data = b"over tls\n"
    blob_url = user.put_blob(data)
    t = user.submit(
        {
            "executors": [{"command": ["sha256sum", "in.txt"]}],
            "inputs": [{"path": "in.txt", "url": blob_url}],
        }
    )
    done = user.wait(t.id, timeout=60)
    assert done.state is State.COMPLETE, done.reason
    out = done.attempts[-1].executor_logs[-1].stdout
    assert out.startswith(hashlib.sha256(data).hexdigest())

    heartbeat = f"/v1/sites/{site_a}/heartbeat"
    token_a = {"Authorization": f"Bearer {world.site_tokens['a']}"}
    token_b = {"Authorization": f"Bearer {world.site_tokens['b']}"}
    body = {"pools": []}

    # The agent API refuses an agent token without a client certificate ...
    with httpx.Client(verify=tls_context(hub.ca_file)) as c:
        r = c.post(f"{hub.url}{heartbeat}", headers=token_a, json=body)
    assert r.status_code == 401 and "client certificate" in r.json()["error"]["message"]
    # ... and site a's certificate with site b's token.
    both = tls_context(hub.ca_file, (str(cert_file), str(key_file)))
    with httpx.Client(verify=both) as c:
        r = c.post(
            f"{hub.url}/v1/sites/{world.site_ids['b']}/heartbeat", headers=token_b, json=body
        )
    assert r.status_code == 401 and "another site" in r.json()["error"]["message"]

    # Rotation without a restart: new certificates keep coming, the pool stays online.
    with hub.client(world.padmin_token) as padmin:
        first = _serials(padmin, site_a)
        wait_until(
            lambda: len(_serials(padmin, site_a)) >= len(first) + 2,
            8 * CERT_TTL_S,
            "two renewals of the agent's certificate",
            log=agent.log,
        )
    assert agent.proc is not None and agent.proc.poll() is None
    renewed = pki.load_cert(cert_file.read_bytes())
    assert renewed.serial_number != cert.serial_number
    assert user.pools()[0].online

    # Revoking the site refuses its agent from the next request on, certificate and all.
    both = tls_context(hub.ca_file, (str(cert_file), str(key_file)))
    with httpx.Client(verify=both) as c:
        ok = c.get(f"{hub.url}/v1/whoami", headers=token_a)
        assert ok.status_code == 200, ok.text
        with hub.client(world.padmin_token) as padmin:
            done = padmin.revoke_site(site_a)
        assert done["certificates_revoked"] >= 1 and done["agent_tokens_revoked"] == 1
        r = c.get(f"{hub.url}/v1/whoami", headers=token_a)
    assert r.status_code == 401
