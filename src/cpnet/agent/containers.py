"""Container images on a site: which runtime runs them, and the command line that does.

A site runs an executor's ``image`` with the first of podman, docker or apptainer that works on
the host (found by ``shutil.which`` and answering a cheap probe), or with the runtime its config
names (``container_runtime = "podman"``; ``"none"`` turns images off). An operator may allow
host execution (``cpnet agent --allow-host-exec``): executors with an image then run their
command on the host, and the attempt's system_logs say so.

The runner imports this module, so it uses the standard library only.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import PurePosixPath

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

RUNTIMES = ("podman", "docker", "apptainer")
PROBE_S = 10.0
# Pool labels the agent sets so that users (and `cpnet pools`) see what a site does with images.
LABEL_RUNTIME = "cpnet.container_runtime"
LABEL_HOST_EXEC = "cpnet.host_exec"


def _probe_argv(runtime: str) -> list[str]:
    # docker/podman: `info` needs the daemon / the storage to work, not just the binary
    return [runtime, "--version"] if runtime == "apptainer" else [runtime, "info"]


def probe(runtime: str, run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> bool:
    """Whether `runtime` is on PATH and answers its probe command with exit code 0."""
    if shutil.which(runtime) is None:
        return False
    try:
        done = run(_probe_argv(runtime), capture_output=True, timeout=PROBE_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def detect(choice: str = "auto") -> str | None:
    """The runtime to use: `choice` if it is a runtime that works, the first working one for
    "auto", None for "none" (or when nothing works)."""
    choice = (choice or "auto").strip().lower()
    if choice in ("none", "off", "false", ""):
        return None
    if choice == "auto":
        return next((r for r in RUNTIMES if probe(r)), None)
    if choice not in RUNTIMES:
        raise ValueError(f"container_runtime {choice!r} unknown; use auto, none or {RUNTIMES}")
    return choice if probe(choice) else None


@dataclass(frozen=True, slots=True)
class ImageSupport:
    """What a site does with executors that name an image."""

    runtime: str | None = None  # podman | docker | apptainer, or None: no container runtime
    allow_host_exec: bool = False

    @property
    def accepts_images(self) -> bool:
        """Whether tasks with images may be placed here at all."""
        return self.runtime is not None or self.allow_host_exec

    def labels(self) -> dict[str, str]:
        """The pool labels that announce this (merged into every pool the agent registers);
        none for a site that runs no images (its pools say can_run_images=false)."""
        if not self.accepts_images:
            return {}
        out = {LABEL_RUNTIME: self.runtime or "none"}
        if self.allow_host_exec:
            out[LABEL_HOST_EXEC] = "allowed"
        return out

    def to_runner(self) -> dict[str, object]:
        return {"container_runtime": self.runtime, "allow_host_exec": self.allow_host_exec}


@dataclass(frozen=True, slots=True)
class Mounts:
    """Top-level task directories (``/data`` of ``/data/x``) bound from the attempt's files."""

    tops: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def of(cls, paths: Iterable[str | None]) -> Mounts:
        tops = set()
        for p in paths:
            parts = [x for x in PurePosixPath(p or "").parts if x not in ("/", ".")]
            if parts:
                tops.add(parts[0])
        return cls(tuple(sorted(tops)))


def container_argv(
    runtime: str,
    image: str,
    command: list[str],
    *,
    files_dir: str,
    mounts: Mounts,
    workdir: str | None,
    env: dict[str, str],
) -> list[str]:
    """The argv that runs `command` inside `image`, each task directory bound at its path.

    Streams are redirected by the caller (the runner) around this process, so stdin, stdout
    and stderr of the task work unchanged.
    """
    binds = [(f"{files_dir}/{top}", f"/{top}") for top in mounts.tops]
    wd = str(PurePosixPath("/", workdir)) if workdir else None
    if runtime == "apptainer":
        argv = ["apptainer", "exec", "--containall", "--cleanenv"]
        for src, dst in binds:
            argv += ["--bind", f"{src}:{dst}"]
        if wd:
            argv += ["--pwd", wd]
        for k, v in sorted(env.items()):
            argv += ["--env", f"{k}={v}"]
        ref = image if "://" in image or image.endswith(".sif") else f"docker://{image}"
        return [*argv, ref, *command]
    argv = [runtime, "run", "--rm", "-i", "--network", "host"]
    for src, dst in binds:
        argv += ["-v", f"{src}:{dst}"]
    if wd:
        argv += ["-w", wd]
    for k, v in sorted(env.items()):
        argv += ["-e", f"{k}={v}"]
    return [*argv, image, *command]
