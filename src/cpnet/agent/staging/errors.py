"""The one error staging raises to its callers."""


class StagingError(Exception):
    """Raised when an input or output cannot be staged; the message says which and why."""
