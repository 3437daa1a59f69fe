"""Seeded synthetic snapshots for the scheduler benchmark: heterogeneous pools and task batches.

Pools mix edge boxes, general clusters, supercomputers and GPU (intelligent-computing) pools over
a dozen regions and forty providers, with labels, loads, backend queues, prices and SCU rates.
Pools carry scheduler v2 facts too (recent start delays and run times, failure rates, grid
carbon). Tasks arrive as job arrays (many identical tasks, as users submit them) of typical
shapes, a fraction with region, pool-type, label or GPU-model constraints, deadlines or
spillover tiers, a fraction stating their work in SCU-hours, most with the balanced objective.
Everything comes from one ``random.Random(seed)``.
"""

from __future__ import annotations

import random

from cpnet.sched import PoolView, Price, Resources, TaskRequest

REGIONS = (
    "110000", "310000", "440300", "440100", "330100", "320500",
    "510100", "420100", "610100", "370200", "500000", "120000",
)  # fmt: skip
GPU_MODELS = ("NVIDIA H100 80GB", "NVIDIA A100 40GB", "NVIDIA L40S", "Ascend 910B")
ZONES = ("a", "b", "c")
PROFILES = ("general", "ai-train", "ai-infer", "hpc")

# (type, weight, cores range, GB RAM per core, GPUs per pool choices)
POOL_KINDS = (
    ("edge", 0.2, (4, 16), 2, (0,)),
    ("general", 0.45, (32, 512), 4, (0,)),
    ("supercomputing", 0.1, (1024, 8192), 2, (0,)),
    ("intelligent", 0.25, (64, 512), 8, (8, 16, 32, 64)),
)

# (cores, GB RAM, GPUs, run time s): the shapes users submit most
TASK_SHAPES = (
    (1, 2, 0, 60), (1, 4, 0, 600), (2, 8, 0, 300), (4, 16, 0, 1800), (8, 32, 0, 3600),
    (16, 64, 0, 7200), (32, 128, 0, 14400), (64, 256, 0, 3600), (0.5, 1, 0, 30),
    (8, 64, 1, 3600), (16, 128, 2, 7200), (32, 256, 4, 14400), (64, 512, 8, 28800),
    (4, 32, 1, 600), (2, 16, 1, 120),
)  # fmt: skip


def pools(rng: random.Random, count: int) -> list[PoolView]:
    """``count`` heterogeneous live pools, ids ``pool-00000`` upwards."""
    weights = [k[1] for k in POOL_KINDS]
    out = []
    for i in range(count):
        kind, _, (lo, hi), ram_per_core, gpu_choices = rng.choices(POOL_KINDS, weights)[0]
        cores = float(rng.randrange(lo, hi + 1, 4) if hi > lo else lo)
        gpus = rng.choice(gpu_choices)
        total = Resources(cores, cores * ram_per_core, cores * 20.0, gpus)
        used = rng.betavariate(2, 2)  # load 0..1, mostly middling
        available = Resources(
            round(cores * (1 - used)),
            round(total.ram_gb * (1 - used)),
            total.disk_gb * (1 - used / 2),
            int(gpus * (1 - used)),
        )
        labels = {"zone": rng.choice(ZONES), "arch": rng.choice(("x86_64", "x86_64", "aarch64"))}
        if rng.random() < 0.5:
            labels["disk"] = rng.choice(("ssd", "hdd"))
        scu = ()
        if rng.random() < 0.6:
            scu = tuple(sorted((p, round(rng.uniform(0.5, 8.0), 2)) for p in PROFILES))
        out.append(
            PoolView(
                id=f"pool-{i:05d}",
                site_id=f"site-{i // 4:05d}",
                provider_id=f"prov-{rng.randrange(40):02d}",
                name=f"{kind}-{i}",
                type=kind,
                region_code=rng.choice(REGIONS),
                labels=tuple(sorted(labels.items())),
                total=total,
                available=available,
                gpu_model=rng.choice(GPU_MODELS) if gpus else None,
                queue_length=rng.choice((0, 0, 0, 1, 2, 5, 20)),
                running=rng.randrange(0, 50),
                price=Price(
                    "CNY",
                    cpu_core_hour=round(rng.uniform(0.03, 0.3), 3),
                    ram_gb_hour=round(rng.uniform(0.005, 0.03), 4),
                    gpu_hour=round(rng.uniform(6, 30), 1) if gpus else 0.0,
                ),
                online=rng.random() > 0.02,
                can_run_images=rng.random() < 0.7,
                scu=scu,
                # Scheduler v2 facts: history for a third of the pools, grids for most.
                recent_wait_s=rng.choice((5.0, 30.0, 300.0)) if rng.random() < 0.33 else None,
                recent_runtime_s=rng.choice((120.0, 1800.0)) if rng.random() < 0.33 else None,
                failure_rate=rng.choice((0.0, 0.0, 0.0, 0.02, 0.1)),
                carbon_g_per_kwh=rng.choice((None, 350.0, 550.0, 750.0)),
            )
        )
    return out


def task(rng: random.Random, task_id: str) -> TaskRequest:
    """One task of a typical shape, sometimes constrained, sometimes with SCU-hours of work."""
    cores, ram, gpus, runtime = rng.choice(TASK_SHAPES)
    constraint = rng.random()
    regions: tuple[str, ...] = ()
    pool_types: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    if constraint < 0.25:
        regions = (rng.choice(REGIONS)[:2],)
    elif constraint < 0.35:
        pool_types = ("general", "supercomputing")
    elif constraint < 0.45:
        labels = (("zone", rng.choice(ZONES)),)
    deadline = float(runtime * rng.choice((2, 10))) if rng.random() < 0.1 else None
    tiers: tuple[tuple[str, ...], ...] = ()
    if rng.random() < 0.1:
        tiers = ((rng.choice(REGIONS)[:2],), ("",))  # home province first, then anywhere
    profile, work = None, None
    if rng.random() < 0.3:
        profile = rng.choice(PROFILES)
        work = round(runtime / 3600 * rng.choice((1, 2, 4)), 3)
    return TaskRequest(
        id=task_id,
        demand=Resources(cores, ram, 0.0, gpus),
        gpu_model=rng.choice((None, "H100", "A100", "910B")) if gpus else None,
        regions=regions,
        pool_types=pool_types,
        labels=labels,
        expected_runtime_s=float(runtime),
        image="python:3.12-slim" if rng.random() < 0.3 else None,
        profile=profile,
        work_scu_h=work,
        deadline_s=deadline,
        objective=rng.choices(("balanced", "fastest", "cheapest", "greenest"), (14, 3, 2, 1))[0],
        tiers=tiers,
    )


def tasks(rng: random.Random, count: int, mean_array: int = 25) -> list[TaskRequest]:
    """``count`` tasks in job arrays of geometric size (mean ``mean_array``), oldest first."""
    out: list[TaskRequest] = []
    while len(out) < count:
        size = min(count - len(out), 1 + int(rng.expovariate(1 / mean_array)))
        first = task(rng, "")
        out += [
            TaskRequest(**{**_fields(first), "id": f"task-{len(out) + j:06d}"}) for j in range(size)
        ]
    return out


def _fields(t: TaskRequest) -> dict:
    return {name: getattr(t, name) for name in TaskRequest.__slots__}
