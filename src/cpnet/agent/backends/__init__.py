"""Backends the agent can run attempts on, by name (the ``backend`` an agent registers with)."""

from __future__ import annotations

from cpnet.agent.backends.base import Backend, BackendError
from cpnet.agent.backends.kubernetes import KubernetesBackend
from cpnet.agent.backends.local import LocalBackend
from cpnet.agent.backends.slurm import SlurmBackend

BACKENDS: dict[str, type[Backend]] = {
    LocalBackend.name: LocalBackend,
    SlurmBackend.name: SlurmBackend,
    KubernetesBackend.name: KubernetesBackend,
}


def get_backend(name: str) -> type[Backend]:
    """The backend class registered under `name`; BackendError lists the known ones."""
    try:
        return BACKENDS[name]
    except KeyError:
        known = ", ".join(sorted(BACKENDS))
        raise BackendError(f"unknown backend {name!r}; known: {known}") from None
