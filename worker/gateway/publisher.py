"""Handing verified calls to the HIS over RabbitMQ: confirmed publishes and request-reply.

Threading. py-amqp is not thread-safe, and the gateway handles requests on a bounded pool
of worker threads (app.py runs each request's blocking work through one CapacityLimiter).
So this publisher keeps a pool of *links* - one py-amqp connection, one channel in confirm
mode, one direct reply-to consumer - and a thread checks a link out for the whole of its
publish (or publish + wait for the reply), then gives it back. A link is only ever used by
one thread at a time, there is never more links than threads allowed at once, and no I/O
thread hands frames between threads. (A single I/O thread would multiplex fewer
connections, but would need its own queueing and wake-ups; at the platform's rates, one
connection per concurrent request is cheap and simple.)

Every publish is `mandatory` and waits for its confirm: the platform is answered 0000 only
once RabbitMQ has taken responsibility for the message AND routed it to at least one queue
(a message no HIS queue is bound for comes back as basic.return, and the answer is 9999,
so the platform retries later instead of the notification being dropped).

Request-reply (HIS00003) uses RabbitMQ direct reply-to: the link consumes
`amq.rabbitmq.reply-to` (no-ack, as RabbitMQ requires) on its channel before it publishes
anything, the request carries `reply_to` and a fresh `correlation_id`, and a reply with any
other correlation_id (one that came too late for an earlier request) is dropped.

Any connection trouble raises BrokerUnavailable and the link is thrown away; the next use
connects afresh. A link taken from the pool may have died while idle (a broker restart): its
failure is retried once on a new connection. The eventId is deterministic (events.py), so
even that retry can at worst deliver the same eventId twice, never two different events.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import amqp
import kombu

from worker.broker.amqp import CONNECTION_ERRORS
from worker.broker.amqp_messages import to_amqp
from worker.broker.memory import MemoryBroker
from worker.broker.messages import Outgoing
from worker.broker.topology import Exchange, Topology
from worker.errors import BrokerUnavailable
from worker.gateway.events import PLATFORM_EXCHANGE, Handoff

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
T = TypeVar("T")
_FAILURES: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, amqp.exceptions.MessageNacked)


def handoff_message(message: Handoff, correlation_id: str | None = None) -> Outgoing:
    """The platform.events message for a hand-off, on RabbitMQ and in memory alike: the
    eventId as message_id, the routing key as the AMQP `type` too; with `correlation_id`, a
    question whose answer comes back on the direct reply-to."""
    return Outgoing(
        PLATFORM_EXCHANGE,
        message.routing_key,
        message.body,
        message_id=message.event_id,
        correlation_id=correlation_id,
        reply_to=DIRECT_REPLY_TO if correlation_id is not None else None,
        type=message.routing_key,
    )


class _StaleLink(BrokerUnavailable):
    """A link from the pool failed: it may have died while idle; try a fresh one."""


class NotRouted(BrokerUnavailable):
    """RabbitMQ returned the message: no queue is bound for its routing key (yet)."""

    reason = "not_routed"


class Publisher(Protocol):
    def declare(self) -> None: ...  # the exchange; raises BrokerUnavailable
    def publish(self, message: Handoff) -> None: ...  # confirmed and routed, or raises
    # the HIS's reply body, or None when none came within timeout_s
    def request(self, message: Handoff, timeout_s: float) -> bytes | None: ...
    def close(self) -> None: ...


class _Link:
    """One connection, one confirm-mode channel, one direct reply-to consumer."""

    def __init__(self, url: str, connect_timeout_s: float) -> None:
        self.conn = kombu.Connection(url, connect_timeout=connect_timeout_s, heartbeat=0)
        self.conn.connect()
        self.raw = self.conn.connection
        self.channel = self.raw.channel()
        self.channel.confirm_select()
        self.returned = False
        self.expected: str | None = None
        self.reply: bytes | None = None
        self.channel.events["basic_return"].add(self._on_return)
        self.channel.exchange_declare(PLATFORM_EXCHANGE, "topic", durable=True, auto_delete=False)
        self.channel.basic_consume(DIRECT_REPLY_TO, no_ack=True, callback=self._on_reply)

    def _on_return(self, *_: Any) -> None:
        self.returned = True

    def _on_reply(self, message: amqp.Message) -> None:
        # only buffers: called from inside drain_events
        if self.expected is not None and message.properties.get("correlation_id") == self.expected:
            body = message.body  # py-amqp decodes it when the HIS set content_encoding
            self.reply = body.encode("utf-8") if isinstance(body, str) else bytes(body)

    def publish(
        self, message: Handoff, confirm_timeout_s: float, correlation_id: str | None = None
    ) -> None:
        self.returned = False
        self.channel.basic_publish_confirm(
            to_amqp(handoff_message(message, correlation_id)),
            exchange=PLATFORM_EXCHANGE,
            routing_key=message.routing_key,
            mandatory=True,
            confirm_timeout=confirm_timeout_s,
        )
        if self.returned:  # RabbitMQ sends basic.return before the basic.ack
            raise NotRouted(
                f"no queue is bound to {PLATFORM_EXCHANGE} for "
                f"{message.routing_key!r}: is the hospital system set up?"
            )

    def ask(self, message: Handoff, confirm_timeout_s: float, timeout_s: float) -> bytes | None:
        """Publish with reply_to and wait for the reply with its correlation_id."""
        deadline = time.monotonic() + timeout_s
        # expected before the publish: a quick HIS may answer before the confirm is back
        self.expected, self.reply = uuid.uuid4().hex, None
        try:
            self.publish(message, confirm_timeout_s, self.expected)
            while self.reply is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                try:
                    self.raw.drain_events(timeout=remaining)
                except TimeoutError:
                    return None
            return self.reply
        finally:
            self.expected = None

    def close(self) -> None:
        try:
            self.conn.release()
        except Exception:  # noqa: BLE001, S110 - closing a broken connection: nothing to do
            pass


class AmqpPublisher:
    def __init__(
        self, url: str, *, pool_size: int, confirm_timeout_s: float, connect_timeout_s: float = 5.0
    ) -> None:
        self._url = url
        self._confirm_timeout_s = confirm_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._idle: queue.LifoQueue[_Link] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(pool_size)

    def declare(self) -> None:
        # a link declares the exchange when it connects; a reused one is asked whether the
        # exchange is there (a round trip: the readiness probe's question too)
        self._with_retry(
            lambda link: link.channel.exchange_declare(
                PLATFORM_EXCHANGE, "topic", durable=True, auto_delete=False
            )
        )

    def publish(self, message: Handoff) -> None:
        self._with_retry(lambda link: link.publish(message, self._confirm_timeout_s))

    def request(self, message: Handoff, timeout_s: float) -> bytes | None:
        return self._with_retry(lambda link: link.ask(message, self._confirm_timeout_s, timeout_s))

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return

    def _with_retry(self, work: Callable[[_Link], T]) -> T:
        try:
            return self._use(work, fresh=False)
        except _StaleLink:
            # the idle link had died (a broker restart, idle TCP reaped): once more, fresh
            return self._use(work, fresh=True)

    def _use(self, work: Callable[[_Link], T], fresh: bool) -> T:
        if not self._slots.acquire(timeout=30):
            raise BrokerUnavailable("no free broker connection within 30 s")
        try:
            link, reused = self._checkout(fresh)
            try:
                result = work(link)
            except NotRouted:
                self._idle.put(link)  # the link is fine: the broker just had no queue for it
                raise
            except _FAILURES as exc:
                link.close()
                if reused:
                    raise _StaleLink(f"RabbitMQ: {exc!r}") from exc
                raise BrokerUnavailable(f"RabbitMQ: {exc!r}") from exc
            except BaseException:
                link.close()  # state unknown (a late confirm may still arrive): never reused
                raise
            self._idle.put(link)
            return result
        finally:
            self._slots.release()

    def _checkout(self, fresh: bool) -> tuple[_Link, bool]:
        if not fresh:
            try:
                return self._idle.get_nowait(), True
            except queue.Empty:
                pass
        try:
            return _Link(self._url, self._connect_timeout_s), False
        except _FAILURES as exc:
            raise BrokerUnavailable(f"cannot connect to RabbitMQ: {exc!r}") from exc


class MemoryPublisher:
    """The in-memory broker of the tests and the demo: HIS00002/HIS00004 are routed into its
    queues like RabbitMQ would; HIS00003 is answered by an in-process `responder` (the HIS's
    role: the request body in, the reply body out, None for no answer)."""

    def __init__(
        self, broker: MemoryBroker, responder: Callable[[bytes], bytes | None] | None = None
    ) -> None:
        self._broker = broker
        self._responder = responder

    def declare(self) -> None:
        self._check()
        self._broker.declare(Topology((Exchange(PLATFORM_EXCHANGE, "topic"),), ()))

    def publish(self, message: Handoff) -> None:
        self._check()
        self._broker.publish(handoff_message(message))

    def request(self, message: Handoff, timeout_s: float) -> bytes | None:
        self.publish(message)
        return None if self._responder is None else self._responder(message.body)

    def close(self) -> None:
        pass

    def _check(self) -> None:
        if self._broker.down:
            raise BrokerUnavailable("the in-memory broker is down")
