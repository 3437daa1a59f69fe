"""Domain errors: a stable code, an HTTP status, a message that says what to do, maybe a field."""

from __future__ import annotations

import base64
import secrets


class DomainError(Exception):
    """Base of every error the hub reports to a caller; one handler maps it to HTTP."""

    status = 400
    code = "bad_request"

    def __init__(
        self, message: str, *, field: str | None = None, code: str | None = None, **extra: object
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.extra = extra  # more machine-readable keys of the error body (e.g. `accepted`)
        if code:
            self.code = code


class Invalid(DomainError):
    status = 400
    code = "invalid"


class Unauthorized(DomainError):
    status = 401
    code = "unauthorized"


class Forbidden(DomainError):
    status = 403
    code = "forbidden"


class NotFound(DomainError):
    status = 404
    code = "not_found"


class Conflict(DomainError):
    status = 409
    code = "conflict"


class PaymentRequired(DomainError):
    """Money is short: a hold or a debit would take an account below its floor (its credit
    limit) or past a spending limit. The message names the shortfall and how to cover it."""

    status = 402
    code = "insufficient_funds"


# Crockford base32, lowercase, in the order of the RFC 4648 base32 alphabet it replaces.
_TO_CROCKFORD = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789abcdefghjkmnpqrstvwxyz"
)


def new_id(prefix: str) -> str:
    """A random, URL-safe object id such as `tsk_5k2x…` (80 bits of randomness: 10 random bytes
    are 16 base32 characters; one call to the OS's random source, where choosing the characters
    one by one cost 16 and was a quarter of a 1,000-task batch's CPU)."""
    return (
        prefix + "_" + base64.b32encode(secrets.token_bytes(10)).translate(_TO_CROCKFORD).decode()
    )
