"""The HIS side of the contract, for the demo, tests and benchmarks: publish events, read results.

A hospital's own HIS does the same with its own AMQP client; this is the reference of how.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote

import amqp

from .messages import Delivery, Outgoing
from .topology import DEAD_LETTER_QUEUE, EVENTS_EXCHANGE, RESULTS_EXCHANGE, Topology
from .transport.memory import MemoryBroker


@dataclass(frozen=True)
class ReceivedResult:
    routing_key: str
    correlation_id: str | None
    body: dict[str, Any]


def event_message(event: dict[str, Any] | bytes, routing_key: str | None = None,
                  message_id: str | None = None) -> Outgoing:  # fmt: skip
    """An event as the HIS publishes it: to his.events, routing key = type, message_id = id."""
    if isinstance(event, bytes):
        return Outgoing(EVENTS_EXCHANGE, routing_key or "", event, message_id=message_id)
    body = json.dumps(event, ensure_ascii=False).encode("utf-8")
    return Outgoing(EVENTS_EXCHANGE, routing_key or event["type"], body,
                    message_id=message_id or event.get("eventId"))  # fmt: skip


class HisSide(Protocol):
    def publish(self, event: dict[str, Any] | bytes, routing_key: str | None = None) -> None: ...

    def next_result(self, timeout: float = 10.0) -> ReceivedResult: ...

    def dead_letters(self) -> list[Delivery]: ...

    def close(self) -> None: ...


class MemoryHis:
    def __init__(self, broker: MemoryBroker, topology: Topology, name: str = "his") -> None:
        self.broker = broker
        self.queue = f"{name}.results"
        broker.declare(topology)
        broker.declare_queue(self.queue)
        broker.bind(self.queue, RESULTS_EXCHANGE, "#")

    def publish(self, event: dict[str, Any] | bytes, routing_key: str | None = None) -> None:
        self.broker.publish(event_message(event, routing_key))

    def next_result(self, timeout: float = 10.0) -> ReceivedResult:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            delivery = self.broker.get(self.queue)
            if delivery is not None:
                return ReceivedResult(delivery.routing_key, delivery.correlation_id,
                                      json.loads(delivery.body))
            time.sleep(0.005)
        raise TimeoutError(f"no result within {timeout} s")

    def dead_letters(self) -> list[Delivery]:
        letters = []
        while (delivery := self.broker.get(DEAD_LETTER_QUEUE)) is not None:
            letters.append(delivery)
        return letters

    def close(self) -> None:
        pass


class AmqpHis:
    """A tiny HIS over py-amqp: confirmed publishes, results read with basic_get."""

    def __init__(self, url: str, topology: Topology, name: str = "his") -> None:
        from kombu.utils.url import url_to_parts

        parts = url_to_parts(url)
        host = f"{parts.hostname or 'localhost'}:{parts.port or 5672}"
        self.conn = amqp.Connection(
            host, userid=parts.username or "guest",
            password=parts.password or "guest", virtual_host=unquote(parts.path or "/"),
            confirm_publish=True,
        )  # fmt: skip
        self.conn.connect()
        self.channel = self.conn.channel()
        self.queue = f"{name}.results"
        _declare(self.channel, topology)
        self.channel.queue_declare(self.queue, durable=True, auto_delete=False,
                                   arguments={"x-queue-type": "quorum"})  # fmt: skip
        self.channel.queue_bind(self.queue, RESULTS_EXCHANGE, "#")

    def publish(self, event: dict[str, Any] | bytes, routing_key: str | None = None) -> None:
        message = event_message(event, routing_key)
        props: dict[str, Any] = {"content_type": "application/json", "delivery_mode": 2}
        if message.message_id:
            props["message_id"] = message.message_id
        self.channel.basic_publish(amqp.Message(message.body, **props),
                                   exchange=message.exchange, routing_key=message.routing_key)

    def next_result(self, timeout: float = 10.0) -> ReceivedResult:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.channel.basic_get(self.queue, no_ack=True)
            if message is not None:
                props = message.properties
                return ReceivedResult(message.delivery_info["routing_key"],
                                      props.get("correlation_id"), json.loads(message.body))
            time.sleep(0.01)
        raise TimeoutError(f"no result within {timeout} s")

    def dead_letters(self) -> list[Delivery]:
        letters = []
        while (message := self.channel.basic_get(DEAD_LETTER_QUEUE, no_ack=True)) is not None:
            letters.append(Delivery(
                body=message.body, routing_key=message.delivery_info["routing_key"],
                headers=dict(message.properties.get("application_headers") or {}),
                message_id=message.properties.get("message_id"), queue=DEAD_LETTER_QUEUE,
            ))  # fmt: skip
        return letters

    def purge_all(self, topology: Topology) -> None:
        for queue in topology.queues:
            self.channel.queue_purge(queue.name)
        self.channel.queue_purge(self.queue)

    def close(self) -> None:
        self.conn.close()


def _declare(channel: Any, topology: Topology) -> None:
    # the same arguments as the worker's (his.events' alternate exchange): RabbitMQ refuses a
    # redeclaration with other arguments (406), so a real HIS declares nothing, or the same
    for exchange in topology.exchanges:
        channel.exchange_declare(exchange.name, exchange.type, durable=True, auto_delete=False,
                                 arguments=dict(exchange.arguments))  # fmt: skip
    for queue in topology.queues:
        channel.queue_declare(queue.name, durable=True, auto_delete=False,
                              arguments=dict(queue.arguments))  # fmt: skip
        for binding in queue.bindings:
            channel.queue_bind(queue.name, binding.exchange, binding.routing_key)
