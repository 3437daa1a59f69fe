"""Genomics on cpnet: a Snakemake pipeline (bowtie2, samtools, bcftools) run through the hub's
GA4GH TES endpoint on two sites, and the same Snakefile run locally as the reference.

    .venv/bin/python examples/genomics/run.py            # rich tables
    .venv/bin/python examples/genomics/run.py --json     # one JSON document with the figures

It builds a throw-away network (a hub on SQLite, two providers' sites, one agent each with a
1-core pool), runs examples/genomics/workflow/Snakefile on the lambda phage test data that
Debian's bowtie2-examples package ships, first locally (`snakemake --cores 1`), then with
`snakemake --executor tes` against the hub, and compares the results: the VCF's variant records
must be identical and the alignment figures (samtools flagstat) equal. Exit code 0 only when
every check passed. See README.md beside this file.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cpnet.client import Client, CpnetError
from cpnet.demo.checks import Check, ExampleError, sigterm_interrupts
from cpnet.demo.network import LocalNetwork, NetworkError

HERE = Path(__file__).resolve().parent
WORKFLOW = HERE / "workflow" / "Snakefile"
EXAMPLES = Path("/usr/share/doc/bowtie2/examples")  # Debian's bowtie2-examples
DATA = {  # file in the workflow's data/ -> where the package ships it
    "lambda_virus.fa.gz": EXAMPLES / "reference" / "lambda_virus.fa.gz",
    "reads_1.fq.gz": EXAMPLES / "reads" / "reads_1.fq.gz",
    "reads_2.fq.gz": EXAMPLES / "reads" / "reads_2.fq.gz",
}
TOOLS = {  # command -> Debian package
    "bowtie2": "bowtie2",
    "bowtie2-build": "bowtie2",
    "samtools": "samtools",
    "bcftools": "bcftools",
    "rsync": "rsync",  # Snakemake's fs storage plugin copies with it
}
PYTHON_MODULES = {  # module -> pip package
    "snakemake": "snakemake",
    "snakemake_executor_plugin_tes": "snakemake-executor-plugin-tes",
    "snakemake_storage_plugin_fs": "snakemake-storage-plugin-fs",
}
# Two providers' sites; one agent each, with one pool of 1 core: the machine's two cores split
# between them, so jobs that Snakemake submits together run on different sites.
SITES = (
    ("Lingnan Genomics Cloud", "gz-seq1", "440100"),  # Guangzhou
    ("Jinghua Compute", "bj-hpc1", "110000"),  # Beijing
)
POOL = {
    "name": "cpu",
    "type": "general",
    "hardware": {"cpu_cores": 1, "memory_gb": 4, "disk_gb": 20, "cpu_model": "shared host"},
    "price": {"currency": "CNY", "cpu_core_hour": 0.05},
}
HEARTBEAT_S = 1.0
POOLS_TIMEOUT_S = 90.0
LOCAL_TIMEOUT_S = 180.0
FUNDS = "10000.00"
RESOURCES = ["mem_mb=2000", "disk_mb=500"]  # Snakemake's default disk_mb (50 GB) is too much


@dataclass
class Job:
    rule: str
    task_id: str
    state: str
    site: str
    pool: str
    attempts: int
    seconds: float | None


@dataclass
class Result:
    ok: bool = False
    work_dir: str = ""
    checks: list[Check] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    jobs: list[Job] = field(default_factory=list)
    error: str | None = None

    def check(self, name: str, ok: bool, detail: str) -> bool:
        self.checks.append(Check(name, bool(ok), detail))
        return bool(ok)


# -- prerequisites -----------------------------------------------------------------------------


def check_prerequisites() -> None:
    """Raise ExampleError naming every missing tool, data file or Python package."""
    problems = []
    missing_pkgs = sorted({pkg for cmd, pkg in TOOLS.items() if shutil.which(cmd) is None})
    if missing_pkgs:
        problems.append(f"missing commands: apt-get install {' '.join(missing_pkgs)}")
    if not all(p.is_file() for p in DATA.values()):
        problems.append(
            f"the lambda phage test data are not under {EXAMPLES}: apt-get install "
            "bowtie2-examples (in a slim container image, also allow /usr/share/doc/bowtie2 in "
            "/etc/dpkg/dpkg.cfg.d/, which may exclude /usr/share/doc)"
        )
    import importlib.util

    missing_mods = [pkg for mod, pkg in PYTHON_MODULES.items() if not importlib.util.find_spec(mod)]
    if missing_mods:
        problems.append(f"missing Python packages: pip install {' '.join(missing_mods)}")
    if problems:
        raise ExampleError("; ".join(problems))


# -- workflow directories ----------------------------------------------------------------------


def prepare_workflow(dest: Path, data: Path) -> Path:
    """A workflow directory with the Snakefile; the raw data (from the package) in `data`."""
    dest.mkdir(parents=True)
    shutil.copy2(WORKFLOW, dest / "Snakefile")
    data.mkdir(parents=True)
    for name, src in DATA.items():
        shutil.copy2(src, data / name)
    return dest


def snakemake_bin() -> str:
    return str(Path(sys.executable).parent / "snakemake")


def job_counts(log: str) -> dict[str, int]:
    """The rules and how many jobs of each from Snakemake's "Job stats" table (without `all`)."""
    counts: dict[str, int] = {}
    section = log.split("Job stats:", 1)[-1] if "Job stats:" in log else ""
    for line in section.splitlines()[3:]:
        m = re.fullmatch(r"(\S+)\s+(\d+)", line.strip())
        if not m:
            break
        if m[1] not in ("all", "total"):
            counts[m[1]] = int(m[2])
    return counts


