"""The TES ⇄ cpnet mapping: round trips without loss (Hypothesis), backend_parameters, views."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cpnet.errors import Invalid
from cpnet.tasks import tes
from cpnet.tasks.model import AttemptView, ExecutorLog, OutputFileLog, TaskSpec, TaskView
from cpnet.tasks.states import State

# ---- generated TES tasks, in the canonical form the server shows back -------------------------

text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)
word = st.text("abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=12)
path = st.lists(word.filter(lambda w: w not in (".", "..")), min_size=1, max_size=4).map(
    lambda parts: "/" + "/".join(parts)
)
url = st.sampled_from(["file:///data/", "https://example.org/", "s3://bucket/"]).flatmap(
    lambda base: word.map(lambda w: base + w)
)
ftype = st.sampled_from(["FILE", "DIRECTORY"])


def _some(**fields: st.SearchStrategy) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts where each optional field is present or absent."""
    return st.fixed_dictionaries({}, optional=fields)


executor = st.builds(
    lambda req, opt: {**req, **opt},
    st.fixed_dictionaries(
        {"image": st.sampled_from(["", "ubuntu:24.04", "quay.io/x/y:1"]),
         "command": st.lists(text, min_size=1, max_size=4)}
    ),
    _some(
        workdir=path, stdin=path, stdout=path, stderr=path,
        env=st.dictionaries(word, text, min_size=1, max_size=3),
        ignore_error=st.just(True),
    ),
)  # fmt: skip
inp = st.builds(
    lambda req, src, opt: {**req, **src, **opt},
    st.fixed_dictionaries({"path": path, "type": ftype}),
    st.one_of(
        st.fixed_dictionaries({"url": url}),
        st.fixed_dictionaries({"content": text.filter(bool)}),
    ),
    _some(name=text, description=text, streamable=st.just(True)),
)
out = st.builds(
    lambda req, opt: {**req, **opt},
    st.fixed_dictionaries({"url": url, "path": path, "type": ftype}),
    _some(name=text, description=text, path_prefix=path),
)
params = _some(
    **{
        "cpnet.gpus": st.integers(1, 8).map(str),
        "cpnet.gpu_model": word,
        "cpnet.cpu_cores": st.sampled_from(["0.5", "1.5", "2.25"]),
        "cpnet.regions": st.lists(st.sampled_from(["44", "11", "310000"]), min_size=1,
                                  max_size=3, unique=True).map(",".join),
        "cpnet.providers": st.lists(word, min_size=1, max_size=2, unique=True).map(",".join),
        "cpnet.pool_types": st.sampled_from(["general", "intelligent,edge"]),
        "cpnet.labels": st.dictionaries(word, word, min_size=1, max_size=2).map(
            lambda d: ",".join(f"{k}={v}" for k, v in d.items())),
        "cpnet.max_attempts": st.integers(1, 10).filter(lambda n: n != 3).map(str),
        "cpnet.expected_runtime_s": st.sampled_from(["30", "3600", "0.5"]),
        "cpnet.idempotency_key": word,
        "cpnet.keep_work_dir": st.just("true"),  # "false" is the default: not shown back
        "cpnet.profile": st.sampled_from(["ai-train", "hpc"]),
        "cpnet.scu_hours": st.sampled_from(["0.5", "12"]),
        "cpnet.objective": st.sampled_from(["fastest", "cheapest"]),
        "cpnet.deadline": st.just("2030-01-02T03:04:05+00:00"),
        "cpnet.budget": st.sampled_from(["0", "12.5"]),
    }
)  # fmt: skip
resources = st.builds(
    lambda req, opt, bp: {**req, **opt, **({"backend_parameters": bp} if bp else {})},
    st.fixed_dictionaries(
        {"cpu_cores": st.integers(1, 64), "preemptible": st.booleans(),
         "ram_gb": st.sampled_from([0.0, 0.5, 1.0, 3.75, 64.0]),
         "disk_gb": st.sampled_from([0.0, 10.0, 2.5])}
    ),
    _some(zones=st.lists(st.sampled_from(["44", "110000"]), min_size=1, max_size=2, unique=True),
          backend_parameters_strict=st.just(True)),
    params,
)  # fmt: skip
tes_task = st.builds(
    lambda req, opt: {**req, **opt},
    st.fixed_dictionaries(
        {"executors": st.lists(executor, min_size=1, max_size=3), "resources": resources}
    ),
    _some(
        name=text, description=text,
        inputs=st.lists(inp, min_size=1, max_size=3),
        outputs=st.lists(out, min_size=1, max_size=3),
        volumes=st.lists(path, min_size=1, max_size=2),
        tags=st.dictionaries(word, text, min_size=1, max_size=3),
    ),
)  # fmt: skip


