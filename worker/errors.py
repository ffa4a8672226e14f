"""The one error tree of huimin-worker, split by what the caller does next.

    HuiminError
    ├── RetryLater               nothing was processed; safe to try again later
    │   ├── PlatformUnavailable  connection refused/reset before sending, 503 before processing
    │   ├── BrokerUnavailable    RabbitMQ unreachable
    │   │   ├── NotRouted            gateway/publisher.py: returned by RabbitMQ, no queue bound
    │   │   └── _StaleLink           gateway/publisher.py: a pooled link died idle; retried at once
    │   ├── LedgerUnavailable    SQLite/PostgreSQL unreachable or locked
    │   ├── LeaseLost            no live lease on the event: nothing was sent; back off
    │   └── HospitalUnavailable  sandbox/simulator/notify.py: the hospital's endpoint is unreachable
    ├── OutcomeUnknown           may have been processed: reconcile by status query, never re-send
    ├── GiveUp                   permanent: dead-letter with a reason, publish a `failed` result
    │   ├── ConfigurationError   our settings are wrong (bad secret length, rtCode 4104): alert
    │   │   ├── TopologyConflict     RabbitMQ holds a queue/exchange with other arguments (406)
    │   │   ├── LedgerClaimed        another worker on the vhost holds the SQLite ledger claim
    │   │   ├── PlatformConfigError  platform/attempts.py: rtCode 4104, HTTP 4xx (carries rt_code)
    │   │   └── FaultPlanError       sandbox/simulator/faults.py: a fault plan that is not valid
    │   ├── UnpublishableMessage a message AMQP cannot carry (a >255-byte message_id/routing key)
    │   ├── HandlerFailed        a handler raised unexpectedly, retries used up (handler_error)
    │   ├── PlatformRejected     a definitive business rejection (rtCode 0001/0002/1000/5501/...)
    │   ├── InvalidEvent         an HIS event that is not JSON, nested too deep, or off-schema
    │   │   ├── EventTooLarge        a body over HUIMIN_MAX_EVENT_BYTES
    │   │   ├── UnknownEventType     a type no binding routes (alternate exchange) or we don't know
    │   │   └── InvalidCopy          an invalid delivery under an eventId held as a valid event
    │   ├── ValidationFailed     business fields that break the spec (carries field errors)
    │   ├── StatementError       a statement file that cannot be parsed (names the line)
    │   ├── LedgerScanTooLarge   statement/job.py: more ledger events than one run may read
    │   ├── RecheckRefused       ops/recheck.py: `reconcile` of an event that is not `unknown`
    │   ├── UnknownTransaction   a transCode the registry does not know
    │   ├── AbolishedTransaction a transCode the spec has abolished (HOS00015)
    │   └── EnvelopeError        an envelope that cannot be trusted or read
    │       ├── MalformedEnvelope    not a JSON object / wrong field types
    │       │   └── MissingField     a mandatory envelope field is absent
    │       ├── SignatureError
    │       │   ├── MissingSignature     signData absent or empty
    │       │   └── SignatureMismatch    signData does not match (compared in constant time)
    │       ├── DecryptionError
    │       │   ├── NotHex               encData is not hexadecimal
    │       │   ├── BadCiphertextLength  truncated: not a whole number of SM4 blocks
    │       │   └── BadPadding           PKCS#7 padding wrong (usually the wrong key)
    │       ├── BadPlaintext         decrypted bytes are not UTF-8 JSON
    │       └── ClockSkew            an inbound request's time is too far from ours
    └── CallerError              a caller broke an interface's contract: a bug to fix, not a case
        ├── UnknownEvent         ledger/base.py: no such eventId in the ledger (a LookupError)
        ├── UnknownAttempt       ledger/base.py: no such attempt in the ledger (a LookupError)
        └── DuplicateSeqId       ledger/base.py: a platformSeqId used twice (a ValueError)

A class defined outside this module names its file. A handler that lets a CallerError (or any
exception outside the tree) escape is a bug: the engine retries the delivery and dead-letters
it `handler_error` (pipeline/poison.py). tests/test_errors.py keeps this drawing complete.

Internal exceptions, outside the tree on purpose: each is raised and caught in its own module,
as control flow, and never escapes it:

    platform/client.py  _Resend     tenacity's signal to resend an attempt; carries its HuiminError
    gateway/app.py      _TooLarge   stop reading a request body over the limit (answered 413)
    gateway/app.py      _Gone       the client left before its body arrived (nobody to answer)

Third-party exceptions (httpx, kombu, sqlite3, psycopg) are converted at the boundary that
calls them; nothing outside that boundary catches them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    """One business field that failed validation; `field` is a dotted path (feeList.0.payId)."""

    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class HuiminError(Exception):
    """Root of every error raised by huimin-worker."""

    #: short machine-readable reason, used as the dead-letter reason and a metric label
    reason: str = "error"


class RetryLater(HuiminError):
    """Nothing was processed; the same work may be tried again after a delay."""

    reason = "retry_later"


class PlatformUnavailable(RetryLater):
    reason = "platform_unavailable"


class BrokerUnavailable(RetryLater):
    reason = "broker_unavailable"


class LedgerUnavailable(RetryLater):
    reason = "ledger_unavailable"


class LeaseLost(RetryLater):
    """start_attempt refused: the caller no longer holds a live lease on the event (another
    replica took it, or it ran out). Nothing was recorded or sent."""

    reason = "lease_lost"


class OutcomeUnknown(HuiminError):
    """The platform may have processed the request: reconcile with a status query."""

    reason = "outcome_unknown"


class GiveUp(HuiminError):
    """Permanent failure: dead-letter with this reason and publish a `failed` result."""

    reason = "give_up"


class ConfigurationError(GiveUp):
    reason = "configuration_error"


class TopologyConflict(ConfigurationError):
    """RabbitMQ refused to redeclare a queue or exchange (406 PRECONDITION_FAILED): it exists
    with other arguments, e.g. declared by an older version. Migrate it (docs/deployment.md)."""

    reason = "topology_conflict"


class LedgerClaimed(ConfigurationError):
    """Another worker on this vhost holds the SQLite ledger claim: a SQLite ledger is private
    to one process, and two of them would each believe an event new and charge it twice."""

    reason = "ledger_claimed"


class UnpublishableMessage(GiveUp):
    """The transport cannot encode a message (an AMQP short string over 255 bytes, a header
    value of no AMQP type): nothing was sent. Raised by both transports alike."""

    reason = "unpublishable"


class HandlerFailed(GiveUp):
    """A handler raised something it should not (outside this tree, or a CallerError),
    retries used up: a bug or a poison message (RecursionError, a driver's DataError).
    Carries the exception's text."""

    reason = "handler_error"


class PlatformRejected(GiveUp):
    """A definitive answer from the platform that the request was refused."""

    reason = "platform_rejected"

    def __init__(self, rt_code: str, rt_msg: str, data: dict | None = None) -> None:
        super().__init__(f"platform rejected the request: rtCode={rt_code} rtMsg={rt_msg}")
        self.rt_code = rt_code
        self.rt_msg = rt_msg
        self.data = data


class InvalidEvent(GiveUp):
    reason = "invalid_event"

    def __init__(self, message: str, errors: tuple[FieldError, ...] = ()) -> None:
        super().__init__(message)
        self.errors = errors


class EventTooLarge(InvalidEvent):
    reason = "too_large"


class UnknownEventType(InvalidEvent):
    reason = "unknown_type"


class InvalidCopy(InvalidEvent):
    """Only its reason is used: the dead-letter reason of an invalid copy (refusals.py)."""

    reason = "invalid_copy"


class ValidationFailed(GiveUp):
    """Business fields break the spec; `errors` names each field."""

    reason = "validation_failed"

    def __init__(self, message: str, errors: tuple[FieldError, ...] = ()) -> None:
        super().__init__(message)
        self.errors = errors


class StatementError(GiveUp):
    reason = "statement_malformed"

    def __init__(self, message: str, line_number: int | None = None) -> None:
        prefix = f"line {line_number}: " if line_number is not None else ""
        super().__init__(prefix + message)
        self.line_number = line_number


class EnvelopeError(GiveUp):
    reason = "envelope_error"


class MalformedEnvelope(EnvelopeError):
    reason = "malformed_envelope"


class MissingField(MalformedEnvelope):
    reason = "missing_field"

    def __init__(self, field: str) -> None:
        super().__init__(f"envelope field {field!r} is missing")
        self.field = field


class SignatureError(EnvelopeError):
    reason = "signature_error"


class MissingSignature(SignatureError):
    reason = "missing_signature"


class SignatureMismatch(SignatureError):
    reason = "signature_mismatch"


class DecryptionError(EnvelopeError):
    reason = "decryption_error"


class NotHex(DecryptionError):
    reason = "not_hex"


class BadCiphertextLength(DecryptionError):
    reason = "bad_ciphertext_length"


class BadPadding(DecryptionError):
    reason = "bad_padding"


class BadPlaintext(EnvelopeError):
    reason = "bad_plaintext"


class ClockSkew(EnvelopeError):
    reason = "clock_skew"


class UnknownTransaction(GiveUp):
    reason = "unknown_transaction"


class AbolishedTransaction(GiveUp):
    reason = "abolished_transaction"


class CallerError(HuiminError):
    """A caller broke an interface's contract (asked the ledger for an id it does not hold):
    a bug to fix, not a condition to handle. Nothing catches it on purpose; a handler that
    lets one escape is retried and dead-lettered `handler_error` like any other bug."""

    reason = "caller_error"