def run_local(workflow: Path) -> tuple[float, dict[str, int]]:
    """`snakemake --cores 1` in `workflow`; returns its wall time and the jobs it ran."""
    t0 = time.monotonic()
    try:
        done = subprocess.run(
            [snakemake_bin(), "--cores", "1"],
            cwd=workflow,
            capture_output=True,
            text=True,
            timeout=LOCAL_TIMEOUT_S,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired as exc:
        raise ExampleError(f"the local run took over {LOCAL_TIMEOUT_S:g}s") from exc
    wall = time.monotonic() - t0
    if done.returncode != 0:
        raise ExampleError(
            f"the local reference run failed (exit {done.returncode}); its log:\n"
            f"{done.stderr[-3000:]}"
        )
    return wall, job_counts(done.stderr)


# -- results -----------------------------------------------------------------------------------


def vcf_records(path: Path) -> list[str]:
    """The variant records of a VCF: every line but the header (dates, command lines)."""
    return [line for line in path.read_text().splitlines() if line and not line.startswith("#")]


def flagstat(path: Path) -> dict[str, str]:
    """samtools flagstat -O tsv as {what: QC-passed figure}."""
    out = {}
    for line in path.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) == 3:
            out[parts[2]] = parts[0]
    return out


def variant_kinds(records: list[str]) -> dict[str, int]:
    kinds = {"snps": 0, "indels": 0}
    for rec in records:
        info = rec.split("\t")[7]
        kinds["indels" if info.startswith("INDEL") else "snps"] += 1
    return kinds


def reference_length(fai: Path) -> int:
    return sum(int(line.split("\t")[1]) for line in fai.read_text().splitlines() if line)


def count_reads(fastq_gz: Path) -> int:
    with gzip.open(fastq_gz, "rt") as f:
        return sum(1 for _ in f) // 4


# -- the network -------------------------------------------------------------------------------


@dataclass
class Network:
    net: LocalNetwork
    user_token: str
    site_names: dict[str, str]  # site id -> name
    pool_names: dict[str, str]  # pool id -> "site/pool"


