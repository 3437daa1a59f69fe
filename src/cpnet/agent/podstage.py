"""Staging inside a Kubernetes pod: ``python -m cpnet.agent.podstage in|out``.

The Kubernetes backend runs this as the ``stage-in`` init container and the ``stage-out``
container of an attempt's pod, in the ``runner_image`` option's image (one with cpnet installed).
It runs the same staging code as the runner (`cpnet.agent.staging`, with `runner.staging_limits`)
on the pod's shared work dir:

- ``$CPNET_STAGING_DIR/job.json`` (from the attempt's Secret, mounted read-only): the task's
  inputs and outputs and the ``runner`` settings block, as in the runner's job.json;
- ``$CPNET_STAGING_DIR/env.json``: the staging credentials (`local.staging_env`: S3 keys, the
  hub staging token), laid over this process's environment (so a value from the Secret the
  ``staging_secret`` option names, given with ``envFrom``, is used only when the agent has none);
- ``$CPNET_WORK_DIR``: the work dir (the pod's ``emptyDir``), where task paths are re-rooted.

It prints one line per transfer (`staging.Transfer.line`), then, last, ``RESULT_MARK`` followed by
a JSON object: ``{"direction", "bytes", "staging": [...], "outputs": [...]}``, or with ``"error"``
when staging failed (exit code 3). The backend reads it from the container's log.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from cpnet.agent.jobfile import Input, Output
from cpnet.agent.runner import staging_limits
from cpnet.agent.staging import StagingError, Transfer, stage_in, stage_out

RESULT_MARK = "cpnet-staging-result: "
FAILED_EXIT = 3
DEFAULT_STAGING_DIR = "/cpnet/staging"
DEFAULT_WORK_DIR = "/cpnet/work"


def run(direction: str, staging_dir: Path, work_dir: Path) -> dict[str, Any]:
    """Stage `direction` ("in" or "out"); the result record (with "error" on failure)."""
    data = json.loads((staging_dir / "job.json").read_text(encoding="utf-8"))
    env_file = staging_dir / "env.json"
    if env_file.is_file():
        os.environ.update(json.loads(env_file.read_text(encoding="utf-8")))
    inputs = [Input.from_dict(x) for x in data["spec"].get("inputs") or []]
    outputs_wanted = [Output.from_dict(x) for x in data["spec"].get("outputs") or []]
    records: list[dict[str, Any]] = []

    def transferred(rec: Transfer) -> None:
        records.append(rec.to_dict())
        print(rec.line(), flush=True)

    limits = staging_limits(data.get("runner") or {}, str(data.get("attempt_id", "")))
    result: dict[str, Any] = {"direction": direction, "bytes": 0, "staging": records}
    try:
        if direction == "in":
            result["bytes"] = stage_in(inputs, work_dir, on_transfer=transferred, **limits)
        else:
            outputs, moved = stage_out(outputs_wanted, work_dir, on_transfer=transferred, **limits)
            result["bytes"] = moved
            result["outputs"] = [o.to_dict() for o in outputs]
    except StagingError as exc:
        result["error"] = f"stage-{direction} failed: {exc}"
    return result


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in ("in", "out"):
        print("usage: python -m cpnet.agent.podstage in|out", file=sys.stderr)
        return 2
    staging_dir = Path(os.environ.get("CPNET_STAGING_DIR") or DEFAULT_STAGING_DIR)
    work_dir = Path(os.environ.get("CPNET_WORK_DIR") or DEFAULT_WORK_DIR)
    try:
        result = run(args[0], staging_dir, work_dir)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        result = {"direction": args[0], "error": f"stage-{args[0]} could not start: {exc}"}
    print(RESULT_MARK + json.dumps(result, separators=(",", ":")), flush=True)
    return FAILED_EXIT if "error" in result else 0


def parse_result(log: str) -> dict[str, Any] | None:
    """The result record in a stage container's log (its last result line), or None."""
    for line in reversed(log.splitlines()):
        if line.startswith(RESULT_MARK):
            try:
                value = json.loads(line[len(RESULT_MARK) :])
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None


if __name__ == "__main__":
    sys.exit(main())
