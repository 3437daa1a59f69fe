"""examples/genomics: its one command, run as a user runs it, with --json.

The example runs a Snakemake pipeline (bowtie2, samtools, bcftools on Debian's lambda phage test
data) locally and through the hub's TES endpoint on a two-site network it builds. Besides the
example's own checks, this test reads both runs' results from the work dir itself and compares
them, and looks for processes the example left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from services import need_service

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "examples" / "genomics" / "run.py"
DATA = Path("/usr/share/doc/bowtie2/examples")
TOOLS = ("bowtie2", "bowtie2-build", "samtools", "bcftools", "rsync")
DEADLINE_S = 300  # the whole command; the TES run inside gets --timeout 240


@pytest.fixture
def work_dir() -> Iterator[Path]:
    """Outside /tmp: the tasks get a private /tmp, and the storage must be seen by both sides."""
    root = Path(tempfile.mkdtemp(prefix="cpnet-test-genomics-", dir="/var/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def records(vcf: Path) -> list[str]:
    return [x for x in vcf.read_text().splitlines() if x and not x.startswith("#")]


def leftovers(root: Path) -> list[str]:
    """Processes whose command line or working directory is inside `root`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if str(root) in cmdline or cwd.startswith(str(root)):
            found.append(f"{proc.name}: {cmdline[:200]}")
    return found


def test_genomics_pipeline_through_tes_matches_the_local_run(work_dir: Path) -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing or not (DATA / "reads" / "reads_1.fq.gz").is_file():
        need_service(
            "genomics tools",
            f"missing {missing or 'the lambda phage data'}: "
            "apt-get install bowtie2 bowtie2-examples samtools bcftools rsync",
        )
    cmd = [sys.executable, str(RUN), "--json", "--work-dir", str(work_dir), "--timeout", "240"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=DEADLINE_S, cwd=REPO)
    assert done.stdout.strip(), done.stderr[-4000:]
    doc = json.loads(done.stdout)
    logs = work_dir / "tes" / "snakemake-tes.log"
    tail = logs.read_text(errors="replace")[-4000:] if logs.is_file() else done.stderr[-4000:]
    assert done.returncode == 0 and doc["ok"], (doc.get("error"), doc.get("checks"), tail)
    assert doc["error"] is None
    assert all(c["ok"] for c in doc["checks"]), doc["checks"]

    # The results, read here: the same variant records and alignment figures on both sides.
    local, storage = work_dir / "local", work_dir / "storage"
    vcf_local = records(local / "calls" / "variants.vcf")
    vcf_tes = records(storage / "calls" / "variants.vcf")
    assert vcf_local and vcf_local == vcf_tes
    flagstat = "stats/flagstat.tsv"
    assert (local / flagstat).read_text() == (storage / flagstat).read_text()
    figures = doc["figures"]
    assert figures["variants"] == len(vcf_tes)
    assert 0 < figures["mapped_reads"] <= figures["reads"]
    assert figures["reference_length_bp"] > 0

    # Every rule but `all` was a TES task; each completed, on one of the two sites.
    jobs = doc["jobs"]
    assert len(jobs) == figures["jobs"] >= 5
    assert sorted(j["rule"] for j in jobs) == sorted(
        ["reference", "bowtie2_index", "align", "call", "stats"]
    )
    assert all(j["state"] == "COMPLETE" and j["attempts"] >= 1 for j in jobs), jobs
    assert len(figures["sites_used"]) == 2
    assert {j["site"] for j in jobs} == set(figures["sites_used"])

    assert leftovers(work_dir) == []
