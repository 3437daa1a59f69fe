"""Staging's limits: the bytes a task may move and how long a network operation may take."""

from __future__ import annotations

from cpnet.agent.staging.errors import StagingError

DEFAULT_TIMEOUT_S = 60.0  # per network operation (connect, each read/write), not per file
DEFAULT_RETRIES = 3  # extra tries of a download after a dropped connection (each resumes)
MAX_OUTPUT_LOG_BYTES = 512 * 1024  # an attempt's output file logs as JSON: they ride one update


class Budget:
    """The staging limits of one direction: a per-task total and an optional per-file cap."""

    def __init__(self, total: int, per_file: int | None = None) -> None:
        self.total = total
        self.per_file = per_file
        self.used = 0  # bytes of files finished so far

    def check(self, what: str, size: int) -> None:
        """Refuse a file of `size` bytes (known or so far) that would break a limit."""
        if self.per_file is not None and size > self.per_file:
            raise StagingError(
                f"{what} is {size} bytes or more, over the per-file limit of {self.per_file} bytes"
            )
        if self.used + size > self.total:
            raise StagingError(
                f"{what} ({size} bytes) would bring this task's staged total to "
                f"{self.used + size} bytes, over the per-task limit of {self.total} bytes"
            )

    def add(self, size: int) -> None:
        self.used += size
