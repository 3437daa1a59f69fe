"""Calibration probes: short benchmarks that measure what a node sustains, within a time budget.

- CPU: dense matrix multiply (NumPy/BLAS GEMM, 2n^3 FLOP) at FP64 and FP32, and a memory
  bandwidth triad ``a = b + s*c`` run by one thread per CPU over chunks (NumPy ufuncs release
  the GIL). NumPy does the triad in two passes (``a = s*c``; ``a += b``), which move 5 x 8 bytes
  per element; that is what is counted (write-allocate traffic is not).
- GPU (when PyTorch and a CUDA device are present): matmul at FP32, TF32, BF16 and FP16, and
  device memory bandwidth (a tensor copy moves 2 x its bytes). With ``torch_on_cpu`` the same
  code runs on the CPU (how tests exercise it here: no GPU on our machines); those figures are
  reported under ``torch["cpu"]`` and never as accelerator figures.

Each probe repeats until its share of the budget is used and keeps its best run. Compute only:
the caller passes what it knows about the host (``cpu_model``, cores).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise

from cpnet.measure.vector import ProbeFigures, ProbeReport

DEFAULT_BUDGET_S = 20.0
Progress = Callable[[str, float], None]  # (step name, fraction of the budget used)

# Shares of the budget per step (GPU steps only when a device is there).
SHARES = {"fp64": 0.25, "fp32": 0.2, "mem_bw": 0.2, "torch": 0.35}
MIN_STEP_S = 0.2
MAX_TRIAD_BYTES = 768 * 1024**2  # three arrays of 256 MiB: well past any L3 we know of


def _repeat(fn: Callable[[], float], seconds: float) -> float:
    """Call ``fn`` (returns a rate) while ``seconds`` last; return the best run.

    The first run is a warm-up (thread pools wake, pages fault, kernels are picked), so there is
    always a second one unless the first alone took the whole slice. After that, a run is
    started only if one more like the slowest so far still ends in time.
    """
    end = time.perf_counter() + seconds
    t0 = time.perf_counter()
    best = fn()
    slowest = time.perf_counter() - t0
    if slowest < seconds:
        t0 = time.perf_counter()
        best = max(best, fn())
        slowest = max(slowest, time.perf_counter() - t0)
    while time.perf_counter() + slowest < end:
        t0 = time.perf_counter()
        best = max(best, fn())
        slowest = max(slowest, time.perf_counter() - t0)
    return best


def _gemm_size(dtype: type, seconds: float) -> int:
    """The largest n (power of two, <= 4096) whose GEMM fits several times in the time slice."""
    import numpy as np  # here, not at import: the CLI and agent load this module

    n = 128
    while n < 4096:
        a = np.ones((n, n), dtype=dtype)
        t0 = time.perf_counter()
        a @ a
        took = time.perf_counter() - t0
        if took * 8 > seconds / 3:  # the next size (8x the work) would not fit a few repeats
            break
        n *= 2
    return n


def gemm_tflops(dtype: type, seconds: float) -> float:
    """Best sustained TFLOP/s of an n x n GEMM at ``dtype`` within ``seconds``."""
    import numpy as np  # here, not at import: the CLI and agent load this module

    end = time.perf_counter() + seconds
    n = _gemm_size(dtype, seconds)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    c = np.empty((n, n), dtype=dtype)

    def run() -> float:
        t0 = time.perf_counter()
        np.matmul(a, b, out=c)
        return 2.0 * n**3 / (time.perf_counter() - t0) / 1e12

    return _repeat(run, end - time.perf_counter())


def triad_gbps(seconds: float, threads: int, max_bytes: int = MAX_TRIAD_BYTES) -> float:
    """Best memory bandwidth (GB/s) of ``a = b + s*c`` over arrays of ``max_bytes`` in all."""
    import numpy as np  # here, not at import: the CLI and agent load this module

    end = time.perf_counter() + seconds
    n = max(1 << 20, max_bytes // 3 // 8)
    a, b, c = np.full(n, 0.0), np.ones(n), np.full(n, 2.0)  # touched: no page faults timed
    bounds = np.linspace(0, n, threads + 1, dtype=np.int64)
    chunks = list(pairwise(int(b) for b in bounds))

    def part(lo_hi: tuple[int, int]) -> None:
        lo, hi = lo_hi
        np.multiply(c[lo:hi], 3.0, out=a[lo:hi])
        np.add(a[lo:hi], b[lo:hi], out=a[lo:hi])

    with ThreadPoolExecutor(threads) as pool:

        def run() -> float:
            t0 = time.perf_counter()
            list(pool.map(part, chunks))
            return 5 * 8 * n / (time.perf_counter() - t0) / 1e9

        return _repeat(run, end - time.perf_counter())


def torch_figures(device: str, seconds: float) -> ProbeFigures:
    """Matmul TFLOP/s at FP32/TF32/BF16/FP16 and copy bandwidth (GB/s) on a torch device."""
    import torch

    end = time.perf_counter() + seconds
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    n = 4096 if cuda else 512
    steps = 5 if cuda else 4

    def slice_s() -> float:
        nonlocal steps
        steps -= 1
        return max(0.0, (end - time.perf_counter()) / (steps + 1))

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(dev)

    def matmul(dtype: torch.dtype, tf32: bool = False) -> float:
        a = torch.randn(n, n, device=dev).to(dtype)
        b = torch.randn(n, n, device=dev).to(dtype)
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = tf32

        def run() -> float:
            sync()
            t0 = time.perf_counter()
            torch.matmul(a, b)
            sync()
            return 2.0 * n**3 / (time.perf_counter() - t0) / 1e12

        try:
            return _repeat(run, slice_s())
        finally:
            if cuda:
                torch.backends.cuda.matmul.allow_tf32 = False

    out: dict[str, float] = {"fp32": matmul(torch.float32)}
    if cuda:
        out["tf32"] = matmul(torch.float32, tf32=True)
    out["bf16"] = matmul(torch.bfloat16)
    out["fp16"] = matmul(torch.float16)
    elems = (1 << 28 if cuda else 1 << 24) // 4  # 256 MiB on a GPU, 16 MiB on a CPU
    src = torch.ones(elems, device=dev)
    dst = torch.empty_like(src)

    def copy() -> float:
        sync()
        t0 = time.perf_counter()
        dst.copy_(src)
        sync()
        return 2 * 4 * elems / (time.perf_counter() - t0) / 1e9

    out["mem_bw"] = _repeat(copy, slice_s())
    return ProbeFigures(**out)


def torch_device() -> tuple[str | None, str | None]:
    """("cuda", device name) when PyTorch sees a GPU, else (None, None)."""
    try:
        import torch
    except ImportError:
        return None, None
    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        return "cuda", torch.cuda.get_device_name(0)
    return None, None


def run(
    *,
    budget_s: float = DEFAULT_BUDGET_S,
    cpu_model: str = "",
    host: str = "",
    node_cores: int | None = None,
    torch_on_cpu: bool = False,
    progress: Progress | None = None,
    max_triad_bytes: int = MAX_TRIAD_BYTES,
) -> ProbeReport:
    """Run every probe that applies within ``budget_s`` seconds and report per-node figures."""
    import numpy as np  # here, not at import: the CLI and agent load this module

    t0 = time.perf_counter()
    started = time.time()
    cores = len(os.sched_getaffinity(0))
    notes: list[str] = []
    # Importing torch takes seconds: only when asked to, or when a GPU driver is there.
    use_torch = torch_on_cpu or os.path.exists("/dev/nvidiactl")
    shares = dict(SHARES)
    if not use_torch:
        shares.pop("torch")
    total = sum(shares.values())
    ends, at = {}, t0
    for key, share in shares.items():
        at += budget_s * share / total
        ends[key] = at

    def left(key: str) -> float:
        # A step that starts late still gets a little time: a few runs, not none.
        return max(MIN_STEP_S, ends[key] - time.perf_counter())

    def step(name: str) -> None:
        if progress is not None:
            progress(name, min(1.0, (time.perf_counter() - t0) / max(budget_s, 1e-9)))

    step("fp64")
    fp64 = gemm_tflops(np.float64, left("fp64"))
    step("fp32")
    fp32 = gemm_tflops(np.float32, left("fp32"))
    step("mem_bw")
    bw = triad_gbps(left("mem_bw"), cores, max_triad_bytes)
    report = ProbeReport(
        host=host,
        cpu_model=cpu_model,
        node_cores=node_cores or os.cpu_count() or cores,
        cores_used=cores,
        cpu=ProbeFigures(fp64=fp64, fp32=fp32, mem_bw=bw),
        budget_s=budget_s,
        measured_at=started,
    )
    if use_torch:
        step("torch")
        try:
            gpu, gpu_name = torch_device()
            if gpu is not None:
                report.accelerator = torch_figures(gpu, left("torch"))
                report.accelerator_model = gpu_name
            else:
                report.torch["cpu"] = torch_figures("cpu", left("torch"))
                notes.append("torch path ran on the CPU (no GPU): not accelerator figures")
        except ImportError:
            notes.append("PyTorch is not installed: no GPU probe")
        except Exception as exc:  # a broken driver must not lose the CPU figures
            notes.append(f"torch probe failed: {exc.__class__.__name__}: {exc}")
    report.duration_s = time.perf_counter() - t0
    report.notes = notes
    step("done")
    return report
