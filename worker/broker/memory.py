"""An in-memory broker with RabbitMQ's semantics that matter here (for the demo and tests).

Topic, fanout and default exchanges, alternate exchanges, durable-looking queues, per-queue
and per-message TTL with dead-lettering (how the retry queues work), prefetch, ack/nack with
requeue and the `redelivered` flag, quorum queues' `x-delivery-count` and `x-delivery-limit`
(dead-lettered with reason `delivery_limit`), reject without requeue dead-lettered (`rejected`),
RabbitMQ's x-death headers, publisher confirms, requeue of unacked messages when a connection
closes, and the same refusal of messages AMQP cannot encode (UnpublishableMessage). Like
dramatiq's StubBroker: no network, same code paths above it.

This module is the broker's state; a connection to it (MemoryTransport, the Transport the
engine drives) is worker/broker/memory_transport.py.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from worker.broker.declaring import declare_topology
from worker.broker.messages import Delivery, Outgoing, QueuedMessage
from worker.broker.topology import Exchange, Topology


@dataclass
class StoredMessage:
    """A message on a queue (or held by a connection, unacked) with what the broker knows of it."""

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
    messages: deque[StoredMessage] = field(default_factory=deque)

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
        self._unsettled = 0  # deliveries handed to a consumer, not yet acked or nacked
        self._consumed: set[str] = set()  # every queue a consumer has asked for
        self._held: dict[int, tuple[str, StoredMessage]] = {}  # hold(): tag -> (queue, message)
        self._held_tags = itertools.count(1)

    # --- administration ---------------------------------------------------------------------

    def declare(self, topology: Topology) -> None:
        with self._lock:  # reentrant: the whole topology appears at once to other threads
            declare_topology(topology, self)

    def declare_exchange(self, exchange: Exchange) -> None:
        with self._lock:
            self._exchanges.setdefault(exchange.name, [])
            self._exchange_kinds.setdefault(exchange.name, exchange)

    def declare_queue(
        self, name: str, arguments: Mapping[str, Any] | None = None, durable: bool = True
    ) -> None:
        """`durable` is accepted for the Declarer interface: every queue here lives as long
        as the broker object."""
        with self._lock:
            self._queues.setdefault(name, _Queue(name, dict(arguments or {})))

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
            return as_delivery(messages.popleft(), queue, None, source.quorum) if messages else None

    def publish(self, message: Outgoing) -> None:
        with self._lock:
            self._route(message, message.exchange, message.routing_key)
            self._lock.notify_all()

    def arguments(self, queue: str) -> dict[str, Any]:
        with self._lock:
            return dict(self._queues[queue].arguments)

    # --- browsing without losing a message (the ops tools' basic.get without ack) ----------

    def hold(self, queue: str, limit: int | None = None) -> list[QueuedMessage]:
        """Take the ready messages (at most `limit`), each held unacked until settle()."""
        with self._lock:
            taken: list[QueuedMessage] = []
            while (limit is None or len(taken) < limit) and (stored := self._take(queue)):
                tag = next(self._held_tags)
                self._held[tag] = (queue, stored)
                self._unsettled += 1  # join() waits for it like for a consumer's delivery
                taken.append(_queued(as_delivery(stored, queue, tag, self._queues[queue].quorum)))
            return taken

    def settle(self, tag: int, requeue: bool) -> None:
        """A held message acked (gone) or, with `requeue`, given back to its queue."""
        with self._lock:
            queue, stored = self._held.pop(tag)
            self._unsettled -= 1
            if requeue:
                self._requeue(queue, stored)
            self._lock.notify_all()

    def has_queue(self, name: str) -> bool:
        with self._lock:
            return name in self._queues

    def routes(self, exchange: str, routing_key: str) -> bool:
        """Whether a message published so would reach a queue (AMQP's `mandatory`)."""
        with self._lock:
            return bool(self._targets(exchange, routing_key))

    # --- waiting for idle (tests) -----------------------------------------------------------

    def join(self, timeout: float) -> None:
        """Return once every published message has been consumed and settled: no delivery
        unacked, no message left on a consumed queue, none waiting out a TTL (a retry comes
        back). Messages at rest on queues nobody consumes (results, dead letters) are settled.
        Raises TimeoutError naming what is still busy. Tests wait on this, not on sleeps; what
        an engine does after its ack (on_confirmed, in its pool) is not the broker's to see."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while busy := self._busy():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"broker not idle after {timeout} s: {', '.join(busy)}")
                self._lock.notify_all()  # _busy() may have expired messages onto work queues
                self._lock.wait(min(left, self._next_expiry(), 0.25))

    def _busy(self) -> list[str]:
        self._expire()
        busy = [f"{self._unsettled} unsettled deliveries"] if self._unsettled else []
        for queue in self._queues.values():
            waiting = any(m.expires_at is not None for m in queue.messages)
            if queue.messages and (queue.name in self._consumed or waiting):
                busy.append(f"{queue.name} holds {len(queue.messages)}")
        return busy

    def _next_expiry(self) -> float:
        """Seconds until the first message's TTL runs out (only queue heads expire)."""
        heads = [q.messages[0].expires_at for q in self._queues.values() if q.messages]
        times = [t for t in heads if t is not None]
        return max(0.0, min(times) - self._clock()) if times else float("inf")

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
        targets = sorted(
            {q for pattern, q in bindings if fanout or topic_matches(pattern, routing_key)}
        )
        alternate = kind.arguments.get("alternate-exchange")
        if not targets and isinstance(alternate, str) and hops < 8:  # 8: a cycle ends
            return self._targets(alternate, routing_key, hops + 1)
        return targets

    def _enqueue(self, queue: _Queue, message: Outgoing, routing_key: str, exchange: str) -> None:
        ttls = [message.expiration_ms, queue.arguments.get("x-message-ttl")]
        ttl = min((t for t in ttls if t is not None), default=None)
        expires = None if ttl is None else self._clock() + ttl / 1000
        queue.messages.append(StoredMessage(message, routing_key, expires, exchange=exchange))

    def _expire(self) -> None:
        now = self._clock()
        for queue in list(self._queues.values()):
            # like RabbitMQ, only the head of a queue expires
            while queue.messages and (queue.messages[0].expires_at or now + 1) <= now:
                self._dead_letter(queue, queue.messages.popleft(), "expired")

    def _dead_letter(self, queue: _Queue, stored: StoredMessage, reason: str) -> None:
        exchange = queue.arguments.get("x-dead-letter-exchange")
        if exchange is None:
            return  # dropped, as RabbitMQ does without a dead-letter exchange
        key = queue.arguments.get("x-dead-letter-routing-key", stored.routing_key)
        headers = _with_death(stored, queue.name, reason)
        message = replace(stored.message, expiration_ms=None, headers=headers)
        self._route(message, exchange, key)

    def _take(self, queue: str) -> StoredMessage | None:
        self._expire()
        messages = self._queues[queue].messages
        return messages.popleft() if messages else None

    def _requeue(self, queue: str, stored: StoredMessage) -> None:
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

    def _reject(self, queue: str, stored: StoredMessage) -> None:
        self._dead_letter(self._queues[queue], stored, "rejected")
        self._lock.notify_all()


def as_delivery(
    stored: StoredMessage, queue: str, tag: int | None, quorum: bool = False
) -> Delivery:
    """What a consumer (or basic.get) receives for a stored message."""
    message = stored.message
    headers = dict(message.headers)
    if quorum and stored.returns:  # a quorum queue's redeliveries carry it (RabbitMQ 3.10+)
        headers["x-delivery-count"] = stored.returns
    return Delivery(
        body=message.body,
        routing_key=stored.routing_key,
        headers=headers,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        redelivered=stored.redelivered,
        queue=queue,
        tag=tag,
        exchange=stored.exchange,
    )


def _queued(delivery: Delivery) -> QueuedMessage:
    properties = {"message_id": delivery.message_id, "correlation_id": delivery.correlation_id}
    return QueuedMessage(
        delivery.tag,
        delivery.body,
        delivery.routing_key,
        dict(delivery.headers),
        {k: v for k, v in properties.items() if v is not None},
    )


def _with_death(stored: StoredMessage, queue: str, reason: str) -> dict[str, Any]:
    """The headers RabbitMQ adds when it dead-letters: x-death (one entry per queue and
    reason, counted, newest first) and the x-first-death-* of the first time."""
    headers = {k: v for k, v in stored.message.headers.items() if k != "x-delivery-count"}
    deaths = [dict(d) for d in headers.get("x-death", []) if isinstance(d, dict)]
    same = next((d for d in deaths if d.get("queue") == queue and d.get("reason") == reason), None)
    if same is not None:
        deaths.remove(same)
        same["count"] = int(same.get("count", 0)) + 1
    else:
        same = {
            "count": 1,
            "reason": reason,
            "queue": queue,
            "exchange": stored.exchange,
            "routing-keys": [stored.routing_key],
        }
    same["time"] = datetime.now(UTC).replace(microsecond=0, tzinfo=None)
    headers["x-death"] = [same, *deaths]
    headers.setdefault("x-first-death-reason", reason)
    headers.setdefault("x-first-death-queue", queue)
    headers.setdefault("x-first-death-exchange", stored.exchange)
    return headers
