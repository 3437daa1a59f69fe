"""Read real workload traces into plain ``Job`` values: SWF, the Alibaba GPU traces, generic CSV.

Every loader returns jobs sorted by submit time, with times shifted so the first submit is 0,
and a ``Skipped`` count per reason for rows it could not use (never silently). Files may be
gzip-compressed (``.gz``). Nothing here draws random numbers: the synthetic additions a trace
lacks (input data, deadlines) are made by ``workload.annotate`` with a seeded generator.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import os
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

FORMATS = ("swf", "alibaba2023", "alibaba2025", "csv")


@dataclass(frozen=True, slots=True)
class Job:
    """One job of a trace: when it arrived, how long it ran, and what it asked for."""

    id: str
    submit_s: float  # seconds from the trace's first submit
    runtime_s: float  # wall-clock run time as recorded, on the trace's own machine (speed 1.0)
    cpu_cores: float
    ram_gb: float = 0.0  # 0: not recorded (then RAM constrains nothing)
    gpus: int = 0
    estimate_s: float | None = None  # the user's run-time estimate (requested time), if recorded
    input_bytes: float = 0.0  # input data to stage before it starts
    data_site: str | None = None  # site id where the input lives (None: nothing to stage)
    deadline_s: float | None = None  # absolute, same clock as submit_s


@dataclass(frozen=True, slots=True)
class Trace:
    """A loaded trace: its jobs and why some rows were left out."""

    name: str
    jobs: tuple[Job, ...]
    skipped: tuple[tuple[str, int], ...] = ()  # (reason, rows)


class TraceError(ValueError):
    """A trace file or column mapping cannot be read; the message says what to fix."""


def shared_dir() -> Path:
    """The shared data folder: ``CPNET_SHARED``, else ``../shared`` beside the repository."""
    env = os.environ.get("CPNET_SHARED")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3].parent / "shared"


# Short names for the traces in ``$CPNET_SHARED/data/traces``: (relative path, format).
KNOWN: Mapping[str, tuple[str, str]] = {
    "kth": ("pwa-swf/KTH-SP2-1996-2.1-cln.swf.gz", "swf"),
    "lanl": ("pwa-swf/LANL-CM5-1994-4.1-cln.swf.gz", "swf"),
    "nasa": ("pwa-swf/NASA-iPSC-1993-3.1-cln.swf.gz", "swf"),
    "lcg": ("pwa-swf/LCG.swf.gz", "swf"),
    "alibaba2023": ("alibaba-gpu-v2023-openb/openb_pod_list_default.csv", "alibaba2023"),
    "alibaba2025": ("alibaba-gpu-v2025-dlrm/disaggregated_DLRM_trace.csv.gz", "alibaba2025"),
}


def resolve(trace: str, fmt: str | None = None) -> tuple[Path, str]:
    """Turn a known trace name or a file path into (path, format); guess the format if not given."""
    if trace in KNOWN:
        rel, known_fmt = KNOWN[trace]
        return shared_dir() / "data" / "traces" / rel, fmt or known_fmt
    path = Path(trace)
    if not path.exists():
        names = ", ".join(KNOWN)
        raise TraceError(f"no trace file {trace!r} (known names: {names})")
    if fmt is None:
        if ".swf" in path.name:
            fmt = "swf"
        else:
            raise TraceError(f"cannot tell the format of {path.name}: pass --format")
    return path, fmt


def load(
    trace: str,
    fmt: str | None = None,
    *,
    limit: int | None = None,
    mapping: Mapping[str, str] | None = None,
) -> Trace:
    """Load a trace by name or path in one of ``FORMATS`` (csv needs ``mapping``)."""
    path, fmt = resolve(trace, fmt)
    if fmt == "swf":
        rows, skipped = _swf(path)
    elif fmt == "alibaba2023":
        rows, skipped = _alibaba2023(path)
    elif fmt == "alibaba2025":
        rows, skipped = _alibaba2025(path)
    elif fmt == "csv":
        if not mapping:
            raise TraceError("a generic CSV needs a column mapping (--map submit=...,...)")
        rows, skipped = _generic(path, mapping)
    else:
        raise TraceError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    jobs = _normalise(rows, limit)
    return Trace(trace if trace in KNOWN else path.name, jobs, tuple(sorted(skipped.items())))


def _normalise(rows: list[Job], limit: int | None) -> tuple[Job, ...]:
    """Sort by submit (stable, so ties keep file order), keep the first ``limit``, start at 0."""
    rows.sort(key=lambda j: j.submit_s)
    if limit is not None:
        rows = rows[:limit]
    if not rows:
        return ()
    t0 = rows[0].submit_s
    if t0 == 0:
        return tuple(rows)
    return tuple(
        replace(
            j,
            submit_s=j.submit_s - t0,
            deadline_s=None if j.deadline_s is None else j.deadline_s - t0,
        )
        for j in rows
    )


def _lines(path: Path) -> Iterator[str]:
    """Text lines of a file, gunzipped when it ends in .gz."""
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
            yield from f
    else:
        with path.open(encoding="utf-8", errors="replace") as f:
            yield from f


def _csv_rows(path: Path) -> Iterator[dict[str, str]]:
    """CSV rows as dicts keyed by the header; gunzipped when the name ends in .gz."""
    text = io.StringIO("".join(_lines(path)))
    yield from csv.DictReader(text)


def _swf(path: Path) -> tuple[list[Job], Counter[str]]:
    """Standard Workload Format: 18 whitespace-separated fields, ``;`` comments, -1 unknown.

    Cores: allocated processors (field 5), else requested (8). Memory: requested KB per
    processor (10), else used (7), times the cores. Estimate: requested time (9).
    """
    jobs: list[Job] = []
    skipped: Counter[str] = Counter()
    for line in _lines(path):
        line = line.strip()
        if not line or line.startswith(";"):
            continue
        f = line.split()
        if len(f) < 18:
            skipped["fewer than 18 fields"] += 1
            continue
        submit, runtime = float(f[1]), float(f[3])
        procs = int(f[4]) if int(f[4]) > 0 else int(f[7])
        if submit < 0 or runtime < 0:
            skipped["unknown submit or run time"] += 1
            continue
        if procs <= 0:
            skipped["unknown processor count"] += 1
            continue
        mem_kb = float(f[9]) if float(f[9]) > 0 else float(f[6])
        estimate = float(f[8])
        jobs.append(
            Job(
                id=f[0],
                submit_s=submit,
                runtime_s=runtime,
                cpu_cores=float(procs),
                ram_gb=mem_kb * procs / 1024**2 if mem_kb > 0 else 0.0,
                estimate_s=estimate if estimate > 0 else None,
            )
        )
    return jobs, skipped


def _alibaba2023(path: Path) -> tuple[list[Job], Counter[str]]:
    """Alibaba cluster-trace-gpu-v2023 ``openb_pod_list_*.csv``.

    Run time is deletion − scheduled time; pods never scheduled have none and are skipped. A
    fractional GPU share (``gpu_milli`` < 1000 on one GPU) is rounded up to a whole GPU, since
    pools here are allocated in whole GPUs.
    """
    jobs: list[Job] = []
    skipped: Counter[str] = Counter()
    for row in _csv_rows(path):
        if not row.get("scheduled_time"):
            skipped["never scheduled (no run time)"] += 1
            continue
        start, end = float(row["scheduled_time"]), float(row["deletion_time"])
        num_gpu, milli = int(row["num_gpu"]), int(row["gpu_milli"])
        gpus = math.ceil(num_gpu * milli / 1000) if num_gpu else 0
        jobs.append(
            Job(
                id=row["name"],
                submit_s=float(row["creation_time"]),
                runtime_s=max(0.0, end - start),
                cpu_cores=int(row["cpu_milli"]) / 1000,
                ram_gb=int(row["memory_mib"]) / 1024,
                gpus=max(gpus, 1 if num_gpu else 0),
            )
        )
    return jobs, skipped


def _alibaba2025(path: Path) -> tuple[list[Job], Counter[str]]:
    """Alibaba cluster-trace-gpu-v2025 ``disaggregated_DLRM_trace.csv``: service instances.

    Only instances created and deleted inside the window are jobs (lifetime = deletion −
    scheduled, else − creation); open-ended ones are censored and skipped. Times are rounded to
    whole seconds (the file has float noise).
    """
    jobs: list[Job] = []
    skipped: Counter[str] = Counter()
    for row in _csv_rows(path):
        created, deleted = row.get("creation_time"), row.get("deletion_time")
        if not created:
            skipped["created before the window"] += 1
            continue
        if not deleted:
            skipped["still alive at the end (censored)"] += 1
            continue
        start = round(float(row.get("scheduled_time") or created))
        jobs.append(
            Job(
                id=row["instance_sn"],
                submit_s=round(float(created)),
                runtime_s=max(0.0, round(float(deleted)) - start),
                cpu_cores=float(row["cpu_request"]),
                ram_gb=float(row["memory_request"] or 0),
                gpus=int(float(row["gpu_request"] or 0)),
            )
        )
    return jobs, skipped


# Generic CSV mapping keys: what each means and its unit (``--map key=column[*factor|/divisor]``).
CSV_KEYS: Mapping[str, str] = {
    "id": "job id (default: the row number)",
    "submit": "submit time, seconds (any origin)",
    "runtime": "run time, seconds (or give end, and start or submit)",
    "start": "start time, seconds (with end: run time = end − start)",
    "end": "end time, seconds",
    "cpus": "CPU cores",
    "ram_gb": "memory, GB",
    "gpus": "GPUs (rounded up to whole GPUs)",
    "estimate": "user's run-time estimate, seconds",
    "input_bytes": "input data size, bytes",
    "deadline": "absolute deadline, seconds on the submit clock",
}


def parse_mapping(text: str) -> dict[str, str]:
    """Parse ``submit=colA,runtime=colB,cpus=cpu_milli/1000`` into {key: column expression}."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, eq, col = part.partition("=")
        if not eq or not col:
            raise TraceError(f"bad mapping {part!r}: write key=column")
        if key not in CSV_KEYS:
            raise TraceError(f"unknown mapping key {key!r} (one of {', '.join(CSV_KEYS)})")
        out[key] = col
    return out


