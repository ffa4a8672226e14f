"""An in-memory broker with RabbitMQ's semantics that matter here (for the demo and tests).

Topic and default exchanges, durable-looking queues, per-queue and per-message TTL with
dead-lettering (how the retry queues work), prefetch, ack/nack with requeue and the
`redelivered` flag, publisher confirms, and requeue of unacked messages when a connection
closes. Like dramatiq's StubBroker: no network, same code paths above it.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import BrokerUnavailable
from ..messages import Delivery, Outgoing
from ..topology import Topology
from . import ConfirmCallback, DeliveryCallback


@dataclass
class _Stored:
    message: Outgoing
    routing_key: str
    expires_at: float | None
    redelivered: bool = False


@dataclass
class _Queue:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    messages: deque[_Stored] = field(default_factory=deque)


def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: `*` is one word, `#` zero or more."""
    parts = []
    for word in pattern.split("."):
        parts.append(r"[^.]+" if word == "*" else r".*" if word == "#" else re.escape(word))
    regex = r"\.".join(parts).replace(r".*\.", r"(?:.*\.)?").replace(r"\..*", r"(?:\..*)?")
    return re.fullmatch(regex, routing_key) is not None


class MemoryBroker:
    """The shared broker; each MemoryTransport is one connection to it."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Condition()
        self._queues: dict[str, _Queue] = {}
        self._exchanges: dict[str, list[tuple[str, str]]] = {}  # name -> [(pattern, queue)]
        self.down = False  # tests flip this to simulate an outage

    # --- administration ---------------------------------------------------------------------

    def declare(self, topology: Topology) -> None:
        with self._lock:
            for exchange in topology.exchanges:
                self._exchanges.setdefault(exchange.name, [])
            for queue in topology.queues:
                self.declare_queue(queue.name, dict(queue.arguments))
                for binding in queue.bindings:
                    self.bind(queue.name, binding.exchange, binding.routing_key)

    def declare_queue(self, name: str, arguments: dict[str, Any] | None = None) -> None:
        with self._lock:
            self._queues.setdefault(name, _Queue(name, arguments or {}))

    def bind(self, queue: str, exchange: str, pattern: str) -> None:
        with self._lock:
            bindings = self._exchanges.setdefault(exchange, [])
            if (pattern, queue) not in bindings:
                bindings.append((pattern, queue))

    def depth(self, queue: str) -> int:
        with self._lock:
            self._expire()
            return len(self._queues[queue].messages)

    def get(self, queue: str) -> Delivery | None:
        """Take one message, auto-acked (for a test HIS reading results or a DLQ tool)."""
        with self._lock:
            self._expire()
            messages = self._queues[queue].messages
            return _delivery(messages.popleft(), queue, None) if messages else None

    def publish(self, message: Outgoing) -> None:
        with self._lock:
            self._route(message, message.exchange, message.routing_key)
            self._lock.notify_all()

    # --- internals (lock held) --------------------------------------------------------------

    def _route(self, message: Outgoing, exchange: str, routing_key: str) -> None:
        if exchange == "":
            targets = [routing_key] if routing_key in self._queues else []
        else:
            bindings = self._exchanges.get(exchange, [])
            targets = sorted({q for pattern, q in bindings if topic_matches(pattern, routing_key)})
        for name in targets:
            self._enqueue(self._queues[name], message, routing_key)

    def _enqueue(self, queue: _Queue, message: Outgoing, routing_key: str) -> None:
        ttls = [message.expiration_ms, queue.arguments.get("x-message-ttl")]
        ttl = min((t for t in ttls if t is not None), default=None)
        expires = None if ttl is None else self._clock() + ttl / 1000
        queue.messages.append(_Stored(message, routing_key, expires))

    def _expire(self) -> None:
        now = self._clock()
        for queue in list(self._queues.values()):
            # like RabbitMQ, only the head of a queue expires
            while queue.messages and (queue.messages[0].expires_at or now + 1) <= now:
                self._dead_letter(queue, queue.messages.popleft())

    def _dead_letter(self, queue: _Queue, stored: _Stored) -> None:
        exchange = queue.arguments.get("x-dead-letter-exchange")
        if exchange is None:
            return  # dropped, as RabbitMQ does without a dead-letter exchange
        key = queue.arguments.get("x-dead-letter-routing-key", stored.routing_key)
        message = replace(stored.message, expiration_ms=None)
        self._route(message, exchange, key)

    def _take(self, queue: str) -> _Stored | None:
        self._expire()
        messages = self._queues[queue].messages
        return messages.popleft() if messages else None

    def _requeue(self, queue: str, stored: _Stored) -> None:
        stored.redelivered = True
        stored.expires_at = None
        self._queues[queue].messages.appendleft(stored)
        self._lock.notify_all()


class MemoryTransport:
    """One connection to a MemoryBroker, owned by one thread like an AMQP connection."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker
        self._connected = False
        self._consuming: list[str] = []
        self._prefetch = 0
        self._on_delivery: DeliveryCallback | None = None
        self._confirm: ConfirmCallback | None = None
        self._unacked: dict[int, tuple[str, _Stored]] = {}
        self._tags = itertools.count(1)
        self._seq = 0
        self._pending_confirms: list[int] = []
        self._woken = False  # guarded by broker._lock

    @property
    def connected(self) -> bool:
        return self._connected and not self.broker.down

    def connect(self) -> None:
        if self.broker.down:
            raise BrokerUnavailable("in-memory broker is down")
        self._connected = True

    def declare(self, topology: Topology) -> None:
        self._check()
        self.broker.declare(topology)

    def consume(self, queues: list[str], prefetch: int, on_delivery: DeliveryCallback) -> None:
        self._check()
        self._consuming, self._prefetch, self._on_delivery = list(queues), prefetch, on_delivery

    def cancel(self) -> None:
        self._consuming = []

    def on_confirm(self, callback: ConfirmCallback) -> None:
        self._confirm = callback

    def publish(self, message: Outgoing) -> int:
        self._check()
        self.broker.publish(message)
        self._seq += 1
        self._pending_confirms.append(self._seq)
        return self._seq

    def ack(self, tag: object) -> None:
        self._check()
        self._unacked.pop(tag, None)  # type: ignore[call-overload]

    def nack(self, tag: object, requeue: bool) -> None:
        self._check()
        entry = self._unacked.pop(tag, None)  # type: ignore[call-overload]
        if entry and requeue:
            with self.broker._lock:
                self.broker._requeue(*entry)

    def poll(self, timeout: float) -> None:
        self._check()
        self._flush_confirms()
        if not self._deliver_some():
            with self.broker._lock:
                if not self._woken:
                    self.broker._lock.wait(timeout)
                self._woken = False
            self._deliver_some()

    def wake(self) -> None:
        with self.broker._lock:
            self._woken = True
            self.broker._lock.notify_all()

    def close(self) -> None:
        with self.broker._lock:
            for queue, stored in self._unacked.values():
                self.broker._requeue(queue, stored)
        self._unacked.clear()
        self._connected = False

    def _check(self) -> None:
        if not self.connected:
            raise BrokerUnavailable("in-memory broker connection is down")

    def _flush_confirms(self) -> None:
        pending, self._pending_confirms = self._pending_confirms, []
        for seq in pending:
            if self._confirm:
                self._confirm(seq, False, True)

    def _deliver_some(self) -> bool:
        delivered = False
        for queue in self._consuming:
            while self._prefetch == 0 or len(self._unacked) < self._prefetch:
                with self.broker._lock:
                    stored = self.broker._take(queue)
                if stored is None:
                    break
                tag = next(self._tags)
                self._unacked[tag] = (queue, stored)
                assert self._on_delivery is not None
                self._on_delivery(_delivery(stored, queue, tag))
                delivered = True
        return delivered


def _delivery(stored: _Stored, queue: str, tag: int | None) -> Delivery:
    message = stored.message
    return Delivery(
        body=message.body, routing_key=stored.routing_key, headers=dict(message.headers),
        message_id=message.message_id, correlation_id=message.correlation_id,
        redelivered=stored.redelivered, queue=queue, tag=tag,
    )  # fmt: skip
