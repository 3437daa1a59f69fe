"""The demo's task mix: real commands, each with the final state (and placement) it must reach.

The first tasks each show one thing (a GPU request, a pool-type constraint, a data-residency
pipeline with files, a failure, a cancel, ...); beyond those, ``build`` repeats the ordinary ones
so ``--tasks N`` scales the load without repeating the failure and the cancel.
"""

from __future__ import annotations

import hashlib
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cpnet.tasks.model import TaskView
from cpnet.tasks.states import State

RUNTIME_S = 30.0  # what each task tells the scheduler to expect; they all take a few seconds


@dataclass
class DemoTask:
    """A task to submit and what must become of it for the demo to pass."""

    name: str
    purpose: str  # one line: what this task shows
    spec: dict[str, Any]
    expect: State = State.COMPLETE
    sites: tuple[str, ...] = ()  # site keys it may land on; () = any
    cancel_when_running: bool = False
    stdout: str | None = None  # expected start of the last executor's stdout
    output: Path | None = None  # a file:// output the demo reads back afterwards
    output_text: str | None = None  # what that file must contain
    task_id: str = field(default="", init=False)  # set once submitted

    def problems(self, view: TaskView | None, site_of: dict[str, str]) -> list[str]:
        """Everything about the task's end that differs from what it should be (empty: fine).

        ``site_of`` maps pool ids to site keys.
        """
        if view is None:
            return ["the hub never showed this task"]
        if not view.state.terminal:
            return [f"still {view.state.value} when the demo stopped waiting"]
        found = []
        if view.state is not self.expect:
            why = f" ({view.reason})" if view.reason else ""
            found.append(f"expected {self.expect.value}, got {view.state.value}{why}")
        site = site_of.get(view.pool_id or "", view.pool_id or "nowhere")
        if self.sites and site not in self.sites:
            found.append(f"ran on {site}, expected {' or '.join(self.sites)}")
        if self.stdout is not None and view.state is State.COMPLETE:
            logs = view.attempts[-1].executor_logs if view.attempts else []
            out = logs[-1].stdout.strip() if logs else ""
            if not out.startswith(self.stdout):
                found.append(f"printed {out[:80]!r}, expected {self.stdout[:80]!r}…")
        if self.output is not None and view.state is State.COMPLETE:
            try:
                text = self.output.read_text(encoding="utf-8")
            except OSError as err:
                found.append(f"output {self.output} unreadable: {err.strerror or err}")
            else:
                if text != self.output_text:
                    found.append(f"output {self.output} differs from the expected report")
        return found


@dataclass(frozen=True, slots=True)
class Context:
    """What the task builders need: the interpreter tasks call and where outputs go."""

    python: str  # the agents' interpreter, which has NumPy
    outputs: Path  # file:// outputs land here


def _spec(name: str, commands: list[list[str]], **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "executors": [{"command": c} for c in commands],
        "expected_runtime_s": RUNTIME_S,
    }
    spec.update(extra)
    return spec


def _py(ctx: Context, code: str) -> list[str]:
    return [ctx.python, "-c", textwrap.dedent(code).strip()]


# ---- the builders, one per kind of task -------------------------------------------------------

TRAIN = """
    import numpy as np
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, 64))
    y = (x @ rng.standard_normal(64) > 0).astype(float)
    w = np.zeros(64)
    for _ in range(200):  # logistic regression, full-batch gradient descent
        p = 1 / (1 + np.exp(-(x @ w)))
        w -= 0.5 * x.T @ (p - y) / len(y)
    loss = -np.mean(y * np.log(p + 1e-9) + (1 - y) * np.log(1 - p + 1e-9))
    print(f"trained 200 steps, loss {loss:.4f}")
"""


def train(ctx: Context, name: str) -> DemoTask:
    return DemoTask(
        name,
        "asks for 2 × A800: only the Ulanqab AI pool has them",
        _spec(
            name,
            [_py(ctx, TRAIN)],
            resources={"cpu_cores": 8, "ram_gb": 64, "gpus": 2, "gpu_model": "A800"},
            tags={"profile": "ai-train"},
        ),
        sites=("ulanqab",),
    )


STENCIL = """
    import numpy as np
    u = np.zeros((300, 300))
    u[0, :] = 100.0  # a hot edge; Jacobi iterations spread the heat
    for _ in range(500):
        u[1:-1, 1:-1] = 0.25 * (u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:])
    print(f"heat stencil 300x300, 500 sweeps, centre {u[150, 150]:.6f}")
"""


def stencil(ctx: Context, name: str) -> DemoTask:
    return DemoTask(
        name,
        "FP64 stencil constrained to supercomputing pools",
        _spec(
            name,
            [_py(ctx, STENCIL)],
            resources={"cpu_cores": 16, "ram_gb": 32},
            constraints={"pool_types": ["supercomputing"]},
            tags={"profile": "hpc"},
        ),
        sites=("tianjin",),
    )


PIPELINE_STEP = """
    import collections
    temps = collections.defaultdict(list)
    for line in open("sorted.csv"):
        station, temp = line.strip().split(",")
        temps[station].append(float(temp))
    with open("report.csv", "w") as out:
        for station in sorted(temps):
            t = temps[station]
            out.write(f"{station},{len(t)},{sum(t) / len(t):.2f}\\n")
    print(open("report.csv").read(), end="")
"""


def readings() -> str:
    """The pipeline's input: deterministic weather-station readings, one ``station,temp`` a line."""
    stations = ("GY01", "GY02", "GY03", "GY04", "GY05")
    return "".join(f"{stations[i % 5]},{10 + (i * 7 % 23) / 2:.1f}\n" for i in range(400))


