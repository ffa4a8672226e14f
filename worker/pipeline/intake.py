"""The one intake path of an event body: read, bound, parse, validate, admit. Pure.

The worker (processor.py) and `dlq replay` (ops/replay.py) both take a body through here, so
they can never disagree about what is a valid event:

    read      the routing key it travelled with: the x-huimin-routing-key header is believed
              only on the worker's own messages (retries, replays and sweeps arrive through the
              default exchange); what came through his.events keeps its own routing key
    bound     at most HUIMIN_MAX_EVENT_BYTES                          -> too_large
    parse     a UTF-8 JSON object, nested at most MAX_DEPTH, no NUL   -> invalid_event
    validate  the event envelope, a type the worker knows             -> invalid_event, unknown_type
    admit     the routing key and the work queue are the type's; `data` is a valid request of
              the type's transaction                                   -> invalid_event

A refused body gets its reason (InvalidEvent.reason) and, through `identity`, the eventId and
type it names when they are well-formed: only then is a `failed` result published for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from worker.broker.messages import Delivery

#: the payload_hash of an event recorded as refused (no valid payload to hash); dlq replay
#: the payload_hash of an event recorded as refused (no valid payload to hash); dlq replay
#: the payload_hash of an event recorded as refused (no valid payload to hash); dlq replay
from worker.broker.topology import EVENTS_EXCHANGE, H_ROUTING_KEY, UNROUTABLE_QUEUE, work_queue_for
from worker.contract import events as ev
from worker.contract.identifiers import event_id_or_none, event_type_or_none, printable
from worker.errors import EventTooLarge, FieldError, InvalidEvent, UnknownEventType
from worker.ledger.base import NewEvent
from worker.settings import Settings

#: the payload_hash of an event recorded as refused (no valid payload to hash); dlq replay
#: recognises such events by it
INVALID_PAYLOAD_HASH = "invalid"
#: how much of a refused body the ledger keeps (trace shows it; the dead letter keeps it all)
RAW_KEPT_CHARS = 4096
_SCANNED_ID = re.compile(rb'"eventId"\s*:\s*"([^"\\]{1,64})"')
_SCANNED_TYPE = re.compile(rb'"type"\s*:\s*"([^"\\]{1,64})"')


@dataclass(frozen=True)
class IntakeRules:
    """What intake needs from the settings."""

    max_bytes: int
    hospital_id: str
    city_code: str

    @classmethod
    def from_settings(cls, settings: Settings) -> IntakeRules:
        return cls(settings.max_event_bytes, settings.hospital_id, settings.city_code)


@dataclass(frozen=True)
class Identity:
    """What a refused body says it is, each part only when well-formed."""

    event_id: str | None
    event_type: str | None

    @property
    def readable(self) -> bool:
        return self.event_id is not None and self.event_type is not None


def routed_key(delivery: Delivery) -> str:
    """The routing key the event travelled with (see the module docstring)."""
    header = delivery.headers.get(H_ROUTING_KEY)
    if delivery.exchange == EVENTS_EXCHANGE or not isinstance(header, str):
        return delivery.routing_key
    return header


def admit_delivery(delivery: Delivery, rules: IntakeRules) -> ev.PreparedEvent:
    return admit(delivery.body, routed_key(delivery), delivery.queue or None, rules)


def admit(body: bytes, routed: str, queue: str | None, rules: IntakeRules) -> ev.PreparedEvent:
    """A valid event, ready for the ledger; InvalidEvent (its `reason`) says why not.

    `queue` is the queue it arrived on, None when it has not arrived on one (a replay)."""
    if len(body) > rules.max_bytes:
        raise EventTooLarge(
            f"event body of {len(body)} bytes is over the limit of "
            f"{rules.max_bytes} (HUIMIN_MAX_EVENT_BYTES)"
        )
    if queue == UNROUTABLE_QUEUE:
        raise UnknownEventType(
            f"no work queue is bound to routing key {printable(routed)!r} on {EVENTS_EXCHANGE}: "
            "publish with the event type as routing key (README, 'Events')",
            (FieldError("type", "no work queue is bound to this routing key"),),
        )
    event = ev.parse_event(body)
    _check_route(event, routed, queue)
    return ev.prepare(event, hospital_id=rules.hospital_id, city_code=rules.city_code)


def _check_route(event: ev.Event, routed: str, queue: str | None) -> None:
    """The body's type must be the routing key it was published with, and it must arrive on
    its type's work queue: otherwise a payment could travel on the claims queue, or one
    transaction be run for another."""
    if routed != event.type:
        message = f"event type {event.type!r} was published with routing key {printable(routed)!r}"
        raise InvalidEvent(message, (FieldError("type", message),))
    expected = work_queue_for(event.type)
    if queue is not None and queue != expected:
        message = f"event type {event.type!r} arrived on {printable(queue)}, not {expected}"
        raise InvalidEvent(message, (FieldError("type", message),))


def identity(body: bytes, rules: IntakeRules) -> Identity:
    """The eventId and type a refused body names, when they can be read safely. A body over
    the limit is not parsed: it is scanned, and believed only when it names each once."""
    if len(body) > rules.max_bytes:
        return _scanned_identity(body)
    return Identity(*ev.read_identity(body))


def _scanned_identity(body: bytes) -> Identity:
    ids, types = _SCANNED_ID.findall(body), _SCANNED_TYPE.findall(body)
    if len(ids) != 1 or len(types) != 1:
        return Identity(None, None)
    return Identity(event_id_or_none(_text(ids[0])), event_type_or_none(_text(types[0])))


def _text(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def kept_raw(body: bytes) -> dict[str, object]:
    """What the ledger keeps of a refused body: its start, NUL-free, and its size."""
    prefix = body[: RAW_KEPT_CHARS * 4]  # a UTF-8 character has at most 4 bytes
    text = prefix.decode("utf-8", "replace")
    kept: dict[str, object] = {
        "raw": text[:RAW_KEPT_CHARS].replace("\x00", "\ufffd"),
        "bytes": len(body),
    }
    if len(prefix) < len(body) or len(text) > RAW_KEPT_CHARS:
        kept["truncated"] = True
    return kept


def describe(exc: InvalidEvent) -> str:
    """One line for the dead letter's x-huimin-error: the message and each field error."""
    details = "; ".join(f"{e.field}: {e.message}" for e in exc.errors)
    return f"{exc}" + (f" ({details})" if details else "")


def new_event(
    prepared: ev.PreparedEvent,
    at: datetime,
    *,
    owner: str | None = None,
    lease_until: datetime | None = None,
) -> NewEvent:
    """An admitted event as the ledger records it (leased to `owner` when given)."""
    return NewEvent(
        event_id=prepared.event.eventId,
        event_type=prepared.event.type,
        trans_code=prepared.trans_code,
        payload=prepared.event.model_dump(mode="json"),
        payload_hash=prepared.payload_hash,
        business_key=prepared.business_key,
        keys=prepared.keys,
        received_at=at,
        lease_owner=owner,
        lease_until=lease_until,
    )
