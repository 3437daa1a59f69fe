"""program.Program: the joint assignment's integer program and its HiGHS solve."""

from __future__ import annotations

import numpy as np

from cpnet.sched.program import Program


def two_groups_one_pool() -> Program:
    # Two groups of 3 tasks (2 cores and 1 core) compete for one pool with 4 free cores.
    return Program.build(
        group=np.array([0, 1]),
        slot=np.array([0, 0]),
        pool=np.array([0, 0]),
        cost=np.array([-1.0, -0.6]),
        upper=np.array([2.0, 3.0]),
        demand=np.array([[2.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]]),
        sizes=np.array([3, 3]),
        free=np.array([[4.0, 100.0, 100.0, 0.0]]),
    )


def test_rows_that_cannot_bind_are_left_out():
    program = two_groups_one_pool()
    # Two group rows and the pool's CPU row; its RAM (100 GB) cannot run out.
    assert list(program.row_upper) == [3.0, 3.0, 4.0]


def test_start_is_a_greedy_fill_within_capacity():
    program = two_groups_one_pool()
    assert list(program.start_counts) == [2, 0]


def test_solve_finds_the_optimum():
    solved = two_groups_one_pool().solve(1.0)
    assert solved.optimal and solved.counts is not None
    # Two big: -2; three small: -1.8; one big and two small: -2.2, the best.
    assert list(solved.counts) == [1, 2]
    assert "optimal" in solved.reason


def test_zero_limit_does_not_run_highs():
    solved = two_groups_one_pool().solve(0)
    assert solved.counts is None and "not run" in solved.reason
