"""Secret env values (pure split and scrub) and their sealing (hub/secrets.py)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cpnet.config import HubSettings
from cpnet.hub import secrets as hub_secrets
from cpnet.tasks import secrets
from cpnet.tasks.model import TaskSpec


def test_split_takes_out_only_the_marked_values_and_leaves_the_input_alone() -> None:
    spec = {
        "executors": [
            {"command": ["a"], "env": {"K": "v1", "P": "p"}, "secret_env": ["K"]},
            {"command": ["b"], "env": {"P": "p"}},
            {"command": ["c"], "env": {"K": "v2"}, "secret_env": ["K"]},
        ]
    }
    kept, found = secrets.split(spec)
    assert found == {"0": {"K": "v1"}, "2": {"K": "v2"}}
    assert kept["executors"][0]["env"] == {"K": "[secret]", "P": "p"}
    assert kept["executors"][1]["env"] == {"P": "p"}
    assert spec["executors"][0]["env"]["K"] == "v1"  # not mutated
    assert TaskSpec.model_validate(kept)  # still a valid spec
    assert secrets.has_secrets(spec) and not secrets.has_secrets({"executors": [{}]})


@given(st.text(min_size=4, max_size=30).filter(lambda s: "[secret]" not in s), st.text())
def test_scrub_leaves_no_copy_of_a_value(value: str, around: str) -> None:
    text = around + value + around + value
    assert value not in secrets.scrub(text, [value])


def test_short_values_are_not_scrubbed() -> None:
    assert secrets.scrub("a=1 b=2", ["1"]) == "a=1 b=2"


def test_a_sealed_value_opens_only_for_its_task_and_key(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("CPNET_SECRETS_KEY_FILE", raising=False)
    settings = HubSettings(data_dir=tmp_path)
    key = hub_secrets.load_key(settings)
    assert (tmp_path / "secrets.key").stat().st_mode & 0o777 == 0o600
    assert hub_secrets.load_key(settings) == key  # made once
    sealed = hub_secrets.seal(key, "tsk_a", {"0": {"K": "value"}})
    assert b"value" not in sealed
    assert hub_secrets.unseal(key, "tsk_a", sealed) == {"0": {"K": "value"}}
    with pytest.raises(hub_secrets.SecretsKeyError):
        hub_secrets.unseal(key, "tsk_b", sealed)  # copied to another task
    with pytest.raises(hub_secrets.SecretsKeyError):
        hub_secrets.unseal(bytes(32), "tsk_a", sealed)  # another key


def test_processes_starting_together_make_one_key(tmp_path, monkeypatch) -> None:
    # Hub replicas sharing CPNET_SECRETS_KEY_FILE may start at once: one key wins, every one of
    # them gets that one, and nobody reads a half-written file.
    monkeypatch.setenv("CPNET_SECRETS_KEY_FILE", str(tmp_path / "shared" / "secrets.key"))
    settings = HubSettings(data_dir=tmp_path / "own")
    start = threading.Barrier(8)

    def load(_: int) -> bytes:
        start.wait()
        return hub_secrets.load_key(settings)

    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(load, range(8)))
    assert keys == {(tmp_path / "shared" / "secrets.key").read_bytes()}
    assert [p.name for p in (tmp_path / "shared").iterdir()] == ["secrets.key"]  # no temp files


def test_secret_env_must_name_env_variables() -> None:
    with pytest.raises(ValueError, match="secret_env"):
        TaskSpec.model_validate(
            {"executors": [{"command": ["x"], "env": {"A": "1"}, "secret_env": ["B"]}]}
        )
