"""Broker transports: one interface, a RabbitMQ implementation and an in-memory one.

A transport is owned by ONE thread (py-amqp is not thread-safe): the consumer engine's I/O
thread. Handlers running in the pool never touch it; they hand their Disposition back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..messages import Delivery, Outgoing
from ..topology import Topology

DeliveryCallback = Callable[[Delivery], None]
ConfirmCallback = Callable[[int, bool, bool], None]  # (publish seq no, multiple, acked)


class Transport(Protocol):
    """What the engine needs from a broker connection."""

    def connect(self) -> None: ...

    def declare(self, topology: Topology) -> None: ...

    def consume(self, queues: list[str], prefetch: int, on_delivery: DeliveryCallback) -> None: ...

    def cancel(self) -> None:
        """Stop receiving new deliveries (drain on shutdown)."""

    def on_confirm(self, callback: ConfirmCallback) -> None: ...

    def publish(self, message: Outgoing) -> int:
        """Publish with a confirm to come; returns the publish sequence number."""

    def ack(self, tag: object) -> None: ...

    def nack(self, tag: object, requeue: bool) -> None: ...

    def poll(self, timeout: float) -> None:
        """Process incoming frames (deliveries, confirms) and heartbeats for up to `timeout`;
        returns early when something arrived or `wake()` was called."""

    def wake(self) -> None:
        """Cut a poll() short, from any thread (a handler finished: its result waits to be
        published). A wake while no poll runs cuts the next one short."""

    def close(self) -> None: ...

    @property
    def connected(self) -> bool: ...
