"""The Slurm backend: one pool per partition; each attempt is one ``sbatch`` job running the runner.

Everything about an attempt lives in its work dir ``work_root/<attempt_id>/`` (the handle), as with
the local backend: ``job.json`` (what to run, read by ``python -m cpnet.agent.runner``),
``job.sh`` (the batch script: only ``exec <python> -m cpnet.agent.runner <work dir>``, both paths
``shlex``-quoted; no task field ever reaches it), ``slurm_job_id`` (the Slurm job id),
``slurm.out`` (the batch step's output), ``status.json`` (what the runner last recorded).

Jobs are named ``cpnet-<attempt_id>``, so a resubmission after a crash between ``sbatch`` and
writing ``slurm_job_id`` finds the job in ``squeue`` instead of starting it twice.

All talk to Slurm goes through a `SlurmTransport` (``transport.py``): `SlurmCli` (``cli.py``:
``sinfo``/``squeue --json``, ``scontrol -o show partition``, ``sbatch``, ``scancel``, ``sacct -c``;
argv lists only, never a shell) or `SlurmRest` (``rest.py``: slurmrestd with a JWT). Pools come
from ``partitions.py`` (pure); the backend itself is ``backend.py``.

Pools and live state come from Slurm itself: nodes, CPUs, memory, GRES GPUs (the GPU model is the
GRES type: ``gpu:a100:2``) per partition; free CPUs/memory/GPUs of usable nodes in UP partitions,
and the partition's whole queue (every user's pending and running jobs) in each heartbeat.

How a job ended: the runner's status.json, unless the runner was stopped by Slurm rather than by
cpnet (time limit → EXECUTOR_ERROR "time limit exceeded", node failure or preemption →
SYSTEM_ERROR so that the hub retries elsewhere): the translate table `SLURM_STATES`
(``states.py``), applied by the reconcile step of `ClusterBackend` (``cluster.py``); the end
written into status.json by ``endings.py``. Jobs are submitted ``--no-requeue``: retrying is the
hub's job. Usage adds Slurm's own record of the job (the job completion log via ``sacct -c``,
else the controller's job record): ``wall_s`` is Slurm's elapsed time and ``alloc_cpu_s``
elapsed × allocated CPUs; ``cpu_s`` and ``peak_rss_mb`` stay the runner's measurement of the
executors.

Options: `SlurmOptions` (``options.py``), each typed and documented, with the staging ones;
``transport = "rest"`` takes slurmrestd's address and token (``rest.py``).

When a node dies: a job whose node stops answering ends NODE_FAIL once slurmctld gives up on the
node (``SlurmdTimeout``), but if only slurmd died, the job's slurmstepd, the runner and its
executor live on, unseen by Slurm, until slurmd comes back. So whenever Slurm ends a job the
runner had not finished, the backend leaves a fence (``fence`` in the work dir, which the node
shares): the runner watches for it, stops its executor as on a cancel, stages nothing out and
writes its account to ``status.fenced.json`` instead of status.json. After a NODE_FAIL the
attempt stays RUNNING until that account is there (or ``fence_wait_s`` passed: the machine is
really gone), so the hub's retry never runs beside the orphan; the record then takes the
orphan's executor logs and CPU time, Slurm's state and elapsed time.

A task's ``backend_parameters`` may set (each also as ``slurm.<key>``):

- ``nodes``: ``--nodes`` (a positive integer). The runner and the executors run on the first
  node (the batch host); executors see the job's ``SLURM_*`` variables, so ``srun`` in a command
  runs across the whole allocation. The result is the batch step's.
- ``ntasks_per_node``: ``--ntasks-per-node`` (a positive integer; with ``nodes``, or one node):
  ``nodes × ntasks_per_node`` Slurm tasks (MPI ranks) share the task's ``cpu_cores``
  (``--cpus-per-task`` = cpu_cores ÷ tasks, so ask for at least one core per task), ``--mem`` is
  per node; ``srun`` in an executor starts them all.
- ``time_limit_s``: the job's time limit in seconds (Slurm rounds up to whole minutes).

A task asking for more CPUs than the partition's largest node has (and no ``nodes``, no GPUs)
is spread over several nodes: ``--nodes=ceil(cpus / node CPUs) --ntasks=<cpus>
--cpus-per-task=1``, ``--mem`` divided among the nodes; its executors use ``srun`` to reach them.
"""

from cpnet.agent.backends.slurm.backend import (
    SCRIPT_FILE,
    SlurmBackend,
    batch_script,
    make_transport,
)
from cpnet.agent.backends.slurm.cli import (
    SlurmCli,
    parse_sacct_line,
    parse_scontrol_partitions,
    parse_slurm_minutes,
)
from cpnet.agent.backends.slurm.options import SlurmOptions
from cpnet.agent.backends.slurm.partitions import parse_gres
from cpnet.agent.backends.slurm.rest import SlurmRest
from cpnet.agent.backends.slurm.states import SLURM_STATES, map_final
from cpnet.agent.backends.slurm.transport import (
    SlurmFinal,
    SlurmJobRequest,
    SlurmTransport,
    final_of_job,
)

__all__ = [
    "SCRIPT_FILE",
    "SLURM_STATES",
    "SlurmBackend",
    "SlurmCli",
    "SlurmFinal",
    "SlurmJobRequest",
    "SlurmOptions",
    "SlurmRest",
    "SlurmTransport",
    "batch_script",
    "final_of_job",
    "make_transport",
    "map_final",
    "parse_gres",
    "parse_sacct_line",
    "parse_scontrol_partitions",
    "parse_slurm_minutes",
]
