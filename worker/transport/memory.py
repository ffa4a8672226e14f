"""An in-memory broker with RabbitMQ's semantics that matter here (for the demo and tests).

Topic, fanout and default exchanges, alternate exchanges, durable-looking queues, per-queue
and per-message TTL with dead-lettering (how the retry queues work), prefetch, ack/nack with
requeue and the `redelivered` flag, quorum queues' `x-delivery-count` and `x-delivery-limit`
(dead-lettered with reason `delivery_limit`), reject without requeue dead-lettered (`rejected`),
RabbitMQ's x-death headers, publisher confirms, requeue of unacked messages when a connection
closes, and the same refusal of messages AMQP cannot encode (UnpublishableMessage). Like
dramatiq's StubBroker: no network, same code paths above it.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from ..errors import BrokerUnavailable
from ..messages import Delivery, Outgoing
from ..topology import Exchange, Topology
from . import ConfirmCallback, DeliveryCallback
from .amqp import encodable


@dataclass
class _Stored:
    message: Outgoing
    routing_key: str
    expires_at: float | None
    redelivered: bool = False
    exchange: str = ""  # where it was published (or dead-lettered) to
    returns: int = 0  # deliveries returned to the queue: a quorum queue's x-delivery-count


@dataclass
class _Queue:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    messages: deque[_Stored] = field(default_factory=deque)

    @property
    def quorum(self) -> bool:
        return self.arguments.get("x-queue-type") == "quorum"


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
        self._exchange_kinds: dict[str, Exchange] = {}  # type and arguments, when declared
        self.down = False  # tests flip this to simulate an outage

    # --- administration ---------------------------------------------------------------------

    def declare(self, topology: Topology) -> None:
        with self._lock:
            for exchange in topology.exchanges:
                self._exchanges.setdefault(exchange.name, [])
                self._exchange_kinds.setdefault(exchange.name, exchange)
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
            source = self._queues[queue]
            messages = source.messages
            return _delivery(messages.popleft(), queue, None, source.quorum) if messages else None

    def publish(self, message: Outgoing) -> None:
        with self._lock:
            self._route(message, message.exchange, message.routing_key)
            self._lock.notify_all()

    def arguments(self, queue: str) -> dict[str, Any]:
        with self._lock:
            return dict(self._queues[queue].arguments)

    # --- internals (lock held) --------------------------------------------------------------

    def _route(self, message: Outgoing, exchange: str, routing_key: str) -> None:
        for name in self._targets(exchange, routing_key):
            self._enqueue(self._queues[name], message, routing_key, exchange)

    def _targets(self, exchange: str, routing_key: str, hops: int = 0) -> list[str]:
        if exchange == "":
            return [routing_key] if routing_key in self._queues else []
        kind = self._exchange_kinds.get(exchange, Exchange(exchange))
        bindings = self._exchanges.get(exchange, [])
        fanout = kind.type == "fanout"
        targets = sorted({q for pattern, q in bindings
                          if fanout or topic_matches(pattern, routing_key)})  # fmt: skip
        alternate = kind.arguments.get("alternate-exchange")
        if not targets and isinstance(alternate, str) and hops < 8:  # 8: a cycle ends
            return self._targets(alternate, routing_key, hops + 1)
        return targets

    def _enqueue(self, queue: _Queue, message: Outgoing, routing_key: str,
                 exchange: str) -> None:  # fmt: skip
        ttls = [message.expiration_ms, queue.arguments.get("x-message-ttl")]
        ttl = min((t for t in ttls if t is not None), default=None)
        expires = None if ttl is None else self._clock() + ttl / 1000
        queue.messages.append(_Stored(message, routing_key, expires, exchange=exchange))

    def _expire(self) -> None:
        now = self._clock()
        for queue in list(self._queues.values()):
            # like RabbitMQ, only the head of a queue expires
            while queue.messages and (queue.messages[0].expires_at or now + 1) <= now:
                self._dead_letter(queue, queue.messages.popleft(), "expired")

    def _dead_letter(self, queue: _Queue, stored: _Stored, reason: str) -> None:
        exchange = queue.arguments.get("x-dead-letter-exchange")
        if exchange is None:
            return  # dropped, as RabbitMQ does without a dead-letter exchange
        key = queue.arguments.get("x-dead-letter-routing-key", stored.routing_key)
        headers = _with_death(stored, queue.name, reason)
        message = replace(stored.message, expiration_ms=None, headers=headers)
        self._route(message, exchange, key)

    def _take(self, queue: str) -> _Stored | None:
        self._expire()
        messages = self._queues[queue].messages
        return messages.popleft() if messages else None

    def _requeue(self, queue: str, stored: _Stored) -> None:
        """A delivery returned (nack with requeue, a connection closed): a quorum queue counts
        it and, past its x-delivery-limit, dead-letters it (as RabbitMQ 3.10+ does)."""
        target = self._queues[queue]
        stored.redelivered = True
        stored.expires_at = None
        stored.returns += 1
        limit = target.arguments.get("x-delivery-limit")
        if target.quorum and isinstance(limit, int) and stored.returns > limit:
            self._dead_letter(target, stored, "delivery_limit")
        else:
            target.messages.appendleft(stored)
        self._lock.notify_all()

    def _reject(self, queue: str, stored: _Stored) -> None:
        self._dead_letter(self._queues[queue], stored, "rejected")
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
        encodable(message)  # what RabbitMQ's client cannot send, this one refuses alike
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
        if entry:
            with self.broker._lock:
                if requeue:
                    self.broker._requeue(*entry)
                else:
                    self.broker._reject(*entry)

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
                quorum = self.broker._queues[queue].quorum
                self._on_delivery(_delivery(stored, queue, tag, quorum))
                delivered = True
        return delivered


def _delivery(stored: _Stored, queue: str, tag: int | None, quorum: bool = False) -> Delivery:
    message = stored.message
    headers = dict(message.headers)
    if quorum and stored.returns:  # a quorum queue's redeliveries carry it (RabbitMQ 3.10+)
        headers["x-delivery-count"] = stored.returns
    return Delivery(
        body=message.body, routing_key=stored.routing_key, headers=headers,
        message_id=message.message_id, correlation_id=message.correlation_id,
        redelivered=stored.redelivered, queue=queue, tag=tag, exchange=stored.exchange,
    )  # fmt: skip


def _with_death(stored: _Stored, queue: str, reason: str) -> dict[str, Any]:
    """The headers RabbitMQ adds when it dead-letters: x-death (one entry per queue and
    reason, counted, newest first) and the x-first-death-* of the first time."""
    headers = {k: v for k, v in stored.message.headers.items() if k != "x-delivery-count"}
    deaths = [dict(d) for d in headers.get("x-death", []) if isinstance(d, dict)]
    same = next((d for d in deaths if d.get("queue") == queue and d.get("reason") == reason),
                None)  # fmt: skip
    if same is not None:
        deaths.remove(same)
        same["count"] = int(same.get("count", 0)) + 1
    else:
        same = {"count": 1, "reason": reason, "queue": queue, "exchange": stored.exchange,
                "routing-keys": [stored.routing_key]}  # fmt: skip
    same["time"] = datetime.now(UTC).replace(microsecond=0, tzinfo=None)
    headers["x-death"] = [same, *deaths]
    headers.setdefault("x-first-death-reason", reason)
    headers.setdefault("x-first-death-queue", queue)
    headers.setdefault("x-first-death-exchange", stored.exchange)
    return headers
