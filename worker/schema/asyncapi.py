"""The AsyncAPI 3.0.0 document: the HIS contract's channels, operations and messages over RabbitMQ.

Kept apart from the JSON Schemas (worker.schema.json_schemas), which it only references as
payloads, because it describes the broker side: its names (exchanges, routing keys, queues,
headers) come from `worker.broker.topology`, and the inbound gateway adds its own parts
(worker.gateway.contract).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from worker import __version__
from worker.broker.topology import (
    DEAD_LETTER_QUEUE,
    EVENTS_EXCHANGE,
    H_ATTEMPTS,
    H_ERROR,
    H_REASON,
    H_ROUTING_KEY,
    H_WORK_QUEUE,
    RESULTS_EXCHANGE,
    UNROUTABLE_EXCHANGE,
    Topology,
    build_topology,
    work_queue_for,
)
from worker.contract.results import STATEMENT_RESULT_TYPE, Outcome
from worker.gateway import contract as gateway_contract
from worker.protocol import registry
from worker.protocol.registry import EVENT_TYPES
from worker.schema.json_schemas import RESULT_FILE, Schema, event_file

AMQP = "0.3.0"  # the AMQP bindings version

DEAD_LETTER_HEADERS: Mapping[str, tuple[str, str]] = {  # header -> (JSON type, meaning)
    H_REASON: ("string", "why: invalid_event, retries_exhausted, configuration_error, ..."),
    H_ERROR: ("string", "the last error, human-readable (at most 1000 characters)"),
    H_ATTEMPTS: ("integer", "platform calls made for this event"),
    H_ROUTING_KEY: ("string", "the event's original routing key (its type)"),
    H_WORK_QUEUE: ("string", "the work queue a replay should go to"),
}


def message_id(event_type: str) -> str:
    """payment.requested -> paymentRequested (AsyncAPI ids read best in camelCase)."""
    head, *rest = re.split(r"[.-]", event_type)
    return head + "".join(part.capitalize() for part in rest)


def _ref(*path: str) -> dict[str, str]:
    return {"$ref": "#/" + "/".join(path)}


def _channel_bindings(topology: Topology) -> Schema:
    """One AMQP binding per exchange and queue, referenced by the channels that use it."""
    bindings: Schema = {}
    for exchange in topology.exchanges:
        spec = {
            "name": exchange.name,
            "type": exchange.type,
            "durable": exchange.durable,
            "autoDelete": False,
            "vhost": "/",
        }
        bindings[exchange.name] = {
            "amqp": {"is": "routingKey", "exchange": spec, "bindingVersion": AMQP}
        }
    for queue in [*topology.work_queues(), topology.queue(DEAD_LETTER_QUEUE)]:
        # AMQP bindings have no queue type: x-queue-type is the declared argument itself
        spec = {
            "name": queue.name,
            "durable": queue.durable,
            "exclusive": False,
            "autoDelete": False,
            "vhost": "/",
            **queue.arguments,
        }
        bindings[queue.name] = {"amqp": {"is": "queue", "queue": spec, "bindingVersion": AMQP}}
    return bindings


def _channel(address: str, title: str, messages: Sequence[str], binding: str) -> Schema:
    return {
        "address": address,
        "title": title,
        "messages": {m: _ref("components", "messages", m) for m in messages},
        "bindings": _ref("components", "channelBindings", binding),
    }


def _channels(topology: Topology) -> Schema:
    channels = {
        f"events.{name}": _channel(
            name, f"{EVENTS_EXCHANGE} {name}", [message_id(name)], EVENTS_EXCHANGE
        )
        for name in EVENT_TYPES
    }
    for queue in topology.work_queues():
        names = [message_id(n) for n in EVENT_TYPES if work_queue_for(n) == queue.name]
        channels[queue.name] = _channel(queue.name, f"work queue {queue.name}", names, queue.name)
    channels["results"] = _channel(
        "{eventType}.{outcome}", RESULTS_EXCHANGE, ["result"], RESULTS_EXCHANGE
    )
    channels["results"]["parameters"] = {
        "eventType": {
            "enum": [*EVENT_TYPES, STATEMENT_RESULT_TYPE],
            "location": "$message.payload#/type",
            "description": "The input event's type; statement.reconciled for the "
            "daily statement reconciliation (causationId "
            "statement:YYYYMMDD, data.discrepancies).",
        },
        "outcome": {
            "enum": [o.value for o in Outcome],
            "location": "$message.payload#/outcome",
            "description": "What came of it.",
        },
    }
    channels["deadLetter"] = _channel(
        DEAD_LETTER_QUEUE,
        f"dead-letter queue {DEAD_LETTER_QUEUE}",
        ["deadLetter"],
        DEAD_LETTER_QUEUE,
    )
    return channels


def _operation(action: str, channel: str, message: str, summary: str) -> Schema:
    return {
        "action": action,
        "channel": _ref("channels", channel),
        "summary": summary,
        "messages": [_ref("channels", channel, "messages", message)],
    }


def _operations() -> Schema:
    operations = {
        "receive" + message_id(name)[0].upper() + message_id(name)[1:]: {
            **_operation(
                "receive",
                f"events.{name}",
                message_id(name),
                f"The HIS sends {name}; the worker consumes it from {work_queue_for(name)}.",
            ),
            "reply": {"channel": _ref("channels", "results")},
        }
        for name in EVENT_TYPES
    }
    operations["sendResult"] = _operation(
        "send", "results", "result", "One final result per event whose eventId and type parse."
    )
    operations["sendDeadLetter"] = _operation(
        "send", "deadLetter", "deadLetter", "Invalid events and events the worker gave up on."
    )
    return operations


def _messages() -> Schema:
    messages: Schema = {}
    for name in EVENT_TYPES:
        transaction = registry.TRANSACTIONS[EVENT_TYPES[name].trans_code]
        messages[message_id(name)] = {
            "name": name,
            "title": f"{name} ({transaction.trans_code})",
            "summary": f"The HIS asks for {transaction.trans_code}: {transaction.title}.",
            "contentType": "application/json",
            "payload": {"$ref": "./" + event_file(name)},
            "correlationId": {
                "location": "$message.payload#/eventId",
                "description": "eventId, also the AMQP message_id.",
            },
            "bindings": {"amqp": {"messageType": name, "bindingVersion": AMQP}},
        }
    messages["result"] = {
        "name": "result",
        "title": "Result",
        "summary": "The one final result of an event.",
        "contentType": "application/json",
        "payload": {"$ref": "./" + RESULT_FILE},
        "correlationId": {
            "location": "$message.header#/correlation_id",
            "description": "The input event's eventId (AMQP correlation_id).",
        },
        "bindings": {
            "amqp": {"contentEncoding": "utf-8", "messageType": "result", "bindingVersion": AMQP}
        },
    }
    headers = {h: {"type": t, "description": d} for h, (t, d) in DEAD_LETTER_HEADERS.items()}
    messages["deadLetter"] = {
        "name": "deadLetter",
        "title": "Dead-lettered event",
        "summary": "An event the worker gave up on: body unchanged, reason in the headers.",
        "contentType": "application/json",
        "headers": {"type": "object", "properties": headers, "required": list(headers)},
        "payload": {"description": "The original event body, byte for byte (maybe not JSON)."},
    }
    return messages


def document() -> Schema:
    """The whole AsyncAPI document, the worker's parts and the inbound gateway's."""
    topology = build_topology([1], 0.0)  # delays only shape the retry queues, which are internal
    return {
        "asyncapi": "3.0.0",
        "id": "urn:huimin-worker:his-contract",
        "info": {
            "title": "huimin-worker",
            "version": __version__,
            "description": "HIS events in, one result per event out, over RabbitMQ; and the "
            "platform's calls to the hospital, verified by the gateway, out on platform.events. "
            "Payloads are the JSON Schemas next to this file. The worker declares "
            f"{EVENTS_EXCHANGE} with the argument alternate-exchange={UNROUTABLE_EXCHANGE} "
            "(unroutable events are answered, not lost): publish to it without declaring it, "
            "or declare it passively; another declaration is refused by RabbitMQ (406).",
            "license": {"name": "Proprietary"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "rabbitmq": {
                "host": "localhost:5672",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "description": "RabbitMQ at HUIMIN_BROKER_URL (this host is the sandbox's).",
            },
        },
        # + the inbound gateway's exchange, platform.events (worker/gateway/contract.py)
        "channels": {**_channels(topology), **gateway_contract.channels()},
        "operations": {**_operations(), **gateway_contract.operations()},
        "components": {
            "messages": {**_messages(), **gateway_contract.messages()},
            "channelBindings": {
                **_channel_bindings(topology),
                **gateway_contract.channel_bindings(),
            },
        },
    }
