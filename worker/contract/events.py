"""HIS events (input) as pydantic models, and their mapping to platform transactions. Pure.

Which event asks for which transCode, and in which work queue, is the registry's table
(protocol/registry.py); this module validates and prepares events against it.

An event is `{"eventId", "type", "occurredAt", "data"}`; `data` carries the transaction's
request fields with the spec's own names. `hospitalId` and `cityCode` default from settings
when the transaction has them and the HIS left them out. The worker owns platformSeqId, dates
and signing, so an event never carries an envelope field.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from worker.contract.identifiers import event_id_or_none, event_type_or_none, printable
from worker.errors import FieldError, InvalidEvent, UnknownEventType, ValidationFailed
from worker.protocol import registry

# The event catalogue lives in the registry, one event per transCode; these names stay
# importable from here, the HIS contract's module.
from worker.protocol.registry import EVENT_TYPES, EventType
from worker.protocol.registry import WorkClass as WorkClass  # the HIS contract names it

#: fields the worker fills from settings when the transaction has them and the event does not
DEFAULTED_FIELDS = ("hospitalId", "cityCode")
#: JSON nested deeper than this is refused before anything walks it recursively
MAX_DEPTH = 32
#: trace keys the ledger indexes, when present in an event's data or a platform answer
TRACE_KEYS = ("orderId", "trialId", "treatmentSerialNo", "queryId", "origOrderId", "settleDate")


class Event(BaseModel):
    """The envelope every HIS event shares."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # the same shape as identifiers.EVENT_ID_PATTERN, spelt for the JSON Schema
    eventId: str = Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")
    type: str
    occurredAt: AwareDatetime
    data: dict[str, Any]

    @property
    def event_type(self) -> EventType:
        return EVENT_TYPES[self.type]


@dataclass(frozen=True)
class PreparedEvent:
    """A valid event, its business payload validated against its transaction."""

    event: Event
    trans_code: str
    business: dict[str, Any]  # the wire dict, defaults filled
    payload_hash: str
    business_key: str | None
    keys: dict[str, str]


def read_identity(body: bytes) -> tuple[str | None, str | None]:
    """eventId and type of an otherwise invalid body, each only when it is well-formed (it
    may go into an AMQP header, a routing key, SQL or a log line: contract/identifiers.py)."""
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None, None
    if not isinstance(parsed, dict):
        return None, None
    return event_id_or_none(parsed.get("eventId")), event_type_or_none(parsed.get("type"))


def parse_event(body: bytes) -> Event:
    """Bytes off the queue -> Event; InvalidEvent names every problem."""
    parsed = load_object(body)
    try:
        event = Event.model_validate(parsed)
    except ValidationError as exc:
        errors = _field_errors(exc)
        raise InvalidEvent("event does not match the event schema", errors) from None
    if event.type not in EVENT_TYPES:
        raise UnknownEventType(
            f"unknown event type {printable(event.type)!r}",
            (FieldError("type", "unknown event type"),),
        )
    return event


def load_object(body: bytes) -> dict[str, Any]:
    """UTF-8 JSON object, nested at most MAX_DEPTH levels, no NUL in any key or string.

    Depth is bounded before anything walks the value recursively (pydantic, json.dumps for
    the ledger): 5,000 levels raised RecursionError. NUL is refused because PostgreSQL
    cannot store it in text or jsonb, and no field of the spec has a use for it."""
    try:
        parsed = json.loads(body)
    except RecursionError:
        raise InvalidEvent(f"event body is nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidEvent(f"event body is not UTF-8 JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise InvalidEvent("event body is not a JSON object")
    problem = _shape_problem(parsed)
    if problem is not None:
        path, message = problem
        raise InvalidEvent(f"event body refused: {path}: {message}", (FieldError(path, message),))
    return parsed


def _shape_problem(value: Any) -> tuple[str, str] | None:
    """The first (path, problem) of depth or NUL, walking iteratively (no recursion)."""
    stack: list[tuple[Any, str, int]] = [(value, "", 1)]
    while stack:
        item, path, depth = stack.pop()
        where = printable(path, 120) or "(event)"
        if depth > MAX_DEPTH:
            return where, f"nested deeper than {MAX_DEPTH} levels"
        if isinstance(item, str) and "\x00" in item:
            return where, "contains a NUL character"
        children = (
            item.items()
            if isinstance(item, dict)
            else enumerate(item)
            if isinstance(item, list)
            else ()
        )
        for key, child in children:
            if isinstance(key, str) and "\x00" in key:
                return where, "has a key with a NUL character"
            name = printable(str(key), 40)
            stack.append((child, f"{path}.{name}" if path else name, depth + 1))
    return None


def prepare(event: Event, *, hospital_id: str, city_code: str) -> PreparedEvent:
    """Validate `data` as the transaction's request, defaults filled; InvalidEvent if not."""
    event_type = event.event_type
    transaction = registry.get_transaction(event_type.trans_code)
    data = _with_defaults(event.data, transaction, hospital_id, city_code)
    try:
        model = registry.validate_request(event_type.trans_code, data)
    except ValidationFailed as exc:
        errors = tuple(FieldError(f"data.{e.field}", e.message) for e in exc.errors)
        message = f"event data is not a valid {transaction.trans_code} request"
        raise InvalidEvent(message, errors) from None
    business = registry.to_wire(model)
    key_field = transaction.business_key
    return PreparedEvent(
        event=event,
        trans_code=transaction.trans_code,
        business=business,
        payload_hash=payload_hash(business),
        business_key=f"{transaction.trans_code}:{business[key_field]}" if key_field else None,
        keys=trace_keys(business),
    )


def _with_defaults(
    data: Mapping[str, Any], transaction: registry.Transaction, hospital_id: str, city_code: str
) -> dict[str, Any]:
    fields = transaction.request.model_fields
    defaults = {"hospitalId": hospital_id, "cityCode": city_code}
    filled = dict(data)
    for name in DEFAULTED_FIELDS:
        if name in fields and filled.get(name) in (None, ""):
            filled[name] = defaults[name]
    return filled


def payload_hash(business: Mapping[str, Any]) -> str:
    """Same business payload <=> same hash, whatever the key order the HIS used."""
    canonical = json.dumps(business, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def trace_keys(data: Mapping[str, Any]) -> dict[str, str]:
    return {k: str(data[k]) for k in TRACE_KEYS if isinstance(data.get(k), str | int) and data[k]}


def _field_errors(exc: ValidationError) -> tuple[FieldError, ...]:
    """pydantic's messages never quote the input; a key from the body is printable()d."""
    return tuple(
        FieldError(printable(".".join(str(p) for p in err["loc"]), 120) or "(event)", err["msg"])
        for err in exc.errors()
    )


def occurred_now(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds")
