"""A small, fully deterministic PyTorch training run that checkpoints to S3 and resumes from it.

The model: a multilayer perceptron that predicts how long a task lives (log of its lifetime in
seconds) from what it asked for when it was submitted (CPU, memory, GPUs, GPU share, QoS class,
time of day and week), trained on the real Alibaba GPU cluster trace v2023 ("openb", 8,152 tasks;
see $CPNET_SHARED/data/traces/alibaba-gpu-v2023-openb/README.md). A seeded random 20 % of
the tasks is held out.

Determinism, so that a run resumed from a checkpoint at step k ends bitwise equal to a run that
was never interrupted:
- a fixed seed for the initial weights, torch.use_deterministic_algorithms(True), a fixed
  number of CPU threads;
- the batch order of every epoch is a permutation drawn from its own generator seeded with
  (seed, epoch): step s always sees the same rows, whether or not the process restarted;
- a checkpoint holds the model, the optimiser (Adam's moments and step), the step, and the RNG
  states; it is written as a new object ``<prefix>/ckpt-<step>.pt`` first, then a small pointer
  ``<prefix>/latest.json`` naming it and its sha256, so a checkpoint cut off half-way is never
  taken: the pointer still names the previous, whole one.

At start it resumes from the pointer's checkpoint if there is one ("resumed from step k"), and at
the end it writes the metrics as JSON (--metrics-out) and prints them as its last line.

S3 credentials come from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY: secret env
values of the cpnet task), the endpoint and bucket from the command line. Only torch, boto3 and
the standard library are needed.

    python train.py --data openb_pod_list_default.csv --s3-endpoint http://127.0.0.1:9000 \\
        --bucket my-bucket --prefix run1 --steps 400 --ckpt-every 50 --metrics-out metrics.json
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import os
import sys
import time
from pathlib import Path

# Before torch initialises CUDA: cuBLAS is deterministic only with a fixed workspace.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import torch
from torch import nn

QOS = ("LS", "BE", "Burstable", "Guaranteed")
TRAIN_FRACTION = 0.8
LOG_EVERY = 10  # a progress line every this many steps


def features(row: dict[str, str]) -> list[float]:
    """What is known of a task when it is submitted, as numbers (unscaled)."""
    t = float(row["creation_time"])
    day, week = 86400.0, 7 * 86400.0
    return [
        math.log1p(float(row["cpu_milli"]) / 1000.0),
        math.log1p(float(row["memory_mib"]) / 1024.0),
        float(row["num_gpu"]),
        float(row["gpu_milli"]) / 1000.0,
        *(1.0 if row["qos"] == q else 0.0 for q in QOS),
        math.sin(2 * math.pi * (t % day) / day),
        math.cos(2 * math.pi * (t % day) / day),
        math.sin(2 * math.pi * (t % week) / week),
        math.cos(2 * math.pi * (t % week) / week),
    ]


def load(path: Path, split_seed: int) -> dict[str, torch.Tensor]:
    """Train and held-out tensors, standardised with the training split's mean and std."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"{path}: no rows")
    x = torch.tensor([features(r) for r in rows], dtype=torch.float64)
    life = [float(r["deletion_time"]) - float(r["creation_time"]) for r in rows]
    y = torch.tensor([math.log1p(max(v, 0.0)) for v in life], dtype=torch.float64)
    # A random split, drawn from its own seed: the held-out rows are the same whatever --seed.
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(split_seed))
    n = int(len(rows) * TRAIN_FRACTION)
    train, test = order[:n], order[n:]
    mean, std = x[train].mean(0), x[train].std(0)
    std[std == 0] = 1.0
    x = (x - mean) / std
    # "Long-lived" means above the training split's median lifetime: the accuracy metric.
    threshold = y[train].median()
    return {
        "x_train": x[train].float(),
        "y_train": y[train].float(),
        "x_test": x[test].float(),
        "y_test": y[test].float(),
        "threshold": threshold.float(),
        "y_train_mean": y[train].mean().float(),
    }


def model(n_in: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(n_in, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1)
    )


