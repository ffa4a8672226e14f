"""The dead-letter queue over py-amqp: browse it without losing a message, ack, publish confirmed.

Browsing. RabbitMQ has no "peek" for a queue: reading is taking. `browse()` takes a snapshot of
the messages ready when it starts with `basic.get` WITHOUT ack and holds them all unacked until
the caller acks the ones it handled; everything else goes back with `release()` (or when the
connection closes, even if this process dies). Two simpler designs were rejected:

* get + reject/requeue one message at a time: a quorum queue hands a returned message out again
  first, so the loop would read the same message forever and never see the second one;
* `no_ack` gets, re-published afterwards: a crash in between loses messages.

Holding them unacked also keeps a concurrent `dlq replay` (another engineer) off the same
messages: an unacked message is delivered to nobody else.

Every browse is one delivery per message, and quorum queues count deliveries (x-delivery-count).
The dead-letter queue must therefore never be under a delivery-limit policy: it has no
dead-letter target of its own, so reaching a limit would DROP dead letters (docs/dlq-and-trace.md).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import amqp
import kombu
from kombu.exceptions import OperationalError

from worker.broker.amqp_messages import to_amqp, to_queued
from worker.broker.messages import Outgoing, QueuedMessage
from worker.broker.topology import DEAD_LETTER_QUEUE
from worker.errors import BrokerUnavailable, ConfigurationError

#: failures of the connection itself: nothing was decided, try again later
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    OperationalError,
    amqp.exceptions.ConnectionError,
    amqp.exceptions.RecoverableConnectionError,
)


@contextmanager
def _converted(what: str) -> Iterator[None]:
    """py-amqp/kombu/socket failures -> the worker.errors tree, at this boundary."""
    try:
        yield
    except amqp.exceptions.NotFound as exc:
        raise ConfigurationError(f"{what}: {exc.reply_text}") from exc
    except amqp.exceptions.MessageNacked as exc:
        raise BrokerUnavailable(f"{what}: RabbitMQ refused the message (nack)") from exc
    except TimeoutError as exc:  # socket.timeout too
        raise BrokerUnavailable(f"{what}: no answer from RabbitMQ in time") from exc
    except (*_CONNECTION_ERRORS, amqp.exceptions.ChannelError) as exc:
        raise BrokerUnavailable(f"{what}: {exc!r}") from exc


class DeadLetterQueue:
    """A short-lived connection for one operator command. Not thread-safe (py-amqp)."""

    def __init__(
        self,
        url: str,
        *,
        queue: str = DEAD_LETTER_QUEUE,
        connect_timeout: float = 10.0,
        confirm_timeout: float = 10.0,
        settle_timeout: float = 5.0,
    ) -> None:
        self.queue = queue
        self._confirm_timeout = confirm_timeout
        self._settle_timeout = settle_timeout
        self._returned: list[str] = []
        with _converted("cannot connect to RabbitMQ"):
            # heartbeat 0: a rate-limited replay sleeps between messages without ticking
            self._conn = kombu.Connection(url, connect_timeout=connect_timeout, heartbeat=0)
            self._conn.connect()
            self._channel = self._open_channel()
            self._channel.confirm_select()
            self._channel.events["basic_return"].add(self._on_return)

    def __enter__(self) -> DeadLetterQueue:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _open_channel(self) -> Any:
        channel = self._conn.connection.channel()
        channel.auto_decode = False  # bodies stay the exact bytes that were dead-lettered
        return channel

    # --- reading ---------------------------------------------------------------------------------

    def ready_count(self) -> int:
        with _converted(f"queue {self.queue} is not declared on this vhost"):
            _, count, _ = self._channel.queue_declare(self.queue, passive=True)
        return int(count)

    def browse(self, limit: int | None = None) -> list[QueuedMessage]:
        """The messages ready now (at most `limit`), each held unacked until ack/release."""
        wanted = self.ready_count() if limit is None else min(limit, self.ready_count())
        taken: list[QueuedMessage] = []
        with _converted(f"reading {self.queue}"):
            while len(taken) < wanted:
                message = self._channel.basic_get(self.queue, no_ack=False)
                if message is None:  # someone else took the rest meanwhile
                    break
                taken.append(to_queued(message))
        return taken

    def ack(self, message: QueuedMessage) -> None:
        with _converted(f"acking a message of {self.queue}"):
            self._channel.basic_ack(message.tag)

    def release(self, messages: list[QueuedMessage]) -> None:
        """Give messages back to the queue untouched (a redelivery for RabbitMQ), and wait until
        RabbitMQ counts them ready again: a reject has no reply, and a quorum queue requeues
        asynchronously, so without the wait the next command could browse a queue that looks
        (briefly) empty. Waits at most `settle_timeout`; the messages are safe either way."""
        if not messages:
            return
        with _converted(f"returning messages to {self.queue}"):
            expected = self.ready_count() + len(messages)
            for message in messages:
                self._channel.basic_reject(message.tag, requeue=True)
            self._wait_until_ready(expected)

    def _wait_until_ready(self, expected: int) -> None:
        deadline = time.monotonic() + self._settle_timeout
        while self.ready_count() < expected and time.monotonic() < deadline:
            time.sleep(0.02)  # another command may have taken some meanwhile: hence the deadline

    # --- writing ---------------------------------------------------------------------------------

    def queue_exists(self, name: str) -> bool:
        """A passive declare on a throwaway channel: a 404 closes that channel, not ours."""
        with _converted(f"checking queue {name}"):
            probe = self._conn.connection.channel()
            try:
                probe.queue_declare(name, passive=True)
            except amqp.exceptions.NotFound:
                return False
            probe.close()
        return True

    def publish(self, message: Outgoing) -> None:
        """Publish and wait for RabbitMQ's confirm; unroutable (mandatory) is an error too."""
        self._returned.clear()
        with _converted(f"publishing to {message.routing_key}"):
            self._channel.basic_publish_confirm(
                to_amqp(message),
                exchange=message.exchange,
                routing_key=message.routing_key,
                mandatory=True,
                confirm_timeout=self._confirm_timeout,
            )
        if self._returned:
            raise ConfigurationError(f"RabbitMQ could not route the message: {self._returned[0]}")

    def _on_return(self, exc: Exception, exchange: str, routing_key: str, message: Any) -> None:
        self._returned.append(f"{routing_key!r}: {exc}")

    def close(self) -> None:
        """Closing returns every message still unacked to the queue."""
        try:
            self._conn.release()
        except _CONNECTION_ERRORS:
            pass  # already gone: RabbitMQ has requeued what we held
