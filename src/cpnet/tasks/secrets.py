"""Secret environment values of a task (pure): taken out of the spec before it is stored, put
back only in the runner (docs/security.md, "Secrets").

A task marks names of an executor's ``env`` as secret (``executors[].secret_env``; TES: the tag
``cpnet.secret_env = "NAME,NAME"``). ``split`` returns the spec with those values replaced by
``PLACEHOLDER`` — what the hub stores and every API shows — and the values, by executor index,
which the hub keeps encrypted and hands to the agent running the attempt.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

PLACEHOLDER = "[secret]"
TES_TAG = "cpnet.secret_env"
MIN_SCRUB_CHARS = 4  # shorter values are not scrubbed from logs (they would blank ordinary text)

# executor index (as text, JSON keys) -> {name: value}; and DATA_KEY -> {"key": the data key}
Secrets = dict[str, dict[str, str]]
DATA_KEY = "data_key"  # the task's data key (TaskSpec.data_key) travels with its secrets


def has_secrets(spec: Mapping[str, Any]) -> bool:
    """Whether the (dumped) spec carries anything secret: secret env values or a data key."""
    return bool(spec.get(DATA_KEY)) or any(ex.get("secret_env") for ex in spec.get("executors", ()))


def split(spec: Mapping[str, Any]) -> tuple[dict[str, Any], Secrets]:
    """(the spec with secret values and its data key replaced by PLACEHOLDER, the values by
    executor index and the data key under DATA_KEY)."""
    out = copy.deepcopy(dict(spec))
    found: Secrets = {}
    if out.get(DATA_KEY) and out[DATA_KEY] != PLACEHOLDER:
        found[DATA_KEY] = {"key": out[DATA_KEY]}
        out[DATA_KEY] = PLACEHOLDER
    for i, ex in enumerate(out.get("executors", ())):
        names = ex.get("secret_env") or ()
        env = ex.get("env") or {}
        values = {n: env[n] for n in names if n in env}
        if values:
            found[str(i)] = values
            ex["env"] = {k: PLACEHOLDER if k in values else v for k, v in env.items()}
    return out, found


def merge(env: Mapping[str, str], values: Mapping[str, str]) -> dict[str, str]:
    """An executor's env with its secret values put back."""
    return {**env, **values}


def scrub(text: str, values: Iterable[str]) -> str:
    """`text` with every secret value of MIN_SCRUB_CHARS or more replaced by PLACEHOLDER."""
    for v in sorted({v for v in values if len(v) >= MIN_SCRUB_CHARS}, key=len, reverse=True):
        text = text.replace(v, PLACEHOLDER)
    return text


def tes_names(tag: str) -> list[str]:
    """The env names the TES tag ``cpnet.secret_env`` lists ("A,B")."""
    return [n.strip() for n in tag.split(",") if n.strip()]
