"""Verifying the platform's request, on the raw body, before anything else happens. Pure.

The order is the issue's (and cheapest first): JSON structure, platformId (unknown -> 4104),
time window (HUIMIN_MAX_CLOCK_SKEW_S, outside -> 4000), signature (constant time, bad ->
4000), decryption and the transaction's model (bad -> 4000, the field named in rtMsg). The
time is checked before the signature so that a flood of stale envelopes costs no SM3/SM4
work. A replayed platformSeqId (4008) needs the ledger: the service checks it after this.

Every outcome is a value, never an exception: a `Refusal` carries the rtCode, the rtMsg and
the metric `cause`; an `Accepted` carries the opened request. rtMsg never quotes a business
value (ids, names) nor more than a bounded, printable piece of an envelope field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from worker.clock import CHINA_TZ
from worker.contract.identifiers import printable
from worker.errors import (
    BadPlaintext,
    ClockSkew,
    DecryptionError,
    EnvelopeError,
    MissingField,
    SignatureError,
    ValidationFailed,
)
from worker.protocol import envelope, registry

Cause = Literal["skew", "signature", "replay", "platformId", "malformed"]
CAUSES: tuple[Cause, ...] = ("skew", "signature", "replay", "platformId", "malformed")

OK = "0000"
BAD_MESSAGE = "4000"
DUPLICATE_SEQ_ID = "4008"
UNKNOWN_PLATFORM = "4104"
UNKNOWN_ERROR = "9999"

#: the platform => hospital calls the gateway serves (3.1.1 was abolished in v2.7)
INBOUND_CODES = ("HIS00002", "HIS00003", "HIS00004")
#: spec 2.2: unique per request, 10-40 letters and digits; it reaches SQL, logs and AMQP
_SEQ_ID = re.compile(r"[0-9A-Za-z]{10,40}")
_DATE, _TIME = re.compile(r"\d{8}"), re.compile(r"\d{6}")


@dataclass(frozen=True)
class Refusal:
    rt_code: str
    rt_msg: str
    cause: Cause
    trans_code: str | None = None  # when the envelope named a served one


@dataclass(frozen=True)
class Accepted:
    request: envelope.OpenedRequest


def verify(
    body: bytes, *, credentials: envelope.Credentials, now: datetime, max_skew: timedelta
) -> Accepted | Refusal:
    """Check one request body; `now` is the gateway's clock (timezone-aware)."""
    fields = _json_object(body)
    if isinstance(fields, Refusal):
        return fields
    header = _plain_header(fields, credentials, now, max_skew)
    if isinstance(header, Refusal):
        return header
    try:
        opened = envelope.open_request(fields, credentials=credentials, now=now, max_skew=max_skew)
    except EnvelopeError as exc:
        return _envelope_refusal(exc, header)
    try:
        registry.validate_request(opened.trans_code, opened.business)
    except ValidationFailed as exc:
        named = ", ".join(sorted({error.field for error in exc.errors})) or "(payload)"
        return Refusal(
            BAD_MESSAGE,
            f"{opened.trans_code} fields invalid: {named}"[:200],
            "malformed",
            opened.trans_code,
        )
    return Accepted(opened)


def refusal_envelope(refusal: Refusal, credentials: envelope.Credentials) -> dict[str, str]:
    """The signed answer to a refused request (no encData: nothing of ours to say)."""
    return envelope.seal_response(refusal.rt_code, refusal.rt_msg, None, credentials=credentials)


def _json_object(body: bytes) -> dict[str, Any] | Refusal:
    try:  # the C decoder raises RecursionError on absurd nesting: caught, not fatal
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return Refusal(BAD_MESSAGE, "envelope is not JSON (UTF-8)", "malformed")
    if not isinstance(parsed, dict):
        return Refusal(BAD_MESSAGE, "envelope is not a JSON object", "malformed")
    return parsed


@dataclass(frozen=True)
class _Header:
    trans_code: str | None  # the transCode, when it is one the gateway serves


def _plain_header(
    fields: Mapping[str, Any], credentials: envelope.Credentials, now: datetime, max_skew: timedelta
) -> _Header | Refusal:
    """The unsigned checks: who is calling, which call, when, and a usable platformSeqId."""
    platform_id = fields.get("platformId")
    if not isinstance(platform_id, str):
        return Refusal(BAD_MESSAGE, "envelope field 'platformId' is missing", "malformed")
    if platform_id != credentials.platform_id:
        return Refusal(
            UNKNOWN_PLATFORM, f"unknown platformId {printable(platform_id, 40)}", "platformId"
        )
    trans_code = fields.get("transCode")
    served = trans_code if trans_code in INBOUND_CODES else None
    sent_at = _sent_at(fields)
    if sent_at is None:
        return Refusal(
            BAD_MESSAGE,
            "platformTransDate/platformTransTime must be yyyyMMdd and HHmmss",
            "malformed",
            served,
        )
    if abs(now - sent_at) > max_skew:
        seconds = int(max_skew.total_seconds())
        return Refusal(
            BAD_MESSAGE,
            f"platformTransDate/platformTransTime is more than {seconds}"
            " s from the hospital's clock",
            "skew",
            served,
        )
    if served is None:
        return Refusal(
            BAD_MESSAGE, f"transCode {printable(trans_code, 40)} is not served here", "malformed"
        )
    seq_id = fields.get("platformSeqId")
    if not isinstance(seq_id, str) or not _SEQ_ID.fullmatch(seq_id):
        return Refusal(
            BAD_MESSAGE, "platformSeqId must be 10-40 letters and digits", "malformed", served
        )
    return _Header(served)


def _sent_at(fields: Mapping[str, Any]) -> datetime | None:
    date, time = fields.get("platformTransDate"), fields.get("platformTransTime")
    if not (isinstance(date, str) and isinstance(time, str)):
        return None
    if not (_DATE.fullmatch(date) and _TIME.fullmatch(time)):
        return None
    try:
        return datetime.strptime(date + time, "%Y%m%d%H%M%S").replace(tzinfo=CHINA_TZ)
    except ValueError:  # 20261399: digits, but no such day
        return None


def _envelope_refusal(exc: EnvelopeError, header: _Header) -> Refusal:
    code = header.trans_code
    if isinstance(exc, SignatureError | DecryptionError):
        # a wrong key shows as bad padding as often as a bad signature: both mean "not
        # signed by the platform we share the secret with"
        return Refusal(
            BAD_MESSAGE, "signData does not verify (wrong key or tampered)", "signature", code
        )
    if isinstance(exc, ClockSkew):
        return Refusal(BAD_MESSAGE, "the request time is outside the window", "skew", code)
    if isinstance(exc, MissingField):
        return Refusal(BAD_MESSAGE, f"envelope field {exc.field!r} is missing", "malformed", code)
    if isinstance(exc, BadPlaintext):
        return Refusal(BAD_MESSAGE, "encData is not a JSON object", "malformed", code)
    return Refusal(BAD_MESSAGE, printable(str(exc), 160), "malformed", code)