def build_network(net: LocalNetwork, root: Path, console: Console) -> Network:
    """A hub, two providers with a site each, a user; one agent per site. Waits for the pools."""
    admin_token = net.start_hub()
    site_tokens: dict[str, str] = {}
    site_names: dict[str, str] = {}
    with Client(net.url, admin_token) as admin:
        org = admin.create_org("Helix Lab")
        admin.topup(org.id, FUNDS, transfer_id=f"genomics-funds-{org.id}")
        _, user = admin.create_user(org.id, "bioinformatician", role="user")
        for provider_name, site_name, region in SITES:
            porg = admin.create_org(provider_name)
            _, padmin = admin.create_user(porg.id, f"{site_name}-admin", role="provider-admin")
            with Client(net.url, padmin.token) as operator:
                provider = operator.create_provider(provider_name)
                site = operator.create_site(
                    provider.id, site_name, type="general", region_code=region
                )
                site_tokens[site_name] = operator.create_site_token(site.id).token
                site_names[site.id] = site_name
    options = {
        # The jobs run Snakemake from the agent's venv on the host, not in the image the
        # Snakemake TES plugin names (this machine has no container runtime).
        "allow_host_exec": "true",
        "container_runtime": "none",
        # file:// URLs only in this run's directory (the tasks need none: Snakemake's storage).
        "file_roots": str(root),
        # Two agents on one machine: each would pin its 1-core pool to the same CPU 0.
        "cpu_pinning": "false",
    }
    for _, site_name, _ in SITES:
        net.start_agent(site_name, site_tokens[site_name], [POOL], options)
    deadline = time.monotonic() + POOLS_TIMEOUT_S
    waiting = console.status("waiting for the two sites' pools to come online…")
    with Client(net.url, user.token) as client, waiting:
        while True:
            net.check_alive()
            pools = [p for p in client.pools() if p.online]
            if len(pools) >= len(SITES):
                break
            if time.monotonic() > deadline:
                raise ExampleError(
                    f"only {len(pools)} of {len(SITES)} pools came online within "
                    f"{POOLS_TIMEOUT_S:g}s; see the agents' logs under {root}/net/sites"
                )
            time.sleep(0.2)
    pool_names = {p.id: f"{p.site_name}/{p.name}" for p in pools}
    return Network(net, user.token, site_names, pool_names)


def run_tes(
    network: Network, workflow: Path, storage: Path, jobs: int, timeout: float, console: Console
) -> tuple[float, str]:
    """`snakemake --executor tes` against the hub; returns its wall time and its log."""
    cmd = [
        snakemake_bin(),
        "--executor", "tes",
        "--tes-url", f"{network.net.url}/ga4gh/tes",  # no trailing /v1: py-tes 0.4 adds it
        "--jobs", str(jobs),
        "--default-storage-provider", "fs",
        "--default-storage-prefix", str(storage),
        "--default-resources", *RESOURCES,
        "--seconds-between-status-checks", "1",
        "--latency-wait", "20",
    ]  # fmt: skip
    env = {**os.environ, "SNAKEMAKE_TES_TOKEN": network.user_token}
    log_path = workflow / "snakemake-tes.log"
    t0 = time.monotonic()
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=workflow,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            with (
                Client(network.net.url, network.user_token) as user,
                console.status("Snakemake → TES: submitting…") as status,
            ):
                while proc.poll() is None:
                    elapsed = time.monotonic() - t0
                    if elapsed > timeout:
                        raise ExampleError(
                            f"the TES run did not finish within {timeout:g}s (--timeout); "
                            f"see {log_path} and the agents' logs"
                        )
                    network.net.check_alive()
                    with contextlib.suppress(CpnetError):
                        status.update(progress_line(user, network, elapsed))
                    time.sleep(1.0)
        finally:
            if proc.poll() is None:
                stop_snakemake(proc)
    wall = time.monotonic() - t0
    text = log_path.read_text(errors="replace")
    if proc.returncode != 0:
        raise ExampleError(
            f"snakemake --executor tes failed (exit {proc.returncode}); the end of its log "
            f"({log_path}):\n{text[-3000:]}\nEvery job pip-installs snakemake-storage-plugin-fs: "
            "the machine needs access to the package index."
        )
    return wall, text


