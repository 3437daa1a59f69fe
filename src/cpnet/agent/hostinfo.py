"""What this Linux host says about itself (CPU, memory, GPUs), about its processes (/proc), and
what it lets a process do (`allowed`)."""

from __future__ import annotations

import logging
import os
import platform
import shutil
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

GIB = 1024**3
NVIDIA_SMI_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Gpu:
    """One GPU as nvidia-smi names it."""

    model: str
    memory_gb: float  # GiB


@dataclass(frozen=True, slots=True)
class HostFacts:
    """The machine's hardware, as found now."""

    hostname: str
    arch: str
    cpu_model: str
    cpu_cores: int
    ram_gb: float  # GiB
    disk_gb: float  # GiB on the file system holding the work root
    gpus: list[Gpu]


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's marketing name from /proc/cpuinfo, or the architecture when none is given."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError as exc:
        log.warning("cannot read %s: %s", cpuinfo, exc)
        return platform.machine() or "unknown"
    # x86 says "model name"; some ARM kernels say "Hardware" or "CPU part" only.
    for key in ("model name", "Hardware", "cpu model", "Processor"):
        for line in text.splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip() == key and value.strip():
                return value.strip()
    return platform.machine() or "unknown"


def memory_gb(meminfo: Path = Path("/proc/meminfo")) -> float:
    """Total memory in GiB from /proc/meminfo (0.0 when unreadable, with a warning)."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024 / GIB  # the file says kB (KiB)
    except (OSError, ValueError, IndexError) as exc:
        log.warning("cannot read MemTotal from %s: %s", meminfo, exc)
    return 0.0


def gpus() -> list[Gpu]:
    """The NVIDIA GPUs nvidia-smi lists; none when the binary is absent or fails."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    argv = [smi, "--query-gpu=name,memory.total", "--format=csv,noheader"]
    try:
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("nvidia-smi failed, reporting no GPUs: %s", exc)
        return []
    found = []
    for line in out.splitlines():
        name, _, mem = line.rpartition(",")
        if not name.strip():
            continue
        mib = mem.strip().split()[0] if mem.strip() else "0"  # "40960 MiB"
        try:
            found.append(Gpu(model=name.strip(), memory_gb=float(mib) / 1024))
        except ValueError:
            log.warning("nvidia-smi line not understood, GPU left out: %r", line)
    return found


def host_facts(work_root: Path) -> HostFacts:
    """Everything `discover` needs about this machine."""
    work_root.mkdir(parents=True, exist_ok=True)
    return HostFacts(
        hostname=socket.gethostname(),
        arch=platform.machine() or "unknown",
        cpu_model=cpu_model(),
        cpu_cores=os.cpu_count() or 1,
        ram_gb=memory_gb(),
        disk_gb=shutil.disk_usage(work_root).total / GIB,
        gpus=gpus(),
    )


# ---- processes ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of /proc/<pid>/stat we use."""

    pid: int
    state: str  # R, S, D, Z (zombie), ...
    ppid: int
    pgid: int
    sid: int
    start_ticks: int  # clock ticks after boot; with the pid, names a process uniquely


def proc_stat(pid: int) -> ProcStat | None:
    """The process's stat line, or None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces and parentheses; it ends at the last ')'.
    rest = raw[raw.rindex(")") + 2 :].split()
    return ProcStat(
        pid=pid,
        state=rest[0],
        ppid=int(rest[1]),
        pgid=int(rest[2]),
        sid=int(rest[3]),
        start_ticks=int(rest[19]),
    )


def alive(pid: int, start_ticks: int | None = None) -> bool:
    """Whether the process runs (a zombie does not), and is the one that started at
    `start_ticks` when given (so a reused pid is not mistaken for it)."""
    st = proc_stat(pid)
    if st is None or st.state in ("Z", "X"):
        return False
    return start_ticks is None or st.start_ticks == start_ticks


def all_stats() -> list[ProcStat]:
    """Every process visible in /proc now."""
    stats = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            st = proc_stat(int(entry.name))
            if st is not None:
                stats.append(st)
    return stats


def session_members(sid: int) -> list[int]:
    """Live processes in session `sid` (an attempt's runner leads one; its executors are in it)."""
    return [s.pid for s in all_stats() if s.sid == sid and s.state not in ("Z", "X")]


def children(pid: int) -> list[int]:
    """Live direct children of `pid`."""
    return [s.pid for s in all_stats() if s.ppid == pid and s.state not in ("Z", "X")]


def own_children() -> list[int]:
    """Live direct children of this process (adopted orphans included), from
    ``/proc/self/task/<tid>/children``: a few small files instead of every process's stat line
    (`children` costs ~4 ms of CPU with 130 processes on the host). Falls back to `children`
    where the kernel has no such file (CONFIG_PROC_CHILDREN off)."""
    me = os.getpid()
    try:
        with open(f"/proc/self/task/{me}/children") as f:
            listed = f.read().split()
    except FileNotFoundError:
        return children(me)
    for tid in os.listdir("/proc/self/task"):
        if tid != str(me):
            try:
                with open(f"/proc/self/task/{tid}/children") as f:
                    listed += f.read().split()
            except FileNotFoundError:  # the thread ended meanwhile
                continue
    out = []
    for raw in dict.fromkeys(listed):
        st = proc_stat(int(raw))
        if st is not None and st.state not in ("Z", "X"):
            out.append(st.pid)
    return out


def allowed(step: Callable[[], object], what: str) -> str | None:
    """Run `step` in a throwaway forked child (so nothing it changes touches this process): None
    when it returns, else why not ("`what` refused: <errno text>") when it raises OSError."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            step()
            os._exit(0)
        except OSError as exc:
            os._exit(min(254, max(1, exc.errno or 1)))
        except BaseException:
            os._exit(255)
    _pid, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        return None
    return f"{what} refused: {os.strerror(code) if 0 < code < 255 else f'status {code}'}"
