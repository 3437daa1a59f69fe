"""What of the host's /tmp an attempt's private /tmp keeps visible (cpnet.agent.private_tmp), and
tasks run through it by a real local backend: task paths under /tmp with the work dir under /tmp
or outside it, software from a venv under /tmp, and a layout that cannot be served."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cpnet.agent import private_tmp
from cpnet.agent.backends.local import LocalBackend
from cpnet.agent.runner import probe_private_tmp
from cpnet.tasks.states import State

from .conftest import job, wait_final

needs_private_tmp = pytest.mark.skipif(
    os.geteuid() != 0 or probe_private_tmp(Path("/var/tmp")) is not None,
    reason="a private /tmp needs root (CAP_SYS_ADMIN)",
)


def fake_prefix(root: Path, name: str) -> Path:
    """An installation prefix with a bin/ and a lib/ (its software)."""
    (root / name / "bin").mkdir(parents=True)
    (root / name / "lib").mkdir()
    return root / name


# ---- which directories stay ---------------------------------------------------------------------


def test_a_bin_on_the_path_keeps_its_whole_prefix(tmp_path: Path) -> None:
    venv = fake_prefix(tmp_path, "venv")
    keep = private_tmp.kept_under_tmp(Path("/var/lib/agent/a1"), [str(venv / "bin")])
    assert venv in keep
    assert venv / "bin" not in keep  # the prefix covers it


def test_a_venv_keeps_the_interpreter_it_was_made_from(tmp_path: Path) -> None:
    base = fake_prefix(tmp_path, "base")
    (base / "bin" / "python3.11").write_text("")
    venv = fake_prefix(tmp_path, "venv")
    (venv / "pyvenv.cfg").write_text(
        f"home = {base / 'bin'}\ninclude-system-site-packages = false\n"
    )
    keep = private_tmp.kept_under_tmp(Path("/var/lib/agent/a1"), [str(venv / "bin")])
    assert {venv, base} <= set(keep)


def test_a_symlink_in_a_kept_bin_keeps_where_it_points(tmp_path: Path) -> None:
    other = fake_prefix(tmp_path, "other")
    (other / "bin" / "tool").write_text("")
    env = fake_prefix(tmp_path, "env")
    (env / "bin" / "tool").symlink_to(other / "bin" / "tool")
    keep = private_tmp.kept_under_tmp(Path("/var/lib/agent/a1"), [str(env / "bin")])
    assert {env, other} <= set(keep)


def test_a_path_entry_not_named_bin_is_kept_alone(tmp_path: Path) -> None:
    tools = tmp_path / "tools"
    tools.mkdir()
    keep = private_tmp.kept_under_tmp(Path("/var/lib/agent/a1"), [str(tools), "relative/bin", ""])
    assert tools in keep
    assert tmp_path not in keep


def test_the_tree_holding_a_work_dir_under_tmp_is_kept(tmp_path: Path) -> None:
    work = tmp_path / "agent" / "attempts" / "a1"
    work.mkdir(parents=True)
    keep = private_tmp.kept_under_tmp(work)
    top = Path("/tmp") / tmp_path.relative_to("/tmp").parts[0]
    assert top in keep
    assert not any(k.is_relative_to(top) and k != top for k in keep)  # outermost only
    assert Path("/tmp") not in keep


def test_hidden_paths_are_the_task_paths_inside_a_kept_dir() -> None:
    keep = [Path("/tmp/agent"), Path("/tmp/x/venv")]
    paths = ["/tmp/in.txt", "/tmp/agent/in.txt", "tmp/x/venv/lib/a", "/tmp/x/data", "/tmp/agent"]
    assert private_tmp.hidden_paths(paths, keep) == [
        ("/tmp/agent/in.txt", Path("/tmp/agent")),
        ("tmp/x/venv/lib/a", Path("/tmp/x/venv")),
        ("/tmp/agent", Path("/tmp/agent")),
    ]


def test_mount_points_are_made_and_removed_when_empty(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "a").mkdir(parents=True)  # the task's own directory: not removed
    made = private_tmp.make_mount_points(source, [Path("/tmp/a/b/c"), Path("/tmp/d")])
    assert made == [source / "a" / "b", source / "a" / "b" / "c", source / "d"]
    assert all(d.is_dir() for d in made)
    private_tmp.remove_mount_points(made)
    assert sorted(p.name for p in source.rglob("*")) == ["a"]


def test_a_task_file_in_the_way_of_a_mount_point_is_an_error(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "x").write_text("the task's file")
    with pytest.raises(OSError):
        private_tmp.make_mount_points(source, [Path("/tmp/x/venv")])


# ---- tasks run through it -----------------------------------------------------------------------

GREETING = "/tmp/tes-acceptance/RUN/in/greeting.txt"


def tmp_paths_task(seen: Path) -> dict:
    """A TES-style task: an input under /tmp, read by one executor, written to another /tmp path
    and read back by a second; a file next to the agent's tree is read too."""
    return {
        "inputs": [{"path": GREETING, "content": "hello from an inline input\n"}],
        "outputs": [],
        "executors": [
            {
                "command": ["sh", "-c", f'cat {GREETING} "$0" > /tmp/out/copy.txt', str(seen)],
                "workdir": "/tmp/out",
            },
            {"command": ["cat", "/tmp/out/copy.txt"]},
        ],
    }


