"""The agent's journal: entries survive a restart (a new Journal over the same directory), a
batch of attempts accepted together is one durable file, and a removed attempt never comes
back."""

from __future__ import annotations

from pathlib import Path

from cpnet.agent.journal import Entry, Journal


def entry(aid: str, **kw: object) -> Entry:
    return Entry(aid, f"t-{aid}", "cpu", {"spec": {"executors": [{"command": ["true"]}]}}, **kw)


def ids(entries: list[Entry]) -> list[str]:
    return [e.attempt_id for e in entries]


def test_an_entry_saved_alone_is_its_own_file(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.save_batch([entry("a")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    assert Journal(tmp_path).load() == [entry("a")]


def test_a_batch_is_one_file_and_each_attempts_own_file_supersedes_it(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.save_batch([entry("a"), entry("b"), entry("c")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["batch-a.json"]
    j.save(entry("b", handle="/work/b"), durable=False)  # started
    loaded = Journal(tmp_path).load()
    assert ids(loaded) == ["a", "b", "c"]
    assert [e.handle for e in loaded] == [None, "/work/b", None]


def test_a_removed_attempt_of_a_live_batch_does_not_come_back(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.save_batch([entry("a"), entry("b")])
    j.save(entry("a", handle="h"), durable=False)
    j.remove("a")
    assert not (tmp_path / "a.json").exists()
    again = Journal(tmp_path)  # a restart
    loaded = again.load()
    assert [(e.attempt_id, e.done) for e in loaded] == [("a", True), ("b", False)]
    again.remove("a")  # what the agent does with a done entry on joining
    again.remove("b")
    assert list(tmp_path.iterdir()) == []  # the batch went with its last attempt, markers too
    assert Journal(tmp_path).load() == []


def test_the_batch_file_goes_with_its_last_attempt(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.save_batch([entry("a"), entry("b")])
    j.remove("b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.done", "batch-a.json"]
    j.remove("a")
    assert list(tmp_path.iterdir()) == []


def test_a_marker_left_by_a_crash_is_cleaned_up(tmp_path: Path) -> None:
    (tmp_path / "x.done").touch()  # its batch file was removed, the marker not yet
    assert Journal(tmp_path).load() == []
    assert list(tmp_path.iterdir()) == []
