"""Broker-neutral messages <-> py-amqp messages: the one mapping, both directions. Pure.

The worker's transport (broker/amqp.py), the operator's dead-letter tools (ops/broker.py), the
in-memory broker (which refuses what AMQP cannot encode) and the reference HIS all go through
these functions, so a property one of them carries, every one carries: two hand-written copies
had drifted (the operator's replays lost correlation_id, expiration and content_encoding).

Nothing here opens a socket: an `amqp.Message` is plain data until a channel sends it.
"""

from __future__ import annotations

from typing import Any

import amqp
from amqp.serialization import dumps

from worker.broker.messages import Delivery, Outgoing, QueuedMessage
from worker.errors import UnpublishableMessage

#: every message the worker publishes survives a broker restart
PERSISTENT = 2
#: the bodies are JSON text: UTF-8, as the AsyncAPI document says (contentEncoding)
CONTENT_ENCODING = "utf-8"


def to_amqp(message: Outgoing) -> amqp.Message:
    """The AMQP message for `message`: body, headers and every basic property it sets."""
    props: dict[str, Any] = {
        "content_type": message.content_type,
        "content_encoding": CONTENT_ENCODING,
        "delivery_mode": PERSISTENT,
        "application_headers": dict(message.headers),
    }
    # absent rather than empty: an empty message_id or correlation_id names nothing
    if message.message_id:
        props["message_id"] = message.message_id
    if message.correlation_id:
        props["correlation_id"] = message.correlation_id
    if message.expiration_ms is not None:
        props["expiration"] = str(message.expiration_ms)  # AMQP carries it as a string
    if message.reply_to:
        props["reply_to"] = message.reply_to
    if message.type:
        props["type"] = message.type
    return amqp.Message(message.body, **props)


def encodable(message: Outgoing) -> amqp.Message:
    """The message as py-amqp will send it, or UnpublishableMessage when AMQP cannot carry it:
    a routing key, exchange, message_id or correlation_id over 255 bytes (py-amqp raises
    struct.error), a header value of no AMQP type (FrameSyntaxError, which would otherwise
    pass for a lost connection). Encoded here the way py-amqp's basic.publish encodes it, so
    the failure comes before anything is written and the connection stays usable. The
    in-memory transport calls this too: both refuse the same messages."""
    try:
        raw = to_amqp(message)
        dumps("Bssbb", (0, message.exchange, message.routing_key, False, False))
        raw._serialize_properties()
    except Exception as exc:  # noqa: BLE001 - any encoding failure means the same: unsendable
        raise UnpublishableMessage(
            f"AMQP cannot carry this message ({type(exc).__name__}: {exc}); exchange "
            f"{message.exchange!r}, routing key of {_size(message.routing_key)}, message_id of "
            f"{_size(message.message_id)}, correlation_id of {_size(message.correlation_id)}"
        ) from exc
    return raw


def to_delivery(message: amqp.Message, queue: str) -> Delivery:
    """What a consumer hands the processor for a message taken off `queue`."""
    props = message.properties
    info = message.delivery_info
    return Delivery(
        body=body_bytes(message),
        routing_key=info.get("routing_key", ""),
        headers=dict(props.get("application_headers") or {}),
        message_id=props.get("message_id"),
        correlation_id=props.get("correlation_id"),
        redelivered=bool(info.get("redelivered")),
        queue=queue,
        tag=info.get("delivery_tag"),
        exchange=info.get("exchange") or "",
    )


def to_queued(message: amqp.Message) -> QueuedMessage:
    """A message taken with basic.get, for the dead-letter tools: the headers apart, every
    other property kept as the broker handed it over."""
    props = dict(message.properties)
    headers = dict(props.pop("application_headers", None) or {})
    info = message.delivery_info
    return QueuedMessage(
        info["delivery_tag"], body_bytes(message), info.get("routing_key", ""), headers, props
    )


def body_bytes(message: amqp.Message) -> bytes:
    """The body as bytes: a channel with auto_decode hands a body published with a
    content_encoding back as str."""
    body = message.body
    return body if isinstance(body, bytes) else str(body).encode()


def _size(value: str | None) -> str:
    return "none" if value is None else f"{len(value.encode('utf-8', 'replace'))} bytes"
