"""Weather-style HPC: an MPI shallow-water model as a multi-node Slurm job, checked bit for bit.

One command builds a throw-away compute network on this machine (a hub on SQLite and one site
whose agent runs the Slurm backend against a real Slurm cluster: the dev cluster of
scripts/dev-slurm.sh, nodes n1..n4), then submits two cpnet tasks at once:

1. the MPI run: ``shallow_water.py`` under Open MPI's ``mpirun`` inside a 2-node Slurm
   allocation (``backend_parameters.nodes = 2`` on partition ``cpu``: n1 and n2, one rank per
   node; or ``--ranks 4``: 4 CPUs on partition ``big``, which the backend spreads over n3 and n4,
   two ranks per node). Each rank records the Slurm node it ran on (``SLURMD_NODENAME``);
2. the single-process reference: the same script with 1 rank (``mpirun -n 1``), a one-node job on
   the other partition (``big``, or ``cpu`` with ``--ranks 4``);

then stages both outputs back (``file://``), and checks: both COMPLETE; the MPI ranks ran on at
least 2 distinct Slurm nodes, which are the job's own node list (``scontrol``); the final fields
h, hu, hv are bitwise equal; the maximum height equal; the summed diagnostics (mass, energy) equal
to 1e-12 relative (their summation order differs: per-rank sums + Allreduce); mass conserved.

    .venv/bin/python examples/weather-hpc/run.py            # tables on the terminal
    .venv/bin/python examples/weather-hpc/run.py --json     # one JSON document on stdout

Needs: Open MPI (Debian: ``apt-get install openmpi-bin``), mpi4py (``pip install mpi4py``) and
numpy in this Python; Slurm: $CPNET_TEST_SLURM_CONF or --slurm-conf, else a running
scripts/dev-slurm.sh cluster, else this command starts one (as root) and stops it afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from cpnet.client import Client, CpnetError
from cpnet.demo.checks import ExampleError, Outcome, run_example, wait_for
from cpnet.demo.network import LocalNetwork, NetworkError
from cpnet.tasks.model import TaskView
from cpnet.tasks.states import State

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
MODEL = HERE / "shallow_water.py"
DEV_SLURM = REPO / "scripts" / "dev-slurm.sh"
EXAMPLE = "examples/weather-hpc/run.py"

HEARTBEAT_S = 1.0
POLL_S = 0.2
FUNDS = "1000000.00"  # CNY: the user's organisation never meets a 402 here
SUM_RTOL = 1e-12  # summed diagnostics: reduction order differs between 1 and N ranks
# Open MPI settings the tasks run with: root may run mpirun (the dev cluster runs jobs as root);
# ranks yield the CPU while they wait (more ranks than idle cores on a busy machine); numpy's
# BLAS is single-threaded (one rank per CPU). And because the dev cluster's "nodes" are one
# machine: ranks talk TCP over loopback only (btl self,tcp). The shared-memory transport (vader)
# names its segments after the host name and the node-local rank, so local rank 0 of n3 and
# local rank 0 of n4 would open the same segment (the run hangs or crashes); on a real cluster
# drop these three.
MPI_ENV = {
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OMPI_MCA_mpi_yield_when_idle": "1",
    "OMPI_MCA_btl": "self,tcp",
    "OMPI_MCA_btl_tcp_if_include": "lo",
    "OMPI_MCA_oob_tcp_if_include": "lo",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
}
FIELDS = ("h", "hu", "hv")


def sha256_of(arrays: dict[str, Any]) -> str:
    h = hashlib.sha256()
    for name in FIELDS:
        h.update(arrays[name].tobytes())
    return h.hexdigest()


def rel_diff(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-300)


# -- prerequisites --------------------------------------------------------------------------------


def preflight() -> None:
    """Open MPI, mpi4py and numpy here, or an error naming what to install."""
    apt = "apt-get install -y --no-install-recommends openmpi-bin"
    if os.geteuid() != 0:
        apt = "sudo " + apt
    if shutil.which("mpirun") is None:
        raise ExampleError(f"no `mpirun` on PATH: install Open MPI (Debian: `{apt}`)")
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import numpy; from mpi4py import MPI; print(MPI.Get_library_version())",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **MPI_ENV},
    )
    if probe.returncode != 0:
        why = (probe.stderr.strip().splitlines() or ["?"])[-1]
        raise ExampleError(
            f"{sys.executable} cannot import numpy and mpi4py ({why}): install them with "
            f"`{sys.executable} -m pip install numpy mpi4py` (mpi4py loads Open MPI's "
            f"libmpi.so.40: `{apt}`)"
        )
    if "Open MPI" not in probe.stdout:
        raise ExampleError(
            f"mpi4py here uses {probe.stdout.strip()!r}, not Open MPI, whose mpirun launches "
            f"the ranks: install Open MPI (`{apt}`) and reinstall mpi4py"
        )


class SlurmCluster:
    """The Slurm cluster the site's agent submits to: given, already running, or started here."""

    def __init__(self, conf: str | None, console: Console) -> None:
        self.conf = conf
        self.console = console
        self.started = False

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def problem(self) -> str | None:
        if not self.conf or not Path(self.conf).is_file():
            return f"SLURM_CONF={self.conf!r} is not a file"
        try:
            proc = subprocess.run(
                ["sinfo", "-h", "-o", "%P"],
                env=self.env(),
                capture_output=True,
                text=True,
                timeout=30,
            )
        except FileNotFoundError:
            return "no `sinfo`: install the Slurm client (`apt-get install slurm-client`)"
        except subprocess.TimeoutExpired:
            return "sinfo did not answer within 30 s"
        if proc.returncode != 0:
            return f"sinfo failed: {proc.stderr.strip()}"
        return None

    def open(self) -> None:
        if self.conf:
            why = self.problem()
            if why:
                raise ExampleError(f"the Slurm cluster at {self.conf} does not answer: {why}")
            return
        status = subprocess.run(
            ["bash", str(DEV_SLURM), "env"], capture_output=True, text=True, timeout=60
        )
        if status.returncode == 0 and status.stdout.startswith("SLURM_CONF="):
            self.conf = status.stdout.strip().split("=", 1)[1]
            if self.problem() is None:
                return
        if os.geteuid() != 0:
            raise ExampleError(
                "no Slurm cluster: set CPNET_TEST_SLURM_CONF or --slurm-conf, or run "
                "`sudo scripts/dev-slurm.sh start` (the dev cluster runs Slurm as root)"
            )
        with self.console.status("starting the dev Slurm cluster (scripts/dev-slurm.sh start)…"):
            proc = subprocess.run(
                ["bash", str(DEV_SLURM), "start"], capture_output=True, text=True, timeout=300
            )
        self.started = proc.returncode == 0
        if proc.returncode != 0:
            tail = " | ".join((proc.stderr + proc.stdout).strip().splitlines()[-6:])
            raise ExampleError(
                f"scripts/dev-slurm.sh start failed (exit {proc.returncode}): {tail}. Slurm needs "
                "`apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge`"
            )
        self.conf = proc.stdout.strip().splitlines()[-1].split("=", 1)[1]

    def run(self, *argv: str) -> str:
        proc = subprocess.run(
            list(argv), env=self.env(), capture_output=True, text=True, timeout=30
        )
        if proc.returncode != 0:
            raise ExampleError(f"`{' '.join(argv)}` failed: {proc.stderr.strip()}")
        return proc.stdout

    def partition_nodes(self, partition: str) -> list[str]:
        out = self.run("sinfo", "-h", "-N", "-p", partition, "-o", "%N")
        return sorted(set(out.split()))

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (the dev cluster keeps ended jobs for 10 min)."""
        return dict(re.findall(r"(\w+)=(\S*)", self.run("scontrol", "-o", "show", "job", job_id)))

    def hostnames(self, nodelist: str) -> list[str]:
        return self.run("scontrol", "show", "hostnames", nodelist).split()

    def cancel_under(self, root: Path) -> list[str]:
        """scancel every job whose work dir is under ``root``; wait until none runs."""

        def ours() -> list[str]:
            try:
                out = self.run("squeue", "-h", "-o", "%i %T %Z")
            except ExampleError:
                return []
            return [
                line.split()[0]
                for line in out.splitlines()
                if len(line.split()) == 3 and line.split()[2].startswith(str(root))
            ]

        jobs = ours()
        if jobs:
            subprocess.run(["scancel", *jobs], env=self.env(), capture_output=True, timeout=30)
            deadline = time.monotonic() + 60
            while ours() and time.monotonic() < deadline:
                time.sleep(0.5)
        return jobs

    def close(self) -> None:
        if self.started:
            subprocess.run(["bash", str(DEV_SLURM), "stop"], capture_output=True, timeout=120)
            self.started = False


# -- the example ----------------------------------------------------------------------------------


class Example:
    def __init__(self, args: argparse.Namespace, console: Console, root: Path) -> None:
        self.args = args
        self.console = console
        self.root = root
        self.results = root / "results"
        self.slurm = SlurmCluster(args.slurm_conf, console)
        self.net = LocalNetwork(root / "net", heartbeat_s=HEARTBEAT_S)
        self.user_token = ""
        self.out = Outcome()

    def say(self, message: str, style: str = "") -> None:
        self.console.print(Text(message, style=style), soft_wrap=True)

    def step(self, title: str) -> None:
        self.console.rule(Text(title, style="bold"))

    def user(self) -> Client:
        return Client(self.net.url, self.user_token, timeout=30)

    # 1 -- the cluster and the network

    def start(self) -> None:
        self.step("1. the Slurm cluster and the compute network")
        self.slurm.open()
        mpi_part = "big" if self.args.ranks == 4 else "cpu"
        nodes = self.slurm.partition_nodes(mpi_part)
        if len(nodes) < 2:
            raise ExampleError(
                f"partition {mpi_part!r} of {self.slurm.conf} has nodes {nodes}: the MPI run "
                "needs 2 (the dev cluster of scripts/dev-slurm.sh has n1,n2 in cpu, n3,n4 in big)"
            )
        started = " (started here)" if self.slurm.started else ""
        self.say(f"Slurm: {self.slurm.conf}{started}; partition {mpi_part}: {', '.join(nodes)}")
        with self.console.status("starting the hub and the site's agent (Slurm backend)…"):
            admin_token = self.net.start_hub()
            with Client(self.net.url, admin_token, timeout=30) as admin:
                org = admin.create_org("Pearl River Weather Service")
                admin.topup(org.id, FUNDS, transfer_id=f"funds-{org.id}")
                _, padmin = admin.create_user(org.id, "hpc-admin", role="provider-admin")
                _, user = admin.create_user(org.id, "forecaster", role="user")
            self.user_token = user.token
            with Client(self.net.url, padmin.token, timeout=30) as operator:
                prov = operator.create_provider("Shenzhen supercomputing")
                site = operator.create_site(
                    prov.id,
                    "sz-hpc",
                    type="supercomputing",
                    region_code="440300",
                    region_name="Shenzhen, Guangdong",
                )
                site_token = operator.create_site_token(site.id, "Slurm agent").token
            self.net.start_agent(
                "sz-hpc",
                site_token,
                pools=[],  # the agent reads the partitions from Slurm
                options={"slurm_conf": str(self.slurm.conf)},
                extra={"backend": "slurm"},
            )

            def pools_up() -> list | None:
                self.net.check_alive()
                with self.user() as u:
                    pools = u.pools()
                return pools if {"cpu", "big"} <= {p.name for p in pools} else None

            pools = wait_for(
                pools_up,
                60,
                "the Slurm partitions to appear as pools",
                f"see {self.net.site_dir('sz-hpc') / 'agent.log'}",
            )
        self.say(
            f"hub {self.net.url}; site sz-hpc (Slurm backend); pools: "
            + ", ".join(f"{p.name} ({p.total.cpu_cores:g} CPUs)" for p in pools)
        )

    # 2 -- the two tasks

    def spec(self, name: str, ranks: int, partition: str, params: dict[str, str]) -> dict:
        a = self.args
        py = sys.executable  # the site's Python: numpy and mpi4py (shared by every node here)
        model_args = ["--nx", str(a.nx), "--ny", str(a.ny), "--steps", str(a.steps)]
        io = ["--out", "out/fields.npz", "--meta", "out/meta.json"]
        return {
            "name": name,
            "executors": [
                {
                    "command": [
                        "mpirun",
                        "-n",
                        str(ranks),
                        "--bind-to",
                        "none",
                        py,
                        "model/shallow_water.py",
                        *model_args,
                        *io,
                    ],
                    "env": MPI_ENV,
                }
            ],
            "inputs": [{"url": MODEL.as_uri(), "path": "model/shallow_water.py"}],
            "outputs": [
                {"url": (self.results / name / "fields.npz").as_uri(), "path": "out/fields.npz"},
                {"url": (self.results / name / "meta.json").as_uri(), "path": "out/meta.json"},
            ],
            "resources": params,
            "constraints": {"labels": {"partition": partition}},
            "expected_runtime_s": 120,
            "max_attempts": 1,
            "tags": {"example": "weather-hpc"},
        }

    def run_tasks(self) -> tuple[TaskView, TaskView]:
        self.step("2. the MPI run (multi-node) and the 1-rank reference, as cpnet tasks")
        if self.args.ranks == 4:  # 4 CPUs > a big node's 2: the backend spreads them, 2 per node
            mpi_part, mpi_res = "big", {"cpu_cores": 4, "ram_gb": 1}
        else:  # one rank on each of 2 nodes, through the backend parameter `nodes`
            mpi_part = "cpu"
            mpi_res = {"cpu_cores": 1, "ram_gb": 0.5, "backend_parameters": {"nodes": "2"}}
        ref_part = "cpu" if mpi_part == "big" else "big"
        specs = {
            "mpi": self.spec(f"sw-mpi-{self.args.ranks}", self.args.ranks, mpi_part, mpi_res),
            # on the other partition, so that it need not wait for the MPI job's nodes
            "ref": self.spec("sw-ref-1", 1, ref_part, {"cpu_cores": 1, "ram_gb": 0.5}),
        }
        with self.user() as u:
            t0 = time.monotonic()
            ids = {k: u.submit(s).id for k, s in specs.items()}
            self.say(
                f"submitted {ids['mpi']} ({self.args.ranks} ranks, partition {mpi_part}) "
                f"and {ids['ref']} (1 rank, partition {ref_part})"
            )
            views: dict[str, TaskView] = {}
            done_s: dict[str, float] = {}
            deadline = t0 + self.args.timeout
            with self.console.status("waiting…") as status:
                while len(done_s) < len(ids):
                    self.net.check_alive()
                    for k, tid in ids.items():
                        if k in done_s:
                            continue
                        views[k] = u.task(tid)
                        if views[k].state.terminal:
                            done_s[k] = round(time.monotonic() - t0, 1)
                    status.update(
                        "waiting for the tasks: "
                        + ", ".join(f"{k} {views[k].state.value}" for k in ids)
                        + f" ({time.monotonic() - t0:.0f}s)"
                    )
                    if time.monotonic() > deadline and len(done_s) < len(ids):
                        raise ExampleError(
                            f"the tasks did not end within --timeout {self.args.timeout:g}s: "
                            + ", ".join(f"{k} {v.state.value}" for k, v in views.items())
                            + f"; see {self.net.site_dir('sz-hpc') / 'agent.log'} and "
                            "`squeue`"
                        )
                    time.sleep(POLL_S)
        for k, v in views.items():
            self.say(f"{k}: {v.id} {v.state.value} after {done_s[k]} s")
        self.out.figures["submit_to_end_s"] = done_s
        return views["mpi"], views["ref"]

    # 3 -- the checks

    def job_of(self, view: TaskView) -> dict[str, str]:
        """Slurm's record of the task's job: its id from the backend's system log."""
        if not view.attempts:
            return {}
        lines = [x for x in view.attempts[-1].system_logs if x.startswith("slurm: job ")]
        if not lines:
            return {}
        job_id = lines[-1].split()[2]
        with contextlib.suppress(ExampleError):
            return {"JobId": job_id, **self.slurm.job(job_id)}
        return {"JobId": job_id}

    def verify(self, mpi: TaskView, ref: TaskView) -> None:
        import numpy as np

        self.step("3. compare the outputs")
        out, f = self.out, self.out.figures
        for key, view in (("mpi", mpi), ("ref", ref)):
            a = view.attempts[-1] if view.attempts else None
            why = view.reason or (a.reason if a else "") or ""
            tail = ""
            if a and a.executor_logs:
                tail = (a.executor_logs[-1].stderr or a.executor_logs[-1].stdout)[-400:]
            ok = view.state is State.COMPLETE
            out.check(
                f"{key} task COMPLETE",
                ok,
                f"{view.state.value} {why}".strip() + ("" if ok else f": {tail}"),
            )
        if not (mpi.state is State.COMPLETE and ref.state is State.COMPLETE):
            return
        meta, fields = {}, {}
        for key, view in (("mpi", mpi), ("ref", ref)):
            d = self.results / view.name  # type: ignore[operator]
            meta[key] = json.loads((d / "meta.json").read_text())
            with np.load(d / "fields.npz") as z:
                fields[key] = {n: z[n] for n in FIELDS}
        m, r = meta["mpi"], meta["ref"]
        job, rjob = self.job_of(mpi), self.job_of(ref)
        alloc = self.slurm.hostnames(job["NodeList"]) if job.get("NodeList") else []
        rank_nodes = [x["node"] for x in m["rank_info"]]
        f.update(
            grid=f"{m['nx']}x{m['ny']}",
            steps=m["steps"],
            simulated_s=round(m["simulated_s"], 1),
            mpi_library=m["mpi_library"],
            mpi={
                "ranks": m["ranks"],
                "rank_nodes": rank_nodes,
                "nodes": m["nodes"],
                "slurm_job": job.get("JobId"),
                "slurm_nodelist": job.get("NodeList"),
                "slurm_num_nodes": job.get("NumNodes"),
                "compute_s": m["compute_s"],
                "halo_s_max": max(x["halo_s"] for x in m["rank_info"]),
                "wall_s": mpi.attempts[-1].usage.wall_s if mpi.attempts[-1].usage else None,
            },
            reference={
                "ranks": r["ranks"],
                "nodes": r["nodes"],
                "slurm_job": rjob.get("JobId"),
                "slurm_nodelist": rjob.get("NodeList"),
                "compute_s": r["compute_s"],
                "wall_s": ref.attempts[-1].usage.wall_s if ref.attempts[-1].usage else None,
            },
        )
        out.check(
            f"MPI run has {self.args.ranks} ranks, the reference 1",
            m["ranks"] == self.args.ranks and r["ranks"] == 1,
            f"{m['ranks']} and {r['ranks']}",
        )
        out.check(
            "MPI ranks ran on >= 2 Slurm nodes",
            len(set(rank_nodes)) >= 2 and all(rank_nodes),
            f"rank -> SLURMD_NODENAME: {rank_nodes}",
        )
        out.check(
            "... the nodes Slurm allocated to the job",
            bool(alloc) and set(rank_nodes) <= set(alloc) and len(alloc) >= 2,
            f"job {job.get('JobId')} NodeList={job.get('NodeList')} NumNodes={job.get('NumNodes')}",
        )
        diffs = {n: float(np.max(np.abs(fields["mpi"][n] - fields["ref"][n]))) for n in FIELDS}
        equal = all(np.array_equal(fields["mpi"][n], fields["ref"][n]) for n in FIELDS)
        f["max_abs_diff"] = diffs
        f["fields_sha256"] = {k: sha256_of(v) for k, v in fields.items()}
        out.check(
            "fields h, hu, hv bitwise equal to the reference",
            equal and all(fields["mpi"][n].shape == (m["ny"], m["nx"]) for n in FIELDS),
            "max |diff| "
            + ", ".join(f"{n} {d:g}" for n, d in diffs.items())
            + f"; sha256 {f['fields_sha256']['mpi'][:16]}…",
        )
        out.check(
            "max height equal",
            m["end"]["max_height"] == r["end"]["max_height"],
            f"{m['end']['max_height']:.6f} m (start {m['start']['max_height']:.6f} m)",
        )
        rd = {k: rel_diff(m["end"][k], r["end"][k]) for k in ("mass", "energy")}
        f["diagnostics_rel_diff"] = rd
        f["end"] = {"mpi": m["end"], "reference": r["end"]}
        out.check(
            f"mass, energy equal to {SUM_RTOL:g} (sum order)",
            all(v <= SUM_RTOL for v in rd.values()),
            f"relative diff mass {rd['mass']:.1e}, energy {rd['energy']:.1e}",
        )
        drift = {k: rel_diff(v["end"]["mass"], v["start"]["mass"]) for k, v in meta.items()}
        f["mass_drift"] = drift
        out.check(
            "mass conserved (flux form)",
            all(v <= SUM_RTOL for v in drift.values()),
            f"relative drift MPI {drift['mpi']:.1e}, reference {drift['ref']:.1e}",
        )

    def teardown(self) -> None:
        in_main = threading.current_thread() is threading.main_thread()
        wanted = (signal.SIGINT, signal.SIGTERM)
        previous = [signal.signal(s, signal.SIG_IGN) for s in wanted] if in_main else []
        try:
            with self.console.status("stopping the Slurm jobs, the agent and the hub…"):
                if self.slurm.conf:
                    left = self.slurm.cancel_under(self.root)
                    if left:
                        self.say(f"cancelled Slurm jobs still running: {', '.join(left)}")
                self.net.stop()
                self.slurm.close()
        finally:
            for sig, handler in zip(wanted, previous, strict=False):
                signal.signal(sig, handler)


