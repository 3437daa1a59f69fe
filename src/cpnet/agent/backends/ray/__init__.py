"""The Ray backend: pools from a Ray cluster's nodes; each attempt is one Ray Job running the
runner.

Pools. Every ALIVE node has a *shape*: its accelerator types (``accelerator_type:<T>``
resources) and its custom resources (anything but ``CPU``, ``GPU``, ``memory``,
``object_store_memory``, ``node:*`` and ``accelerator_type:*``). Nodes of one shape form one
pool, named after the shape: the lower-cased accelerator types and custom resource names joined
by ``-`` (``a100``, ``fast``, ``a100-nvme``), or ``gpu`` / ``cpu`` for nodes with neither (with
or without GPUs). A pool's total is the sum of its nodes' ``CPU``, ``memory`` (GiB) and ``GPU``;
its labels say ``scheduler=ray``, ``ray_pool=<name>`` and, when any, ``ray_resources`` (the custom
resource names, ``,``-joined) and ``accelerator_type``. Pools follow the cluster: nodes of a known
shape that join later add capacity at once, and when the live nodes' shapes no longer match the
pools (a node of a new shape joined, or the last node of a shape left) `live` signals
``shape_changed``, the agent calls `rediscover` and registers the new set of pools (a pool whose
nodes all left goes offline at the hub and keeps its identifier). Free capacity comes from Ray
itself: per node, total − used from the dashboard's cluster status (refreshed by Ray's monitor every
few seconds), summed over the pool's live nodes, so work that others run on the cluster is counted
too.

Attempts. Everything about an attempt lives in ``work_root/<attempt_id>/`` (the handle), as for
the local and Slurm backends: ``job.json`` (read by ``python -m cpnet.agent.runner``),
``ray_job_id`` (the Ray submission id, ``cpnet-<attempt_id>``), ``status.json`` (what the
runner last recorded). The Ray job's entrypoint is only ``exec <python> -m cpnet.agent.runner
<work dir>``, both ``shlex``-quoted: no task field ever reaches a shell. So executors, staging,
exit codes, per-executor logs and usage (wall, CPU, peak RSS) are the runner's, exactly as on the
other backends; the work root must therefore be on a filesystem that the agent and every Ray node
share (as with Slurm), and the runner's Python (option ``python``) must exist on every node. The
job asks Ray for the task's resources (``entrypoint_num_cpus`` = ``cpu_cores``,
``entrypoint_num_gpus`` = ``gpus``, ``entrypoint_memory`` = ``ram_gb``, ``entrypoint_resources``
= the task's ``backend_parameters["ray_resources"]``, a JSON object such as ``{"fast": 1}``) and
is pinned to the live nodes of its pool with the label selector ``ray.io/node-id in (...)``
(Ray >= 2.49 on the cluster). A resubmission after a crash finds the job by its submission id
instead of starting it twice. Cancel writes the ``cancel`` file and calls ``stop_job`` (Ray
sends SIGTERM to the runner and its executors, then SIGKILL after ``RAY_JOB_STOP_WAIT_TIME_S``,
3 s by default; the runner records CANCELED). Ray's job states map (`RAY_STATES`, applied by
`ClusterBackend`'s reconcile step) as PENDING → QUEUED, RUNNING → RUNNING (or the runner's
INITIALIZING while it stages), SUCCEEDED → the runner's final state, FAILED → SYSTEM_ERROR
(Ray's message and log tail in the reason and system logs) and STOPPED → CANCELED, whenever the
runner recorded no final state of its own.

All talk to Ray goes through `RayApi`: the dashboard's HTTP API for nodes and usage, and
``ray.job_submission.JobSubmissionClient`` (the Jobs API, same address) for jobs.

Options: `RayOptions` (``options.py``), each typed and documented. ``ray start --block`` stops
the whole local head (``ray_local``, ``head.py``) when any Ray process of it dies; the agent then
logs why (the tail of Ray's own log) and starts a new head. Jobs of the dead head end
SYSTEM_ERROR ("Ray has no job"), so the hub runs them again.

Layout: ``pools.py`` (pools from node shapes), ``submission.py`` (what a job asks Ray),
``states.py`` (`RAY_STATES`), ``api.py`` (`RayApi`), ``head.py`` (`LocalHead`), ``options.py``,
``backend.py`` (`RayBackend`); the first three are pure.
"""

from cpnet.agent.backends.ray.api import RayApi
from cpnet.agent.backends.ray.backend import JOB_ID_FILE, RayBackend
from cpnet.agent.backends.ray.head import LocalHead
from cpnet.agent.backends.ray.options import RayOptions
from cpnet.agent.backends.ray.pools import camel, derive_pools, free_capacity, node_shape
from cpnet.agent.backends.ray.states import RAY_STATES, ray_state
from cpnet.agent.backends.ray.submission import (
    entrypoint,
    node_selector,
    parse_ray_resources,
    resource_request,
)

__all__ = [
    "JOB_ID_FILE",
    "RAY_STATES",
    "LocalHead",
    "RayApi",
    "RayBackend",
    "RayOptions",
    "camel",
    "derive_pools",
    "entrypoint",
    "free_capacity",
    "node_selector",
    "node_shape",
    "parse_ray_resources",
    "ray_state",
    "resource_request",
]