def _column(expr: str) -> tuple[str, float]:
    """Split ``col*0.001`` or ``col/1000`` into (column, factor)."""
    for op in ("*", "/"):
        col, sep, num = expr.rpartition(op)
        if sep and col:
            try:
                value = float(num)
            except ValueError:
                continue
            return col, value if op == "*" else 1 / value
    return expr, 1.0


def _generic(path: Path, mapping: Mapping[str, str]) -> tuple[list[Job], Counter[str]]:
    """A CSV with a header, read through a column mapping (see ``CSV_KEYS``)."""
    if "submit" not in mapping or "cpus" not in mapping:
        raise TraceError("the mapping needs at least submit= and cpus=")
    if "runtime" not in mapping and "end" not in mapping:
        raise TraceError("the mapping needs runtime=, or end= (with start= or submit=)")
    cols = {k: _column(v) for k, v in mapping.items()}
    jobs: list[Job] = []
    skipped: Counter[str] = Counter()
    for n, row in enumerate(_csv_rows(path), 1):
        missing = [c for c, _ in cols.values() if c not in row]
        if missing:
            raise TraceError(f"{path.name} has no column {missing[0]!r} (mapping {mapping})")

        def get(key: str, row: dict[str, str] = row) -> float | None:
            if key not in cols:
                return None
            col, factor = cols[key]
            cell = (row[col] or "").strip()
            if cell in ("", "-1", "NA", "nan"):
                return None
            return float(cell) * factor

        submit, cpus = get("submit"), get("cpus")
        runtime = get("runtime")
        if runtime is None and get("end") is not None:
            begin = get("start") if get("start") is not None else submit
            runtime = None if begin is None else get("end") - begin  # type: ignore[operator]
        if submit is None or runtime is None or runtime < 0 or not cpus:
            skipped["missing submit, run time or cpus"] += 1
            continue
        jobs.append(
            Job(
                id=row[cols["id"][0]] if "id" in cols else str(n),
                submit_s=submit,
                runtime_s=runtime,
                cpu_cores=cpus,
                ram_gb=get("ram_gb") or 0.0,
                gpus=math.ceil(get("gpus") or 0),
                estimate_s=get("estimate"),
                input_bytes=get("input_bytes") or 0.0,
                deadline_s=get("deadline"),
            )
        )
    return jobs, skipped