def report(text: str) -> str:
    """What the pipeline must write for input ``text`` (the same computation, done here)."""
    temps: dict[str, list[float]] = {}
    for line in text.splitlines():
        station, temp = line.split(",")
        temps.setdefault(station, []).append(float(temp))
    return "".join(f"{s},{len(t)},{sum(t) / len(t):.2f}\n" for s, t in sorted(temps.items()))


def pipeline(ctx: Context, name: str) -> DemoTask:
    out = ctx.outputs / f"{name}.csv"
    data = readings()
    return DemoTask(
        name,
        "two steps, inline input, file output; data must stay in Guizhou (region 52)",
        _spec(
            name,
            [
                ["sh", "-c", "sort -t, -k1,1 -s readings.csv > sorted.csv"],
                _py(ctx, PIPELINE_STEP),
            ],
            inputs=[{"path": "readings.csv", "content": data}],
            outputs=[{"path": "report.csv", "url": out.as_uri()}],
            constraints={"regions": ["52"]},
        ),
        sites=("guiyang",),
        output=out,
        output_text=report(data),
    )


def fails(ctx: Context, name: str) -> DemoTask:
    return DemoTask(
        name,
        "exits 3 on purpose: the task ends in EXECUTOR_ERROR with its stderr",
        _spec(
            name,
            [
                ["sh", "-c", "echo 'reading input.dat: no such file' >&2; exit 3"],
                ["echo", "never runs: executors stop at the first failure"],
            ],
        ),
        expect=State.EXECUTOR_ERROR,
    )


def cancelled(ctx: Context, name: str) -> DemoTask:
    return DemoTask(
        name,
        "sleeps 60 s; the demo cancels it once it is RUNNING",
        _spec(name, [["sleep", "60"]], expected_runtime_s=60.0),
        expect=State.CANCELED,
        cancel_when_running=True,
    )


MATMUL = """
    import numpy as np
    rng = np.random.default_rng(42)
    a, b = rng.standard_normal((300, 300)), rng.standard_normal((300, 300))
    c = a @ b
    print(f"matmul 300x300 checksum {c.sum():.6f}")
"""


def matmul(ctx: Context, name: str) -> DemoTask:
    return DemoTask(
        name,
        "NumPy 300×300 matmul, no constraints: the cheapest pool that fits wins",
        _spec(name, [_py(ctx, MATMUL)], resources={"cpu_cores": 2, "ram_gb": 4}),
    )


def green(ctx: Context, name: str) -> DemoTask:
    return DemoTask(
        name,
        "CPU-only matmul constrained to Inner Mongolia (region 15)",
        _spec(
            name,
            [_py(ctx, MATMUL)],
            resources={"cpu_cores": 2, "ram_gb": 4},
            constraints={"regions": ["15"]},
        ),
        sites=("ulanqab",),
    )


SEQ_N = 200_000


def checksum(ctx: Context, name: str) -> DemoTask:
    data = "".join(f"{i}\n" for i in range(1, SEQ_N + 1)).encode()
    return DemoTask(
        name,
        "sha256 of generated data, checked against the hash computed here",
        _spec(name, [["sh", "-c", f"seq 1 {SEQ_N} | sha256sum"]]),
        stdout=hashlib.sha256(data).hexdigest(),
    )


def wide(ctx: Context, name: str) -> DemoTask:
    return DemoTask(
        name,
        "asks for 64 cores: too big for the 56-core Guiyang pool",
        _spec(
            name,
            [_py(ctx, MATMUL)],
            resources={"cpu_cores": 64, "ram_gb": 128},
        ),
        sites=("tianjin", "ulanqab"),
    )


WORDS = "compute power internet hub agent pool site task quote order ledger sla region"


def words(ctx: Context, name: str) -> DemoTask:
    return DemoTask(
        name,
        "sorts an inline word list",
        _spec(
            name,
            [["sort", "words.txt"]],
            inputs=[{"path": "words.txt", "content": "\n".join(WORDS.split()) + "\n"}],
        ),
        stdout="agent",
    )


def hello(ctx: Context, name: str) -> DemoTask:
    return DemoTask(
        name,
        "the smallest task there is",
        _spec(name, [["echo", "hello from the compute power internet"]]),
        stdout="hello from the compute power internet",
    )


Builder = Callable[[Context, str], DemoTask]

# The first tasks, in the order they are cut for a small --tasks.
SHOWCASE: tuple[tuple[str, Builder], ...] = (
    ("train-a800", train),
    ("stencil-hpc", stencil),
    ("pipeline-guizhou", pipeline),
    ("fails-on-purpose", fails),
    ("cancel-on-purpose", cancelled),
    ("matmul", matmul),
    ("sha256-seq", checksum),
    ("matmul-green", green),
    ("wide-64-cores", wide),
    ("sort-words", words),
    ("hello", hello),
)
# What fills a larger --tasks, round-robin.
FILLERS: tuple[tuple[str, Builder], ...] = (
    ("matmul", matmul),
    ("sha256-seq", checksum),
    ("sort-words", words),
    ("stencil-hpc", stencil),
    ("train-a800", train),
    ("hello", hello),
    ("matmul-green", green),
    ("pipeline-guizhou", pipeline),
    ("wide-64-cores", wide),
)


def build(n: int, ctx: Context) -> list[DemoTask]:
    """``n`` tasks: the showcase ones first, then fillers; repeated names get a ``-2``, ``-3``…"""
    chosen = list(SHOWCASE[:n])
    chosen += [FILLERS[i % len(FILLERS)] for i in range(max(0, n - len(SHOWCASE)))]
    seen: dict[str, int] = {}
    tasks = []
    for base, builder in chosen:
        seen[base] = seen.get(base, 0) + 1
        name = base if seen[base] == 1 else f"{base}-{seen[base]}"
        tasks.append(builder(ctx, name))
    return tasks
