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

from worker.broker.amqp_messages import to_amqp, to_delivery
from worker.broker.declaring import ChannelDeclarer, declare_topology
from worker.broker.memory import MemoryBroker
from worker.broker.messages import Delivery, Outgoing
from worker.broker.topology import (
    DEAD_LETTER_QUEUE,
    EVENTS_EXCHANGE,
    QUORUM,
    RESULTS_EXCHANGE,
    Topology,
)


@dataclass(frozen=True)
class ReceivedResult:
    routing_key: str
    correlation_id: str | None
    body: dict[str, Any]


def event_message(
    event: dict[str, Any] | bytes, routing_key: str | None = None, message_id: str | None = None
) -> Outgoing:
    """An event as the HIS publishes it: to his.events, routing key = type, message_id = id."""
    if isinstance(event, bytes):
        return Outgoing(EVENTS_EXCHANGE, routing_key or "", event, message_id=message_id)
    body = json.dumps(event, ensure_ascii=False).encode("utf-8")
    return Outgoing(
        EVENTS_EXCHANGE,
        routing_key or event["type"],
        body,
        message_id=message_id or event.get("eventId"),
    )


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
                return ReceivedResult(
                    delivery.routing_key, delivery.correlation_id, json.loads(delivery.body)
                )
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
            host,
            userid=parts.username or "guest",
            password=parts.password or "guest",
            virtual_host=unquote(parts.path or "/"),
            confirm_publish=True,
        )
        self.conn.connect()
        self.channel = self.conn.channel()
        self.queue = f"{name}.results"
        # the same declarations as the worker's (his.events' alternate exchange): RabbitMQ
        # refuses a redeclaration with other arguments (406), so a real HIS declares nothing,
        # or the same
        declarer = ChannelDeclarer(self.channel)
        declare_topology(topology, declarer)
        declarer.declare_queue(self.queue, QUORUM, True)
        declarer.bind(self.queue, RESULTS_EXCHANGE, "#")

    def publish(self, event: dict[str, Any] | bytes, routing_key: str | None = None) -> None:
        message = event_message(event, routing_key)
        self.channel.basic_publish(
            to_amqp(message), exchange=message.exchange, routing_key=message.routing_key
        )

    def next_result(self, timeout: float = 10.0) -> ReceivedResult:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.channel.basic_get(self.queue, no_ack=True)
            if message is not None:
                result = to_delivery(message, self.queue)
                return ReceivedResult(
                    result.routing_key, result.correlation_id, json.loads(result.body)
                )
            time.sleep(0.01)
        raise TimeoutError(f"no result within {timeout} s")

    def dead_letters(self) -> list[Delivery]:
        letters = []
        while (message := self.channel.basic_get(DEAD_LETTER_QUEUE, no_ack=True)) is not None:
            letters.append(to_delivery(message, DEAD_LETTER_QUEUE))
        return letters

    def purge_all(self, topology: Topology) -> None:
        for queue in topology.queues:
            self.channel.queue_purge(queue.name)
        self.channel.queue_purge(self.queue)

    def close(self) -> None:
        self.conn.close()