def _canonical(t: dict[str, Any]) -> dict[str, Any]:
    """What the server shows back of a submitted task: the same, cpu fraction in its key."""
    t = {**t, "resources": {**t["resources"]}}
    bp = dict(t["resources"].get("backend_parameters", {}))
    if "cpnet.scu_hours" in bp:  # an amount of work: the profile (default general) comes back
        bp.setdefault("cpnet.profile", "general")
    if "cpnet.cpu_cores" in bp:  # the exact cores live in the key; cpu_cores is rounded up
        exact = float(bp["cpnet.cpu_cores"])
        t["resources"]["cpu_cores"] = max(1, -(-exact // 1))
    if bp:
        t["resources"]["backend_parameters"] = dict(sorted(bp.items()))
    return t


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tes_task)
def test_tes_to_cpnet_to_tes_loses_nothing(t: dict[str, Any]):
    spec, warnings = tes.to_spec(tes.parse(t))
    assert warnings == []
    back = tes.spec_to_tes(spec)
    assert back == _canonical(t)
    # and cpnet → TES → cpnet is the identity on specs
    again, _ = tes.to_spec(tes.parse(back))
    assert again == spec


@settings(max_examples=100, deadline=None)
@given(tes_task)
def test_cpnet_wishes_land_in_native_fields(t: dict[str, Any]):
    spec, _ = tes.to_spec(tes.parse(t))
    bp = t["resources"].get("backend_parameters", {})
    if "cpnet.gpus" in bp:
        assert spec.resources.gpus == int(bp["cpnet.gpus"])
    if "cpnet.regions" in bp:
        assert spec.constraints.regions == bp["cpnet.regions"].split(",")
    if "cpnet.max_attempts" in bp:
        assert spec.max_attempts == int(bp["cpnet.max_attempts"])
    assert spec.keep_work_dir is ("cpnet.keep_work_dir" in bp)
    assert spec.resources.zones == t["resources"].get("zones", [])
    if "cpnet.scu_hours" in bp:
        assert spec.work is not None and spec.work.scu_hours == float(bp["cpnet.scu_hours"])
        assert spec.work.profile == bp.get("cpnet.profile", "general")
    else:
        assert spec.work is None
    kept = {k: v for k, v in bp.items() if k in tes.KEPT_KEYS}
    if spec.work is not None:
        kept.pop("cpnet.profile", None)  # it is work.profile
    assert spec.resources.backend_parameters == kept


def _task(**resources: Any) -> dict[str, Any]:
    return {"executors": [{"image": "alpine", "command": ["true"]}], "resources": resources}


def test_backend_parameter_keys_are_case_insensitive():
    spec, _ = tes.to_spec(tes.parse(_task(backend_parameters={"CPNET.GPUs": "2"})))
    assert spec.resources.gpus == 2


def test_unsupported_key_is_ignored_with_a_warning_and_not_stored():
    spec, warnings = tes.to_spec(tes.parse(_task(backend_parameters={"VmSize": "D64"})))
    assert spec.resources.backend_parameters == {}
    assert len(warnings) == 1 and "'VmSize' is not supported and was ignored" in warnings[0]


def test_strict_unsupported_key_is_refused_naming_it():
    body = _task(backend_parameters={"VmSize": "D64"}, backend_parameters_strict=True)
    with pytest.raises(Invalid) as err:
        tes.to_spec(tes.parse(body))
    assert err.value.field == "resources.backend_parameters.VmSize"
    assert "unsupported key 'VmSize'" in err.value.message and "cpnet.gpus" in err.value.message


@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ({"cpnet.gpus": "two"}, "resources.backend_parameters.cpnet.gpus", "invalid literal"),
        ({"cpnet.objective": "slow"}, "resources.backend_parameters.cpnet.objective", "one of"),
        ({"cpnet.deadline": "soon"}, "resources.backend_parameters.cpnet.deadline", "isoformat"),
        ({"cpnet.pool_types": "gpu"}, "resources.backend_parameters.cpnet.pool_types", "unknown"),
        ({"cpnet.max_attempts": "99"}, "resources.backend_parameters.cpnet.max_attempts", "10"),
        ({"cpnet.reference_pool": "p"}, "resources.backend_parameters", "together"),
        (
            {"cpnet.keep_work_dir": "yes"},
            "resources.backend_parameters.cpnet.keep_work_dir",
            "true or false",
        ),
    ],
)
def test_bad_cpnet_values_name_the_key(params: dict, field: str, words: str):
    with pytest.raises(Invalid) as err:
        tes.to_spec(tes.parse(_task(backend_parameters=params)))
    assert err.value.field == field and words in err.value.message


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"executors": []}, "executors"),
        ({"executors": [{"command": ["x"]}]}, "executors.0.image"),
        ({"executors": [{"image": "a", "command": ["x"]}], "colour": "red"}, "colour"),
        ({"executors": [{"image": "a", "command": ["x"]}], "inputs": [{"path": "/a"}]},
         "inputs.0"),
        ({"executors": [{"image": "a", "command": ["x"], "workdir": "/a/../../etc"}]},
         "executors.0.workdir"),
        ({"executors": [{"image": "a", "command": ["x"]}], "resources": {"cpu_cores": 0}},
         "resources.cpu_cores"),
    ],
)  # fmt: skip
def test_bad_requests_name_the_field(body: dict, field: str):
    with pytest.raises(Invalid) as err:
        tes.to_spec(tes.parse(body))
    assert err.value.field == field, err.value.message


