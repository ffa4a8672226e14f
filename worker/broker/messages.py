"""Broker-neutral messages: what the consumer receives and what the processor asks it to send."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Delivery:
    """One message taken off a work queue."""

    body: bytes
    routing_key: str
    headers: Mapping[str, Any] = field(default_factory=dict)
    message_id: str | None = None
    correlation_id: str | None = None
    redelivered: bool = False
    queue: str = ""
    tag: Any = None  # the broker's handle for ack/nack; opaque to the processor
    #: the exchange it was published to: "his.events" for the HIS's own messages, "" for the
    #: worker's retries (dead-lettered back from a retry queue) and replays
    exchange: str = ""


@dataclass(frozen=True)
class Outgoing:
    """One message to publish with a confirm."""

    exchange: str
    routing_key: str
    body: bytes
    headers: Mapping[str, Any] = field(default_factory=dict)
    message_id: str | None = None
    correlation_id: str | None = None
    expiration_ms: int | None = None
    content_type: str = "application/json"
    #: where the consumer's answer goes (the gateway's direct reply-to for HIS00003)
    reply_to: str | None = None
    #: the AMQP `type` property (the gateway sets it to the routing key)
    type: str | None = None


@dataclass(frozen=True)
class QueuedMessage:
    """One message taken (not yet acked) with basic.get: what the operator's dead-letter tools
    read. `properties` are the AMQP basic properties other than the headers (message_id,
    correlation_id, expiration, timestamp...), as the broker handed them over."""

    tag: int
    body: bytes
    routing_key: str
    headers: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Disposition:
    """What to do with a delivery: publish `messages` (all confirmed), then ack.

    With `requeue` nothing is published and nothing was decided: a dependency (the ledger) is
    down. The engine holds the delivery unacked and pauses consuming until it is back.
    `on_confirmed` runs after every confirm arrived.
    The optional fields after `label` only describe what happened, for logs and metrics; the
    consumer never reads them.
    """

    messages: tuple[Outgoing, ...] = ()
    requeue: bool = False
    on_confirmed: Callable[[], None] | None = None
    event_id: str | None = None
    event_type: str | None = None
    label: str = ""  # what happened, for logs and metrics: succeeded, retry, dead_lettered...
    outcome: str | None = None  # succeeded | failed | unknown: a result this delivery decided
    reason: str | None = None  # the dead-letter reason (x-huimin-reason), when dead-lettered
    retry: int | None = None  # the retry number scheduled (1 = first retry), when retried
    trans_code: str | None = None  # the platform transaction, if one applies
    occurred_at: datetime | None = None  # the event's occurredAt, when a result was decided
    attempts: int | None = None  # platform calls made for the event, when a result is published
    reconciliation: str | None = None  # what this step's status query said (money calls)

    @property
    def finished_as(self) -> str:
        """How the delivery finished, one word for logs and the metrics' `outcome` label: the
        outcome it decided, else what it did (retry, requeued, republished, dead_lettered)."""
        return self.outcome or self.label or "other"


#: headers RabbitMQ sets when it dead-letters or redelivers: its own bookkeeping, never copied
#: onto a message we publish (carried over, they confuse that bookkeeping)
BROKER_HEADER_PREFIXES = ("x-death", "x-first-death", "x-last-death", "x-delivery")


def without_broker_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in headers.items() if not k.startswith(BROKER_HEADER_PREFIXES)}


def int_header(headers: Mapping[str, Any], name: str) -> int:
    """A counter carried in a header: 0 when absent, negative or unreadable."""
    try:
        return max(0, int(headers.get(name, 0)))
    except (TypeError, ValueError):
        return 0
