"""Secret env values through a real hub and agent: stored sealed, shown as "[secret]" by every
API (native and TES FULL), delivered only to the agent running the attempt, scrubbed from the
executor logs, and found in no file the hub or the agent wrote (docs/security.md, "Secrets")."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import pytest

from cpnet.tasks.states import State
from tests.integration.procs import HubProc, make_world, pool, start_agent, wait_until

pytestmark = pytest.mark.integration

SECRET = "s3cr3t-Zq8vK2pW"  # what must never show
# The command checks the value through its hash: the spec itself must not hold the secret.
COMMAND = ["sh", "-c", 'printf %s "$API_KEY" | sha256sum; echo "key=$API_KEY plain=$PLAIN"']


def _files_holding(root: Path, needle: bytes, skip: tuple[str, ...] = ()) -> list[Path]:
    found = []
    for p in root.rglob("*"):
        if p.is_file() and not any(part in skip for part in p.parts):
            try:
                if needle in p.read_bytes():
                    found.append(p)
            except OSError:
                continue
    return found


def test_secret_env_is_sealed_delivered_and_scrubbed(hub: HubProc, agents, tmp_path):
    world = make_world(hub, {"a": ("general", "440100"), "b": ("general", "440300")})
    agent = start_agent(hub, agents, tmp_path, world, "a", [pool("cpu", cores=2)])
    user = hub.client(world.user_token)
    wait_until(lambda: user.pools(), 30, "pool online")
    env = {"API_KEY": SECRET, "PLAIN": "visible"}
    # Both keep their work dirs, so that the files the agent wrote can be searched below.
    t = user.submit(
        {
            "executors": [{"command": COMMAND, "env": env, "secret_env": ["API_KEY"]}],
            "keep_work_dir": True,
        }
    )
    # TES: the tag cpnet.secret_env names the secret variables.
    tes = httpx.post(
        f"{hub.url}/ga4gh/tes/v1/tasks",
        headers={"Authorization": f"Bearer {world.user_token}"},
        json={
            "executors": [{"image": "", "command": COMMAND, "env": env}],
            "tags": {"cpnet.secret_env": "API_KEY"},
            "resources": {"backend_parameters": {"cpnet.keep_work_dir": "true"}},
        },
    )
    assert tes.status_code == 200, tes.text
    tes_id = tes.json()["id"]

    for task_id in (t.id, tes_id):
        done = user.wait(task_id, timeout=60)
        assert done.state is State.COMPLETE, done.reason
        out = done.attempts[-1].executor_logs[-1].stdout
        # The executor saw the real value (its hash), and its echo was scrubbed.
        assert out.startswith(hashlib.sha256(SECRET.encode()).hexdigest()), out
        assert "key=[secret] plain=visible" in out and SECRET not in out
        assert done.spec.executors[0].env == {"API_KEY": "[secret]", "PLAIN": "visible"}

    # No API answer holds it: native get and list, TES FULL get and list.
    auth = {"Authorization": f"Bearer {world.user_token}"}
    for path in (
        f"/v1/tasks/{t.id}",
        "/v1/tasks",
        f"/ga4gh/tes/v1/tasks/{tes_id}?view=FULL",
        "/ga4gh/tes/v1/tasks?view=FULL",
    ):
        r = httpx.get(f"{hub.url}{path}", headers=auth)
        assert r.status_code == 200 and SECRET not in r.text and "[secret]" in r.text, path

    # Only the running attempt's own agent gets the values: another site's agent does not, and
    # neither does this one once the attempt has ended.
    att = user.task(t.id).attempts[-1]
    for site, token in (("b", world.site_tokens["b"]), ("a", world.site_tokens["a"])):
        r = httpx.get(
            f"{hub.url}/v1/sites/{world.site_ids[site]}/attempts/{att.attempt_id}/secrets",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code in (403, 404) and SECRET not in r.text, (site, r.text)

    # On disk: not in the hub's store (sealed), its log, the agent's journal, job.json, or the
    # secrets file (deleted by the runner). The executor's own raw stdout capture is the task's
    # output and is not searched.
    needle = SECRET.encode()
    assert _files_holding(hub.data_dir, needle) == []
    assert _files_holding(agent.work_dir, needle, skip=("logs",)) == []
    assert not list(agent.work_dir.rglob("secrets.json"))
    jobs = list(agent.work_dir.rglob("job.json"))
    assert len(jobs) == 2 and all("[secret]" in j.read_text() for j in jobs)
    # Sealed bytes are in the store, bound to the task.
    assert (hub.data_dir / "secrets.key").stat().st_mode & 0o077 == 0


def test_bad_secret_markers_are_refused_naming_the_field(hub: HubProc, agents, tmp_path):
    world = make_world(hub, {"a": ("general", "440100")})
    auth = {"Authorization": f"Bearer {world.user_token}"}
    r = httpx.post(
        f"{hub.url}/v1/tasks",
        headers=auth,
        json={"executors": [{"command": ["true"], "env": {"A": "1"}, "secret_env": ["B"]}]},
    )
    assert r.status_code in (400, 422) and "secret_env" in r.text, r.text
    r = httpx.post(
        f"{hub.url}/ga4gh/tes/v1/tasks",
        headers=auth,
        json={"executors": [{"image": "", "command": ["true"]}], "tags": {"cpnet.secret_env": "X"}},
    )
    assert r.status_code == 400 and json.loads(r.text)
    assert "cpnet.secret_env" in r.text
