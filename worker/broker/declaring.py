"""Turning a Topology (data) into declarations: the one walk over it, for every broker.

The worker's transport, the in-memory broker and the reference HIS each declared the topology
with a loop of their own; they now hand `declare_topology` something with three methods. The
order matters on RabbitMQ: exchanges first (his.events names its alternate exchange, which
must exist), then each queue and its bindings (a binding needs both ends).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from worker.broker.topology import Exchange, Topology


class Declarer(Protocol):
    """What a broker offers to be declared on (positional: the implementations name the
    parameters their own way)."""

    def declare_exchange(self, exchange: Exchange, /) -> None: ...

    def declare_queue(self, name: str, arguments: Mapping[str, Any], durable: bool, /) -> None: ...

    def bind(self, queue: str, exchange: str, routing_key: str, /) -> None: ...


def declare_topology(topology: Topology, declarer: Declarer) -> None:
    for exchange in topology.exchanges:
        declarer.declare_exchange(exchange)
    for queue in topology.queues:
        declarer.declare_queue(queue.name, queue.arguments, queue.durable)
        for binding in queue.bindings:
            declarer.bind(queue.name, binding.exchange, binding.routing_key)


class ChannelDeclarer:
    """The Declarer of a py-amqp channel. Nothing is auto-deleted: the worker's queues and
    exchanges outlive every connection. RabbitMQ answers a redeclaration with other arguments
    with 406 PRECONDITION_FAILED, raised to the caller as py-amqp raises it."""

    def __init__(self, channel: Any) -> None:
        self._channel = channel

    def declare_exchange(self, exchange: Exchange) -> None:
        self._channel.exchange_declare(
            exchange.name,
            exchange.type,
            durable=exchange.durable,
            auto_delete=False,
            arguments=dict(exchange.arguments),
        )

    def declare_queue(self, name: str, arguments: Mapping[str, Any], durable: bool = True) -> None:
        self._channel.queue_declare(
            name, durable=durable, auto_delete=False, arguments=dict(arguments)
        )

    def bind(self, queue: str, exchange: str, routing_key: str) -> None:
        self._channel.queue_bind(queue, exchange, routing_key)
