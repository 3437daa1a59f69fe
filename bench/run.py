"""Run the cpnet benchmarks: ``make bench`` (all, full size) or ``bench/run.py --help``.

Each benchmark starts its own hub and agents on 127.0.0.1, stops every process it started (also
on an error or Ctrl-C), and overwrites its table in ``bench/results/<name>.md``:

- ``throughput``: end-to-end task throughput and latency through hub and agent, side by side
  with the same commands run as raw processes (``bench/throughput.py``);
- ``resolve``: identifier resolution over HTTP against ``/v1/health`` and a bare ASGI app, and
  the resolver in process against a plain ``dict.get`` (``bench/resolve.py``);
- ``measure``: the calibration probes on this machine, their time and measured vs peak per
  figure (``bench/measure.py``);
- ``sched``: the pure scheduler in process: single decisions (``rank`` and the NumPy path) and
  batches (greedy against joint) at 1k-50k pools (``bench/sched.py``);
- ``slurm_latency``: submit-to-start latency through cpnet onto the dev Slurm cluster against
  straight ``sbatch`` (``bench/slurm_latency.py``; starts ``scripts/dev-slurm.sh`` if no Slurm
  is up, and stops it again);
- ``sim``: the simulator's policy comparison on an SWF log and the Alibaba GPU trace at 30 and
  300 sites with the LP-bound gaps, and a 100,000-job replay's speed (``bench/sim.py``; in
  process, no services);
- ``quote``: ``POST /v1/quotes`` latency at 10,000 priced pools, and its parts in process
  (``bench/quote.py``);
- ``ledger``: ledger postings per second on SQLite and PostgreSQL next to the same database's
  bare insert-and-commit rate (``bench/ledger.py``);
- ``submit``: acknowledged durable task creations per second through a hub, one per request and
  1,000 per batch request, on SQLite and PostgreSQL next to the database's bare insert-and-commit
  rates (``bench/submit.py``);
- ``warm``: CPU per attempt of a spawned runner, a forked runner and a warm worker next to a raw
  ``subprocess.run(["true"])``, on this machine alone (``bench/warm.py``);
- ``dns``: the DNS gateway: queries/s and latency for cpnet's zone through Knot DNS next to the
  same server on a static zone and the hub's HTTP resolve, propagation from registration to the
  first correct DNS answer, bulk publication, answer sizes (``bench/dns_gateway.py``);
- ``replicas``: submissions per second through one hub replica and two, direct and behind
  HAProxy, on PostgreSQL (``bench/replicas.py``).

Scale down with ``--tasks N`` (throughput), ``--seconds S`` (resolve, per load run) or
``--quick`` (both small, under a minute in all).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time

import dns_gateway
import ledger
import measure
import quote
import replicas
import resolve
import sim
import slurm_latency
import submit
import throughput
import warm
from common import ROOT, BenchError, console, trap_sigterm

# bench/sched.py shares its name with the standard library's ``sched``: load it by path, under
# another name, so neither shadows the other.
_spec = importlib.util.spec_from_file_location("bench_sched", ROOT / "bench" / "sched.py")
sched = sys.modules["bench_sched"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sched)

BENCHMARKS = (
    "throughput",
    "resolve",
    "measure",
    "sim",
    "sched",
    "slurm_latency",
    "quote",
    "ledger",
    "submit",
    "warm",
    "replicas",
    "dns",
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "only",
        nargs="*",
        choices=[*BENCHMARKS, []],
        metavar="BENCHMARK",
        help=f"which to run: {', '.join(BENCHMARKS)} (default: all)",
    )
    ap.add_argument("--quick", action="store_true", help="small and short: a smoke run")
    throughput.add_args(ap)
    resolve.add_args(ap)
    measure.add_args(ap)
    sched.add_args(ap)
    slurm_latency.add_args(ap)
    sim.add_args(ap)
    quote.add_args(ap)
    ledger.add_args(ap)
    submit.add_args(ap)
    warm.add_args(ap)
    replicas.add_args(ap)
    dns_gateway.add_args(ap)
    args = ap.parse_args(argv)
    trap_sigterm()
    chosen = args.only or list(BENCHMARKS)
    command = " ".join(["bench/run.py", *(argv if argv is not None else sys.argv[1:])])
    failed = []
    for name in chosen:
        console.rule(f"[bold]{name}")
        t0 = time.monotonic()
        try:
            if name == "throughput":
                path = throughput.run(throughput.params(args, command))
            elif name == "measure":
                path = measure.run(measure.params(args, command))
            elif name == "sched":
                path = sched.run(sched.params(args, command))
            elif name == "slurm_latency":
                path = slurm_latency.run(slurm_latency.params(args, command))
            elif name == "sim":
                path = sim.run_all(sim.params(args, command))
            elif name == "quote":
                path = quote.run(quote.params(args, command))
            elif name == "ledger":
                path = ledger.run(ledger.params(args, command))
            elif name == "submit":
                path = submit.run(submit.params(args, command))
            elif name == "warm":
                path = warm.run(warm.params(args, command))
            elif name == "replicas":
                path = replicas.run(replicas.params(args, command))
            elif name == "dns":
                path = dns_gateway.run(dns_gateway.params(args, command))
            else:
                path = resolve.run(resolve.params(args, command))
        except BenchError as exc:
            console.print(f"[red]{name} failed:[/] {exc}")
            failed.append(name)
            continue
        console.print(path.read_text(), markup=False, highlight=False, soft_wrap=True)
        console.print(f"[dim]{name}: {time.monotonic() - t0:.0f} s → {path}[/]")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]: every process started was stopped")
        sys.exit(130)
