"""The agent's side of signed metering: its site's usage key, kept in the agent's work dir, and
the signed usage record of each attempt that ran, sent with the attempt's final update.

The record's rules and fields are `cpnet.market.metering`'s (docs/market.md, "Metering").
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cpnet.ident.keys import SigningKey
from cpnet.market import metering
from cpnet.tasks.model import TaskSpec, Usage

log = logging.getLogger("cpnet.agent")

KEY_FILE = "usage_key.pem"  # in the agent's work dir, mode 0600


def load_or_create_key(work_dir: Path) -> SigningKey:
    """The site's usage key from ``work_dir``/usage_key.pem, made on the first start (0600).

    Removing the file rotates the key: the next start makes and registers a new one, and the
    hub keeps the old one so that records it signed still verify."""
    path = work_dir / KEY_FILE
    try:
        return SigningKey.from_pem(path.read_bytes())
    except FileNotFoundError:
        pass
    key = SigningKey.generate()
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.to_pem())
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)  # never replaces a key another agent process just wrote
    except FileExistsError:
        key = SigningKey.from_pem(path.read_bytes())
    finally:
        tmp.unlink(missing_ok=True)
    log.info("made the site's usage key %s in %s", key.key_id, path)
    return key


def signed_record(
    key: SigningKey,
    *,
    site_id: str,
    task_id: str,
    attempt_id: str,
    pool_id: str,
    spec: Mapping[str, Any],
    usage: Usage,
    started_at: float,
    ended_at: float,
    scu_rates: Mapping[str, float] | None,
) -> dict[str, Any]:
    """The signed usage record of an attempt that ran from ``started_at`` to ``ended_at``
    (Unix seconds, the agent's clock), from what its runner measured (``usage``)."""
    task = TaskSpec.model_validate(spec)
    res = task.resources
    span = max(0.0, ended_at - started_at)
    record = metering.build(
        site_id=site_id,
        task_id=task_id,
        attempt_id=attempt_id,
        pool_id=pool_id,
        started_at=started_at,
        ended_at=ended_at,
        # The runner's clock starts after the agent's start report: within the span, except
        # for a runner re-attached after the agent restarted without its journal.
        wall_s=min(usage.wall_s, span),
        demand={"cpu_cores": res.cpu_cores, "ram_gb": res.ram_gb, "gpus": res.gpus},
        cpu_s=usage.cpu_s,
        scu_rates=scu_rates,
        profile=task.work.profile if task.work is not None else None,
        bytes_in=usage.bytes_in,
        bytes_out=usage.bytes_out,
    )
    return metering.sign(record, key)