def test_content_wins_over_url_and_readonly_fields_are_ignored():
    body = {
        "id": "client-made",
        "state": "RUNNING",
        "executors": [{"image": "a", "command": ["x"]}],
        "inputs": [{"path": "/a", "url": "s3://b/k", "content": "inline"}],
    }
    spec, _ = tes.to_spec(tes.parse(body))
    assert spec.inputs[0].content == "inline" and spec.inputs[0].url is None


# ---- views ------------------------------------------------------------------------------------

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _view() -> TaskView:
    spec, _ = tes.to_spec(
        tes.parse(
            {
                "name": "n",
                "executors": [{"image": "", "command": ["echo", "hi"]}],
                "inputs": [{"path": "/in", "content": "secret"}],
            }
        )
    )
    attempt = AttemptView(
        attempt=1, attempt_id="att_1", pool_id="p", site_id="s", state=State.COMPLETE,
        created_at=T0, start_time=T0, end_time=T0,
        executor_logs=[ExecutorLog(start_time=T0, end_time=T0, exit_code=0, stdout="hi\n"),
                       ExecutorLog(start_time=T0)],
        outputs=[OutputFileLog(url="file:///o", path="/o", size_bytes=3)],
        system_logs=["ran"],
    )  # fmt: skip
    return TaskView(
        id="tsk_1", name="n", state=State.COMPLETE, org_id="o", created_at=T0, updated_at=T0,
        spec=spec, attempts=[attempt],
    )  # fmt: skip


def test_minimal_view_is_id_and_state():
    assert tes.to_tes(_view(), tes.View.MINIMAL) == {"id": "tsk_1", "state": "COMPLETE"}


