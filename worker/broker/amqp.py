"""RabbitMQ through kombu's py-amqp connection: consume, publish with pipelined confirms.

kombu parses the URL and owns the connection (TLS, heartbeats); we work on the raw py-amqp
channels underneath because the engine needs confirms without blocking: publishes are numbered
and `basic_ack`/`basic_nack` events resolve them as they arrive (pipelined), instead of
`basic_publish_confirm`, which waits for each one.

Two py-amqp facts shape this module: publishing from inside a delivery callback drains frames
and recurses into further deliveries, so callbacks only buffer; and every call here must come
from the one thread that owns the connection.
"""

from __future__ import annotations

import select
import socket
import threading
from typing import Any

import amqp
import kombu
from kombu.exceptions import OperationalError

from worker.broker.amqp_messages import encodable, to_delivery
from worker.broker.base import ConfirmCallback, DeliveryCallback
from worker.broker.declaring import ChannelDeclarer, declare_topology
from worker.broker.messages import Outgoing
from worker.broker.topology import Topology
from worker.errors import BrokerUnavailable, LedgerClaimed, TopologyConflict

#: exceptions that mean "the connection is gone": converted to BrokerUnavailable
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    amqp.exceptions.ConnectionError,
    amqp.exceptions.ChannelError,
    amqp.exceptions.RecoverableConnectionError,
    OperationalError,
    EOFError,
)


#: the exclusive queue a worker on a SQLite ledger holds in its vhost (see LedgerClaimed)
SQLITE_OWNER_QUEUE = "huimin.ledger.sqlite-owner"


