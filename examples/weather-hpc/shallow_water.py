"""A 2-D shallow-water model with domain decomposition over MPI (mpi4py): the task's workload.

The full (nonlinear) shallow-water equations in conservation form, for the height ``h`` and the
momenta ``hu``, ``hv`` on a doubly periodic square::

    h_t  + (hu)_x            + (hv)_y            = 0
    hu_t + (hu²/h + gh²/2)_x + (huv/h)_y         = 0
    hv_t + (huv/h)_x         + (hv²/h + gh²/2)_y = 0

stepped with the two-step Lax-Wendroff (Richtmyer) finite-volume scheme: half-step values on the
cell faces, then a flux-difference update of the cells. Each step reads one neighbour each way,
so the model needs a halo of one row. Initial state: a Gaussian bump of water, off centre, at
rest.

Decomposition: the rows (y) are split into contiguous strips, one per rank, over a periodic 1-D
Cartesian communicator; before each step every rank swaps its edge rows with its two neighbours
(``Sendrecv`` of h, hu, hv in one buffer each way). x is periodic within a strip. With one rank the
same code runs, the rank swapping halos with itself: that is the single-process reference.

Why the fields are bitwise equal for any number of ranks: every cell's update is the same
sequence of IEEE-754 additions, multiplications and divisions of the same neighbour values,
whatever strip the cell is in (numpy's elementwise operations are correctly rounded, vectorised
or not); the initial state is computed on the whole grid by every rank and then cut, so no
transcendental function is evaluated on differently shaped arrays; and the time step is fixed.
The diagnostics that are sums (mass, energy) are reduced across ranks (``Allreduce``), a
different summation order than one rank's, so they agree with the reference to round-off only
(relative 1e-12 is far above that, far below any real error); the maximum is exact.

Output (rank 0): ``--out`` an ``.npz`` with the final ``h``, ``hu``, ``hv`` (gathered with
``Gatherv``), and ``--meta`` a JSON file with the grid, steps, ranks, each rank's Slurm node
(``SLURMD_NODENAME``), host and rows, the diagnostics at start and end, and the wall time.

    mpirun -n 4 python shallow_water.py --nx 192 --ny 192 --steps 300 --out o.npz --meta o.json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path

import numpy as np
from mpi4py import MPI

G = 9.81  # m/s²
LENGTH = 1.0e5  # the domain is LENGTH × LENGTH metres (100 km)
DEPTH = 100.0  # mean water depth (m)
BUMP = 10.0  # the bump's height above it (m)
CFL = 0.4  # of the gravity-wave speed sqrt(g (DEPTH + BUMP)); the time step is fixed from it


def initial_state(nx: int, ny: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """h, hu, hv on the whole grid (every rank computes it the same way, then takes its rows)."""
    dx, dy = LENGTH / nx, LENGTH / ny
    x = (np.arange(nx) + 0.5) * dx
    y = (np.arange(ny) + 0.5) * dy
    xx, yy = np.meshgrid(x, y)  # shape (ny, nx): rows are y
    sigma = LENGTH / 12
    r2 = (xx - 0.35 * LENGTH) ** 2 + (yy - 0.6 * LENGTH) ** 2
    h = DEPTH + BUMP * np.exp(-r2 / (2 * sigma**2))
    return h, np.zeros_like(h), np.zeros_like(h)


def fluxes(h: np.ndarray, hu: np.ndarray, hv: np.ndarray) -> tuple[tuple, tuple]:
    """The x fluxes F and y fluxes G of (h, hu, hv)."""
    u, v = hu / h, hv / h
    p = 0.5 * G * h * h
    f = (hu, hu * u + p, hu * v)
    g = (hv, hv * u, hv * v + p)
    return f, g


def step(state: np.ndarray, dt: float, dx: float, dy: float) -> np.ndarray:
    """One Richtmyer step of the strip ``state`` (3, rows + 2, nx), halos filled; returns the
    new interior (3, rows, nx)."""
    h, hu, hv = state
    # x faces i+1/2 of the interior rows (periodic in x: the east neighbour is a roll).
    c = (h[1:-1], hu[1:-1], hv[1:-1])
    e = tuple(np.roll(a, -1, axis=1) for a in c)
    fc, _ = fluxes(*c)
    fe, _ = fluxes(*e)
    xh = [
        0.5 * (a + b) - (0.5 * dt / dx) * (fb - fa)
        for a, b, fa, fb in zip(c, e, fc, fe, strict=True)
    ]
    # y faces j+1/2 for j = halo below .. last interior row (rows j and j + 1).
    s = (h[:-1], hu[:-1], hv[:-1])
    n = (h[1:], hu[1:], hv[1:])
    _, gs = fluxes(*s)
    _, gn = fluxes(*n)
    yh = [
        0.5 * (a + b) - (0.5 * dt / dy) * (gb - ga)
        for a, b, ga, gb in zip(s, n, gs, gn, strict=True)
    ]
    fx, _ = fluxes(*xh)  # (rows, nx): at i+1/2
    _, gy = fluxes(*yh)  # (rows + 1, nx): at j+1/2, from the face below row 0
    new = np.empty((3, h.shape[0] - 2, h.shape[1]))
    for k in range(3):
        west = np.roll(fx[k], 1, axis=1)  # the face i-1/2
        new[k] = c[k] - (dt / dx) * (fx[k] - west) - (dt / dy) * (gy[k][1:] - gy[k][:-1])
    return new


def exchange_halos(comm: MPI.Cartcomm, state: np.ndarray) -> None:
    """Fill rows 0 and -1 of every field from the neighbours' edge rows (periodic in y)."""
    south, north = comm.Shift(0, 1)
    up = np.ascontiguousarray(state[:, -2, :])  # my top interior row goes north
    below = np.empty_like(up)
    comm.Sendrecv(up, dest=north, sendtag=1, recvbuf=below, source=south, recvtag=1)
    state[:, 0, :] = below
    down = np.ascontiguousarray(state[:, 1, :])  # my bottom interior row goes south
    above = np.empty_like(down)
    comm.Sendrecv(down, dest=south, sendtag=2, recvbuf=above, source=north, recvtag=2)
    state[:, -1, :] = above


