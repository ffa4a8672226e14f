"""A connection to the in-memory broker (worker/broker/memory.py): the Transport the engine drives.

Apart from the broker itself so that each module holds one side of the wire: memory.py is the
broker's state (queues, exchanges, TTLs, dead-lettering), this is what one client connection
does with it (consume with prefetch, ack/nack, publisher confirms, poll and wake, and requeue of
its unacked deliveries when it closes). A connection works on the broker's state under the
broker's lock, as a RabbitMQ channel works inside the server; hence its use of the broker's
underscored members.
"""

from __future__ import annotations

import itertools

from worker.broker.amqp_messages import encodable
from worker.broker.base import ConfirmCallback, DeliveryCallback
from worker.broker.memory import MemoryBroker, StoredMessage, as_delivery
from worker.broker.messages import Outgoing
from worker.broker.topology import Topology
from worker.errors import BrokerUnavailable


class MemoryTransport:
    """One connection to a MemoryBroker, owned by one thread like an AMQP connection."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker
        self._connected = False
        self._consuming: list[str] = []
        self._prefetch = 0
        self._on_delivery: DeliveryCallback | None = None
        self._confirm: ConfirmCallback | None = None
        self._unacked: dict[int, tuple[str, StoredMessage]] = {}
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
        with self.broker._lock:
            self.broker._consumed.update(queues)

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
        with self.broker._lock:
            if self._unacked.pop(tag, None) is not None:  # type: ignore[call-overload]
                self._settled(1)

    def nack(self, tag: object, requeue: bool) -> None:
        self._check()
        entry = self._unacked.pop(tag, None)  # type: ignore[call-overload]
        if entry:
            with self.broker._lock:
                self._settled(1)
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
            self._settled(len(self._unacked))
            self._unacked.clear()
        self._connected = False

    def _check(self) -> None:
        if not self.connected:
            raise BrokerUnavailable("in-memory broker connection is down")

    def _settled(self, count: int) -> None:
        """`count` deliveries acked, nacked or returned (broker lock held): join() may wake."""
        self.broker._unsettled -= count
        self.broker._lock.notify_all()

    def _flush_confirms(self) -> None:
        pending, self._pending_confirms = self._pending_confirms, []
        for seq in pending:
            if self._confirm:
                self._confirm(seq, False, True)

    def _deliver_some(self) -> bool:
        delivered = False
        for queue in self._consuming:
            while self._prefetch == 0 or len(self._unacked) < self._prefetch:
                with self.broker._lock:  # taken and unsettled at once: join() sees no gap
                    stored = self.broker._take(queue)
                    if stored is None:
                        break
                    tag = next(self._tags)
                    self._unacked[tag] = (queue, stored)
                    self.broker._unsettled += 1
                assert self._on_delivery is not None
                quorum = self.broker._queues[queue].quorum
                self._on_delivery(as_delivery(stored, queue, tag, quorum))
                delivered = True
        return delivered
