"""Logs of hub and agent processes: plain text for people, or one JSON object per line for a log
pipeline (``--log-format json``, ``CPNET_LOG_FORMAT=json``).

Every line names what it is about, so one task can be followed through every process it passes:

- ``request_id``: the hub's id of the HTTP request the line was written in (the same id the
  answer carries as ``X-Request-Id`` and the audit chain records);
- ``trace_id``: the id of the request that created the task the line is about. It is stored
  with the task, travels with its attempts to the agent, and is on the agent's lines about them:
  ``grep`` for a submission's ``X-Request-Id`` finds its task in the hub's log and in the log
  of every agent that ran it;
- ``task_id``, ``attempt_id``, ``site_id``, ``pool_id``: the objects, when the line has them.

A line gets those fields from the logging call's ``extra`` (``log.info("placed", extra={"task_id":
…})``) and, for ``request_id``, from the request being served (store/audit.current).

JSON lines hold ``ts`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger``, ``msg``, those
fields when present, and ``exc`` (the formatted traceback) for an exception.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import IO, Any

FORMATS = ("text", "json")
# The names a line may carry in ``extra``, in the order they are written.
FIELDS = (
    "request_id",
    "trace_id",
    "task_id",
    "attempt_id",
    "site_id",
    "pool_id",
    "org_id",
    "state",
    "method",
    "route",
    "status",
    "duration_ms",
    "count",
)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _request_id() -> str | None:
    from cpnet.store import audit  # the request being served (api/audit.AuditCalls sets it)

    return audit.request_id()


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """The context fields of a record: its ``extra`` ones, and the request being served."""
    out: dict[str, Any] = {}
    for name in FIELDS:
        value = record.__dict__.get(name)
        if value is None and name == "request_id":
            value = _request_id()
        if value is not None:
            out[name] = value
    return out


class JsonFormatter(logging.Formatter):
    """One JSON object per line (see the module's docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line: dict[str, Any] = {
            "ts": f"{ts}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update(fields(record))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The usual line, then the context fields as ``key=value``."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extra = fields(record)
        if not extra:
            return text
        head, nl, rest = text.partition("\n")  # a traceback stays below the line
        tail = " ".join(f"{k}={v}" for k, v in extra.items())
        return f"{head} [{tail}]{nl}{rest}"


def setup(fmt: str = "text", level: str | int = "info", stream: IO[str] | None = None) -> None:
    """Send every logger's lines (ours, uvicorn's, libraries') to `stream` (stderr) in `fmt`."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.captureWarnings(True)  # Python's warnings as log lines in the same format
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def quiet_highs() -> None:
    """HiGHS (the joint scheduler's solver) prints a banner on stdout, past logging, the first
    time a process makes a solver: make that first one now with stdout on /dev/null, so that a
    hub's log stays one JSON object per line."""
    import highspy

    sys.stdout.flush()
    saved, null = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)
