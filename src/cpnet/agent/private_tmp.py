"""A private /tmp for an attempt's executors, and what of the host's /tmp stays visible in it.

An executor on the host runs in its own mount namespace with the attempt's ``tmp/`` directory
bind-mounted on /tmp: the executors of one attempt share a /tmp that no other attempt or the host
sees, and a task path such as ``/tmp/in/greeting.txt`` (TES clients use them) is, for its
executors, exactly the file staged at ``<files>/tmp/in/greeting.txt``.

A private /tmp hides the host's /tmp, so some directories under it are first bound, at their own
place, inside the private one (`kept_under_tmp`):

- the tree that holds the attempt's work dir, when the agent's work dir is under /tmp (its
  top-level directory there, e.g. ``/tmp/cpnet-tour`` for ``--work-dir /tmp/cpnet-tour/agent``):
  executors start in it and the runner's paths (``HOME``, ``TMPDIR``) point into it;
- the software executors run with: this Python's prefix and its base, cpnet's own source, and
  every directory the agent's ``PATH`` or an executor's ``PATH`` names. An entry named ``bin`` or
  ``sbin`` keeps its whole prefix (a venv, a conda environment, a ``--prefix`` install: its
  ``lib/``, ``pyvenv.cfg`` and data come with it), a venv's ``pyvenv.cfg`` ``home`` keeps the
  interpreter it was made from, and a symlink in such a ``bin`` keeps the prefix it points into.

A task path inside a kept directory could not be served (the bound host directory would hide
what was staged there): `hidden_paths` finds those, and the runner refuses the attempt before
staging anything, saying which directory hides which path and what to change.

Only the standard library and hostinfo: the runner imports this on every attempt.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from cpnet.agent import hostinfo

CLONE_NEWNS = 0x00020000  # <linux/sched.h>
MS_REC = 1 << 14  # <linux/mount.h>
MS_BIND = 4096
MS_PRIVATE = 1 << 18
TMP = Path("/tmp")
MAX_BIN_ENTRIES = 4096  # symlinks looked at per kept bin directory (a conda bin has ~1,000)
PREFIX_DIRS = ("bin", "sbin")  # a PATH entry so named belongs to the prefix around it


def _under_tmp(p: Path) -> bool:
    return p != TMP and p.is_relative_to(TMP)


def _prefix_of(entry: Path) -> Path:
    """The installation a PATH entry belongs to: its parent for ``…/bin``, else itself."""
    return entry.parent if entry.name in PREFIX_DIRS and entry.parent != TMP else entry


def _venv_home(prefix: Path) -> Path | None:
    """The ``home`` of a venv's pyvenv.cfg (the base interpreter's bin dir), if any."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        for line in (prefix / "pyvenv.cfg").read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home" and value.strip():
                return Path(value.strip())
    return None


def _link_targets(bin_dir: Path) -> list[Path]:
    """Where the symlinks in `bin_dir` point (a venv's ``python`` → its base interpreter)."""
    out: list[Path] = []
    with contextlib.suppress(OSError), os.scandir(bin_dir) as it:
        for n, entry in enumerate(it):
            if n >= MAX_BIN_ENTRIES:
                break
            if entry.is_symlink():
                with contextlib.suppress(OSError, RuntimeError):
                    out.append(Path(entry.path).resolve())
    return out


def software_dirs(path_entries: Iterable[str]) -> list[Path]:
    """The directories the given PATH entries under /tmp need whole, as absolute, normalised
    paths: each entry's prefix (see the module doc), and, for each prefix, the venv's base
    interpreter and the prefixes its bin's symlinks point into. Entries elsewhere (/usr/bin) are
    not looked into: a private /tmp hides nothing of theirs, and scanning them would cost every
    attempt tens of milliseconds."""
    out: list[Path] = []
    for raw in path_entries:
        if not raw or not os.path.isabs(raw):
            continue  # a relative PATH entry depends on the cwd: nothing to keep
        literal = Path(os.path.normpath(raw))
        for entry in {literal, literal.resolve()}:
            if not _under_tmp(entry) or not entry.is_dir():
                continue
            prefix = _prefix_of(entry)
            out.append(prefix)
            home = _venv_home(prefix)
            if home is not None and home.is_absolute():
                out.append(_prefix_of(home))
            if entry.name in PREFIX_DIRS:
                out += [_prefix_of(t.parent) for t in _link_targets(entry)]
    return out


