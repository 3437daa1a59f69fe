"""Organisation quotas: how many queued tasks, and how many cores and GPUs across its queued and
running tasks, an organisation may have. Pure: the store counts, this decides."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Quota:
    """An organisation's quotas; None: no limit on that one."""

    queued: int | None = None  # tasks waiting to be placed
    cores: float | None = None  # CPU cores asked by its queued and running tasks together
    gpus: int | None = None  # GPUs asked by its queued and running tasks together

    @property
    def empty(self) -> bool:
        return self.queued is None and self.cores is None and self.gpus is None


@dataclass(frozen=True, slots=True)
class Usage:
    """What an organisation has now: queued tasks, and cores and GPUs of unfinished tasks."""

    queued: int = 0
    cores: float = 0.0
    gpus: int = 0


@dataclass(frozen=True, slots=True)
class Refusal:
    """Which quota a new task would pass: its name, the quota, the use now, the task's ask."""

    quota: str  # "queued" | "cores" | "gpus"
    limit: float
    used: float
    asked: float

    @property
    def message(self) -> str:
        what = {"queued": "queued tasks", "cores": "CPU cores", "gpus": "GPUs"}[self.quota]
        scope = "" if self.quota == "queued" else " (queued and running tasks together)"
        return (
            f"organisation quota on {what}{scope} reached: {_n(self.used)} in use + "
            f"{_n(self.asked)} asked > quota {_n(self.limit)}; wait for tasks to finish, cancel "
            "some, or ask an admin to raise it (`cpnet account quota ORG`)"
        )


def _n(x: float) -> str:
    return f"{x:g}"


def check(quota: Quota, usage: Usage, cores: float, gpus: int) -> Refusal | None:
    """The first quota a new queued task asking `cores` and `gpus` would pass, or None."""
    if quota.queued is not None and usage.queued + 1 > quota.queued:
        return Refusal("queued", quota.queued, usage.queued, 1)
    # a tiny tolerance: cores are fractional and summed in floating point
    if quota.cores is not None and usage.cores + cores > quota.cores + 1e-9:
        return Refusal("cores", quota.cores, usage.cores, cores)
    if quota.gpus is not None and gpus > 0 and usage.gpus + gpus > quota.gpus:
        return Refusal("gpus", quota.gpus, usage.gpus, gpus)
    return None