class AmqpTransport:
    def __init__(
        self,
        url: str,
        *,
        heartbeat: float = 30.0,
        connect_timeout: float = 10.0,
        exclusive_claim: str | None = None,
    ):
        self._url = url
        # A SQLite worker's claim on the vhost: an exclusive, auto-delete queue lives exactly
        # as long as the connection that declared it, so it is declared again on every
        # reconnect and vanishes with a crashed worker's TCP connection.
        self._claim = exclusive_claim
        self._claimed_before = False
        self._heartbeat = heartbeat
        self._connect_timeout = connect_timeout
        self._conn: kombu.Connection | None = None
        self._consume_channel: Any = None
        self._publish_channel: Any = None
        self._publish_seq = 0
        self._confirm: ConfirmCallback | None = None
        self._consumer_tags: list[str] = []
        # Handlers wake the I/O thread through this pair instead of it polling every few ms
        # (which cost 7 % of a core whenever a slow platform call was in flight). One pair
        # per connection: made by connect(), closed by close().
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        # wake() (any thread) and closing the pair (the I/O thread) never overlap: a send on
        # a descriptor closed meanwhile could land in whatever socket reused its number.
        # Reentrant: a second SIGTERM's handler may call wake() inside the first one's.
        self._wake_lock = threading.RLock()

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.connected

    def connect(self) -> None:
        self.close()
        try:
            self._conn = kombu.Connection(
                self._url, heartbeat=self._heartbeat, connect_timeout=self._connect_timeout
            )
            self._conn.connect()
            raw = self._conn.connection
            self._consume_channel = raw.channel()
            self._publish_channel = raw.channel()
            self._publish_channel.confirm_select()
        except CONNECTION_ERRORS as exc:
            raise BrokerUnavailable(f"cannot connect to RabbitMQ: {exc!r}") from exc
        self._publish_seq = 0
        with self._wake_lock:
            self._wake_r, self._wake_w = _wake_pair()
        self._publish_channel.events["basic_ack"].add(self._acked)
        self._publish_channel.events["basic_nack"].add(self._nacked)

    def declare(self, topology: Topology) -> None:
        if self._claim:
            self._take_claim(self._claim)  # first: a refused worker declares nothing
        with _converted(), _conflicts():
            declare_topology(topology, ChannelDeclarer(self._publish_channel))

    def _take_claim(self, name: str) -> None:
        """Declare the exclusive claim queue; RabbitMQ answers 405 RESOURCE_LOCKED while
        another connection holds it. At start-up that is another worker: LedgerClaimed, the
        process exits. After a reconnect it may be this worker's own previous connection,
        which RabbitMQ drops only once its heartbeats are missed: BrokerUnavailable, so the
        engine retries with backoff and consumes nothing meanwhile."""
        try:
            with _converted():
                self._publish_channel.queue_declare(
                    name, durable=False, exclusive=True, auto_delete=True
                )
        except BrokerUnavailable as exc:
            if not isinstance(exc.__cause__, amqp.exceptions.ResourceLocked):
                raise
            if self._claimed_before:
                raise BrokerUnavailable(
                    f"the SQLite ledger claim {name!r} is still held, probably by this worker's "
                    "previous connection until RabbitMQ notices it is gone; retrying"
                ) from exc
            raise LedgerClaimed(
                f"another worker on this RabbitMQ vhost holds the SQLite ledger claim (queue "
                f"{name}): a SQLite ledger belongs to one worker; use PostgreSQL for several "
                "replicas (HUIMIN_LEDGER_URL=postgresql://...)"
            ) from exc.__cause__
        self._claimed_before = True

    def consume(self, queues: list[str], prefetch: int, on_delivery: DeliveryCallback) -> None:
        channel = self._consume_channel
        with _converted():
            channel.basic_qos(0, prefetch, False)
            for queue in queues:
                tag = channel.basic_consume(
                    queue, callback=lambda m, q=queue: on_delivery(to_delivery(m, q))
                )
                self._consumer_tags.append(tag)

    def cancel(self) -> None:
        with _converted():
            for tag in self._consumer_tags:
                self._consume_channel.basic_cancel(tag)
        self._consumer_tags.clear()

    def on_confirm(self, callback: ConfirmCallback) -> None:
        self._confirm = callback

    def publish(self, message: Outgoing) -> int:
        raw = encodable(message)  # before the channel: a message it cannot encode sends nothing
        with _converted():
            self._publish_channel._basic_publish(
                raw,
                exchange=message.exchange,
                routing_key=message.routing_key,
                mandatory=False,
            )
        self._publish_seq += 1
        return self._publish_seq

    def ack(self, tag: object) -> None:
        with _converted():
            self._consume_channel.basic_ack(tag)

    def nack(self, tag: object, requeue: bool) -> None:
        with _converted():
            self._consume_channel.basic_reject(tag, requeue=requeue)

    def poll(self, timeout: float) -> None:
        """Wait up to `timeout` for frames or a wake(), then handle every complete method
        that has arrived (at most _MAX_METHODS_PER_POLL, so the engine's other duties get
        their turn). The wait is a `select`: py-amqp reads exactly one frame's bytes at a
        time, so nothing it has not handled waits in a buffer of its own (a TLS socket is
        asked for its decrypted, pending bytes too)."""
        assert self._conn is not None
        with _converted():
            self._conn.heartbeat_check()
            sock = self._conn.connection.transport.sock
            wait = timeout
            for _ in range(_MAX_METHODS_PER_POLL):
                if not self._frames_or_wake(sock, wait):
                    return
                try:
                    self._conn.drain_events(timeout=_FRAME_TIMEOUT_S)
                except TimeoutError:
                    return  # a frame begun, not finished: the next poll reads the rest
                wait = 0.0

    def _frames_or_wake(self, sock: Any, timeout: float) -> bool:
        """True when frames wait on `sock`; False after the timeout or a wake()."""
        pending = getattr(sock, "pending", None)  # ssl.SSLSocket
        if pending is not None and pending():
            return True
        wake = self._wake_r
        assert wake is not None
        readable, _, _ = select.select([sock, wake], [], [], timeout)
        if wake in readable:
            _drain(wake)
        return sock in readable

    def wake(self) -> None:
        with self._wake_lock:
            if self._wake_w is None:
                return  # not connected: no poll to cut short
            try:
                self._wake_w.send(b"\0")
            except OSError:
                pass  # the pair is full: a wake is pending anyway

    def close(self) -> None:
        with self._wake_lock:
            for end in (self._wake_r, self._wake_w):
                if end is not None:
                    end.close()
            self._wake_r = self._wake_w = None
        conn, self._conn = self._conn, None
        self._consumer_tags.clear()
        if conn is not None:
            try:
                conn.release()
            except CONNECTION_ERRORS:
                pass  # already gone: nothing to release

    def _acked(self, seq: int, multiple: bool) -> None:
        if self._confirm:
            self._confirm(seq, multiple, True)

    def _nacked(self, seq: int, multiple: bool) -> None:
        if self._confirm:
            self._confirm(seq, multiple, False)


#: a poll handles at most this many methods before the engine's turn goes on
_MAX_METHODS_PER_POLL = 64
#: once a frame has begun to arrive, how long to wait for the rest of it
_FRAME_TIMEOUT_S = 0.05


def _wake_pair() -> tuple[socket.socket, socket.socket]:
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)
    return reader, writer


def _drain(reader: socket.socket) -> None:
    try:
        while reader.recv(4096):
            pass
    except BlockingIOError:
        pass  # empty: every wake so far is consumed


class _conflicts:
    """A 406 on declare: the queue or exchange exists with other arguments. Retrying cannot
    heal it (the reconnect loop would spin on it), so it is a configuration error, one line."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if isinstance(exc, amqp.exceptions.PreconditionFailed):
            raise TopologyConflict(
                f"RabbitMQ refused to declare the worker's topology: {exc.reply_text}. It was "
                "declared earlier with other arguments (by an older huimin-worker, or by hand); "
                "migrate it once as docs/deployment.md 'Migrating queues and exchanges' says "
                "(stop the workers, move or drain the queue, delete it, start the workers)"
            ) from exc
        return False


class _converted:
    """Turn py-amqp/kombu/socket failures into BrokerUnavailable at this boundary."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if (
            exc is not None
            and isinstance(exc, CONNECTION_ERRORS)
            and not isinstance(exc, TimeoutError)
        ):
            raise BrokerUnavailable(f"RabbitMQ connection failed: {exc!r}") from exc
        return False
