"""Compute identifiers (``cn.gd.acme.sz1.gpu1.i8``), their check character, and signed records."""

from cpnet.ident.grammar import (
    ComputeId,
    IdentifierError,
    IdType,
    check_character,
    is_valid,
    make,
    parse,
)
from cpnet.ident.keys import SigningKey, jwks, verify
from cpnet.ident.labels import slug_label, unique_label
from cpnet.ident.records import (
    VerifyResult,
    canonical_json,
    sign_record,
    tombstone,
    verify_envelope,
)

__all__ = [
    "ComputeId",
    "IdType",
    "IdentifierError",
    "SigningKey",
    "VerifyResult",
    "canonical_json",
    "check_character",
    "is_valid",
    "jwks",
    "make",
    "parse",
    "sign_record",
    "slug_label",
    "tombstone",
    "unique_label",
    "verify",
    "verify_envelope",
]
