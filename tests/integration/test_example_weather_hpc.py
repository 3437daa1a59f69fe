"""examples/weather-hpc as a user runs it: one command, a real hub and a Slurm-backend agent on the
dev Slurm cluster, an MPI shallow-water model as a 2-node job, its fields bitwise equal to a
1-rank run of the same script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cpnet.demo.checks import processes_under
from services import need_service

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "examples" / "weather-hpc" / "run.py"
DEADLINE_S = 180  # the command's own deadline (--timeout) is shorter; this one catches a hang
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def need_open_mpi() -> None:
    if shutil.which("mpirun") is None:
        need_service("openmpi", "no mpirun: apt-get install openmpi-bin (Debian's Open MPI)")
    probe = subprocess.run(
        [sys.executable, "-c", "from mpi4py import MPI; print(MPI.Get_library_version())"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **MPI_ENV},
    )
    if probe.returncode != 0 or "Open MPI" not in probe.stdout:
        need_service("mpi4py", f"mpi4py on Open MPI is missing: pip install mpi4py ({probe})")


def test_mpi_run_on_two_slurm_nodes_matches_one_rank(
    slurm_env: dict[str, str], tmp_path: Path
) -> None:
    need_open_mpi()
    work = tmp_path / "work"
    argv = [sys.executable, str(RUN), "--json", "--work-dir", str(work)]
    argv += ["--slurm-conf", slurm_env["SLURM_CONF"], "--timeout", "120"]
    argv += ["--nx", "96", "--ny", "96", "--steps", "150"]
    t0 = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=DEADLINE_S, check=False)
    wall = time.monotonic() - t0
    assert done.stdout.strip(), f"no JSON on stdout; stderr:\n{done.stderr[-4000:]}"
    doc = json.loads(done.stdout)
    failed = [c for c in doc["checks"] if not c["ok"]]
    assert done.returncode == 0 and doc["passed"], (
        f"exit {done.returncode}, error {doc['error']!r}, failed checks {failed}\n"
        f"{done.stderr[-4000:]}"
    )

    f = doc["figures"]
    mpi, ref = f["mpi"], f["reference"]
    assert (f["grid"], f["steps"]) == ("96x96", 150)
    # Two ranks, each on its own Slurm node, both nodes of the job's own allocation (partition
    # cpu: n1, n2); the reference is one rank on one node.
    assert mpi["ranks"] == 2 and len(set(mpi["rank_nodes"])) == 2, mpi
    assert mpi["slurm_num_nodes"] == "2", mpi
    listed = subprocess.run(
        ["scontrol", "show", "hostnames", mpi["slurm_nodelist"]],
        env={**os.environ, **slurm_env},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.split()
    assert sorted(mpi["rank_nodes"]) == sorted(listed)
    assert ref["ranks"] == 1 and len(ref["nodes"]) == 1, ref
    # The fields are bitwise equal; the sums agree to round-off; the maximum exactly.
    assert f["max_abs_diff"] == {"h": 0.0, "hu": 0.0, "hv": 0.0}
    assert f["fields_sha256"]["mpi"] == f["fields_sha256"]["ref"]
    assert f["end"]["mpi"]["max_height"] == f["end"]["reference"]["max_height"]
    assert all(v <= 1e-12 for v in f["diagnostics_rel_diff"].values())
    assert mpi["compute_s"] > 0 and ref["compute_s"] > 0

    # Torn down: no process of the example, no Slurm job in its work dir.
    assert not processes_under(work)
    queue = subprocess.run(
        ["squeue", "-h", "-o", "%i %Z"],
        env={**os.environ, **slurm_env},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert str(work) not in queue
    print(
        f"weather-hpc example: {wall:.1f}s wall, MPI {mpi['compute_s']}s, ref {ref['compute_s']}s"
    )
