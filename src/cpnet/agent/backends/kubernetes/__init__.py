"""The Kubernetes backend: pools from nodes; each attempt is one ``batch/v1`` Job.

Talks to the API server only through the official ``kubernetes`` client (extra ``kubernetes``),
with responses read as plain JSON (``_preload_content=False``), so that the mapping below works on
the documented object shapes and is unit-tested on plain dicts.

**Pools.** Schedulable nodes (not cordoned, no ``NoSchedule``/``NoExecute`` taint other than the
GPU resource's own) are grouped by a node-pool label: the ``pool_label`` option when given, else
the first of ``cpnet.io/pool``, ``cloud.google.com/gke-nodepool``,
``eks.amazonaws.com/nodegroup``, ``kubernetes.azure.com/agentpool``, ``karpenter.sh/nodepool``
that a node carries; nodes with none form the pool ``default``. A pool's total is the sum of its
nodes' *allocatable* CPU, memory, ephemeral storage and GPUs (``nvidia.com/gpu`` or the
``gpu_resource`` option); its GPU model and memory come from GPU feature discovery's
``nvidia.com/gpu.product`` / ``nvidia.com/gpu.memory`` labels, its zones from
``topology.kubernetes.io/zone``. Free capacity (``live``) is allocatable minus the requests of
every pod bound to a ready pool node and not finished (all namespaces), floored at zero.

**Attempts.** An attempt becomes the Job ``cpnet-<attempt id, DNS-1123-safe>-<hash>`` in the
configured namespace, with ``backoffLimit: 0`` (the hub retries, not Kubernetes),
``restartPolicy: Never``, ``activeDeadlineSeconds`` from the task's ``time_limit_s`` backend
parameter (or the ``default_time_limit_s`` option), ``ttlSecondsAfterFinished`` as a backstop,
and a ``nodeSelector`` on the pool's label. Executors run **in sequence as containers of one
pod**: all but the last are init containers (Kubernetes runs those one by one, each only after the
previous one exited 0), the last is the pod's one container. Each container uses the executor's
``image``, else the ``image`` option, runs the executor's argv as its ``command`` (no shell unless
the executor redirects stdin/stdout/stderr or sets ``ignore_error``; then a constant ``sh -c``
script gets the argv as ``"$@"`` and the paths in environment variables, so no task field is ever
parsed by a shell), requests and is limited to the task's CPU, memory and GPUs, and mounts one
``emptyDir`` at ``/cpnet/work`` (the executors' shared work dir and default working directory).
A task with only inline ``content`` inputs has them written there first by a ``stage-in`` init
container (the default image's ``sh``; contents pass in environment variables, at most 64 KiB
each).

**Staging.** A task with URL inputs (``file``, ``http(s)``, ``s3``, ``cpnet://blobs/``) or any
outputs is staged by cpnet's own staging code (`cpnet.agent.staging`, as the runner does for the
other backends), run by `cpnet.agent.podstage` in the ``runner_image`` option's image (one with
cpnet installed): the ``stage-in`` init container places every input in the work dir, the
executors follow as init containers, and ``stage-out`` is the pod's one container. Kubernetes
starts a container only after the previous init container exited 0, so stage-out runs after the
last executor *succeeded* (``ignore_error`` executors always exit 0): exactly when the runner
stages outputs (it stages nothing after a failed executor or a cancel), so no "finally" container
(a wrapper or a native sidecar waiting for a marker) is needed, and none of the task's containers
has to run a cpnet process. The stage containers print their transfer records and a result line,
read from their logs by `_finish`: outputs with sha256 and size, ``bytes_in``/``bytes_out``, one
system-log line per transfer, and the staging error as the reason of a SYSTEM_ERROR.

Secrets never enter the Job's manifest: ``job.json`` (the inputs, outputs and staging settings: URLs
may carry credentials) and ``env.json`` (`runner_job.staging_env`: S3 keys, the hub staging token)
go into a Secret per attempt, named like the Job, created right after it with an ``ownerReference``
to it (so the garbage collector deletes it with the Job; the agent also deletes it as soon as the
attempt is final) and mounted read-only at ``/cpnet/staging`` into the stage containers only (a
secret volume with just those two files: the pod waits until the Secret exists). The executors'
secret env values (``secret_env``, delivered to the agent as for every backend) are further keys of
the same Secret, ``ex<i>.<NAME>``, which each executor container reads by
``valueFrom.secretKeyRef``: the manifest names them and holds no value. The ``staging_secret``
option names an existing Secret whose keys the stage containers also get as environment variables
(``envFrom``; the agent's own credentials win). Without ``runner_image`` such a task ends
SYSTEM_ERROR at submit, with a reason naming the option, so the hub can place it elsewhere.

No task field reaches a name: the Job name and label values are derived (lower-cased, reduced to
``[a-z0-9-]``, truncated, plus a hash of the original); the task name, task id and full attempt id
travel in annotations.

**State.** Polls (`ClusterBackend`'s reconcile step) read the namespace's cpnet Jobs and Pods
(one list each, cached ``cache_s``, for all the attempts of one `poll_many`) and map them with
`verdict`, this backend's translate table:

==============================================================  ===============================
the Job and its pod                                             the attempt
==============================================================  ===============================
Job ``Complete``                                                COMPLETE
not complete, and cpnet canceled it (deleted the Job)           CANCELED
a container exited non-zero (``OOMKilled``: the memory limit)   EXECUTOR_ERROR, its exit code
``DeadlineExceeded``                                            EXECUTOR_ERROR, the time limit
an executor's image cannot be pulled (the Job is deleted)       EXECUTOR_ERROR
the runner_image cannot be pulled                               SYSTEM_ERROR
pod lost with its node, evicted, disrupted; Job gone, deleted   SYSTEM_ERROR
pod not scheduled (or no pod yet)                               QUEUED
pod bound, starting                                             INITIALIZING
an executor runs                                                RUNNING
==============================================================  ===============================

Executor logs are the containers' logs (stdout and stderr interleaved, as Kubernetes keeps them;
last 16 KiB), exit codes and start/finish times; usage is the wall time from the first container's
start to the last one's finish (CPU seconds are not measured: no metrics API is assumed). A final
result is written to ``status.json`` in the attempt's local dir ``work_root/<attempt_id>/`` (the
handle), so it survives the Job's deletion. ``cancel`` deletes the Job (``propagationPolicy:
Background``: its pod is killed), ``forget`` deletes a finished Job.

Options: `KubernetesOptions` (``options.py``), each typed and documented, with the staging ones
(as for the local backend; paths and endpoints as seen from inside the pod).

Layout: ``names.py`` (derived names), ``pools.py`` (pools from nodes), ``manifest.py`` (the Job
and its staging Secret), ``states.py`` (`verdict`: what a Job and its pod mean), ``api.py``
(`KubeApi`, the only caller of the API), ``backend.py`` (`KubernetesBackend`); all but the last
two are pure.

One agent per namespace: Jobs are found by the label ``app.kubernetes.io/managed-by=cpnet``.
"""

from cpnet.agent.backends.kubernetes.api import KubeApi
from cpnet.agent.backends.kubernetes.backend import KubernetesBackend
from cpnet.agent.backends.kubernetes.manifest import job_manifest
from cpnet.agent.backends.kubernetes.names import dns_label, job_name, label_value
from cpnet.agent.backends.kubernetes.options import KubernetesOptions
from cpnet.agent.backends.kubernetes.pools import group_nodes, pod_request, quantity
from cpnet.agent.backends.kubernetes.states import verdict

__all__ = [
    "KubeApi",
    "KubernetesBackend",
    "KubernetesOptions",
    "dns_label",
    "group_nodes",
    "job_manifest",
    "job_name",
    "label_value",
    "pod_request",
    "quantity",
    "verdict",
]
