"""Trace loaders: each format read from a tiny fixture, the skipped rows counted, .gz read."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from cpnet.sim import traces

FIXTURES = Path(__file__).parent / "fixtures"


def test_swf_fields_units_and_skips() -> None:
    trace = traces.load(str(FIXTURES / "tiny.swf"), "swf")
    assert [j.id for j in trace.jobs] == ["2", "1", "4"]  # sorted by submit
    second, first, last = trace.jobs
    assert second.submit_s == 0 and first.submit_s == 50 and last.submit_s == 210
    assert first.runtime_s == 600 and first.cpu_cores == 4
    assert first.ram_gb == pytest.approx(1.0)  # 256 MiB per processor x 4
    assert first.estimate_s == 1200 and second.estimate_s is None
    assert last.cpu_cores == 16  # allocated unknown: the requested processors
    assert dict(trace.skipped) == {"unknown processor count": 1, "unknown submit or run time": 1}


def test_swf_gz_and_limit(tmp_path: Path) -> None:
    packed = tmp_path / "tiny.swf.gz"
    with (FIXTURES / "tiny.swf").open("rb") as src, gzip.open(packed, "wb") as dst:
        shutil.copyfileobj(src, dst)
    trace = traces.load(str(packed), limit=2)  # format guessed from the name
    assert [j.id for j in trace.jobs] == ["2", "1"]


def test_alibaba2023_runtime_and_fractional_gpus() -> None:
    jobs = traces.load(str(FIXTURES / "tiny_alibaba2023.csv"), "alibaba2023").jobs
    by_id = {j.id: j for j in jobs}
    assert set(by_id) == {"openb-pod-0000", "openb-pod-0001", "openb-pod-0002", "openb-pod-0004"}
    whole = by_id["openb-pod-0000"]
    assert (whole.submit_s, whole.runtime_s, whole.cpu_cores, whole.ram_gb, whole.gpus) == (
        0,
        4000,
        12,
        16,
        1,
    )
    assert by_id["openb-pod-0001"].gpus == 1  # 460 milli-GPU rounds up to one GPU
    assert by_id["openb-pod-0001"].runtime_s == 500  # deletion − scheduled
    assert by_id["openb-pod-0002"].gpus == 8
    assert by_id["openb-pod-0004"].gpus == 0


def test_alibaba2025_censored_rows_are_skipped() -> None:
    trace = traces.load(str(FIXTURES / "tiny_alibaba2025.csv"), "alibaba2025")
    assert [(j.id, j.submit_s, j.runtime_s) for j in trace.jobs] == [
        ("instance_3", 0, 1000),
        ("instance_1", 275, 3493),
    ]
    assert trace.jobs[0].cpu_cores == 96 and trace.jobs[1].ram_gb == 256
    assert dict(trace.skipped) == {
        "created before the window": 1,
        "still alive at the end (censored)": 1,
    }


def test_generic_csv_mapping_with_units() -> None:
    mapping = traces.parse_mapping(
        "id=job,submit=t_submit,end=t_end,start=t_start,cpus=cpu_milli/1000,"
        "ram_gb=mem_mb/1024,gpus=ngpu"
    )
    trace = traces.load(str(FIXTURES / "tiny_generic.csv"), "csv", mapping=mapping)
    b, a = trace.jobs
    assert (b.id, b.submit_s, b.runtime_s, b.cpu_cores, b.ram_gb, b.gpus) == (
        "b",
        0,
        100,
        0.5,
        1,
        1,
    )
    assert (a.id, a.submit_s, a.runtime_s, a.cpu_cores, a.ram_gb) == ("a", 5, 50, 2, 2)
    assert dict(trace.skipped) == {"missing submit, run time or cpus": 1}


def test_mapping_errors_say_what_to_fix() -> None:
    with pytest.raises(traces.TraceError, match="unknown mapping key"):
        traces.parse_mapping("when=t")
    with pytest.raises(traces.TraceError, match="needs at least submit"):
        traces.load(str(FIXTURES / "tiny_generic.csv"), "csv", mapping={"runtime": "x"})
    with pytest.raises(traces.TraceError, match="no column"):
        traces.load(
            str(FIXTURES / "tiny_generic.csv"),
            "csv",
            mapping={"submit": "t_submit", "runtime": "nope", "cpus": "ngpu"},
        )
    with pytest.raises(traces.TraceError, match="no trace file"):
        traces.load("no-such-trace")
