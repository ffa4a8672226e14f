"""Broker transports: one interface, a RabbitMQ implementation and an in-memory one.

A transport is owned by ONE thread (py-amqp is not thread-safe): the consumer engine's I/O
thread. Handlers running in the pool never touch it; they hand their Disposition back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from worker.broker.messages import Delivery, Outgoing
from worker.broker.topology import Topology

DeliveryCallback = Callable[[Delivery], None]
ConfirmCallback = Callable[[int, bool, bool], None]  # (publish seq no, multiple, acked)


class Transport(Protocol):
    """What the engine needs from a broker connection."""

    def connect(self) -> None: ...

    def declare(self, topology: Topology) -> None:
        """Declare exchanges, queues and bindings; TopologyConflict when one exists with
        other arguments (RabbitMQ's 406)."""

    def consume(self, queues: list[str], prefetch: int, on_delivery: DeliveryCallback) -> None: ...

    def cancel(self) -> None:
        """Stop receiving new deliveries (drain on shutdown, pause while the ledger is down);
        deliveries already received stay unacked until acked or nacked. consume() again
        resumes."""

    def on_confirm(self, callback: ConfirmCallback) -> None: ...

    def publish(self, message: Outgoing) -> int:
        """Publish with a confirm to come; returns the publish sequence number. Raises
        UnpublishableMessage, having sent nothing, for a message AMQP cannot carry (a short
        string over 255 bytes, a header value of no AMQP type); BrokerUnavailable when the
        connection is gone."""

    def ack(self, tag: object) -> None: ...

    def nack(self, tag: object, requeue: bool) -> None:
        """Return the delivery to its queue (requeue), or let the queue dead-letter it."""

    def poll(self, timeout: float) -> None:
        """Process incoming frames (deliveries, confirms) and heartbeats for up to `timeout`;
        returns early when something arrived or `wake()` was called."""

    def wake(self) -> None:
        """Cut a poll() short, from any thread (a handler finished: its result waits to be
        published). A wake while no poll runs cuts the next one short."""

    def close(self) -> None: ...

    @property
    def connected(self) -> bool: ...
