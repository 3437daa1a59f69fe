"""Scheduler v1: rank live pools for a task and place batches of tasks without oversubscribing.

Everything here is pure: the caller passes a snapshot of live pools (``PoolView``) and gets
back explained decisions; nothing is reserved or dispatched by this package.
"""

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


def __getattr__(name: str) -> object:
    """`joint` and `vector` (numpy, highspy) load on first use: importing the scheduler's plain
    data (a client, the CLI) does not pay for them."""
    if name in ("joint", "vector"):
        import importlib

        return importlib.import_module(f"cpnet.sched.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
