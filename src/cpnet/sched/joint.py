"""Place a batch of waiting tasks together: one assignment under pool capacities, solved by HiGHS.

The greedy ``batch.assign`` places tasks one at a time, each on its best pool; an early task can
take the only pool a later one fits, or a fast pool a long task needed more. ``assign`` here
builds one small integer program over the same per-task steps (``Board``, ``screen``,
``shortlist``, ``decide``) and lets HiGHS choose for all tasks at once.

Objective: minimise the batch's total estimated **time to result** (expected start + run time,
seconds, as the policy estimates them), with a penalty for each task left waiting. Time to result
is the one term that adds up across tasks into something a user feels (the mean completion time);
the policy's per-task scores are normalised within each task's own candidates, so their sum has no
meaning across tasks. Price still matters through which pools are candidates: each task shape
takes its candidates in the policy's rank order.

Model: tasks are grouped by shape (constraints, demand, run time, avoided pools), so 10,000 tasks
of 50 shapes give 50 groups. One integer variable per (group, candidate pool) counts the group's
tasks placed there; per group at most its size; per pool and resource the demands add up to at
most what is available. A task left waiting costs ``2 H + w``: H (the horizon) is the longest
time to result of any candidate placement and w the task's own best time to result if it waits
(its best start when it does not fit now, plus run time); so placing a task always beats leaving
it waiting. A pool the task's earlier attempt failed on costs H more, as the policy ranks it last.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from cpnet.sched import batch, feasibility, score
from cpnet.sched.place import Board, decide, screen, shortlist
from cpnet.sched.snapshot import (
    EPSILON,
    Decision,
    Placement,
    PoolView,
    Rejection,
    Resources,
    TaskRequest,
)

Row = tuple[TaskRequest, Decision, str | None]

# HiGHS wall-clock limit; building the model is not counted. On 10k tasks over 1k pools the
# answer at 0.5 s was as good as at 2 s (proven optimal there), so more rarely pays.
DEFAULT_TIME_LIMIT_S = 0.5
# Candidates per task shape to start from; widened (x4 at a time) until the fitting candidates
# could hold twice the group, so a large group is not confined to a few pools.
DEFAULT_WIDTH = 16
MIP_GAP = 1e-3  # relative gap at which HiGHS may call an assignment optimal
# A time-limited answer this far from optimal (HiGHS's own bound) is checked against greedy's.
CHECK_GREEDY_GAP = 0.05
COVER = 2  # how many times a group's size its candidates' room must hold before widening stops

SCORE = "score"  # minimise the sum of the policy's scores (each task's own ranking)
TIME = "time"  # minimise the sum of estimated times to result, in seconds

OPTIMAL = "optimal"  # HiGHS proved the assignment optimal (within MIP_GAP)
TIME_LIMITED = "time_limited"  # HiGHS's best assignment when the time limit struck
GREEDY = "greedy"  # batch.assign's answer: the solver had none, or a worse one

JOINT_REASON = "chosen by joint assignment: lowest total time to result for the whole batch"
NO_ROOM_REASON = "no room left after this batch's placements"


@dataclass(frozen=True, slots=True)
class JointResult:
    """How a joint assignment was reached, and what it costs in the joint objective."""

    method: str  # OPTIMAL, TIME_LIMITED or GREEDY
    reason: str  # one sentence: why this method's answer was returned
    objective: str  # SCORE or TIME: what was minimised
    value: float  # the returned assignment's objective (see ``objective_of``)
    horizon: float  # H: the largest cost of any candidate placement (score, or seconds)
    groups: int  # task shapes in the model
    variables: int  # integer variables (group, candidate pool) in the model
    solve_s: float  # seconds HiGHS ran (0 when it did not run)
    gap: float = 0.0  # HiGHS's relative gap to its lower bound when it stopped
    # Per task id, what leaving it waiting costs.
    waiting_cost: dict[str, float] = field(repr=False, compare=False, default_factory=dict)
    # The cost of placing a task on a pool at snapshot time (for ``objective_of``).
    cost_of: Callable[[TaskRequest, Decision, str], float] | None = field(
        repr=False, compare=False, default=None
    )

    def objective_of(self, rows: Sequence[Row]) -> float:
        """Give any assignment of this batch (joint or greedy) its objective; lower is better.

        A placed task costs its placement's cost at snapshot time (plus H on an avoided pool);
        a waiting one costs ``waiting_cost``.
        """
        assert self.cost_of is not None
        total = 0.0
        for task, decision, pool_id in rows:
            if pool_id is None:
                total += self.waiting_cost[task.id]
            else:
                total += self.cost_of(task, decision, pool_id)
                if pool_id in task.avoid_pools:
                    total += self.horizon
        return total


def time_to_result_s(task: TaskRequest, placement: Placement) -> float:
    """Expected start plus run time on the placement's pool, in seconds."""
    runtime_s = placement.predicted_runtime_s
    if runtime_s is None:
        runtime_s = max(0.0, task.expected_runtime_s)
    return placement.expected_start_s + runtime_s


