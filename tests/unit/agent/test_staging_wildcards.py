"""Wildcard outputs (TES 1.1 ``path`` patterns with ``path_prefix``): matching, naming, hostile
paths, limits, and the checks the hub makes when a task is created."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from cpnet.agent import jobfile
from cpnet.agent.staging import StagingError, Transfer, match_files, stage_out
from cpnet.tasks import wildcards
from cpnet.tasks.model import Output

MiB = 1024 * 1024


@pytest.fixture
def files(tmp_path: Path) -> Path:
    d = tmp_path / "files"
    d.mkdir()
    return d


def _write(root: Path, rel: str, data: bytes = b"x") -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def _tasks(found: list[tuple[Path, str, int]]) -> list[str]:
    return [task for _p, task, _n in found]


# ---- the pattern language -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "name", "hit"),
    [
        ("*.txt", "a.txt", True),
        ("*.txt", "a.txt.gz", False),
        ("*.txt", ".hidden.txt", False),  # a leading '.' is matched only by a literal '.'
        (".*.txt", ".hidden.txt", True),
        ("?.txt", "ab.txt", False),
        ("?.txt", "a.txt", True),
        ("?", ".", False),
        ("[abc]1", "b1", True),
        ("[!abc]1", "b1", False),
        ("[!abc]1", "d1", True),
        ("[^abc]1", "d1", True),  # bash's negation too
        ("[a-c]x", "bx", True),
        ("[a-c]x", "dx", False),
        ("[]]x", "]x", True),
        ("[[:digit:]]*", "7up", True),
        ("[[:digit:]]*", "up7", False),
        ("[[:upper:]][[:lower:]]", "Ab", True),
        ("a\\*b", "a*b", True),  # an escaped '*' is literal
        ("a\\*b", "axb", False),
        ("a[b", "a[b", True),  # an unclosed '[' is an ordinary character
        ("**", "deep", True),  # '**' is '*': no recursion
        ("sample_*_[0-9].bam", "sample_x_3.bam", True),
    ],
)
def test_component_matching(pattern: str, name: str, hit: bool) -> None:
    assert wildcards.compile_component(pattern).matches(name) is hit


@pytest.mark.parametrize(
    ("path", "wild"),
    [("/data/*.txt", True), ("/data/a?", True), ("/data/[ab]", True), ("/data/a.txt", False),
     ("/data/a\\*", False), ("/data/a[b", False)],
)  # fmt: skip
def test_has_wildcards(path: str, wild: bool) -> None:
    assert wildcards.has_wildcards(path) is wild


@pytest.mark.parametrize(
    ("pattern", "message"),
    [("/d/[z-a]", "range z-a is backwards"), ("/d/[[:nope:]]", "unknown character class"),
     ("/d/[[=a=]]", "collating elements")],
)  # fmt: skip
def test_bad_bracket_expressions(pattern: str, message: str) -> None:
    with pytest.raises(wildcards.PatternError, match=message):
        wildcards.compile_pattern(pattern)


@pytest.mark.parametrize(
    ("matched", "prefix", "rel"),
    [
        ("/data/out/a.txt", "/data/out/", "a.txt"),
        ("/data/out/a.txt", "/data/out", "a.txt"),  # Nextflow sends the prefix without '/'
        ("/data/out/s1/a.txt", "/data/", "out/s1/a.txt"),
        ("/data/out/a.txt", "data/out", "a.txt"),  # '/data' and 'data' are the same task path
        ("/data//out/a.txt", "/data/./out/", "a.txt"),
        ("/data/out/sample1.txt", "/data/out/sample", "1.txt"),  # a string prefix, as the spec says
    ],
)
def test_prune(matched: str, prefix: str, rel: str) -> None:
    assert wildcards.prune(matched, prefix) == rel


def test_prune_refuses_a_prefix_that_does_not_start_the_path() -> None:
    with pytest.raises(ValueError, match="'/other/' is not a prefix of the matched path"):
        wildcards.prune("/data/out/a.txt", "/other/")
    with pytest.raises(ValueError, match="leaves no name"):
        wildcards.prune("/data/out/a.txt", "/data/out/a.txt")


# ---- walking the work dir ---------------------------------------------------------------------


def test_match_files_walks_components_and_whole_directories(files: Path) -> None:
    names = ["data/out/a.txt", "data/out/b.txt", "data/out/c.log", "data/out/.tmp.txt",
             "data/s1/r.bam", "data/s2/r.bam", "data/s2/sub/deep.bam", "data/x.bam"]  # fmt: skip
    for rel in names:
        _write(files, rel)
    assert _tasks(match_files(files, "/data/out/*.txt")) == ["/data/out/a.txt", "/data/out/b.txt"]
    assert _tasks(match_files(files, "/data/*/r.bam")) == ["/data/s1/r.bam", "/data/s2/r.bam"]
    # a matched directory brings every file below it; '**' does not recurse by itself
    assert _tasks(match_files(files, "/data/s[0-9]")) == [
        "/data/s1/r.bam", "/data/s2/r.bam", "/data/s2/sub/deep.bam",
    ]  # fmt: skip
    assert _tasks(match_files(files, "/data/**/*.bam")) == ["/data/s1/r.bam", "/data/s2/r.bam"]
    assert _tasks(match_files(files, "data/?.bam")) == ["data/x.bam"]  # relative stays relative
    assert match_files(files, "/data/nothing/*.txt") == []
    assert match_files(files, "/data/x.bam/*") == []  # a file is no directory to look in
    sizes = {task: n for _p, task, n in match_files(files, "/data/out/*")}
    assert sizes == {"/data/out/a.txt": 1, "/data/out/b.txt": 1, "/data/out/c.log": 1}


def test_symlinks_are_never_followed(files: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    outside.mkdir()
    _write(outside, "key.txt", b"secret")
    _write(files, "data/out/a.txt")
    os.symlink(outside / "key.txt", files / "data" / "out" / "b.txt")
    with pytest.raises(StagingError, match=r"/data/out/b.txt is a symlink .*never collected"):
        match_files(files, "/data/out/*.txt")
    # a symlinked directory on the way, even one pointing inside the work dir
    os.unlink(files / "data" / "out" / "b.txt")
    os.symlink(files / "data" / "out", files / "data" / "link")
    with pytest.raises(StagingError, match="/data/link is a symlink"):
        match_files(files, "/data/*/a.txt")
    with pytest.raises(StagingError, match="/data/link is a symlink"):
        match_files(files, "/data/link/*.txt")  # a literal component too
    # and one below a matched directory
    os.unlink(files / "data" / "link")
    os.symlink(outside, files / "data" / "out" / "sub")
    with pytest.raises(StagingError, match="sub is a symlink"):
        match_files(files, "/data/o*")


def test_dotdot_and_absolute_patterns_stay_inside(files: Path, tmp_path: Path) -> None:
    _write(tmp_path, "escape.txt")
    _write(files, "etc/a.txt")
    # '/etc/*.txt' is the work dir's etc, never the host's; '..' is refused when created
    assert _tasks(match_files(files, "/etc/*.txt")) == ["/etc/a.txt"]
    with pytest.raises(ValidationError, match=r"must not contain '\.\.'"):
        Output(path="/data/../../*.txt", path_prefix="/data/", url="file:///tmp/x/")
    # and the agent refuses it too (a job file from an older hub)
    with pytest.raises(StagingError, match=r"'/\.\./\*.txt' contains '\.\.'"):
        match_files(files, "/../*.txt")
    assert _tasks(match_files(files, "/./etc/./*.txt")) == ["/etc/a.txt"]


def test_too_many_matches_is_a_clear_error(files: Path) -> None:
    for i in range(12):
        _write(files, f"data/f{i:02d}.txt")
    with pytest.raises(StagingError, match=r"/data/\*.txt matches more than 10 files"):
        match_files(files, "/data/*.txt", limit=10)
    assert len(match_files(files, "/data/*.txt", limit=12)) == 12
    for i in range(25):  # many directories on the way, though few files at the end
        (files / "tree" / f"d{i:02d}").mkdir(parents=True)
    with pytest.raises(StagingError, match=r"matches more than 20 names on its way"):
        match_files(files, "/tree/*/x.txt", limit=2)


# ---- stage_out --------------------------------------------------------------------------------


def test_wildcard_output_to_a_directory(files: Path, tmp_path: Path) -> None:
    data = {"data/out/a.txt": b"alpha", "data/out/b.txt": b"bravo", "data/out/s1/c.txt": b"c"}
    for rel, body in data.items():
        _write(files, rel, body)
    _write(files, "data/out/skip.log")
    dest = tmp_path / "dest"
    records: list[Transfer] = []
    out = Output(path="/data/out/*.txt", path_prefix="/data/out/", url=f"file://{dest}/")
    logs, n = stage_out([out], files, max_bytes=MiB, on_transfer=records.append)
    assert n == 10
    assert sorted(p.name for p in dest.iterdir()) == ["a.txt", "b.txt"]
    assert (dest / "a.txt").read_bytes() == b"alpha"
    assert [(x.url, x.path, x.size_bytes) for x in logs] == [
        (f"file://{dest}/a.txt", "/data/out/a.txt", 5),
        (f"file://{dest}/b.txt", "/data/out/b.txt", 5),
    ]
    assert logs[0].sha256 == hashlib.sha256(b"alpha").hexdigest()
    assert records[0].files == 2 and records[0].size_bytes == 10
    assert "staged out /data/out/*.txt to file://" in records[0].line()
    # deeper: the prefix keeps the part of the path below it
    out = Output(path="/data/*/s?/*.txt", path_prefix="/data", url=f"file://{dest}/deep")
    logs, _n = stage_out([out], files, max_bytes=MiB)
    assert (dest / "deep" / "out" / "s1" / "c.txt").read_bytes() == b"c"
    assert logs[0].url == f"file://{dest}/deep/out/s1/c.txt"


def test_no_match_is_recorded_not_an_error(files: Path, tmp_path: Path) -> None:
    records: list[Transfer] = []
    out = Output(path="/data/*.bam", path_prefix="/data/", url=f"file://{tmp_path}/d/")
    logs, n = stage_out([out], files, max_bytes=MiB, on_transfer=records.append)
    assert logs == [] and n == 0 and not (tmp_path / "d").exists()
    assert records[0].files == 0
    assert records[0].line() == (
        "staged out nothing for /data/*.bam: no file matched the pattern (not an error for a "
        "wildcard output)"
    )


def test_a_prefix_that_does_not_match_fails_the_output(files: Path, tmp_path: Path) -> None:
    _write(files, "data/out/a.txt")
    _write(files, "data/other/a.txt")
    # The hub refuses what it can see at creation; this one it cannot ('*' may be 'out').
    out = jobfile.Output(path="/data/*/a.txt", path_prefix="/data/out/", url=f"file://{tmp_path}/d")
    with pytest.raises(
        StagingError,
        match=r"output '/data/\*/a.txt': path_prefix '/data/out/' is not a prefix of the "
        r"matched path '/data/other/a.txt'",
    ):
        stage_out([out], files, max_bytes=MiB)
    assert not (tmp_path / "d").exists()  # names are checked before anything is copied
    # one a job file carries past the hub (an older hub): the same check, at the agent
    out = jobfile.Output(path="/data/out/*.txt", path_prefix="/nope", url=f"file://{tmp_path}/d")
    with pytest.raises(StagingError, match="path_prefix: '/nope' is not a prefix of path"):
        stage_out([out], files, max_bytes=MiB)
    out = jobfile.Output(path="/data/out/*.txt", url=f"file://{tmp_path}/d")
    with pytest.raises(StagingError, match="path_prefix: required when path contains wildcards"):
        stage_out([out], files, max_bytes=MiB)


def test_limits_are_checked_before_any_upload(files: Path, tmp_path: Path) -> None:
    _write(files, "data/a.bin", b"a" * 100)
    _write(files, "data/b.bin", b"b" * 300)
    out = Output(path="/data/*.bin", path_prefix="/data/", url=f"file://{tmp_path}/d/")
    with pytest.raises(StagingError, match=r"/data/b.bin is 300 bytes or more, over the per-file"):
        stage_out([out], files, max_bytes=MiB, max_file_bytes=200)
    with pytest.raises(StagingError, match=r"/data/\*.bin \(all 2 files\) \(400 bytes\)"):
        stage_out([out], files, max_bytes=399)
    assert not (tmp_path / "d").exists()


def test_path_prefix_without_wildcards_is_ignored(files: Path, tmp_path: Path) -> None:
    _write(files, "data/a.txt", b"aa")
    out = Output(path="/data/a.txt", path_prefix="/whatever", url=f"file://{tmp_path}/a.txt")
    logs, _n = stage_out([out], files, max_bytes=MiB)
    assert (tmp_path / "a.txt").read_bytes() == b"aa" and logs[0].path == "/data/a.txt"


# ---- what the hub refuses when a task is created ----------------------------------------------


@pytest.mark.parametrize(
    ("fields", "where", "message"),
    [
        ({"path": "/data/*.txt"}, "path_prefix", "required when path contains wildcards"),
        ({"path": "/data/*.txt", "path_prefix": "/work/"}, "path_prefix",
         "'/work/' is not a prefix of path '/data/*.txt'"),
        ({"path": "/data/out/*.txt", "path_prefix": "/data/outer"}, "path_prefix",
         "is not a prefix of path"),
        ({"path": "/data/*.txt", "path_prefix": "/data/../"}, "path_prefix", "'..'"),
        ({"path": "/*.txt", "path_prefix": "/"}, "path", "needs a literal first directory"),
        ({"path": "/d*/a.txt", "path_prefix": "/"}, "path", "needs a literal first directory"),
        ({"path": "/data/[z-a]", "path_prefix": "/data"}, "path", "range z-a is backwards"),
        ({"path": "/data/*.txt", "path_prefix": "/data/", "url": "https://example.org/up/"},
         "path", "not http"),
    ],
)  # fmt: skip
def test_creation_refuses_naming_the_field(fields: dict, where: str, message: str) -> None:
    fine = Output(path="/data/a.txt", url="s3://bucket/a.txt")
    # The schema reads it (a task stored before these rules stays readable) ...
    bad = Output.model_validate({"url": "s3://bucket/out/", **fields})
    # ... and the hub refuses it when a task is created, naming the output and the field.
    problem = wildcards.first_problem([fine, bad])
    assert problem is not None
    assert problem[0] == f"outputs.1.{where}" and message in problem[1]


def test_creation_accepts_what_could_match() -> None:
    outputs = [Output(path=path, path_prefix=prefix, url="s3://bucket/o/")
               for path, prefix in [("/data/*.txt", "/data/"), ("/data/*.txt", "/data"),
                                    ("/data/out/s*.txt", "/data/out/s"),
                                    ("/data/*/a.txt", "/data/run1/"), ("/data/*.txt", "/"),
                                    ("/data/a.txt", "/anything")]]  # fmt: skip
    assert wildcards.first_problem(outputs) is None


def test_output_logs_over_their_cap_fail_before_any_upload(files: Path, tmp_path: Path) -> None:
    """The logs ride the attempt's final update to the hub: about 512 KiB of them at most."""
    stem = "n" * 200
    for i in range(900):
        _write(files, f"data/{stem}{i:03d}.txt")
    dest = tmp_path / "d"
    out = Output(path="/data/*.txt", path_prefix="/data/", url=f"file://{dest}/")
    with pytest.raises(StagingError, match=r"output logs of 900 files would take about \d+ bytes"):
        stage_out([out], files, max_bytes=MiB)
    assert not dest.exists()
    out = Output(path="/data/*[0-4]??.txt", path_prefix="/data/", url=f"file://{dest}/")
    logs, n = stage_out([out], files, max_bytes=MiB)  # 500 of them fit
    assert len(logs) == 500 and n == 500 and len(list(dest.iterdir())) == 500


def test_each_matched_file_reports_progress(files: Path, tmp_path: Path) -> None:
    _write(files, "data/a.txt", b"aaa")
    _write(files, "data/b.txt", b"bbbbb")
    seen: list[tuple[str, int, int | None]] = []
    out = Output(path="/data/*.txt", path_prefix="/data/", url=f"file://{tmp_path}/d/")
    stage_out([out], files, max_bytes=MiB, progress=lambda p, n, t: seen.append((p, n, t)))
    assert seen == [("/data/a.txt", 3, 3), ("/data/b.txt", 5, 5)]
