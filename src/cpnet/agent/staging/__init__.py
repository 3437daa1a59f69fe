"""Data staging: inputs into an attempt's files dir before it runs, outputs out of it after.

Sources: inline content, ``file://`` (a path on this host), ``http(s)://`` (streamed GET),
``s3://bucket/key`` (S3-compatible object storage, boto3) and ``cpnet://blobs/<sha256>`` (the
hub's content-addressed blob store). Destinations: ``file://``, ``http(s)://`` (PUT),
``s3://bucket/key`` and ``cpnet://blobs/`` (uploaded to the hub, recorded under its sha256).
DIRECTORY inputs and outputs map to directories (file://) and key prefixes (s3://).

Rules every transfer follows (docs/staging.md has the user's view):

- Paths: every task path is re-rooted under the files dir (TES-style ``/data/x`` becomes
  ``files/data/x``); ``..`` is refused, and so is any symlink: in a DIRECTORY input, on the path
  of an output, inside a DIRECTORY output (an executor may plant one before outputs are
  collected). S3 keys under a DIRECTORY prefix must be plain relative paths.
- Checksums: an input may carry ``sha256`` (or a ``#sha256=<hex>`` URL fragment); a mismatch
  fails the input. Every file output records its sha256 and size.
- Limits: a per-task total (``max_bytes``, per direction) and an optional per-file limit
  (``max_file_bytes``); the error names the file and the limit.
- Resumption: http(s), S3 and hub downloads land in ``.<name>.part`` next to the destination;
  a dropped connection is retried with a ranged request continuing the part file (``If-Range``
  / ``IfMatch`` guard against a changed source), and a part left by an earlier call for the same
  URL is continued too.

The modules:

- inputs.py, outputs.py: `stage_in` and `stage_out`, the part every scheme shares; filesets.py
  the outputs that are sets of files (wildcard outputs, DIRECTORY outputs to the blob store) and
  the limits on their logs;
- scheme.py: the interface of one URL scheme; registry.py maps URL schemes to the modules that
  implement it: file.py, http.py (http and https), s3.py, blobs.py (``cpnet://blobs/``);
- download.py: resumable downloads (the part file, retries), shared by the remote schemes;
- paths.py (task paths and their safety rules), landing.py (files landing whole, hashed),
  limits.py (`Budget`, defaults), records.py (`Transfer`, progress), context.py (one call's
  settings and state; `Remote`), urls.py, errors.py (`StagingError`).

httpx and boto3 are imported only when a transfer needs them: the runner imports this package
and must start fast.
"""

from cpnet.agent.staging.context import Remote
from cpnet.agent.staging.errors import StagingError
from cpnet.agent.staging.filesets import match_files
from cpnet.agent.staging.inputs import stage_in
from cpnet.agent.staging.outputs import stage_out
from cpnet.agent.staging.paths import safe_rel, task_path
from cpnet.agent.staging.records import Transfer
from cpnet.agent.staging.urls import shown

__all__ = [
    "Remote",
    "StagingError",
    "Transfer",
    "match_files",
    "safe_rel",
    "shown",
    "stage_in",
    "stage_out",
    "task_path",
]
