"""Place a batch of waiting tasks together: one assignment under pool capacities, solved by HiGHS.

The greedy ``batch.assign`` places tasks one at a time, each on its best pool; an early task can
take the only pool a later one fits, or a fast pool a long task needed more. ``assign`` here
builds one small integer program (``sched.program``) over the same per-task steps (``Board``,
``screen``, ``shortlist``, ``decide``) and lets HiGHS choose for all tasks at once.

Tasks are grouped by shape (constraints, demand, run time, SCU work, inputs, deadline, budget,
objective, avoided pools): 10,000
tasks in job arrays make a few hundred groups. Each shape's candidates are its best pools in the
policy's order that it fits now. One integer variable per (group, candidate) counts the tasks
placed there.

Objective (``objective=``): by default the sum of the policy's own **scores** of the chosen
pools, so a lone task goes where ``rank`` puts it and a batch departs from each task's first
choice only as far as capacity forces; or (``TIME``) the sum of estimated **times to result**
(staging + wait + run, × risk, s, as ``terms`` estimates it). Where the policy ranks lexically
before it scores (spillover tiers, then pools an earlier attempt failed on last), each step
down costs H more, H being the largest cost of any candidate placement; a task left waiting
costs more than any placement (2 H past the dearest step), so the most tasks get placed, and
older shapes cost up to H more to leave waiting. See docs/scheduling-joint.md.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from cpnet.network import NetworkMap
from cpnet.sched import batch, feasibility, score
from cpnet.sched.place import Board, Shortlist, decide, screen, shortlist, shortlist_key
from cpnet.sched.program import Program, copies, demand_vector
from cpnet.sched.snapshot import (
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
# A time-limited answer this far from optimal (HiGHS's own bound) is checked against greedy's.
CHECK_GREEDY_GAP = 0.05
COVER = 2  # how many times a group's size its candidates' room must hold before widening stops

SCORE = "score"  # minimise the sum of the policy's scores (each task's own ranking)
TIME = "time"  # minimise the sum of estimated times to result, in seconds

OPTIMAL = "optimal"  # HiGHS proved the assignment optimal (within program.MIP_GAP)
TIME_LIMITED = "time_limited"  # HiGHS's best assignment when the time limit struck
GREEDY = "greedy"  # batch.assign's answer: the solver had none, or a worse one

JOINT_REASON = "chosen by joint assignment: the best placement of the whole batch together"
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
    levels: int = 1  # spillover tiers among the candidates (an avoided pool ranks past them all)
    # Per task id, what leaving it waiting costs.
    waiting_cost: dict[str, float] = field(repr=False, compare=False, default_factory=dict)
    # The cost of placing a task on a pool at snapshot time (for ``objective_of``).
    cost_of: Callable[[TaskRequest, Decision, str], float] | None = field(
        repr=False, compare=False, default=None
    )

    def steps(self, task: TaskRequest, decision: Decision, pool_id: str) -> int:
        """Steps down the policy's lexical order: the pool's tier, all tiers more if avoided."""
        tier = next((p.tier for p in decision.placements if p.pool_id == pool_id), 0)
        return tier + (self.levels if pool_id in task.avoid_pools else 0)

    def objective_of(self, rows: Sequence[Row]) -> float:
        """Give any assignment of this batch (joint or greedy) its objective; lower is better.

        A placed task costs its placement's cost at snapshot time, plus H per step down the
        policy's lexical order (its spillover tier; an avoided pool); a waiting one costs
        ``waiting_cost``.
        """
        if self.cost_of is None:
            raise ValueError("objective_of needs a JointResult as joint.assign returns it")
        total = 0.0
        for task, decision, pool_id in rows:
            if pool_id is None:
                total += self.waiting_cost[task.id]
            else:
                placement = self.cost_of(task, decision, pool_id)
                total += placement + self.horizon * self.steps(task, decision, pool_id)
        return total


def time_to_result_s(task: TaskRequest, placement: Placement) -> float:
    """Expected seconds until the result on the placement's pool (staging + wait + run, x risk)."""
    return placement.time_to_result_s


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
    steps: tuple[int, ...]  # per fitting placement: its tier, + ``levels`` when avoided (later)
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
    network: NetworkMap | None = None,
) -> tuple[list[Row], JointResult]:
    """Place the batch jointly; fall back to ``batch.assign`` when HiGHS has no better answer.

    Returns rows shaped like ``batch.assign``'s, in task order: (task, decision, pool id or
    None). A placed task's ``decision.best`` is the chosen pool (its first reason says it was
    chosen jointly), followed by the policy's ``keep`` best for comparison; a waiting task's
    placements are marked as not fitting after the batch. Pass tasks oldest first: within a
    shape, older tasks get the better pools and are placed first. Never oversubscribes a pool
    and uses only pools ``feasibility.check`` accepts. ``network`` is the map ``rank`` and
    ``batch.assign`` take (staging times, latency bounds).
    """
    board = Board.of(pools)
    free = _free_matrix(board)
    if objective not in (SCORE, TIME):
        raise ValueError(f"unknown objective {objective!r}: use {SCORE!r} or {TIME!r}")
    groups = _groups(tasks, board, free, weights, max(width, keep or 1), objective, network)
    horizon = max((c for g in groups for c in g.costs), default=0.0)
    horizon = horizon if horizon > 0 else 1.0
    levels = 1 + max((t for g in groups for t in g.steps), default=0)
    # Waiting costs more than any placement (at most H x (1 + 2 levels)), so the most tasks are
    # placed; older shapes (by their oldest task) cost up to H more, so they win a 1:1 contest.
    waiting = [horizon * (2 * levels + 3 - g.members[0] / len(tasks)) + g.waiting_s for g in groups]
    model = _program(tasks, groups, free, horizon, levels, waiting)
    info = JointResult(
        method=OPTIMAL,
        reason="",
        objective=objective,
        value=0.0,
        horizon=horizon,
        levels=levels,
        groups=len(groups),
        variables=model.columns,
        solve_s=0.0,
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
        rows = batch.assign(tasks, pools, weights, keep=keep, network=network)
        return rows, replace(info, method=GREEDY, value=info.objective_of(rows))
    chosen, left = _hand_out(tasks, groups, model, counts, board)
    rows = _rows(tasks, groups, chosen, keep)
    for i, row in _overflow_rows(tasks, groups, chosen, left, board, weights, keep, network):
        rows[i] = row
    info = replace(info, value=info.objective_of(rows))
    if info.method == TIME_LIMITED and info.gap > CHECK_GREEDY_GAP:
        return _better_of(
            rows, info, batch.assign(tasks, pools, weights, keep=keep, network=network)
        )
    return rows, info


def _overflow_rows(
    tasks: Sequence[TaskRequest],
    groups: Sequence[_Group],
    chosen: Sequence[tuple[int, int] | None],
    left: Sequence[Resources],
    board: Board,
    weights: score.Weights,
    keep: int | None,
    network: NetworkMap | None,
) -> list[tuple[int, Row]]:
    """Rows for waiting tasks that still fit outside their shape's candidates, from greedy.

    The model offers each shape only its best pools; when those are taken a task may still fit
    further down its ranking. The greedy policy places such tasks on the room left, over
    every pool.
    """
    extra = _overflow(tasks, groups, chosen, left)
    if not extra:
        return []
    rest = [replace(p, available=a) for p, a in zip(board.pools, left, strict=True)]
    rows = batch.assign([tasks[i] for i in extra], rest, weights, keep=keep, network=network)
    return list(zip(extra, rows, strict=True))


def _better_of(
    rows: list[Row], info: JointResult, greedy_rows: list[Row]
) -> tuple[list[Row], JointResult]:
    """Return the joint rows unless greedy's are better in the same objective.

    Used when HiGHS stopped far (past CHECK_GREEDY_GAP) from its bound: the answer may then be
    little better than its greedy start. Closer than that, the answers measured were always
    better than greedy's, and running greedy as well would double the time.
    """
    greedy = info.objective_of(greedy_rows)
    if greedy >= info.value:
        return rows, info
    reason = (
        f"{info.reason}; its best ({info.value:.6g}) was worse than greedy's ({greedy:.6g}), "
        "so greedy's was used"
    )
    return greedy_rows, replace(info, method=GREEDY, reason=reason, value=greedy)


def _free_matrix(board: Board) -> np.ndarray:
    """Availability per pool (rows, Board order) and resource (cpu, ram, disk, gpus)."""
    return np.array(
        [(a.cpu_cores, a.ram_gb, a.disk_gb, a.gpus) for a in (p.available for p in board.pools)],
        dtype=float,
    ).reshape(len(board.pools), 4)


def _groups(
    tasks: Sequence[TaskRequest],
    board: Board,
    free: np.ndarray,
    weights: score.Weights,
    width: int,
    objective: str,
    network: NetworkMap | None,
) -> list[_Group]:
    """Group the batch by task shape and find each shape's fitting candidates, best first."""
    members: dict[Hashable, list[int]] = {}
    for i, task in enumerate(tasks):
        members.setdefault((shortlist_key(task), task.objective, task.avoid_pools), []).append(i)
    position = {pool.id: i for i, pool in enumerate(board.pools)}
    loads = [score.load_fraction(pool) for pool in board.pools]
    screened: dict[Hashable, tuple[Rejection | None, ...]] = {}
    # Shapes that differ only in objective or avoided pools share a shortlist (as in batch).
    shortlists: dict[Hashable, Shortlist] = {}
    out = []
    for (key, _, _), indices in members.items():
        rep = tasks[indices[0]]
        short = shortlists.get(key)
        if short is None:
            signature = feasibility.signature(rep)
            if signature not in screened:
                screened[signature] = screen(rep, board, network)
            short = shortlists[key] = shortlist(rep, board, screened[signature], network)
        room_all = copies(demand_vector(rep), free)
        wide = width
        while True:
            decision = decide(rep, board.pools, short, loads, weights, keep=wide)
            fitting = [p for p in decision.placements if p.fits_now]
            room = sum(int(room_all[position[p.pool_id]]) for p in fitting)
            if room >= COVER * len(indices) or wide >= len(short.candidates):
                break
            wide *= 4
        avoid = rep.avoid_pools
        # The policy's lexical order first (avoided last, then tier), then the cost.
        fitting.sort(key=lambda p: (p.pool_id in avoid, p.tier, cost(rep, p, objective), p.rank))
        waiting_s = 0.0
        if objective == TIME:
            waiting_s = min((t.time_to_result_s(False) for t in short.terms), default=0.0)
        out.append(
            _Group(
                members=tuple(indices),
                decision=decision,
                fitting=tuple(fitting),
                positions=tuple(position[p.pool_id] for p in fitting),
                costs=tuple(cost(rep, p, objective) for p in fitting),
                room=tuple(int(room_all[position[p.pool_id]]) for p in fitting),
                waiting_s=waiting_s,
                steps=tuple(p.tier for p in fitting),
                feasible=np.array(short.candidates, dtype=np.int64),
            )
        )
    return out


def _program(
    tasks: Sequence[TaskRequest],
    groups: Sequence[_Group],
    free: np.ndarray,
    horizon: float,
    levels: int,
    waiting: Sequence[float],
) -> Program:
    """Lay the groups' candidates out as the integer program's columns (cost scaled by H)."""
    group = np.array([g for g, grp in enumerate(groups) for _ in grp.fitting], dtype=np.int64)
    cost = np.empty(len(group))
    upper = np.empty(len(group))
    col = 0
    for grp, wait in zip(groups, waiting, strict=True):
        rep = tasks[grp.members[0]]
        for placement, value, step, room in zip(
            grp.fitting, grp.costs, grp.steps, grp.room, strict=True
        ):
            step += levels if placement.pool_id in rep.avoid_pools else 0
            cost[col] = (value + horizon * step - wait) / horizon
            upper[col] = min(len(grp.members), room)
            col += 1
    return Program.build(
        group=group,
        slot=np.array([k for grp in groups for k in range(len(grp.fitting))], dtype=np.int64),
        pool=np.array([p for grp in groups for p in grp.positions], dtype=np.int64),
        cost=cost,
        upper=upper,
        demand=np.array([demand_vector(tasks[g.members[0]]) for g in groups]).reshape(-1, 4),
        sizes=np.array([len(g.members) for g in groups], dtype=np.int64),
        free=free,
    )


def _solve(
    model: Program, time_limit_s: float, info: JointResult
) -> tuple[np.ndarray | None, JointResult]:
    """Run the program within the time limit; counts per column, or None, and the method."""
    solved = model.solve(time_limit_s)
    info = replace(info, reason=solved.reason, solve_s=solved.solve_s, gap=solved.gap)
    if solved.counts is None:
        return None, replace(info, method=GREEDY)
    return solved.counts, replace(info, method=OPTIMAL if solved.optimal else TIME_LIMITED)


def _hand_out(
    tasks: Sequence[TaskRequest],
    groups: Sequence[_Group],
    model: Program,
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
        room = (
            copies(demand_vector(tasks[members[0]]), free[feasible]).sum() if len(feasible) else 0
        )
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
