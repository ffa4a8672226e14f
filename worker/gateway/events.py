"""What the gateway hands the HIS, and what it reads back from it. Pure.

A verified platform call becomes one message on the durable topic exchange `platform.events`:

    {"eventId", "type", "occurredAt", "transCode", "platformSeqId", "data": {business fields}}

`type` is the routing key. `eventId` is the HIS's idempotency key and is deterministic, so a
message published twice (a confirm lost on the way back, the platform re-sending after a
9999) carries the same eventId both times:

* HIS00004 (claim-result.notified): derived from the notification's content, so the platform
  re-sending it under a new platformSeqId is recognised (the ledger remembers published ids);
* HIS00002 and HIS00003: derived from the platformSeqId (each request is its own event).

HIS00003 is a request-reply: the HIS answers `{"treatmentList": [...]}` or `{"error": "..."}`
to the message's reply_to; `visits_answer` turns that reply into the platform's answer.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from worker.contract.identifiers import printable
from worker.errors import ValidationFailed
from worker.gateway.verify import OK, UNKNOWN_ERROR
from worker.protocol import registry
from worker.protocol.envelope import OpenedRequest

PLATFORM_EXCHANGE = "platform.events"
AUTHORIZATION_RECEIVED = "authorization.received"
VISITS_REQUESTED = "visits.requested"
CLAIM_RESULT_NOTIFIED = "claim-result.notified"
#: transCode -> the message type (= routing key) the HIS binds to
ROUTES = {
    "HIS00002": AUTHORIZATION_RECEIVED,
    "HIS00003": VISITS_REQUESTED,
    "HIS00004": CLAIM_RESULT_NOTIFIED,
}
#: rtCode for an HIS that answers HIS00003 with {"error": ...}: a business failure (spec 2.1)
BUSINESS_FAILURE = "1000"

PlatformEventType = Literal["authorization.received", "visits.requested", "claim-result.notified"]


class PlatformEvent(BaseModel):
    """A platform => hospital call, verified and decrypted, as the HIS receives it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    eventId: str = Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")
    type: PlatformEventType
    occurredAt: AwareDatetime
    transCode: Literal["HIS00002", "HIS00003", "HIS00004"]
    platformSeqId: str = Field(pattern=r"^[0-9A-Za-z]{10,40}$")
    data: dict[str, Any]


@dataclass(frozen=True)
class Handoff:
    """One message for `platform.events`, ready for a publisher."""

    event_id: str
    routing_key: str
    trans_code: str
    body: bytes
    expects_reply: bool  # HIS00003: published with reply_to and a correlation_id


def derived_event_id(request: OpenedRequest) -> str:
    return event_id_for(request.trans_code, request.platform_seq_id, request.business)


def event_id_for(trans_code: str, platform_seq_id: str, business: dict[str, Any]) -> str:
    if trans_code == "HIS00004":
        # canonical (sorted keys): the platform's field order may differ from one send to the next
        canonical = json.dumps(business, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:40]
        return f"HIS00004-{digest}"
    return f"{trans_code}-{platform_seq_id}"


def handoff(request: OpenedRequest, *, received_at: datetime) -> Handoff:
    """The message for a verified request; `received_at` is the gateway's clock."""
    event = PlatformEvent(
        eventId=derived_event_id(request),
        type=ROUTES[request.trans_code],  # type: ignore[arg-type] - the three served codes
        occurredAt=received_at,
        transCode=request.trans_code,  # type: ignore[arg-type]
        platformSeqId=request.platform_seq_id,
        data=request.business,
    )
    body = event.model_dump_json().encode("utf-8")
    return Handoff(
        event.eventId, event.type, request.trans_code, body, request.trans_code == "HIS00003"
    )


@dataclass(frozen=True)
class Answer:
    """What the gateway tells the platform after the HIS side: rtCode, rtMsg, business."""

    rt_code: str
    rt_msg: str
    business: dict[str, Any] | None = None


def accepted_answer(request: OpenedRequest) -> Answer:
    """HIS00002/HIS00004 once the message is confirmed (spec 3.1.2 and 3.1.4 responses)."""
    if request.trans_code == "HIS00004":
        return Answer(OK, "success", {"treatmentSerialNo": request.business["treatmentSerialNo"]})
    # HIS00002: status and msg are conditional and the spec gives no codes: the shared
    # example's (models/examples.py), docs/protocol-notes.md
    return Answer(OK, "success", {"status": OK, "msg": "接收成功"})


def visits_answer(reply: bytes) -> Answer:
    """The platform's answer to HIS00003 from the HIS's reply (never raises)."""
    try:
        parsed = json.loads(reply)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return Answer(UNKNOWN_ERROR, "the hospital system answered with something not JSON")
    if not isinstance(parsed, dict):
        return Answer(UNKNOWN_ERROR, "the hospital system answered with something not an object")
    if "error" in parsed and "treatmentList" not in parsed:
        return Answer(BUSINESS_FAILURE, printable(parsed["error"], 200))
    try:
        model = registry.validate_response("HIS00003", parsed)
    except ValidationFailed as exc:
        # 9999, not 1000: the fault is ours (our HIS), the platform may ask again later
        named = ", ".join(sorted({error.field for error in exc.errors})) or "(payload)"
        return Answer(UNKNOWN_ERROR, f"the hospital system's answer is invalid: {named}"[:200])
    return Answer(OK, "success", registry.to_wire(model))
