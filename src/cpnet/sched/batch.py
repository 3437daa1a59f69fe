"""Place many tasks on one snapshot greedily, reserving as it goes so it never oversubscribes."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import replace

from cpnet.network import NetworkMap
from cpnet.sched import feasibility, score
from cpnet.sched.place import Board, Shortlist, decide, screen, shortlist, shortlist_key
from cpnet.sched.snapshot import Decision, PoolView, Rejection, TaskRequest

# Placements kept per Decision by default: enough to explain the choice and its runners-up
# without building thousands of explanations nobody reads.
DEFAULT_KEEP = 3


def assign(
    tasks: Sequence[TaskRequest],
    pools: Sequence[PoolView],
    weights: score.Weights = score.DEFAULT_WEIGHTS,
    *,
    keep: int | None = DEFAULT_KEEP,
    network: NetworkMap | None = None,
) -> list[tuple[TaskRequest, Decision, str | None]]:
    """Place tasks in the given order (pass them oldest first), each on its best pool.

    Each task is ranked against the availability left by the tasks before it; its
    ``Decision.best`` is chosen and its demand subtracted from that pool before the next task,
    so the batch never reserves more than a pool's initial ``available``. Returns, in task
    order, (task, decision, chosen pool id or None when nothing fits now: the task stays queued).

    Each decision equals ``place.rank(task, pools_at_its_turn, weights, network)`` except that,
    unless ``keep`` is None, it holds only the ``keep`` best placements plus the chosen one.
    """
    board = Board.of(pools)
    current = list(board.pools)
    position = {pool.id: i for i, pool in enumerate(current)}
    loads = [score.load_fraction(pool) for pool in current]
    # Feasibility never depends on availability, so cache it: constraints per task signature,
    # and the whole shortlist (feasibility, prices, start estimates) per task shape.
    screened: dict[Hashable, tuple[Rejection | None, ...]] = {}
    shortlists: dict[Hashable, Shortlist] = {}
    out: list[tuple[TaskRequest, Decision, str | None]] = []
    for task in tasks:
        signature = feasibility.signature(task)
        shape = shortlist_key(task)
        short = shortlists.get(shape)
        if short is None:
            screen_result = screened.get(signature)
            if screen_result is None:
                screen_result = screened[signature] = screen(task, board, network)
            short = shortlists[shape] = shortlist(task, board, screen_result, network)
        decision = decide(task, current, short, loads, weights, keep)
        best = decision.best
        if best is None:
            out.append((task, decision, None))
            continue
        i = position[best.pool_id]
        pool = current[i]
        current[i] = replace(pool, available=pool.available - task.demand)
        loads[i] = score.load_fraction(current[i])
        out.append((task, decision, best.pool_id))
    return out