def local_diagnostics(inner: np.ndarray, dx: float, dy: float) -> tuple[float, float, float]:
    """This strip's mass (m³), energy (J/kg·m², i.e. per unit density) and maximum height."""
    h, hu, hv = inner
    mass = float(h.sum()) * dx * dy
    energy = float((0.5 * (hu * hu + hv * hv) / h + 0.5 * G * h * h).sum()) * dx * dy
    return mass, energy, float(h.max())


def diagnostics(comm: MPI.Comm, inner: np.ndarray, dx: float, dy: float) -> dict[str, float]:
    mass, energy, hmax = local_diagnostics(inner, dx, dy)
    total = comm.allreduce(np.array([mass, energy]), op=MPI.SUM)
    return {
        "mass": float(total[0]),
        "energy": float(total[1]),
        "max_height": float(comm.allreduce(hmax, op=MPI.MAX)),
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nx", type=int, default=192, help="cells in x")
    p.add_argument("--ny", type=int, default=192, help="cells in y (rows, split over the ranks)")
    p.add_argument("--steps", type=int, default=300, help="time steps")
    p.add_argument("--out", type=Path, required=True, help="the final fields (.npz, rank 0)")
    p.add_argument("--meta", type=Path, required=True, help="diagnostics and ranks (JSON)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    world = MPI.COMM_WORLD
    size = world.Get_size()
    if args.ny < size:
        print(f"--ny {args.ny} is fewer rows than the {size} ranks", file=sys.stderr)
        return 2
    comm = world.Create_cart(dims=[size], periods=[True], reorder=False)
    rank = comm.Get_rank()
    counts = [len(r) for r in np.array_split(np.arange(args.ny), size)]
    first = sum(counts[:rank])
    rows = counts[rank]
    dx, dy = LENGTH / args.nx, LENGTH / args.ny
    dt = CFL * min(dx, dy) / np.sqrt(G * (DEPTH + BUMP))

    h0, hu0, hv0 = initial_state(args.nx, args.ny)
    state = np.zeros((3, rows + 2, args.nx))
    for k, field in enumerate((h0, hu0, hv0)):
        state[k, 1:-1] = field[first : first + rows]
    del h0, hu0, hv0
    start = diagnostics(comm, state[:, 1:-1], dx, dy)

    comm.Barrier()
    t0 = time.perf_counter()
    halo_s = 0.0
    for _ in range(args.steps):
        th = time.perf_counter()
        exchange_halos(comm, state)
        halo_s += time.perf_counter() - th
        state[:, 1:-1] = step(state, dt, dx, dy)
    comm.Barrier()
    compute_s = time.perf_counter() - t0
    end = diagnostics(comm, state[:, 1:-1], dx, dy)

    me = {
        "rank": rank,
        "node": os.environ.get("SLURMD_NODENAME", ""),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "rows": [first, first + rows],
        "halo_s": round(halo_s, 4),
    }
    ranks = comm.gather(me, root=0)
    inner = np.ascontiguousarray(state[:, 1:-1])
    whole = np.empty((3, args.ny, args.nx)) if rank == 0 else None
    # Gather field by field so that each arrives as contiguous rows in the right place.
    for k in range(3):
        recv = None
        if rank == 0:
            assert whole is not None
            recv = [whole[k], [c * args.nx for c in counts], None, MPI.DOUBLE]
        comm.Gatherv(np.ascontiguousarray(inner[k]), recv, root=0)
    if rank == 0:
        assert whole is not None
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("wb") as f:
            np.savez(f, h=whole[0], hu=whole[1], hv=whole[2])
        meta = {
            "model": "shallow-water, nonlinear, two-step Lax-Wendroff, doubly periodic",
            "nx": args.nx,
            "ny": args.ny,
            "steps": args.steps,
            "dt_s": dt,
            "simulated_s": dt * args.steps,
            "ranks": size,
            "mpi_library": MPI.Get_library_version().strip().splitlines()[0],
            "rank_info": ranks,
            "nodes": sorted({r["node"] for r in ranks if r["node"]}),
            "start": start,
            "end": end,
            "compute_s": round(compute_s, 4),
        }
        args.meta.parent.mkdir(parents=True, exist_ok=True)
        args.meta.write_text(json.dumps(meta, indent=2) + "\n")
        print(
            f"{size} ranks on {','.join(meta['nodes']) or 'no Slurm node'}: {args.nx}x{args.ny}, "
            f"{args.steps} steps in {compute_s:.2f}s; max height {end['max_height']:.4f} m, "
            f"mass drift {(end['mass'] - start['mass']) / start['mass']:.2e}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
