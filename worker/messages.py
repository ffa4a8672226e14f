"""Broker-neutral messages: what the consumer receives and what the processor asks it to send."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class Disposition:
    """What to do with a delivery: publish `messages` (all confirmed), then ack.

    With `requeue` nothing is published and the delivery is returned to its queue (the ledger
    was unreachable: nothing was decided). `on_confirmed` runs after every confirm arrived.
    """

    messages: tuple[Outgoing, ...] = ()
    requeue: bool = False
    on_confirmed: Callable[[], None] | None = None
    event_id: str | None = None
    event_type: str | None = None
    label: str = ""  # what happened, for logs and metrics: succeeded, retry, dead_lettered...
