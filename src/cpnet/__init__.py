"""cpnet: an open compute power internet.

Many independent compute providers join as one network: each site runs an agent next to its
scheduler, its pools get verifiable identifiers and live state, and users submit tasks through one
interface that a network-aware scheduler places where they finish best.
"""

__version__ = "0.1.0"

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cpnet.client import Client


def __getattr__(name: str):
    # Imported on first use: the per-attempt runner imports `cpnet` and must start fast.
    if name == "Client":
        from cpnet.client import Client

        return Client
    raise AttributeError(f"module 'cpnet' has no attribute {name!r}")


__all__ = ["Client", "__version__"]
