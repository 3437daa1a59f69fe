"""Scheduler v1: rank live pools for a task and place batches of tasks without oversubscribing.

Everything here is pure: the caller passes a snapshot of live pools (``PoolView``) and gets
back explained decisions; nothing is reserved or dispatched by this package.
"""

from cpnet.sched import joint, vector
from cpnet.sched.batch import DEFAULT_KEEP, assign
from cpnet.sched.feasibility import check
from cpnet.sched.place import rank
from cpnet.sched.score import DEFAULT_WEIGHTS, Weights, expected_start_s
from cpnet.sched.snapshot import (
    Decision,
    Placement,
    PoolView,
    Price,
    Rejection,
    Resources,
    TaskRequest,
)

__all__ = [
    "DEFAULT_KEEP",
    "DEFAULT_WEIGHTS",
    "Decision",
    "Placement",
    "PoolView",
    "Price",
    "Rejection",
    "Resources",
    "TaskRequest",
    "Weights",
    "assign",
    "check",
    "expected_start_s",
    "joint",
    "rank",
    "vector",
]
