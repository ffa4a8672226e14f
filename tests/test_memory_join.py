"""MemoryBroker.join(): tests wait for the in-memory broker to go idle instead of sleeping.

Idle means every published message was consumed and settled: no delivery unacked, nothing
left on a consumed queue, nothing waiting out a TTL to come back. Messages at rest on queues
nobody consumes (results, dead letters) are settled.
"""

from __future__ import annotations

import threading

import pytest

from worker.broker.memory import MemoryBroker
from worker.broker.memory_transport import MemoryTransport
from worker.broker.messages import Delivery, Outgoing

WORK, RETRY, RESULTS = "work", "retry", "results"


class FakeClock:
    """The broker's TTL clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def broker_with_queues(clock: FakeClock | None = None) -> MemoryBroker:
    broker = MemoryBroker(clock=clock) if clock else MemoryBroker()
    broker.declare_queue(WORK)
    broker.declare_queue(RESULTS)
    # a retry queue as the topology declares them: its TTL dead-letters back onto WORK
    broker.declare_queue(
        RETRY,
        {"x-message-ttl": 500, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": WORK},
    )
    return broker


def consumer(broker: MemoryBroker) -> tuple[MemoryTransport, list[Delivery]]:
    transport, seen = MemoryTransport(broker), []
    transport.connect()
    transport.consume([WORK], prefetch=10, on_delivery=seen.append)
    return transport, seen


def message(queue: str) -> Outgoing:
    return Outgoing("", queue, b"{}")


def test_an_idle_broker_joins_at_once() -> None:
    broker = broker_with_queues()
    consumer(broker)
    broker.join(timeout=0)


def test_messages_at_rest_on_queues_nobody_consumes_are_settled() -> None:
    broker = broker_with_queues()
    consumer(broker)
    broker.publish(message(RESULTS))  # a result waiting for the HIS
    broker.join(timeout=0)
    assert broker.depth(RESULTS) == 1


def test_a_message_on_a_consumed_queue_keeps_the_broker_busy() -> None:
    broker = broker_with_queues()
    consumer(broker)
    broker.publish(message(WORK))
    with pytest.raises(TimeoutError, match="work holds 1"):
        broker.join(timeout=0)


def test_an_unacked_delivery_keeps_it_busy_until_acked_or_nacked() -> None:
    broker = broker_with_queues()
    transport, seen = consumer(broker)
    broker.publish(message(WORK))
    broker.publish(message(WORK))
    transport.poll(0)
    assert len(seen) == 2
    with pytest.raises(TimeoutError, match="2 unsettled deliveries"):
        broker.join(timeout=0)
    transport.ack(seen[0].tag)
    transport.nack(seen[1].tag, requeue=False)  # rejected: dropped (WORK has no DLX)
    broker.join(timeout=0)


def test_join_wakes_when_another_thread_settles_the_last_delivery() -> None:
    broker = broker_with_queues()
    transport, seen = consumer(broker)
    broker.publish(message(WORK))
    transport.poll(0)
    joined = threading.Event()
    waiter = threading.Thread(target=lambda: (broker.join(timeout=30), joined.set()))
    waiter.start()
    transport.ack(seen[0].tag)
    waiter.join(30)
    assert joined.is_set()


def test_a_closed_connection_returns_its_deliveries_to_the_queue() -> None:
    broker = broker_with_queues()
    transport, seen = consumer(broker)
    broker.publish(message(WORK))
    transport.poll(0)
    transport.close()  # unsettled no more, but back on WORK: still busy
    with pytest.raises(TimeoutError, match="work holds 1"):
        broker.join(timeout=0)


def test_a_message_waiting_out_a_ttl_keeps_it_busy_until_it_comes_back_and_is_settled() -> None:
    clock = FakeClock()
    broker = broker_with_queues(clock)
    transport, seen = consumer(broker)
    broker.publish(message(RETRY))
    with pytest.raises(TimeoutError, match="retry holds 1"):
        broker.join(timeout=0)
    clock.now += 1  # the TTL ran out: dead-lettered back onto WORK
    with pytest.raises(TimeoutError, match="work holds 1"):
        broker.join(timeout=0)
    transport.poll(0)
    transport.ack(seen[0].tag)
    broker.join(timeout=0)
    assert seen[0].headers["x-death"][0]["reason"] == "expired"
