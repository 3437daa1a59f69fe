"""Backend options are read once, when the backend is built: typed values, errors that name the
option, the value and what is accepted, and unknown options logged (not refused)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from cpnet.agent.backends import BACKENDS, get_backend
from cpnet.agent.backends.base import BackendConfig
from cpnet.agent.backends.local import LocalOptions
from cpnet.agent.backends.options import OptionError
from cpnet.agent.backends.slurm import SlurmOptions


def test_values_are_typed_with_their_defaults() -> None:
    o = LocalOptions.parse(
        {"cancel_grace_s": "2.5", "fork_server": "off", "file_roots": "/a:/b", "max_file_gb": "0"}
    )
    assert o.cancel_grace_s == 2.5 and o.fork_server is False
    assert o.file_roots == ("/a", "/b") and o.max_file_gb == 0.0
    assert o.memory_limit is True and o.pool_name == "local" and o.executor_grace_s == 5.0
    assert LocalOptions.parse({"file_roots": ""}).file_roots == ()  # empty: no root at all
    assert LocalOptions.parse({"pool_name": ""}).pool_name == "local"  # empty: the default
    assert LocalOptions.parse({"cpu_pinning": ""}).cpu_pinning is False  # as flags always were
    s = SlurmOptions.parse({"executor_grace_s": "3", "job_env": "A, B,,"})
    assert s.fence_wait == 13.0 and s.job_env == ("A", "B")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"cancel_grace_s": "abc"}, "local option cancel_grace_s='abc' is not a number of seconds"),
        ({"fork_server": "flase"}, "local option fork_server='flase' is not true or false"),
        ({"max_stage_gb": "lots"}, "local option max_stage_gb='lots' is not a number of GiB"),
        ({"container_runtime": "rkt"}, "local option container_runtime='rkt' unknown; use auto"),
    ],
)
def test_a_bad_value_stops_the_backend_naming_it(
    tmp_path: Path, raw: dict[str, str], message: str
) -> None:
    with pytest.raises(OptionError) as err:
        get_backend("local")(BackendConfig(work_root=tmp_path, options=raw))
    assert str(err.value).startswith(message)


def test_an_unknown_option_is_logged_with_the_known_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        options = LocalOptions.parse({"partition": "gpu", "cancel_grace_s": "1"}, "local")
    assert options.cancel_grace_s == 1.0
    [line] = [r.getMessage() for r in caplog.records]
    assert "ignoring the option partition" in line and "cancel_grace_s" in line


def test_every_option_is_documented() -> None:
    for backend in BACKENDS.values():
        docs = backend.Options.describe()
        assert docs and all(text.strip() for text in docs.values()), backend.name


def test_credentials_stay_out_of_the_repr() -> None:
    o = SlurmOptions.parse({"slurm_jwt": "secret-token", "s3_secret_access_key": "secret-key"})
    assert "secret" not in repr(o)