def weights_digest(net: nn.Module) -> str:
    """sha256 of every parameter's bytes in order: equal only if the weights are bitwise equal."""
    h = hashlib.sha256()
    for name, tensor in net.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class Store:
    """Checkpoints under s3://bucket/prefix/: whole objects first, then the pointer to one."""

    def __init__(self, endpoint: str, bucket: str, prefix: str) -> None:
        import boto3
        from botocore.config import Config

        self.s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=os.environ.get("AWS_REGION", "us-east-1"),
            config=Config(retries={"max_attempts": 5, "mode": "standard"}),
        )
        self.bucket, self.prefix = bucket, prefix.strip("/")

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    def latest(self) -> dict | None:
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=self.key("latest.json"))["Body"]
        except self.s3.exceptions.NoSuchKey:
            return None
        return json.loads(body.read())

    def load(self, pointer: dict) -> dict:
        data = self.s3.get_object(Bucket=self.bucket, Key=pointer["key"])["Body"].read()
        if hashlib.sha256(data).hexdigest() != pointer["sha256"]:
            raise SystemExit(f"checkpoint {pointer['key']} does not match its pointer's sha256")
        return torch.load(io.BytesIO(data), weights_only=True)

    def save(self, step: int, state: dict, writer: str) -> dict:
        buf = io.BytesIO()
        torch.save(state, buf)
        data = buf.getvalue()
        key = self.key(f"ckpt-{step:06d}.pt")
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data)
        pointer = {
            "step": step,
            "key": key,
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
            "writer": writer,
        }
        self.s3.put_object(
            Bucket=self.bucket, Key=self.key("latest.json"), Body=json.dumps(pointer).encode()
        )
        return pointer


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 1)[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", type=Path, required=True, help="openb_pod_list_default.csv")
    p.add_argument("--s3-endpoint", required=True)
    p.add_argument("--bucket", required=True)
    p.add_argument("--prefix", required=True, help="key prefix of this run's checkpoints")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--ckpt-every", type=int, default=50, help="checkpoint every N steps")
    p.add_argument("--seed", type=int, default=17, help="initial weights and batch order")
    p.add_argument("--split-seed", type=int, default=0, help="which rows are held out")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (fixed: determinism)")
    p.add_argument(
        "--min-step-s",
        type=float,
        default=0.0,
        help="pace: each step takes at least this long (the maths does not change)",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    p.add_argument("--metrics-out", type=Path, default=Path("metrics.json"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    t_start = time.monotonic()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(args.threads)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    writer = os.environ.get("CPNET_ATTEMPT_ID") or f"pid-{os.getpid()}"

    data = {k: v.to(device) for k, v in load(args.data, args.split_seed).items()}
    n_train = data["x_train"].shape[0]
    per_epoch = n_train // args.batch_size
    if per_epoch < 1:
        raise SystemExit(f"--batch-size {args.batch_size} exceeds the {n_train} training rows")

    torch.manual_seed(args.seed)
    net = model(data["x_train"].shape[1]).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    store = Store(args.s3_endpoint, args.bucket, args.prefix)

    step, resumed_from = 0, 0
    pointer = store.latest()
    if pointer is not None:
        ckpt = store.load(pointer)
        net.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng_cpu"])
        if device.type == "cuda" and "rng_cuda" in ckpt:
            torch.cuda.set_rng_state(ckpt["rng_cuda"])
        step = resumed_from = int(ckpt["step"])
        print(
            f"resumed from step {step} ({pointer['key']}, written by {pointer['writer']})",
            flush=True,
        )
    else:
        print(f"fresh start: no checkpoint under s3://{args.bucket}/{store.prefix}/", flush=True)
    print(
        f"device {device}, torch {torch.__version__}, {args.threads} thread(s), "
        f"{n_train} training rows, {per_epoch} steps per epoch, {args.steps} steps",
        flush=True,
    )

    loss_fn = nn.MSELoss()
    written: list[int] = []
    perm, perm_epoch = None, -1
    loss = torch.zeros((), device=device)
    t_train = time.monotonic()
    while step < args.steps:
        t_step = time.monotonic()
        epoch, i = divmod(step, per_epoch)
        if epoch != perm_epoch:  # the epoch's order depends on (seed, epoch) only
            g = torch.Generator().manual_seed(args.seed * 100_003 + epoch)
            perm, perm_epoch = torch.randperm(n_train, generator=g).to(device), epoch
        assert perm is not None
        idx = perm[i * args.batch_size : (i + 1) * args.batch_size]
        net.train()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(data["x_train"][idx]).squeeze(1), data["y_train"][idx])
        loss.backward()
        opt.step()
        step += 1
        if step % LOG_EVERY == 0:
            print(f"step {step} loss {loss.item():.6f}", flush=True)
        if step % args.ckpt_every == 0 and step < args.steps:
            state = {
                "model": net.state_dict(),
                "optimizer": opt.state_dict(),
                "step": step,
                "rng_cpu": torch.get_rng_state(),
            }
            if device.type == "cuda":
                state["rng_cuda"] = torch.cuda.get_rng_state()
            saved = store.save(step, state, writer)
            written.append(step)
            print(f"checkpoint step {step} -> {saved['key']} ({saved['bytes']} B)", flush=True)
        rest = args.min_step_s - (time.monotonic() - t_step)
        if rest > 0:
            time.sleep(rest)
    train_s = time.monotonic() - t_train

    net.eval()
    with torch.no_grad():
        pred = net(data["x_test"]).squeeze(1)
        y = data["y_test"]
        thr = data["threshold"]
        long_frac = (y > thr).float().mean().item()
        metrics = {
            "steps": step,
            "resumed_from": resumed_from,
            "final_train_loss": float(loss.item()),
            "test_mse": float(((pred - y) ** 2).mean().item()),
            "test_mae": float((pred - y).abs().mean().item()),
            "test_accuracy": float(((pred > thr) == (y > thr)).float().mean().item()),
            # What knowing nothing gets: the training mean as every prediction, and the majority
            # class of the held-out split.
            "test_mse_mean_predictor": float(((data["y_train_mean"] - y) ** 2).mean().item()),
            "test_majority_accuracy": float(max(long_frac, 1.0 - long_frac)),
            "n_train": n_train,
            "n_test": int(y.shape[0]),
            "weights_sha256": weights_digest(net),
            "checkpoints_written": written,
            "train_s": round(train_s, 3),
            "process_s": round(time.monotonic() - t_start, 3),
            "device": str(device),
            "torch": torch.__version__,
            "seed": args.seed,
        }
    args.metrics_out.parent.mkdir(parents=True, exist_ok=True)
    args.metrics_out.write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