def progress_line(user: Client, network: Network, elapsed: float) -> str:
    tasks = user.tasks(limit=100).tasks
    done = sum(1 for t in tasks if t.state.value == "COMPLETE")
    running = [
        f"{rule_of(t.name)} on {network.pool_names.get(t.pool_id or '', '?')}"
        for t in tasks
        if t.state.value in ("INITIALIZING", "RUNNING")
    ]
    line = f"Snakemake → TES: {done}/{len(tasks)} jobs done"
    if running:
        line += f", running: {', '.join(running)}"
    wait = " (Snakemake's TES plugin polls the first time after 40 s)" if elapsed < 40 else ""
    return f"{line} [{elapsed:.0f}s]{wait}"


def rule_of(task_name: str | None) -> str:
    """The rule of a Snakemake TES task from its name, "snakejob.<rule>.<jobid>.sh"."""
    parts = (task_name or "").split(".")
    return parts[1] if len(parts) >= 4 and parts[0] == "snakejob" else "?"


def stop_snakemake(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT first (Snakemake cancels its TES tasks), SIGKILL to its session after 15 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def collect_jobs(network: Network) -> list[Job]:
    """Every task of the run, in the order their last attempts started."""
    jobs = []
    with Client(network.net.url, network.user_token) as user:
        for t in user.tasks(limit=100).tasks:
            last = t.attempts[-1] if t.attempts else None
            seconds = None
            if last and last.start_time and last.end_time:
                seconds = round((last.end_time - last.start_time).total_seconds(), 1)
            started = (last.start_time if last else None) or t.created_at
            jobs.append(
                (
                    started,
                    Job(
                        rule=rule_of(t.name),
                        task_id=t.id,
                        state=t.state.value,
                        site=network.site_names.get(last.site_id, "?") if last else "-",
                        pool=network.pool_names.get(last.pool_id, "?") if last else "-",
                        attempts=len(t.attempts),
                        seconds=seconds,
                    ),
                )
            )
    return [job for _, job in sorted(jobs, key=lambda x: (x[0], x[1].task_id))]


# -- the run -----------------------------------------------------------------------------------


def work_root(arg: Path | None) -> tuple[Path, bool]:
    """The run's directory (created) and whether it is a temporary one to remove afterwards.

    Not under /tmp: every task gets a private /tmp, and the storage directory must be the same
    for Snakemake here and in the tasks.
    """
    if arg is None:
        return Path(tempfile.mkdtemp(prefix="cpnet-genomics-", dir="/var/tmp")), True
    root = arg.expanduser().resolve()
    if root == Path("/tmp") or root.is_relative_to("/tmp"):
        raise ExampleError(
            f"--work-dir {root} is under /tmp: the tasks get a private /tmp and would not see "
            "the shared storage there; choose a directory elsewhere (e.g. under /var/tmp)"
        )
    if root.exists() and any(root.iterdir()):
        raise ExampleError(f"--work-dir {root} is not empty; give a new or empty directory")
    root.mkdir(parents=True, exist_ok=True)
    return root, False


def run(args: argparse.Namespace, console: Console, result: Result) -> None:
    check_prerequisites()
    root, temporary = work_root(args.work_dir)
    result.work_dir = str(root)
    venv_bin = str(Path(sys.executable).parent)
    # The tasks run `python -m snakemake` and `pip`: the agents pass this PATH on to them.
    os.environ["PATH"] = f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"
    net = LocalNetwork(root / "net", heartbeat_s=HEARTBEAT_S)
    try:
        with sigterm_interrupts():
            # 1. the reference: the same Snakefile, run here
            local = prepare_workflow(root / "local", root / "local" / "data")
            with console.status("local reference run: snakemake --cores 1…"):
                local_wall, local_jobs = run_local(local)
            console.print(f"[green]✓[/] local run: {sum(local_jobs.values())} jobs in "
                          f"{local_wall:.1f}s")  # fmt: skip
            # 2. the network
            t0 = time.monotonic()
            with console.status("starting a hub and two agents…"):
                network = build_network(net, root, console)
            result.figures["network_start_s"] = round(time.monotonic() - t0, 1)
            console.print(f"[green]✓[/] network: hub {net.url}, pools "
                          f"{', '.join(sorted(network.pool_names.values()))}")  # fmt: skip
            # 3. the same workflow through TES
            # The TES run reads its data from the storage the tasks share (as would a
            # workflow whose data sit in an S3 bucket): they reach the tasks through it.
            storage = root / "storage"
            tes_dir = prepare_workflow(root / "tes", storage / "data")
            tes_wall, _ = run_tes(network, tes_dir, storage, args.jobs, args.timeout, console)
            console.print(f"[green]✓[/] TES run finished in {tes_wall:.1f}s")
            jobs = collect_jobs(network)
        result.jobs = jobs
        compare(result, local, storage, local_jobs, jobs, local_wall, tes_wall)
    finally:
        with console.status("stopping the network…"):
            net.stop()
        if temporary and not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def compare(
    result: Result,
    local: Path,
    storage: Path,
    local_jobs: dict[str, int],
    jobs: list[Job],
    local_wall: float,
    tes_wall: float,
) -> None:
    vcf_local, vcf_tes = local / "calls" / "variants.vcf", storage / "calls" / "variants.vcf"
    fs_local, fs_tes = local / "stats" / "flagstat.tsv", storage / "stats" / "flagstat.tsv"
    for path in (vcf_tes, fs_tes):
        if not path.is_file():
            raise ExampleError(f"the TES run left no {path.relative_to(storage)} in its storage")
    rec_local, rec_tes = vcf_records(vcf_local), vcf_records(vcf_tes)
    stats_local, stats_tes = flagstat(fs_local), flagstat(fs_tes)
    tes_rules: dict[str, int] = {}
    for j in jobs:
        tes_rules[j.rule] = tes_rules.get(j.rule, 0) + 1
    complete = [j for j in jobs if j.state == "COMPLETE"]
    sites = sorted({j.site for j in complete})

    result.check(
        "same jobs as the local run",
        tes_rules == local_jobs,
        f"{len(jobs)} TES tasks: {', '.join(f'{r}×{n}' for r, n in sorted(tes_rules.items()))}"
        + ("" if tes_rules == local_jobs else f"; locally {local_jobs}"),
    )
    result.check(
        "every TES task COMPLETE",
        bool(jobs) and len(complete) == len(jobs),
        f"{len(complete)} of {len(jobs)} COMPLETE",
    )
    result.check(
        "variant records identical",
        bool(rec_local) and rec_local == rec_tes,
        f"{len(rec_tes)} records via TES, {len(rec_local)} locally"
        + ("" if rec_local == rec_tes else f"; first difference: {first_diff(rec_local, rec_tes)}"),
    )
    mapped_local, mapped_tes = stats_local.get("mapped"), stats_tes.get("mapped")
    result.check(
        "alignment stats equal (flagstat)",
        bool(stats_local) and stats_local == stats_tes,
        f"mapped reads {mapped_tes} via TES, {mapped_local} locally",
    )
    result.check(
        "jobs spread over both sites",
        len(sites) >= 2,
        f"sites used: {', '.join(sites) or 'none'}",
    )
    kinds = variant_kinds(rec_tes)
    result.figures |= {
        "reads": count_reads(DATA["reads_1.fq.gz"]) + count_reads(DATA["reads_2.fq.gz"]),
        "read_pairs": count_reads(DATA["reads_1.fq.gz"]),
        "reference_length_bp": reference_length(storage / "ref" / "lambda_virus.fa.fai"),
        "mapped_reads": int(mapped_tes or 0),
        "mapped_percent": stats_tes.get("mapped %"),
        "properly_paired": int(stats_tes.get("properly paired", 0)),
        "variants": len(rec_tes),
        "snps": kinds["snps"],
        "indels": kinds["indels"],
        "jobs": len(jobs),
        "local_wall_s": round(local_wall, 1),
        "tes_wall_s": round(tes_wall, 1),
        "sites_used": sites,
        "jobs_per_site": {s: sum(1 for j in complete if j.site == s) for s in sites},
    }
    result.ok = all(c.ok for c in result.checks)


def first_diff(a: list[str], b: list[str]) -> str:
    for x, y in zip(a, b, strict=False):
        if x != y:
            return f"local {x[:80]!r} vs TES {y[:80]!r}"
    return f"{len(a)} vs {len(b)} records"


# -- output ------------------------------------------------------------------------------------


def show(console: Console, result: Result) -> None:
    if result.jobs:
        jobs = Table(title="Snakemake jobs run through cpnet's TES endpoint")
        for col in ("rule", "task", "state", "site/pool", "tries", "run s"):
            jobs.add_column(col, no_wrap=True)
        for j in result.jobs:
            jobs.add_row(
                j.rule, j.task_id, j.state, j.pool, str(j.attempts),
                "-" if j.seconds is None else f"{j.seconds:.1f}",
            )  # fmt: skip
        console.print(jobs)
    if result.checks:
        checks = Table(title="Checks: TES run against the local run")
        checks.add_column("check")
        checks.add_column("result")
        checks.add_column("detail")
        for c in result.checks:
            checks.add_row(c.name, "[green]ok[/]" if c.ok else "[red]FAILED[/]", c.detail)
        console.print(checks)
    if result.figures:
        f = result.figures
        figs = Table(title="Figures")
        figs.add_column("what")
        figs.add_column("value", justify="right")
        rows = [
            ("reads (pairs)", f"{f['reads']} ({f['read_pairs']})"),
            ("reference length", f"{f['reference_length_bp']} bp"),
            ("mapped reads", f"{f['mapped_reads']} ({f['mapped_percent']})"),
            ("variants called (SNPs, indels)", f"{f['variants']} ({f['snps']}, {f['indels']})"),
            ("jobs via TES", str(f["jobs"])),
            ("jobs per site", ", ".join(f"{k}: {v}" for k, v in f["jobs_per_site"].items())),
            ("wall time local (snakemake --cores 1)", f"{f['local_wall_s']:.1f} s"),
            ("wall time via TES (2 sites)", f"{f['tes_wall_s']:.1f} s"),
            ("network start (hub, 2 agents, pools online)", f"{f['network_start_s']:.1f} s"),
        ]
        for row in rows:
            figs.add_row(*row)
        console.print(figs)
    if result.ok:
        console.print("[bold green]All checks passed:[/] the pipeline gave the same variants "
                      "through cpnet's TES endpoint as locally.")  # fmt: skip
    elif result.error:
        console.print(f"[bold red]Failed:[/] {result.error}")
    else:
        failed = ", ".join(c.name for c in result.checks if not c.ok)
        console.print(f"[bold red]Failed checks:[/] {failed}. Rerun with --keep and read the "
                      "logs under the work dir (net/hub.log, net/sites/*/agent.log, "
                      "tes/snakemake-tes.log).")  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Run a small genomics pipeline (bowtie2 alignment, samtools, bcftools variant "
            "calling on Debian's lambda phage test data) with Snakemake through cpnet's GA4GH "
            "TES endpoint on a throw-away two-site network, and compare it with a local run."
        ),
        epilog="example: .venv/bin/python examples/genomics/run.py --json",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document only")
    parser.add_argument(
        "--work-dir", type=Path, help="an empty directory outside /tmp (default: a temporary one)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary work dir")
    parser.add_argument("--jobs", type=int, default=4, help="Snakemake --jobs (default 4)")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds for the TES run (default 300)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(stderr=True, quiet=args.json)
    result = Result()
    try:
        run(args, console, result)
    except (ExampleError, NetworkError, CpnetError) as exc:
        result.error = str(exc)
    except KeyboardInterrupt:
        result.error = "interrupted; the network was stopped"
    result.ok = result.ok and result.error is None
    if args.json:
        print(json.dumps(asdict(result), indent=2))
    else:
        show(Console(), result)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
