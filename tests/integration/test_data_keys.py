"""A task's data key through a real hub and agent (docs/security.md, "Data keys"): an input
encrypted on the user's side is decrypted only inside the attempt, the output reaches the blob
store encrypted and decrypts with the user's key, the provider's disk holds only ciphertext
after the attempt, no API answer or hub file holds the key, and a wrong key is refused."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from cpnet.crypto.datakey import MAGIC, Sealer, new_key, parse_key
from cpnet.tasks.states import State
from tests.integration.procs import HubProc, make_world, pool, start_agent, wait_until

pytestmark = pytest.mark.integration

PLAIN = b"ACGT private genome reads ACGT\n" * 40_000  # 1.2 MB: two chunks of the format
# Uppercases the input into out.txt, keeps a temp file, and checks the input is plaintext here.
COMMAND = [
    "sh",
    "-c",
    "grep -q 'genome reads' in/reads.txt && tr a-z A-Z < in/reads.txt > out.txt "
    "&& cp out.txt scratch.txt && echo ok",
]


def _files_holding(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_data_key_end_to_end(hub: HubProc, agents, tmp_path: Path) -> None:
    world = make_world(hub, {"a": ("general", "440100")})
    agent = start_agent(hub, agents, tmp_path, world, "a", [pool("cpu", cores=2)])
    user = hub.client(world.user_token)
    wait_until(lambda: user.pools(), 30, "pool online")
    key = new_key()
    sealer = Sealer(parse_key(key))
    src = tmp_path / "reads.txt"
    src.write_bytes(PLAIN)
    sealer.encrypt_file(src, tmp_path / "reads.enc")
    url = user.put_blob((tmp_path / "reads.enc").read_bytes())  # the hub gets ciphertext only

    t = user.submit(
        {
            "executors": [{"command": COMMAND}],
            "inputs": [{"path": "in/reads.txt", "url": url, "encrypted": True}],
            "outputs": [{"path": "out.txt", "url": "cpnet://blobs/"}],
            "data_key": key,
            "keep_work_dir": True,  # so that the provider's disk can be searched below
        }
    )
    done = user.wait(t.id, timeout=90)
    assert done.state is State.COMPLETE, (done.reason, done.attempts[-1].system_logs)
    assert done.attempts[-1].executor_logs[-1].stdout.strip() == "ok"
    assert any("encrypted 5 files" in x for x in done.attempts[-1].system_logs), done.attempts[
        -1
    ].system_logs

    # The output left the attempt encrypted; the user's key opens it.
    (out,) = done.attempts[-1].outputs
    stored = user.get_blob(out.url)
    assert stored.startswith(MAGIC) and b"PRIVATE GENOME" not in stored
    (tmp_path / "out.enc").write_bytes(stored)
    sealer.decrypt_file(tmp_path / "out.enc", tmp_path / "out.txt")
    assert (tmp_path / "out.txt").read_bytes() == PLAIN.upper()

    # The provider's disk: input, output, temp copy and logs are ciphertext after the attempt.
    attempt_dir = agent.work_dir / "attempts" / done.attempts[-1].attempt_id
    for rel in ("files/in/reads.txt", "files/out.txt", "files/scratch.txt", "logs/0.stdout"):
        assert (attempt_dir / rel).read_bytes().startswith(MAGIC), rel
    for needle in (b"private genome", b"PRIVATE GENOME", key.encode()):
        assert _files_holding(agent.work_dir, needle) == [], needle
        assert _files_holding(hub.data_dir, needle) == [], needle

    # Over TES, tags carry the key and the encrypted inputs' paths.
    auth = {"Authorization": f"Bearer {world.user_token}"}
    r = httpx.post(
        f"{hub.url}/ga4gh/tes/v1/tasks",
        headers=auth,
        json={
            "executors": [{"image": "", "command": COMMAND, "workdir": "/work"}],
            "inputs": [{"path": "/work/in/reads.txt", "url": url}],
            "tags": {"cpnet.data_key": key, "cpnet.encrypted_inputs": "/work/in/reads.txt"},
        },
    )
    assert r.status_code == 200, r.text
    tes_done = user.wait(r.json()["id"], timeout=90)
    assert tes_done.state is State.COMPLETE, (tes_done.reason, tes_done.attempts[-1].system_logs)
    assert tes_done.spec.inputs[0].encrypted and tes_done.spec.data_key == "[secret]"
    tes_view = httpx.get(
        f"{hub.url}/ga4gh/tes/v1/tasks/{r.json()['id']}", params={"view": "FULL"}, headers=auth
    ).json()
    assert tes_view["tags"]["cpnet.data_key"] == "[secret]"

    # No answer holds the key: native get and list, TES FULL.
    assert done.spec.data_key == "[secret]"
    for path in (f"/v1/tasks/{t.id}", "/v1/tasks", "/ga4gh/tes/v1/tasks?view=FULL"):
        r = httpx.get(f"{hub.url}{path}", headers=auth)
        assert r.status_code == 200 and key not in r.text, path


def test_wrong_key_missing_key_and_placeholder_are_refused(hub: HubProc, agents, tmp_path: Path):
    world = make_world(hub, {"a": ("general", "440100")})
    start_agent(hub, agents, tmp_path, world, "a", [pool("cpu", cores=2)])
    user = hub.client(world.user_token)
    wait_until(lambda: user.pools(), 30, "pool online")
    (tmp_path / "in").write_bytes(b"data")
    Sealer(parse_key(new_key())).encrypt_file(tmp_path / "in", tmp_path / "in.enc")
    url = user.put_blob((tmp_path / "in.enc").read_bytes())
    spec = {
        "executors": [{"command": ["cat", "in"]}],
        "inputs": [{"path": "in", "url": url, "encrypted": True}],
        "max_attempts": 1,
    }
    wrong = user.submit({**spec, "data_key": new_key()})
    done = user.wait(wrong.id, timeout=60)
    assert done.state is State.SYSTEM_ERROR
    assert "cannot decrypt it" in (done.reason or "") and "another data key" in done.reason

    auth = {"Authorization": f"Bearer {world.user_token}"}
    for body, words in (
        (spec, "no data_key to decrypt"),  # encrypted input, no key
        ({**spec, "data_key": "[secret]"}, "give the key itself"),
        ({**spec, "data_key": "c2hvcnQ="}, "32 bytes"),
    ):
        r = httpx.post(f"{hub.url}/v1/tasks", headers=auth, json=body)
        assert r.status_code in (400, 422) and words in r.text, r.text
