"""The I/O thread sleeps in poll() and is woken, not spun: both broker transports.

A handler that finishes calls transport.wake() from its own thread; the poll in progress (or
the next one) returns at once, so the engine needs no busy polling while platform calls are
in flight. The bounds below are generous on purpose: they tell "woken" (milliseconds) from
"slept the whole timeout" (30 s), not how fast anything is.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from worker.broker.amqp import AmqpTransport
from worker.broker.base import Transport
from worker.broker.memory import MemoryBroker
from worker.broker.memory_transport import MemoryTransport
from worker.broker.topology import build_topology

LONG_TIMEOUT_S = 30.0
WOKEN_WITHIN_S = 10.0


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def transport(request: pytest.FixtureRequest) -> Iterator[Transport]:
    connection: Transport
    if request.param == "memory":
        connection = MemoryTransport(MemoryBroker())
    else:
        connection = AmqpTransport(request.getfixturevalue("vhost"))
    connection.connect()
    connection.declare(build_topology([1], 0.0))
    connection.consume(["huimin.work.money"], 8, lambda delivery: None)
    try:
        yield connection
    finally:
        connection.close()


def timed_poll(transport: Transport) -> float:
    started = time.monotonic()
    transport.poll(LONG_TIMEOUT_S)
    return time.monotonic() - started


def test_a_wake_from_another_thread_ends_the_poll_in_progress(transport: Transport) -> None:
    waker = threading.Timer(0.2, transport.wake)
    waker.start()
    try:
        assert timed_poll(transport) < WOKEN_WITHIN_S
    finally:
        waker.cancel()


def test_a_wake_before_the_poll_ends_the_next_poll(transport: Transport) -> None:
    transport.wake()  # the handler finished while the I/O thread was busy elsewhere
    assert timed_poll(transport) < WOKEN_WITHIN_S


def test_many_wakes_cost_one_short_poll_not_a_stuck_pipe(transport: Transport) -> None:
    for _ in range(100_000):  # more than a socket buffer holds: extra wakes are dropped
        transport.wake()
    assert timed_poll(transport) < WOKEN_WITHIN_S
    waker = threading.Timer(0.2, transport.wake)
    waker.start()
    try:
        assert timed_poll(transport) < WOKEN_WITHIN_S  # all consumed; the next wake works
    finally:
        waker.cancel()


def test_a_wake_on_a_closed_transport_is_harmless(transport: Transport) -> None:
    transport.close()
    transport.wake()  # a handler finishing during shutdown or a reconnect
