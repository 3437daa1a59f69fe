"""cpnet: an open compute power internet.

Many independent compute providers join as one network: each site runs an agent next to its
scheduler, its pools get verifiable identifiers and live state, and users submit tasks through one
interface that a network-aware scheduler places where they finish best.
"""

__version__ = "0.1.0"

try:
    from cpnet.client import Client
except ImportError:  # pragma: no cover
    Client = None

__all__ = ["Client", "__version__"]
