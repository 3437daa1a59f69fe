"""The task schema refuses what could escape a work dir or overflow the hub, and names the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cpnet.tasks.model import TaskSpec


def _errors(**kw) -> list[tuple[str, str]]:
    base = {"executors": [{"command": ["true"]}]}
    base.update(kw)
    with pytest.raises(ValidationError) as e:
        TaskSpec.model_validate(base)
    return [(".".join(str(x) for x in err["loc"]), err["msg"]) for err in e.value.errors()]


def test_minimal_spec_has_defaults() -> None:
    s = TaskSpec.model_validate({"executors": [{"command": ["echo", "hi"]}]})
    assert s.resources.cpu_cores == 1.0 and s.max_attempts == 3 and s.inputs == []


@pytest.mark.parametrize("path", ["../x", "a/../../b", "a/.."])
def test_paths_cannot_climb_out(path: str) -> None:
    (loc, msg), *_ = _errors(inputs=[{"path": path, "content": "x"}])
    assert loc == "inputs.0.path" and ".." in msg


def test_input_needs_exactly_one_source() -> None:
    assert _errors(inputs=[{"path": "a"}])[0][0] == "inputs.0"
    assert _errors(inputs=[{"path": "a", "url": "file:///x", "content": "y"}])[0][0] == "inputs.0"


def test_unknown_scheme_and_unknown_field() -> None:
    (loc, msg), *_ = _errors(inputs=[{"path": "a", "url": "ftp://x/y"}])
    assert loc == "inputs.0.url" and "ftp" in msg
    assert _errors(colour="blue")[0][0] == "colour"


def test_limits() -> None:
    assert _errors(executors=[])[0][0] == "executors"
    assert _errors(executors=[{"command": ["x"]}] * 33)[0][0] == "executors"
    assert _errors(resources={"cpu_cores": 0})[0][0] == "resources.cpu_cores"
    assert _errors(constraints={"pool_types": ["quantum"]})[0][0] == "constraints.pool_types"
    assert _errors(max_attempts=0)[0][0] == "max_attempts"


def test_work_in_scu_hours_validates_profile_and_amount() -> None:
    base = {"executors": [{"command": ["true"]}]}
    spec = TaskSpec.model_validate({**base, "work": {"profile": "ai-train", "scu_hours": 2}})
    assert spec.work is not None and spec.work.scu_hours == 2
    ref = {"profile": "hpc", "reference_pool": "p1", "reference_runtime_s": 60}
    assert TaskSpec.model_validate({**base, "work": ref}).work.scu_hours is None
    for work, words in (
        ({"profile": "mining", "scu_hours": 1}, "unknown profile 'mining'"),
        ({"profile": "hpc"}, "give scu_hours"),
        ({"profile": "hpc", "reference_pool": "p1"}, "together"),
        ({"profile": "hpc", "scu_hours": -1}, "greater than 0"),
    ):
        with pytest.raises(ValidationError, match=words) as err:
            TaskSpec.model_validate({**base, "work": work})
        assert err.value.errors()[0]["loc"][0] == "work"