def cost(task: TaskRequest, placement: Placement, objective: str) -> float:
    """What placing the task here costs: the policy's score, or the time to result in s."""
    return placement.score if objective == SCORE else time_to_result_s(task, placement)


@dataclass(frozen=True, slots=True)
class _Group:
    """The tasks of one shape and their candidate pools at snapshot time."""

    members: tuple[int, ...]  # positions in the batch, oldest first
    decision: Decision  # the policy's ranking for the shape (placements: best ``width``)
    fitting: tuple[Placement, ...]  # placements that fit now, cheapest first
    positions: tuple[int, ...]  # Board position of each fitting placement's pool
    costs: tuple[float, ...]  # ``cost`` per fitting placement (+H added later if avoided)
    room: tuple[int, ...]  # how many of the shape fit in each fitting pool's availability
    waiting_s: float  # TIME: best time to result if the task waits (fits nowhere now); else 0
    feasible: np.ndarray  # Board positions of every feasible pool (the shortlist)


def assign(
    tasks: Sequence[TaskRequest],
    pools: Sequence[PoolView],
    weights: score.Weights = score.DEFAULT_WEIGHTS,
    *,
    keep: int | None = batch.DEFAULT_KEEP,
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    width: int = DEFAULT_WIDTH,
    objective: str = SCORE,
) -> tuple[list[Row], JointResult]:
    """Place the batch jointly; fall back to ``batch.assign`` when HiGHS has no better answer.

    Returns rows shaped like ``batch.assign``'s, in task order: (task, decision, pool id or
    None). A placed task's ``decision.best`` is the chosen pool (its first reason says it was
    chosen jointly), followed by the policy's ``keep`` best for comparison; a waiting task's
    placements are marked as not fitting after the batch. Pass tasks oldest first: within a
    shape, older tasks get the better pools and are placed first. Never oversubscribes a pool
    and uses only pools ``feasibility.check`` accepts.
    """
    board = Board.of(pools)
    free = _free_matrix(board)
    if objective not in (SCORE, TIME):
        raise ValueError(f"unknown objective {objective!r}: use {SCORE!r} or {TIME!r}")
    groups = _groups(tasks, board, free, weights, max(width, keep or 1), objective)
    horizon = max((c for g in groups for c in g.costs), default=0.0)
    horizon = horizon if horizon > 0 else 1.0
    # Waiting costs 2-3 H: more than any placement, so the most tasks are placed; older shapes
    # (by their oldest task) cost up to H more to leave waiting, so they win a 1:1 contest.
    waiting = [horizon * (3 - g.members[0] / len(tasks)) + g.waiting_s for g in groups]
    model = _Model.build(tasks, groups, free, horizon, waiting)
    info = JointResult(
        OPTIMAL,
        "",
        objective,
        0.0,
        horizon,
        len(groups),
        model.columns,
        0.0,
        waiting_cost={
            tasks[i].id: w for g, w in zip(groups, waiting, strict=True) for i in g.members
        },
        cost_of=_coster(tasks, groups, objective),
    )
    if model.columns == 0:
        counts = None
        info = replace(info, reason="nothing fits now: no candidate placement to choose")
    else:
        counts, info = _solve(model, time_limit_s, info)
    if counts is None and model.columns:
        rows = batch.assign(tasks, pools, weights, keep=keep)
        return rows, replace(info, method=GREEDY, value=info.objective_of(rows))
    chosen, left = _hand_out(tasks, groups, model, counts, board)
    rows = _rows(tasks, groups, chosen, keep)
    extra = _overflow(tasks, groups, chosen, left)
    if extra:
        # Tasks still waiting whose shape has room outside its candidates: let the greedy
        # policy place them on what is left, over every pool.
        rest = [replace(p, available=a) for p, a in zip(board.pools, left, strict=True)]
        for i, row in zip(
            extra, batch.assign([tasks[i] for i in extra], rest, weights, keep=keep), strict=True
        ):
            rows[i] = row
    info = replace(info, value=info.objective_of(rows))
    if info.method == TIME_LIMITED and info.gap > CHECK_GREEDY_GAP:
        # The incumbent at the time limit may be poor: never return worse than greedy. (Within
        # CHECK_GREEDY_GAP of optimal it is at least as good as greedy's whenever greedy's
        # placements are among the candidates, and running greedy would double the time.)
        greedy_rows = batch.assign(tasks, pools, weights, keep=keep)
        greedy = info.objective_of(greedy_rows)
        if greedy < info.value:
            reason = (
                f"{info.reason}; its best ({info.value:.6g}) was worse than "
                f"greedy's ({greedy:.6g}), so greedy's was used"
            )
            return greedy_rows, replace(info, method=GREEDY, reason=reason, value=greedy)
    return rows, info