# -- output ---------------------------------------------------------------------------------------


def report(console: Console, out: Outcome) -> None:
    table = Table(title="What was checked", title_justify="left")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for c in out.checks:
        result = Text("ok", "green") if c.ok else Text("FAILED", "bold red")
        table.add_row(Text(c.name), result, Text(c.detail))
    console.print(table)
    f = out.figures
    if "mpi" not in f:
        return
    m, r = f["mpi"], f["reference"]
    figs = Table(title="Figures measured", title_justify="left")
    figs.add_column("figure")
    figs.add_column("MPI run", justify="right")
    figs.add_column("reference", justify="right")
    rows = [
        ("grid, steps (simulated time)", f"{f['grid']}, {f['steps']} ({f['simulated_s']} s)", ""),
        ("ranks", m["ranks"], r["ranks"]),
        (
            "Slurm job, nodes",
            f"{m['slurm_job']} {m['slurm_nodelist']}",
            f"{r['slurm_job']} {r['slurm_nodelist']}",
        ),
        ("rank -> node", " ".join(m["rank_nodes"]), " ".join(r["nodes"])),
        ("model time-stepping (s)", m["compute_s"], r["compute_s"]),
        ("  of which halo exchange, slowest rank (s)", m["halo_s_max"], "-"),
        ("Slurm job elapsed (s)", m["wall_s"], r["wall_s"]),
        ("submit -> end (s)", f["submit_to_end_s"].get("mpi"), f["submit_to_end_s"].get("ref")),
        ("max |diff| h, hu, hv", " ".join(f"{v:g}" for v in f["max_abs_diff"].values()), ""),
        (
            "rel. diff mass, energy",
            f"{f['diagnostics_rel_diff']['mass']:.1e} {f['diagnostics_rel_diff']['energy']:.1e}",
            "",
        ),
        ("MPI library", f["mpi_library"], ""),
        ("total wall time (s)", f.get("wall_s"), ""),
    ]
    for name, a, b in rows:
        figs.add_row(Text(name), Text(str(a)), Text(str(b)))
    console.print(figs)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog=EXAMPLE,
        description=__doc__.split("\n\n", 1)[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"example:\n  .venv/bin/python {EXAMPLE} --json --nx 128 --ny 128 --steps 200",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.add_argument("--work-dir", type=Path, help="where the network lives (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work dir")
    p.add_argument("--nx", type=int, default=128, help="cells in x (default 128)")
    p.add_argument("--ny", type=int, default=128, help="cells in y, split over ranks (128)")
    p.add_argument("--steps", type=int, default=200, help="time steps (default 200)")
    p.add_argument(
        "--ranks",
        type=int,
        choices=(2, 4),
        default=2,
        help="2: one rank on each of n1, n2 (nodes=2, partition cpu); 4: two on each of n3, n4 "
        "(4 CPUs on partition big, spread by the backend). Default 2",
    )
    p.add_argument(
        "--slurm-conf",
        default=os.environ.get("CPNET_TEST_SLURM_CONF") or None,
        help="slurm.conf of the cluster (default $CPNET_TEST_SLURM_CONF, else the dev cluster)",
    )
    p.add_argument("--timeout", type=float, default=240, help="deadline for the tasks (s)")
    args = p.parse_args(argv)
    if min(args.nx, args.ny, args.steps) < 1 or args.ny < args.ranks:
        p.error("--nx, --ny, --steps must be positive and --ny at least --ranks")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    console = Console(stderr=args.json)

    def steps(ex: Example) -> None:
        preflight()
        ex.start()
        mpi, ref = ex.run_tasks()
        ex.verify(mpi, ref)

    return run_example(
        args,
        console,
        "cpnet-hpc-",
        lambda root: Example(args, console, root),
        steps,
        report,
        (NetworkError, CpnetError),
    )


if __name__ == "__main__":
    sys.exit(main())