def kept_under_tmp(work_dir: Path, path_entries: Iterable[str] = ()) -> list[Path]:
    """Directories under /tmp that executors must still see, at their place, through a private
    /tmp (see the module doc), outermost only, sorted. `work_dir` is the attempt's; the agent's
    own ``PATH`` is always counted, `path_entries` adds the executors' ``PATH`` entries."""
    candidates: list[Path] = []
    work = Path(os.path.abspath(work_dir))
    if _under_tmp(work):
        candidates.append(TMP / work.relative_to(TMP).parts[0])
    candidates += [Path(sys.prefix), Path(sys.base_prefix), Path(__file__).resolve().parents[2]]
    agent_path = os.environ.get("PATH", "").split(os.pathsep)
    candidates += software_dirs([*agent_path, *path_entries])
    out: list[Path] = []
    for c in sorted({Path(os.path.normpath(c)) for c in candidates if c.is_absolute()}):
        if _under_tmp(c) and c.is_dir() and not any(c.is_relative_to(o) for o in out):
            out.append(c)
    return out


def hidden_paths(task_paths: Iterable[str], keep: Iterable[Path]) -> list[tuple[str, Path]]:
    """Task paths under /tmp that a kept directory would hide: (path, the kept dir). A relative
    task path counts from the task's root, as staging places it (``tmp/x`` is ``/tmp/x``)."""
    kept = list(keep)
    out: list[tuple[str, Path]] = []
    for p in task_paths:
        if not p:
            continue
        path = Path(os.path.normpath("/" + p.lstrip("/")))
        hit = next((k for k in kept if path.is_relative_to(k)), None)
        if hit is not None:
            out.append((p, hit))
    return out


def make_mount_points(source: Path, keep: Iterable[Path]) -> list[Path]:
    """Create, inside `source`, the directory each kept dir is bound on; return the directories
    this created (deepest last), for `remove_mount_points`. Raises OSError when one cannot be
    made (a file of the task's is in the way)."""
    made: list[Path] = []
    for k in keep:
        d = source
        for part in k.relative_to(TMP).parts:
            d = d / part
            if not d.is_dir():
                d.mkdir()
                made.append(d)
    return made


def remove_mount_points(made: list[Path]) -> None:
    """Remove the mount points `make_mount_points` created, where still empty, so they are not
    taken for the task's own files (a DIRECTORY or wildcard output over /tmp)."""
    for d in reversed(made):
        with contextlib.suppress(OSError):
            d.rmdir()


def enter(source: Path, keep: Iterable[Path] = ()) -> None:
    """In a child: enter a new mount namespace, stop mount propagation, bind each kept directory
    at its place inside `source` (its mount point must exist), then bind-mount `source` on /tmp.

    Raises OSError when the kernel refuses (not root, or no CAP_SYS_ADMIN in a container).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    src = os.fsencode(source)
    rec_bind = MS_BIND | MS_REC
    steps = [
        ("unshare(CLONE_NEWNS)", lambda: libc.unshare(CLONE_NEWNS)),
        ("make / rprivate", lambda: libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None)),
    ]
    # A kept dir may hold `source` itself (the work dir under /tmp): bound first, it holds no
    # mount yet, and the recursive bind of `source` on /tmp then carries it along.
    for k in keep:
        a, b = os.fsencode(k), os.fsencode(source / k.relative_to(TMP))
        steps.append((f"keep {k}", lambda a=a, b=b: libc.mount(a, b, None, rec_bind, None)))
    steps.append(("bind-mount on /tmp", lambda: libc.mount(src, b"/tmp", None, rec_bind, None)))
    for what, step in steps:
        if step() != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")


def enter_here(source: Path, keep: Iterable[Path] = ()) -> int:
    """`enter` in the calling thread (a mount namespace is a thread's, like its cwd): the
    processes it starts from then on see `source` as /tmp, while the process's other threads
    keep the host's. Returns an fd of the namespace it left, for `leave`; on failure it is back
    there and raises OSError.

    A runner calls this once per attempt, before its executors, instead of each executor
    entering its own namespace in a ``preexec_fn``: one namespace per attempt rather than per
    executor, and executors can then be started by vfork."""
    home = os.open("/proc/thread-self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    try:
        enter(source, keep)
    except OSError:
        with contextlib.suppress(OSError):
            leave(home)
        raise
    except BaseException:
        os.close(home)
        raise
    return home


def leave(home: int) -> None:
    """Return the calling thread to the mount namespace `enter_here` left (and close `home`).
    The kernel refuses (OSError) while another thread shares this thread's filesystem context,
    i.e. one started since `enter_here` is still alive."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(home, CLONE_NEWNS) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns back to the host's mount namespace: {os.strerror(err)}")
    finally:
        os.close(home)


def probe(source: Path) -> str | None:
    """Try `enter` in a throwaway child; None when it works, else why not."""
    return hostinfo.allowed(lambda: enter(source), "unshare/mount")
