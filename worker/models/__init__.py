"""Typed business payloads for every platform transaction, and the registry that maps a
transCode to its models.

    from worker.models import get_transaction, validate_request, to_wire

Submodules: `base` (shared field types), `enums` (code lists), `payment`, `settlement`,
`claims`, `inbound` (the models), `registry`, `examples` (one valid example each).
"""

from worker.models.base import EmptyResponse, HospitalMessage, PlatformMessage
from worker.models.examples import EXAMPLES, Example
from worker.models.registry import (
    ABOLISHED,
    TRANSACTIONS,
    Transaction,
    field_errors,
    get_transaction,
    to_wire,
    validate_request,
    validate_response,
)

__all__ = [
    "ABOLISHED",
    "EXAMPLES",
    "TRANSACTIONS",
    "EmptyResponse",
    "Example",
    "HospitalMessage",
    "PlatformMessage",
    "Transaction",
    "field_errors",
    "get_transaction",
    "to_wire",
    "validate_request",
    "validate_response",
]