@needs_private_tmp
def test_task_paths_under_tmp_work_with_the_work_dir_under_tmp(
    backend: LocalBackend, work_root: Path, tmp_path: Path
) -> None:
    assert work_root.is_relative_to("/tmp")  # the layout of the README's tour
    seen = tmp_path / "next-to-the-agent.txt"
    seen.write_text("the host's file next to the agent\n")
    status = wait_final(backend, backend.submit(job(tmp_paths_task(seen))))
    assert status.state is State.COMPLETE, (status.reason, status.system_logs)
    assert status.executor_logs[1].stdout == (
        "hello from an inline input\nthe host's file next to the agent\n"
    )
    assert any("/tmp: private" in line for line in status.system_logs), status.system_logs
    top = Path("/tmp") / work_root.relative_to("/tmp").parts[0]
    assert any(f"/tmp: {top} stays visible" in line for line in status.system_logs)
    assert not Path(GREETING).exists()  # staged in the attempt's /tmp, not the host's
    # the mount points made for the kept tree are gone from the attempt's files again
    files_tmp = next(work_root.glob("*/files/tmp"))
    assert sorted(p.name for p in files_tmp.iterdir()) == ["out", "tes-acceptance"]


@needs_private_tmp
def test_task_paths_under_tmp_work_with_the_work_dir_outside_tmp(
    outside_tmp_backend: LocalBackend, tmp_path: Path
) -> None:
    seen = tmp_path / "visible.txt"  # under /tmp, but not the agent's: hidden from the task
    seen.write_text("not for the task\n")
    spec = tmp_paths_task(Path("/dev/null"))
    status = wait_final(outside_tmp_backend, outside_tmp_backend.submit(job(spec)))
    assert status.state is State.COMPLETE, (status.reason, status.system_logs)
    assert status.executor_logs[1].stdout == "hello from an inline input\n"
    check = {"executors": [{"command": ["test", "-e", str(seen)]}]}
    status = wait_final(outside_tmp_backend, outside_tmp_backend.submit(job(check, "a2")))
    assert status.state is State.EXECUTOR_ERROR  # the rest of the host's /tmp stays private


@needs_private_tmp
def test_a_task_path_inside_the_kept_tree_is_refused_saying_why(
    backend: LocalBackend, work_root: Path
) -> None:
    inside = str(work_root / "mine.txt")
    spec = {"inputs": [{"path": inside, "content": "x"}], "executors": [{"command": ["true"]}]}
    status = wait_final(backend, backend.submit(job(spec)))
    assert status.state is State.SYSTEM_ERROR
    assert f"task path {inside} lies inside" in (status.reason or "")
    assert "work dir outside" in (status.reason or "")


def make_venv_with_a_tool(root: Path) -> Path:
    """A real venv under `root` with a module in its site-packages and a script in its bin."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (site,) = venv.glob("lib/python3*/site-packages")
    (site / "cpnet_venv_tool.py").write_text("GREETING = 'tool from a venv under /tmp'\n")
    script = venv / "bin" / "venv-tool"
    script.write_text(
        f"#!{venv}/bin/python\nimport cpnet_venv_tool\nprint(cpnet_venv_tool.GREETING)\n"
    )
    script.chmod(0o755)
    return venv


@needs_private_tmp
def test_a_tool_from_a_venv_under_tmp_runs_through_the_private_tmp(
    outside_tmp_backend: LocalBackend, tmp_path: Path
) -> None:
    venv = make_venv_with_a_tool(tmp_path)
    env = {"PATH": f"{venv}/bin:/usr/local/bin:/usr/bin:/bin"}
    spec = {
        "executors": [
            {"command": ["venv-tool"], "env": env},
            {"command": ["python", "-c", "import sys; print(sys.prefix)"], "env": env},
        ]
    }
    status = wait_final(outside_tmp_backend, outside_tmp_backend.submit(job(spec)))
    assert status.state is State.COMPLETE, (status.reason, status.system_logs)
    assert status.executor_logs[0].stdout == "tool from a venv under /tmp\n"
    assert status.executor_logs[1].stdout == f"{venv}\n"
    assert any(f"/tmp: {venv} stays visible" in line for line in status.system_logs)


def test_without_a_private_tmp_a_task_is_told_where_its_tmp_paths_are(
    make_backend, work_root: Path
) -> None:
    backend = make_backend(private_tmp="false")
    spec = {
        "inputs": [{"path": "/tmp/in/x.txt", "content": "x"}],
        "executors": [{"command": ["cat", "tmp/in/x.txt"]}],
    }
    status = wait_final(backend, backend.submit(job(spec)))
    assert status.state is State.COMPLETE, status.reason
    told = [line for line in status.system_logs if "task paths under /tmp" in line]
    assert told and "/tmp/in/x.txt" in told[0] and "files/tmp" in told[0], status.system_logs
