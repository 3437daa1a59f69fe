"""Which scheme moves which URLs: the one place that maps a URL scheme to its implementation."""

from __future__ import annotations

from cpnet.agent.staging.blobs import Blobs
from cpnet.agent.staging.file import File
from cpnet.agent.staging.http import Http
from cpnet.agent.staging.s3 import S3

TYPE_CHECKING = False  # not typing's: the runner imports this package and must start fast
if TYPE_CHECKING:
    from cpnet.agent.staging.scheme import Scheme

SCHEMES: dict[str, type[Scheme]] = {
    "file": File,
    "http": Http,
    "https": Http,
    "s3": S3,
    "cpnet": Blobs,  # cpnet://blobs/ (any other cpnet:// URL is refused by its checks)
}
