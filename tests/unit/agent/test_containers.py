"""Container images on a site: runtime choice, the command line, and what the runner does with an
image when the site has no runtime (refuse, or run on the host when the operator allows it)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cpnet.agent import containers
from cpnet.agent.backends.base import BackendConfig
from cpnet.agent.backends.local import LocalBackend
from cpnet.agent.backends.options import BackendOptions
from cpnet.agent.containers import ImageSupport, Mounts, container_argv
from cpnet.agent.runner import probe_private_tmp
from cpnet.tasks.states import State

from .conftest import job, wait_final

IMAGE = "docker.io/library/alpine:3.20"


def test_mounts_are_the_top_level_directories_of_task_paths():
    m = Mounts.of(["/data/in.txt", "data/out", "/tmp/x", None, "/", "results/a/b"])
    assert m.tops == ("data", "results", "tmp")


@pytest.mark.parametrize("runtime", ["podman", "docker"])
def test_oci_runtimes_bind_each_task_directory_at_its_path(runtime: str):
    argv = container_argv(
        runtime,
        IMAGE,
        ["cat", "/data/in.txt"],
        files_dir="/w/files",
        mounts=Mounts(("data", "tmp")),
        workdir="/data",
        env={"B": "2", "A": "1"},
    )
    assert argv == [
        runtime, "run", "--rm", "-i", "--network", "host",
        "-v", "/w/files/data:/data", "-v", "/w/files/tmp:/tmp",
        "-w", "/data", "-e", "A=1", "-e", "B=2",
        IMAGE, "cat", "/data/in.txt",
    ]  # fmt: skip


def test_apptainer_pulls_docker_images_and_binds_the_same_directories():
    argv = container_argv(
        "apptainer", "ubuntu:24.04", ["ls"], files_dir="/w/f", mounts=Mounts(("data",)),
        workdir=None, env={},
    )  # fmt: skip
    assert argv == [
        "apptainer", "exec", "--containall", "--cleanenv", "--bind", "/w/f/data:/data",
        "docker://ubuntu:24.04", "ls",
    ]  # fmt: skip


def test_runtime_choice_from_options():
    assert containers.detect("none") is None
    with pytest.raises(ValueError, match="container_runtime 'rkt' unknown"):
        containers.detect("rkt")
    # a runtime that is not installed is never chosen, even when named
    assert containers.probe("cpnet-no-such-runtime") is False
    seen: list[str] = []

    def standin_detector(choice: str) -> str | None:
        seen.append(choice)
        return "podman"

    got = BackendOptions.parse({"allow_host_exec": "yes"}).images(standin_detector)
    assert got == ImageSupport("podman", True) and seen == ["auto"]
    assert got.labels() == {
        containers.LABEL_RUNTIME: "podman",
        containers.LABEL_HOST_EXEC: "allowed",
    }
    none = BackendOptions.parse({"container_runtime": "none"}).images()
    assert none == ImageSupport(None, False) and not none.accepts_images
    assert none.labels() == {}
    assert ImageSupport(None, True).accepts_images


# ---- the runner on a site without a container runtime --------------------------------------


@pytest.fixture
def root_outside_tmp() -> Iterator[Path]:
    """A work root outside /tmp, so that a private /tmp can be mounted (it would hide /tmp)."""
    root = Path(tempfile.mkdtemp(prefix="cpnet-test-", dir="/var/tmp"))
    yield root
    from tests.integration.procs import kill_runners

    kill_runners(root)
    shutil.rmtree(root, ignore_errors=True)


def _backend(root: Path, **options: str) -> LocalBackend:
    return LocalBackend(
        BackendConfig(work_root=root, options={"container_runtime": "none", **options})
    )


def test_image_without_runtime_or_host_exec_is_a_system_error(
    make_backend: Callable[..., LocalBackend],
):
    backend = make_backend(container_runtime="none")
    spec = {"executors": [{"image": IMAGE, "command": ["touch", "ran"]}]}
    handle = backend.submit(job(spec))
    status = wait_final(backend, handle)
    assert status.state is State.SYSTEM_ERROR
    assert f"image {IMAGE!r}" in (status.reason or "")
    assert "does not allow host execution" in (status.reason or "")
    assert not (Path(handle) / "files" / "ran").exists()


def test_host_exec_runs_the_command_and_says_so(root_outside_tmp: Path):
    if os.geteuid() != 0 or probe_private_tmp(root_outside_tmp) is not None:
        pytest.skip("a private /tmp needs root (CAP_SYS_ADMIN)")
    backend = _backend(root_outside_tmp, allow_host_exec="true")
    spec = {
        "inputs": [{"path": "/tmp/in.txt", "content": "from the task"}],
        "volumes": ["/vol/shared"],
        "executors": [
            {"image": IMAGE, "command": ["sh", "-c", "cat /tmp/in.txt; mkdir /tmp/conda"],
             "workdir": "/tmp"},
            # a second executor sees the same private /tmp (and no one else's)
            {"image": IMAGE, "command": ["sh", "-c", "ls /tmp/conda && test -d ../vol/shared"],
             "workdir": "/tmp"},
            {"command": ["true"]},  # no image: nothing to say
        ],
    }  # fmt: skip
    handle = backend.submit(job(spec))
    status = wait_final(backend, handle)
    assert status.state is State.COMPLETE, (status.reason, status.system_logs)
    assert status.executor_logs[0].stdout == "from the task"
    host_lines = [line for line in status.system_logs if "ran on the host" in line]
    assert host_lines == [
        f"executor {i}: ran on the host, not in image {IMAGE!r} (the site has no container "
        "runtime; its operator allows host execution)"
        for i in (0, 1)
    ]
    assert (Path(handle) / "files" / "tmp" / "conda").is_dir()  # the task's /tmp was its own


# ---- the container path: opt-in, needs a host where containers can start -------------------


@pytest.mark.containers
def test_executor_runs_inside_its_image(root_outside_tmp: Path):
    """Run with `CPNET_TEST_CONTAINERS=1 pytest -m containers` on a Linux host with podman,
    docker or apptainer that can start containers and pull alpine (see docs/tes.md)."""
    if os.environ.get("CPNET_TEST_CONTAINERS") != "1":
        pytest.skip("opt-in: set CPNET_TEST_CONTAINERS=1 on a host that can start containers")
    runtime = containers.detect("auto")
    assert runtime is not None, "CPNET_TEST_CONTAINERS=1 but no working podman/docker/apptainer"
    backend = LocalBackend(
        BackendConfig(work_root=root_outside_tmp, options={"container_runtime": runtime})
    )
    spec = {
        "inputs": [{"path": "/data/in.txt", "content": "hello"}],
        "outputs": [{"path": "/data/out.txt", "url": f"file://{root_outside_tmp}/out.txt"}],
        "executors": [
            {"image": IMAGE, "command": ["sh", "-c", "cat /etc/alpine-release; "
             "tr a-z A-Z < in.txt > out.txt"], "workdir": "/data"},
        ],
    }  # fmt: skip
    handle = backend.submit(job(spec))
    status = wait_final(backend, handle, timeout=300)
    assert status.state is State.COMPLETE, (status.reason, status.executor_logs)
    assert status.executor_logs[0].stdout.startswith("3.20")  # Alpine's, not the host's
    assert (root_outside_tmp / "out.txt").read_text() == "HELLO"
    assert any(f"runs in image {IMAGE!r} with {runtime}" in x for x in status.system_logs)