def test_basic_view_omits_streams_content_and_system_logs():
    t = tes.to_tes(_view(), tes.View.BASIC)
    assert "content" not in t["inputs"][0]
    (log,) = t["logs"]
    assert "system_logs" not in log
    assert log["logs"] == [{"start_time": T0.isoformat(), "end_time": T0.isoformat(),
                            "exit_code": 0}]  # fmt: skip
    assert log["outputs"] == [{"url": "file:///o", "path": "/o", "size_bytes": "3"}]
    assert t["executors"] == [{"image": "", "command": ["echo", "hi"]}]


def test_full_view_has_everything_and_warnings_first():
    t = tes.to_tes(_view(), tes.View.FULL, ["key 'x' ignored"])
    assert t["inputs"][0]["content"] == "secret"
    (log,) = t["logs"]
    assert log["logs"][0]["stdout"] == "hi\n" and log["logs"][0]["stderr"] == ""
    assert len(log["logs"]) == 1  # the executor still running has no exit code to show yet
    assert log["system_logs"] == ["key 'x' ignored", "ran"]
    assert log["metadata"]["cpnet.pool_id"] == "p" and t["creation_time"] == T0.isoformat()


def test_native_fractional_cores_show_as_whole_cores_plus_the_exact_key():
    spec = TaskSpec.model_validate(
        {"executors": [{"command": ["x"]}], "resources": {"cpu_cores": 0.25}}
    )
    r = tes.spec_to_tes(spec)["resources"]
    assert r["cpu_cores"] == 1 and r["backend_parameters"] == {"cpnet.cpu_cores": "0.25"}


@pytest.mark.parametrize(
    ("keys", "values", "tags", "match"),
    [
        (["foo"], ["bar"], {"foo": "bar"}, True),
        (["foo"], ["bar"], {"foo": "bat"}, False),
        (["foo"], [""], {"foo": ""}, True),
        (["foo", "baz"], ["bar", "bat"], {"foo": "bar", "baz": "bat"}, True),
        (["foo"], ["bar"], {"foo": "bar", "baz": "bat"}, True),
        (["foo", "baz"], ["bar", "bat"], {"foo": "bar"}, False),
        (["foo"], [""], {"foo": "bar"}, True),
        (["foo"], [], {"foo": "bar"}, True),
        (["foo"], [""], {}, False),
    ],
)
def test_tag_filter_follows_the_spec_table(keys, values, tags, match):
    assert tes.tags_match(tags, tes.tag_filter(keys, values)) is match


def test_data_key_and_encrypted_inputs_travel_in_tags():
    from cpnet.crypto.datakey import new_key

    key = new_key()
    body = {
        "executors": [{"image": "alpine", "command": ["true"]}],
        "inputs": [
            {"path": "/data/a.enc", "url": "https://example.org/a.enc"},
            {"path": "/data/ref.fa", "url": "https://example.org/ref.fa"},
        ],
        "tags": {"cpnet.data_key": key, "cpnet.encrypted_inputs": "/data/a.enc", "team": "x"},
    }
    spec, _ = tes.to_spec(tes.parse(body))
    assert spec.data_key == key and "cpnet.data_key" not in spec.tags  # not kept as a tag
    assert [i.encrypted for i in spec.inputs] == [True, False]
    shown = tes.spec_to_tes(spec.model_copy(update={"data_key": "[secret]"}))
    assert shown["tags"]["cpnet.data_key"] == "[secret]"
    assert shown["tags"]["cpnet.encrypted_inputs"] == "/data/a.enc"
    assert all("encrypted" not in i for i in shown["inputs"])
    body["tags"]["cpnet.encrypted_inputs"] = "/data/nope"
    with pytest.raises(Invalid) as err:
        tes.to_spec(tes.parse(body))
    assert err.value.field == "tags.cpnet.encrypted_inputs" and "no input" in err.value.message
