"""The runner's pydantic-free view of job.json and status.json: same data, same JSON, light."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cpnet.agent import jobfile
from cpnet.agent.backends.base import Job
from cpnet.agent.backends.workdir import status_from_record
from cpnet.agent.runner import JOB_FILE, STATUS_FILE
from cpnet.agent.staging import stage_in, stage_out
from cpnet.tasks import model
from cpnet.tasks.states import State

HEAVY = {"pydantic", "httpx", "rich", "sqlalchemy", "fastapi", "numpy"}

SPEC: dict[str, Any] = {
    "name": "mirror",
    "executors": [
        {
            "image": "alpine",
            "command": ["sh", "-c", "cat in/a > out.txt"],
            "workdir": "/data",
            "stdin": "in/a",
            "stdout": "logs/o",
            "stderr": "logs/e",
            "env": {"K": "v"},
            "ignore_error": True,
        },
        {"command": ["true"]},
    ],
    "inputs": [
        {"name": "a", "path": "in/a", "content": "hi", "sha256": "A" * 64},
        {"path": "/tree", "url": "file:///tmp/tree", "type": "DIRECTORY"},
    ],
    "outputs": [
        {"name": "o", "path": "out.txt", "url": "file:///tmp/o.txt"},
        {"path": "/d", "url": "file:///tmp/d", "type": "DIRECTORY", "path_prefix": "d/"},
    ],
    "resources": {"cpu_cores": 2, "disk_gb": 1},
    "tags": {"t": "1"},
}


def test_importing_the_runner_pulls_in_nothing_heavy() -> None:
    code = (
        "import sys; import cpnet.agent.runner; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(HEAVY)!r}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_spec_mirrors_the_validated_task_spec() -> None:
    spec = model.TaskSpec.model_validate(SPEC)
    mirror = jobfile.JobSpec.from_dict(spec.model_dump(mode="json"))
    for kind, fields in [
        ("executors", jobfile.Executor.__slots__),
        ("inputs", jobfile.Input.__slots__),
        ("outputs", jobfile.Output.__slots__),
    ]:
        ours, theirs = getattr(mirror, kind), getattr(spec, kind)
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs, strict=True):
            assert {f: getattr(a, f) for f in fields} == {f: getattr(b, f) for f in fields}
    assert mirror.inputs[1].type == jobfile.FileType.DIRECTORY == model.FileType.DIRECTORY


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"executors": []}, "no executors"),
        ({"executors": [{"command": "ls"}]}, r"executors\[0\]: 'command'"),
        ({"executors": [{"command": ["ls", 1]}]}, "only strings"),
        ({"executors": [{"command": ["ls"], "env": {"A": 1}}]}, "'env'"),
        ({"executors": [{"command": ["ls"], "ignore_error": "no"}]}, "'ignore_error'"),
        ({"executors": [{"command": ["ls"], "workdir": 3}]}, "'workdir'"),
        ({"executors": [{"command": ["ls"]}], "inputs": [{"content": "x"}]}, "'path'"),
        ({"executors": [{"command": ["ls"]}], "inputs": {"path": "x"}}, "list of objects"),
        (
            {
                "executors": [{"command": ["ls"]}],
                "outputs": [{"path": "x", "url": "file:///x", "type": "LINK"}],
            },
            "LINK",
        ),
        ([], "must be an object"),
    ],
)
def test_a_damaged_spec_is_a_value_error(spec: Any, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        jobfile.JobSpec.from_dict(spec)


@pytest.mark.parametrize(
    "when",
    [
        datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        None,
    ],
)
def test_records_dump_exactly_like_the_pydantic_models(when: datetime | None) -> None:
    fields = {"start_time": when, "end_time": when, "exit_code": 3, "stdout": "o", "stderr": "é"}
    assert jobfile.ExecutorLog(**fields).to_dict() == model.ExecutorLog(**fields).model_dump(
        mode="json"
    )
    assert jobfile.ExecutorLog().to_dict() == model.ExecutorLog().model_dump(mode="json")
    out = {"url": "file:///x", "path": "x", "size_bytes": 5}
    for extra in ({}, {"sha256": "ab" * 32}):
        assert jobfile.OutputFileLog(**out, **extra).to_dict() == model.OutputFileLog(
            **out, **extra
        ).model_dump(mode="json")
    usage = {"wall_s": 1, "cpu_s": 0.5, "peak_rss_mb": 2, "bytes_in": 7, "bytes_out": 0}
    ours = jobfile.Usage(**usage).to_dict()
    assert json.dumps(ours) == json.dumps(model.Usage(**usage).model_dump(mode="json"))
    assert jobfile.MAX_TAIL_CHARS == model.MAX_TAIL_CHARS


def test_staging_takes_the_dataclasses_too(tmp_path: Path) -> None:
    files = tmp_path / "files"
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "b").write_text("bbb")
    inputs = [
        jobfile.Input(path="a", content="aa"),
        jobfile.Input(path="/t", url=tree.as_uri(), type=jobfile.FileType.DIRECTORY),
    ]
    assert stage_in(inputs, files, max_bytes=100) == 5
    outputs = [
        jobfile.Output(path="a", url=(tmp_path / "o" / "a").as_uri()),
        jobfile.Output(path="t", url=(tmp_path / "o" / "t").as_uri(), type="DIRECTORY"),
    ]
    logs, total = stage_out(outputs, files, max_bytes=100)
    assert total == 5 and [log.size_bytes for log in logs] == [2, 3]
    assert (tmp_path / "o" / "t" / "sub" / "b").read_text() == "bbb"
    assert logs[0].sha256 is not None and logs[1].sha256 is None


def run_runner(work_dir: Path) -> dict[str, Any]:
    subprocess.run(
        [sys.executable, "-m", "cpnet.agent.runner", str(work_dir)], check=True, timeout=60
    )
    return json.loads((work_dir / STATUS_FILE).read_text())


def test_runner_status_is_what_the_pydantic_models_write(tmp_path: Path) -> None:
    work = tmp_path / "w"
    work.mkdir()
    dest = tmp_path / "out.txt"
    spec = model.TaskSpec.model_validate(
        {
            "executors": [{"command": ["sh", "-c", "echo hi; cat in.txt > out.txt"]}],
            "inputs": [{"path": "in.txt", "content": "hello"}],
            "outputs": [{"path": "out.txt", "url": dest.as_uri()}],
        }
    )
    data = Job("a1", "t1", "local", spec, work).to_dict()
    data["runner"] = {"max_stage_bytes": 1024, "grace_s": 1.0}
    (work / JOB_FILE).write_text(json.dumps(data))

    record = run_runner(work)
    assert record["state"] == "COMPLETE" and dest.read_text() == "hello"
    assert record["executor_logs"][0]["stdout"] == "hi\n"
    for key, kind in [("executor_logs", model.ExecutorLog), ("outputs", model.OutputFileLog)]:
        for raw in record[key]:
            assert kind.model_validate(raw).model_dump(mode="json") == raw
    assert model.Usage.model_validate(record["usage"]).model_dump(mode="json") == record["usage"]
    status = status_from_record(record)
    assert status.state is State.COMPLETE and status.outputs[0].size_bytes == 5


def test_runner_refuses_a_damaged_job_file(tmp_path: Path) -> None:
    (tmp_path / JOB_FILE).write_text(json.dumps({"spec": {"executors": [{"command": "ls"}]}}))
    record = run_runner(tmp_path)
    assert record["state"] == "SYSTEM_ERROR"
    assert record["reason"].startswith(f"cannot read {JOB_FILE}: spec executors[0]")