def _free_matrix(board: Board) -> np.ndarray:
    """Availability per pool (rows, Board order) and resource (cpu, ram, disk, gpus)."""
    return np.array(
        [(a.cpu_cores, a.ram_gb, a.disk_gb, a.gpus) for a in (p.available for p in board.pools)],
        dtype=float,
    ).reshape(len(board.pools), 4)


def _demand(task: TaskRequest) -> np.ndarray:
    d = task.demand
    return np.array((d.cpu_cores, d.ram_gb, d.disk_gb, d.gpus), dtype=float)


def _room(demand: np.ndarray, free: np.ndarray) -> np.ndarray:
    """How many copies of ``demand`` fit in each row of ``free`` (a large number when zero)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        # The same slack as Resources.fits_in: EPSILON on the float resources, GPUs exact.
        slack = np.array((EPSILON, EPSILON, EPSILON, 0.0))
        copies = np.floor((free + slack) / demand)
    copies[:, demand == 0] = np.inf
    return np.minimum(copies.min(axis=1), 1e9).astype(np.int64)


def _groups(
    tasks: Sequence[TaskRequest],
    board: Board,
    free: np.ndarray,
    weights: score.Weights,
    width: int,
    objective: str,
) -> list[_Group]:
    """Group the batch by task shape and find each shape's fitting candidates, best first."""
    members: dict[Hashable, list[int]] = {}
    for i, task in enumerate(tasks):
        shape = (
            feasibility.signature(task),
            task.demand,
            task.expected_runtime_s,
            task.profile,
            task.work_scu_h,
            task.avoid_pools,
        )
        members.setdefault(shape, []).append(i)
    position = {pool.id: i for i, pool in enumerate(board.pools)}
    loads = [score.load_fraction(pool) for pool in board.pools]
    screened: dict[Hashable, tuple[Rejection | None, ...]] = {}
    out = []
    for indices in members.values():
        rep = tasks[indices[0]]
        signature = feasibility.signature(rep)
        if signature not in screened:
            screened[signature] = screen(rep, board)
        short = shortlist(rep, board, screened[signature])
        room_all = _room(_demand(rep), free)
        wide = width
        while True:
            decision = decide(rep, board.pools, short, loads, weights, keep=wide)
            fitting = [p for p in decision.placements if p.fits_now]
            room = sum(int(room_all[position[p.pool_id]]) for p in fitting)
            if room >= COVER * len(indices) or wide >= len(short.candidates):
                break
            wide *= 4
        fitting.sort(key=lambda p: (cost(rep, p, objective), p.rank))
        waiting_s = 0.0
        if objective == TIME:
            runtimes = short.runtimes or (max(0.0, rep.expected_runtime_s),) * len(short.candidates)
            waits = [s + r for s, r in zip(short.start_if_not, runtimes, strict=True)]
            waiting_s = min(waits, default=0.0)
        out.append(
            _Group(
                members=tuple(indices),
                decision=decision,
                fitting=tuple(fitting),
                positions=tuple(position[p.pool_id] for p in fitting),
                costs=tuple(cost(rep, p, objective) for p in fitting),
                room=tuple(int(room_all[position[p.pool_id]]) for p in fitting),
                waiting_s=waiting_s,
                feasible=np.array(short.candidates, dtype=np.int64),
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class _Model:
    """The integer program as arrays: one column per (group, fitting candidate)."""

    columns: int
    group: np.ndarray  # per column: its group's index
    slot: np.ndarray  # per column: index into the group's ``fitting``
    cost: np.ndarray  # per column: (placement cost - waiting cost) / H, negative
    upper: np.ndarray  # per column: at most the group's size and the pool's room
    row_upper: np.ndarray  # group sizes, then the binding capacities
    start: np.ndarray  # column-wise sparse matrix: column starts,
    index: np.ndarray  # row indices,
    value: np.ndarray  # and coefficients
    start_counts: np.ndarray  # a feasible start: each group, oldest first, fills its best pools

    @classmethod
    def build(
        cls,
        tasks: Sequence[TaskRequest],
        groups: Sequence[_Group],
        free: np.ndarray,
        h: float,
        waiting: Sequence[float],
    ) -> _Model:
        """Lay out the columns and rows; keep only capacity rows that could bind."""
        group = np.array([g for g, grp in enumerate(groups) for _ in grp.fitting], dtype=np.int64)
        slot = np.array([k for grp in groups for k in range(len(grp.fitting))], dtype=np.int64)
        pool = np.array([p for grp in groups for p in grp.positions], dtype=np.int64)
        n = len(group)
        cost = np.empty(n)
        upper = np.empty(n)
        col = 0
        for grp, wait in zip(groups, waiting, strict=True):
            rep = tasks[grp.members[0]]
            for placement, value, room in zip(grp.fitting, grp.costs, grp.room, strict=True):
                avoided = h if placement.pool_id in rep.avoid_pools else 0.0
                cost[col] = (value + avoided - wait) / h
                upper[col] = min(len(grp.members), room)
                col += 1
        demand = np.array([_demand(tasks[g.members[0]]) for g in groups]).reshape(-1, 4)
        rows = [np.arange(len(groups))[group]]
        cols = [np.arange(n)]
        values = [np.ones(n)]
        row_upper = [np.array([len(g.members) for g in groups], dtype=float)]
        next_row = len(groups)
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
        start = np.searchsorted(column[order], np.arange(n + 1))
        fill = _fill(groups, demand, pool, free, upper)
        return cls(
            n,
            group,
            slot,
            cost,
            upper,
            np.concatenate(row_upper),
            start,
            row[order],
            value[order],
            fill,
        )


def _fill(
    groups: Sequence[_Group],
    demand: np.ndarray,
    pool: np.ndarray,
    free: np.ndarray,
    upper: np.ndarray,
) -> np.ndarray:
    """Count a greedy assignment per column: groups oldest first, pools by time to result."""
    left = free.copy()
    counts = np.zeros(len(pool), dtype=np.int64)
    col = 0
    for g, grp in enumerate(groups):
        need = len(grp.members)
        d = demand[g]
        for _ in grp.fitting:
            if need:
                room = int(_room(d, left[pool[col]].reshape(1, 4))[0])
                take = min(need, room, int(upper[col]))
                left[pool[col]] -= take * d
                counts[col] = take
                need -= take
            col += 1
    return counts


def _solve(
    model: _Model, time_limit_s: float, info: JointResult
) -> tuple[np.ndarray | None, JointResult]:
    """Run HiGHS within the time limit; give integer counts per column, or None and why."""
    try:
        import highspy
    except ImportError:
        reason = "highspy is not installed (pip install 'highspy>=1.7'): greedy assignment used"
        return None, replace(info, method=GREEDY, reason=reason)
    limit = max(0.0, time_limit_s)
    if limit == 0:
        # Even presolve may solve a small model at once; a zero limit means "do not try".
        reason = "the time limit is 0 s, so HiGHS was not run: greedy assignment used"
        return None, replace(info, method=GREEDY, reason=reason)
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", limit)
    # Stop at 0.1% of optimal: the estimates behind the costs are far coarser than that, and
    # proving the last 0.1% often takes most of the time.
    h.setOptionValue("mip_rel_gap", MIP_GAP)
    lp = highspy.HighsLp()
    lp.num_col_ = model.columns
    lp.num_row_ = len(model.row_upper)
    lp.col_cost_ = model.cost
    lp.col_lower_ = np.zeros(model.columns)
    lp.col_upper_ = model.upper
    lp.row_lower_ = np.full(len(model.row_upper), -highspy.kHighsInf)
    lp.row_upper_ = model.row_upper
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = model.start
    lp.a_matrix_.index_ = model.index
    lp.a_matrix_.value_ = model.value
    lp.integrality_ = [highspy.HighsVarType.kInteger] * model.columns
    h.passModel(lp)
    # Start from a greedy fill: HiGHS's own first solutions can be several times worse, and
    # with a short time limit the start is what a time-limited answer improves on.
    start = highspy.HighsSolution()
    start.col_value = model.start_counts.astype(float)
    start.value_valid = True
    h.setSolution(start)
    started = time.perf_counter()
    h.run()
    solve_s = time.perf_counter() - started
    status = h.getModelStatus()
    found = h.getInfo().primal_solution_status == 2  # kSolutionStatusFeasible
    info = replace(info, solve_s=solve_s)
    if status == highspy.HighsModelStatus.kOptimal and found:
        reason = f"HiGHS proved it optimal in {solve_s:.3f} s"
        method = OPTIMAL
    elif found:
        gap = h.getInfo().mip_gap
        info = replace(info, gap=gap)
        reason = (
            f"HiGHS stopped at the {limit:g} s time limit ({h.modelStatusToString(status)}) "
            f"with a feasible assignment within {gap:.1%} of optimal"
        )
        method = TIME_LIMITED
    else:
        reason = (
            f"HiGHS found no assignment within the {limit:g} s time limit "
            f"({h.modelStatusToString(status)}): greedy assignment used; raise "
            "sched_joint_time_limit_s or place smaller batches"
        )
        return None, replace(info, method=GREEDY, reason=reason)
    counts = np.rint(np.asarray(h.getSolution().col_value)).astype(np.int64)
    return np.clip(counts, 0, model.upper.astype(np.int64)), replace(
        info, method=method, reason=reason
    )


def _hand_out(
    tasks: Sequence[TaskRequest],
    groups: Sequence[_Group],
    model: _Model,
    counts: np.ndarray | None,
    board: Board,
) -> tuple[list[tuple[int, int] | None], list[Resources]]:
    """Give each task its (group, fitting slot) or None, and the room left per Board position.

    Within a group the oldest tasks get the cheapest pools (in the objective). The
    solver's counts are re-checked with ``Resources.fits_in`` (its tolerances differ from ours);
    then tasks still waiting take any candidate with room left, oldest first. Every choice
    is checked against the pool's room exactly.
    """
    want: list[tuple[int, int] | None] = [None] * len(tasks)
    if counts is not None:
        nonzero = np.flatnonzero(counts)
        by_group: dict[int, list[tuple[int, int]]] = {}
        for c in nonzero:
            by_group.setdefault(int(model.group[c]), []).append(
                (int(model.slot[c]), int(counts[c]))
            )
        for g, slots in by_group.items():
            members = iter(groups[g].members)
            for k, count in sorted(slots):  # slots are in time-to-result order
                for _ in range(count):
                    want[next(members)] = (g, k)
    left = [pool.available for pool in board.pools]
    group_of = {i: g for g, grp in enumerate(groups) for i in grp.members}
    out: list[tuple[int, int] | None] = [None] * len(tasks)
    for i, choice in enumerate(want):
        if choice is not None:
            out[i] = _take(tasks[i], groups, choice, left)
    for i, task in enumerate(tasks):
        if out[i] is None:
            g = group_of[i]
            for k in range(len(groups[g].fitting)):
                if (got := _take(task, groups, (g, k), left)) is not None:
                    out[i] = got
                    break
    return out, left


def _overflow(
    tasks: Sequence[TaskRequest],
    groups: Sequence[_Group],
    chosen: Sequence[tuple[int, int] | None],
    left: Sequence[Resources],
) -> list[int]:
    """Positions of waiting tasks (oldest first) that some feasible pool still has room for.

    The model only offers each shape its best ``width`` pools; when those are taken, a task
    may still fit on a pool further down its ranking.
    """
    waiting: dict[int, list[int]] = {}
    for g, grp in enumerate(groups):
        for i in grp.members:
            if chosen[i] is None:
                waiting.setdefault(g, []).append(i)
    if not waiting:
        return []
    free = np.array([(a.cpu_cores, a.ram_gb, a.disk_gb, a.gpus) for a in left], dtype=float)
    extra: list[int] = []
    for g, members in waiting.items():
        feasible = groups[g].feasible
        room = _room(_demand(tasks[members[0]]), free[feasible]).sum() if len(feasible) else 0
        extra += members[: int(min(room, len(members)))]
    return sorted(extra)


def _take(
    task: TaskRequest, groups: Sequence[_Group], choice: tuple[int, int], left: list[Resources]
) -> tuple[int, int] | None:
    """Reserve the task's demand on the chosen pool if it still fits; the choice, or None."""
    g, k = choice
    position = groups[g].positions[k]
    if not task.demand.fits_in(left[position]):
        return None
    left[position] = left[position] - task.demand
    return choice


def _rows(
    tasks: Sequence[TaskRequest],
    groups: Sequence[_Group],
    chosen: Sequence[tuple[int, int] | None],
    keep: int | None,
) -> list[Row]:
    """Build the result rows: a placed task's chosen placement first, with the reason why.

    A waiting task keeps its shape's best ``keep`` placements, those that fit at snapshot time
    marked as not fitting any more (after the fill-in pass, none of them has room).
    """
    group_of = [0] * len(tasks)
    for g, grp in enumerate(groups):
        for i in grp.members:
            group_of[i] = g
    # Placements are shared between the tasks of a shape: build each one once.
    picked: dict[tuple[int, int], Placement] = {}
    waiting: dict[int, tuple[Placement, ...]] = {}
    out: list[Row] = []
    for i, (task, choice) in enumerate(zip(tasks, chosen, strict=True)):
        decision = groups[group_of[i]].decision
        if choice is None:
            kept = waiting.get(group_of[i])
            if kept is None:
                kept = waiting[group_of[i]] = tuple(
                    replace(p, fits_now=False, reasons=(NO_ROOM_REASON, *p.reasons))
                    if p.fits_now
                    else p
                    for p in decision.placements[:keep]
                )
            out.append((task, Decision(task.id, kept, decision.rejections), None))
            continue
        placement = picked.get(choice)
        if placement is None:
            base = groups[choice[0]].fitting[choice[1]]
            placement = picked[choice] = replace(base, reasons=(JOINT_REASON, *base.reasons))
        others = [p for p in decision.placements[:keep] if p.pool_id != placement.pool_id]
        row = Decision(task.id, (placement, *others), decision.rejections)
        out.append((task, row, placement.pool_id))
    return out


def _coster(
    tasks: Sequence[TaskRequest],
    groups: Sequence[_Group],
    objective: str,
) -> Callable[[TaskRequest, Decision, str], float]:
    """Price a placed task of this batch on its pool, for comparing assignments.

    The shape's placements at snapshot time answer when they hold the pool; a pool further down
    the ranking (greedy may choose one) is priced by the row's own placement, to avoid ranking
    every pool again. For the time objective the two agree; a score there is normalised over
    the candidates as they were at the task's turn, so it is an approximation.
    """
    shape_of = {tasks[i].id: g for g, grp in enumerate(groups) for i in grp.members}
    known = [{p.pool_id: p for p in grp.decision.placements} for grp in groups]

    def cost_of(task: TaskRequest, decision: Decision, pool_id: str) -> float:
        placement = known[shape_of[task.id]].get(pool_id)
        if placement is None:
            placement = next(p for p in decision.placements if p.pool_id == pool_id)
        return cost(task, placement, objective)

    return cost_of
