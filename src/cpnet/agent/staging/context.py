"""One staging call's settings and state, which the schemes it uses share; `Remote`, the settings
that come from outside the task spec (the agent's options, the runner's environment)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cpnet.agent.staging.registry import SCHEMES

TYPE_CHECKING = False  # not typing's: the runner imports this package and must start fast
if TYPE_CHECKING:
    from cpnet.agent.staging.limits import Budget
    from cpnet.agent.staging.records import Progress
    from cpnet.agent.staging.scheme import Scheme
    from cpnet.crypto.datakey import Sealer
    from cpnet.limits.ssrf import UrlRule


@dataclass(frozen=True, slots=True)
class Remote:
    """Where remote URLs point and how to authenticate there (not part of the task spec).

    S3 credentials are not here: boto3 reads them from the runner's environment
    (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, which the backend sets from the agent's
    options when given) or its usual chain (``~/.aws``, instance metadata).
    """

    s3_endpoint: str | None = None  # None: AWS_ENDPOINT_URL(_S3) or AWS itself
    s3_region: str | None = None  # None: AWS_REGION / AWS_DEFAULT_REGION, else us-east-1
    hub_url: str | None = None  # for cpnet://blobs/ URLs
    hub_token: str | None = None  # the agent's site token (reads and writes blobs)
    attempt_id: str | None = None  # blob uploads are a task's outputs: the hub grants its org
    # The SSRF rule for http(s) inputs and outputs (cpnet.limits.ssrf); None: no guard, for
    # callers that stage trusted URLs as a library. The agent's runner always passes one.
    url_rule: UrlRule | None = None


@dataclass(slots=True)
class Context:
    """A `stage_in` or `stage_out` call: its limits and settings, and the schemes it has used."""

    files_dir: Path
    budget: Budget
    timeout_s: float
    file_roots: Sequence[Path] | None  # the host paths file:// may reach (None: any)
    remote: Remote  # Remote() when the caller gave none
    retries: int
    progress: Progress | None
    # The task's data key (crypto/datakey.py): inputs marked encrypted are decrypted with it.
    sealer: Sealer | None = None
    many_files: int = 0  # output file logs of wildcard and blob-DIRECTORY outputs so far
    log_bytes: int = 0  # their size as JSON (they travel in one update to the hub)
    # One instance per scheme for the whole call: an S3 client is made once, when first needed.
    schemes: dict[str, Scheme] = field(default_factory=dict)

    def scheme(self, name: str) -> Scheme | None:
        """The scheme that moves `name` URLs (as `urls.scheme_of` gives it), or None if none."""
        if name not in self.schemes:
            cls = SCHEMES.get(name)
            if cls is None:
                return None
            self.schemes[name] = cls(self)
        return self.schemes[name]
