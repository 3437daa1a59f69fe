"""The joint assignment's integer program as arrays, and solving it with HiGHS in a time limit.

Columns count how many tasks of one group go to one pool; rows bound each group by its size and
each (pool, resource) by what is available. ``sched.joint`` lays the columns out and reads the
answer back; this module knows nothing of tasks or decisions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from cpnet.sched.snapshot import EPSILON, TaskRequest

MIP_GAP = 1e-3  # relative gap at which HiGHS may call an assignment optimal
# Slack per resource as Resources.fits_in: EPSILON on the float resources, GPUs exact.
_SLACK = np.array((EPSILON, EPSILON, EPSILON, 0.0))


def demand_vector(task: TaskRequest) -> np.ndarray:
    """A task's demand as (cpu, ram, disk, gpus)."""
    d = task.demand
    return np.array((d.cpu_cores, d.ram_gb, d.disk_gb, d.gpus), dtype=float)


def copies(demand: np.ndarray, free: np.ndarray) -> np.ndarray:
    """How many copies of ``demand`` fit in each row of ``free`` (a large number when zero)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        copies = np.floor((free + _SLACK) / demand)
    copies[:, demand == 0] = np.inf
    return np.minimum(copies.min(axis=1), 1e9).astype(np.int64)


@dataclass(frozen=True, slots=True)
class Solved:
    """What HiGHS answered: counts per column (None: no assignment), and how it ended."""

    counts: np.ndarray | None
    optimal: bool
    reason: str
    solve_s: float
    gap: float


@dataclass(frozen=True, slots=True)
class Program:
    """The integer program: one column per (group, candidate pool), columns grouped in order."""

    columns: int
    group: np.ndarray  # per column: its group's index
    slot: np.ndarray  # per column: the candidate's index within its group, cheapest first
    cost: np.ndarray  # per column: what one task placed there changes the objective by
    upper: np.ndarray  # per column: at most the group's size and the pool's room
    row_upper: np.ndarray  # group sizes, then the capacities that could bind
    start: np.ndarray  # column-wise sparse matrix: column starts,
    index: np.ndarray  # row indices,
    value: np.ndarray  # and coefficients
    start_counts: np.ndarray  # a feasible start: each group in order fills its cheapest pools

    @classmethod
    def build(
        cls,
        *,
        group: np.ndarray,
        slot: np.ndarray,
        pool: np.ndarray,
        cost: np.ndarray,
        upper: np.ndarray,
        demand: np.ndarray,
        sizes: np.ndarray,
        free: np.ndarray,
    ) -> Program:
        """Lay out the rows for the columns; keep only capacity rows that could bind.

        ``demand`` is per group (cpu, ram, disk, gpus), ``sizes`` its task count, ``free`` the
        availability per pool; ``pool`` gives each column's row of ``free``.
        """
        n = len(group)
        rows = [np.arange(len(sizes))[group]]
        cols = [np.arange(n)]
        values = [np.ones(n)]
        row_upper = [sizes.astype(float)]
        next_row = len(sizes)
        for r in range(4):
            need = demand[group, r] if n else np.zeros(0)
            # Most a pool could be asked for of this resource; a row that cannot bind is left out.
            asked = np.bincount(pool, weights=need * upper, minlength=len(free))
            binding = np.flatnonzero(asked > free[:, r] + EPSILON)
            row_of = np.full(len(free), -1)
            row_of[binding] = np.arange(next_row, next_row + len(binding))
            used = (need > 0) & (row_of[pool] >= 0)
            rows.append(row_of[pool[used]])
            cols.append(np.flatnonzero(used))
            values.append(need[used])
            row_upper.append(free[binding, r])
            next_row += len(binding)
        row, column, value = (np.concatenate(x) for x in (rows, cols, values))
        order = np.lexsort((row, column))
        return cls(
            columns=n,
            group=group,
            slot=slot,
            cost=cost,
            upper=upper,
            row_upper=np.concatenate(row_upper),
            start=np.searchsorted(column[order], np.arange(n + 1)),
            index=row[order],
            value=value[order],
            start_counts=_fill(group, demand, pool, free, upper, sizes),
        )

    def solve(self, time_limit_s: float) -> Solved:
        """Run HiGHS within the time limit (0: do not run it) and round its answer."""
        try:
            import highspy
        except ImportError:
            why = "highspy is not installed (pip install 'highspy>=1.7'): greedy assignment used"
            return Solved(None, False, why, 0.0, 0.0)
        limit = max(0.0, time_limit_s)
        if limit == 0:
            # Even presolve may solve a small model at once; a zero limit means "do not try".
            why = "the time limit is 0 s, so HiGHS was not run: greedy assignment used"
            return Solved(None, False, why, 0.0, 0.0)
        h = self._highs(highspy, limit)
        started = time.perf_counter()
        h.run()
        solve_s = time.perf_counter() - started
        status = h.getModelStatus()
        text = h.modelStatusToString(status)
        if h.getInfo().primal_solution_status != 2:  # not kSolutionStatusFeasible
            why = (
                f"HiGHS found no assignment within the {limit:g} s time limit ({text}): greedy "
                "assignment used; raise sched_joint_time_limit_s or place smaller batches"
            )
            return Solved(None, False, why, solve_s, 0.0)
        counts = np.rint(np.asarray(h.getSolution().col_value)).astype(np.int64)
        counts = np.clip(counts, 0, self.upper.astype(np.int64))
        if status == highspy.HighsModelStatus.kOptimal:
            return Solved(counts, True, f"HiGHS proved it optimal in {solve_s:.3f} s", solve_s, 0.0)
        gap = h.getInfo().mip_gap
        why = (
            f"HiGHS stopped at the {limit:g} s time limit ({text}) with a feasible assignment "
            f"within {gap:.1%} of optimal"
        )
        return Solved(counts, False, why, solve_s, gap)

    def _highs(self, highspy, limit: float):  # type: ignore[no-untyped-def]
        """A Highs instance holding the program, its options and the greedy start."""
        h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        h.setOptionValue("time_limit", limit)
        # Stop at 0.1% of optimal: the estimates behind the costs are far coarser than that,
        # and proving the last 0.1% often takes most of the time.
        h.setOptionValue("mip_rel_gap", MIP_GAP)
        lp = highspy.HighsLp()
        lp.num_col_ = self.columns
        lp.num_row_ = len(self.row_upper)
        lp.col_cost_ = self.cost
        lp.col_lower_ = np.zeros(self.columns)
        lp.col_upper_ = self.upper
        lp.row_lower_ = np.full(len(self.row_upper), -highspy.kHighsInf)
        lp.row_upper_ = self.row_upper
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = self.start
        lp.a_matrix_.index_ = self.index
        lp.a_matrix_.value_ = self.value
        lp.integrality_ = [highspy.HighsVarType.kInteger] * self.columns
        h.passModel(lp)
        # Start from a greedy fill: HiGHS's own first solutions can be several times worse, and
        # with a short time limit the start is what a time-limited answer improves on.
        start = highspy.HighsSolution()
        start.col_value = self.start_counts.astype(float)
        start.value_valid = True
        h.setSolution(start)
        return h


def _fill(
    group: np.ndarray,
    demand: np.ndarray,
    pool: np.ndarray,
    free: np.ndarray,
    upper: np.ndarray,
    sizes: np.ndarray,
) -> np.ndarray:
    """Count a greedy assignment per column: columns in order, each taking all the room it can."""
    left = free.copy()
    need = sizes.copy()
    counts = np.zeros(len(pool), dtype=np.int64)
    for col in range(len(pool)):
        g = group[col]
        if need[g]:
            d = demand[g]
            take = min(
                int(need[g]), int(copies(d, left[pool[col]].reshape(1, 4))[0]), int(upper[col])
            )
            left[pool[col]] -= take * d
            counts[col] = take
            need[g] -= take
    return counts
