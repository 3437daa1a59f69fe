"""`ClusterBackend`'s submit / poll / cancel skeleton, through the Slurm backend and a stand-in
controller: `poll_many` answers every attempt from one listing, the reconcile table's rows, and
handles that survive an agent restart as the text the journal keeps."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cpnet.agent.backends.base import BackendConfig, Handle, Job
from cpnet.agent.backends.cluster import REFUSED
from cpnet.agent.backends.slurm import SlurmBackend, SlurmFinal, SlurmJobRequest, SlurmTransport
from cpnet.agent.runner import STATUS_FILE, new_record, write_json_atomic
from cpnet.tasks.model import TaskSpec
from cpnet.tasks.states import State


class StandinController(SlurmTransport):
    """Stand-in for slurmctld (no job runs): jobs are what the test sets; submissions get the
    next id and stay PENDING; it counts the listings asked for."""

    def __init__(self) -> None:
        self.states: dict[str, str] = {}
        self.listings = 0
        self.canceled: list[str] = []

    def nodes(self) -> list[dict]:
        return [{"name": "n1", "partitions": ["cpu"], "cpus": 4, "real_memory": 4096}]

    def partitions(self) -> dict[str, dict]:
        return {"cpu": {"state": "UP", "max_time_min": None, "nodes": "n1"}}

    def jobs(self) -> list[dict]:
        self.listings += 1
        return [
            {"job_id": int(i), "name": f"j{i}", "partition": "cpu", "job_state": s}
            for i, s in self.states.items()
        ]

    def submit(self, request: SlurmJobRequest, script: Path) -> str:
        job_id = str(100 + len(self.states))
        self.states[job_id] = "PENDING"
        return job_id

    def cancel(self, job_id: str) -> None:
        self.canceled.append(job_id)
        self.states[job_id] = "CANCELLED"

    def final(self, job_id: str) -> SlurmFinal | None:
        return None


@pytest.fixture
def slurm() -> StandinController:
    return StandinController()


def backend_of(slurm: StandinController, tmp_path: Path, **options: str) -> SlurmBackend:
    return SlurmBackend(BackendConfig(work_root=tmp_path / "work", options=options), cli=slurm)


def job(attempt: str) -> Job:
    spec = TaskSpec.model_validate({"executors": [{"command": ["true"]}]})
    return Job(attempt, "t", "cpu", spec, Path("/ignored"))


def test_poll_many_answers_every_attempt_from_one_listing(
    slurm: StandinController, tmp_path: Path
) -> None:
    backend = backend_of(slurm, tmp_path, squeue_cache_s="0")  # no listing outlives a poll
    handles = [backend.submit(job(f"a{i}")) for i in range(3)]
    slurm.states["101"] = "RUNNING"
    before = slurm.listings
    states = [s.state for s in backend.poll_many(handles)]
    assert states == [State.QUEUED, State.RUNNING, State.QUEUED]
    assert slurm.listings == before + 1
    # Jobs the controller forgot: the listing taken for this batch is fresh enough for all.
    slurm.states.clear()
    before = slurm.listings
    statuses = backend.poll_many(handles)
    assert slurm.listings == before + 1
    assert all(s.state is State.SYSTEM_ERROR for s in statuses)
    assert "Slurm job vanished" in str(statuses[0].reason)


def test_a_job_newer_than_the_listing_is_looked_for_once(
    slurm: StandinController, tmp_path: Path
) -> None:
    backend = backend_of(slurm, tmp_path)  # a listing serves polls for 1 s
    first = backend.submit(job("a1"))
    backend.poll(first)
    slurm.states["200"] = "RUNNING"  # submitted since (by an agent before its crash)
    newer = backend.handle(str(backend.work_dir_for("a2")))
    newer.work_dir.mkdir()
    (newer.work_dir / "slurm_job_id").write_text("200\n")
    before = slurm.listings
    states = [s.state for s in backend.poll_many([first, backend.handle(str(newer))])]
    assert states == [State.QUEUED, State.RUNNING] and slurm.listings == before + 1


def test_handles_are_typed_and_journal_as_the_work_dir(
    slurm: StandinController, tmp_path: Path
) -> None:
    backend = backend_of(slurm, tmp_path)
    handle = backend.submit(job("a1"))
    assert handle == Handle(tmp_path.resolve() / "work" / "a1", "100")
    assert str(handle) == os.fspath(handle) == str(handle.work_dir)
    assert backend.submit(job("a1")) == handle  # the same attempt twice: one job
    again = backend_of(slurm, tmp_path)  # an agent restart reads its journal's text back
    assert again.handle(str(handle)) == handle
    assert again.poll(again.handle(str(handle))).state is State.QUEUED


def test_reconcile_rows(slurm: StandinController, tmp_path: Path) -> None:
    backend = backend_of(slurm, tmp_path)
    queued = backend.submit(job("q"))
    assert backend.poll(queued).reason == "Slurm job 100 pending ()"
    # a final record wins over the scheduler's word once the job left it
    ended = backend.submit(job("e"))
    slurm.states["101"] = "COMPLETED"
    write_json_atomic(ended.work_dir / STATUS_FILE, new_record(State.COMPLETE))
    assert backend.poll(ended).state is State.COMPLETE
    # no job recorded (refused at submit, its record lost): a SYSTEM_ERROR naming the work dir
    lost = backend.handle(str(backend.work_dir_for("lost")))
    lost.work_dir.mkdir()
    (lost.work_dir / "slurm_job_id").write_text(REFUSED + "\n")
    status = backend.poll(backend.handle(str(lost)))
    assert status.state is State.SYSTEM_ERROR and f"no Slurm job for {lost}" == status.reason
    # cancel: the marker, then scancel; Slurm's CANCELLED with the marker is CANCELED
    backend.cancel(queued)
    assert slurm.canceled == ["100"] and (queued.work_dir / "cancel").exists()
    assert backend.poll(queued).state is State.CANCELED
    backend.cancel(queued)  # a no-op once final
    assert slurm.canceled == ["100"]
