"""The worker's topology carries its own safety limits, and both transports keep RabbitMQ's rules.

* the consumed queues declare x-delivery-limit and at-least-once dead-lettering: a message
  returned more than the limit is dead-lettered by the broker itself, reason `delivery_limit`;
* his.events has an alternate exchange: an unknown routing key lands in huimin.unroutable;
* a message AMQP cannot carry is refused with UnpublishableMessage, before anything is sent;
* an existing queue or exchange with other arguments is one clear TopologyConflict.

Each test runs on the in-memory broker and on RabbitMQ (a throw-away vhost per test: tests
declare the topology with different limits, which one vhost would refuse).
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import amqp
import pytest

from tests.test_worker import event, example
from tests.worker_harness import Backend, create_vhost, delete_vhost, sqlite_url, vhost_url
from worker.broker.amqp import AmqpTransport
from worker.broker.base import Transport
from worker.broker.memory import MemoryBroker
from worker.broker.memory_transport import MemoryTransport
from worker.broker.messages import Delivery, Disposition, Outgoing
from worker.broker.topology import (
    DEAD_LETTER_QUEUE,
    EVENTS_EXCHANGE,
    UNROUTABLE_QUEUE,
    build_topology,
    work_queue_name,
)
from worker.errors import TopologyConflict, UnpublishableMessage
from worker.ops.broker import QueuedMessage
from worker.ops.dead_letters import read_dead_letter
from worker.pipeline.engine import Engine, EngineConfig
from worker.protocol.registry import WorkClass

MONEY = work_queue_name(WorkClass.MONEY)


@pytest.fixture
def own_vhost(rabbitmq_url: str) -> Iterator[tuple[str, str]]:
    name = f"huimin-topology-{uuid.uuid4().hex[:8]}"
    create_vhost(name)
    try:
        yield name, vhost_url(rabbitmq_url, name)
    finally:
        delete_vhost(name)


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def connect(request: pytest.FixtureRequest) -> Iterator[object]:
    """A factory: `connect(delivery_limit)` -> a connected transport with the topology declared."""
    opened: list[Transport] = []
    broker = MemoryBroker()

    def make(delivery_limit: int = 20) -> Transport:
        transport: Transport
        if request.param == "memory":
            transport = MemoryTransport(broker)
        else:
            transport = AmqpTransport(request.getfixturevalue("own_vhost")[1])
        transport.connect()
        transport.declare(build_topology([0.2], 0.0, delivery_limit=delivery_limit))
        opened.append(transport)
        return transport

    yield make
    for transport in opened:
        transport.close()


def _next(transport: Transport, got: list[Delivery], count: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while len(got) < count:
        assert time.monotonic() < deadline, f"{len(got)} deliveries of {count}"
        transport.poll(0.05)


def _take(transport: Transport, queue: str, ack: bool = True) -> Delivery:
    got: list[Delivery] = []
    transport.consume([queue], 1, got.append)
    _next(transport, got, 1)
    transport.cancel()
    if ack:
        transport.ack(got[0].tag)
    return got[0]


def test_a_message_returned_more_than_the_delivery_limit_is_dead_lettered_delivery_limit(
    connect,  # type: ignore[no-untyped-def]
) -> None:
    transport = connect(delivery_limit=2)
    transport.publish(Outgoing("", MONEY, b"keeps failing", message_id="evt-limit-0001"))
    got: list[Delivery] = []
    transport.consume([MONEY], 1, got.append)
    for count in range(1, 4):  # RabbitMQ: limit + 1 deliveries, the last one returned too
        _next(transport, got, count)
        assert got[-1].headers.get("x-delivery-count", 0) == count - 1
        transport.nack(got[-1].tag, requeue=True)
    transport.cancel()
    letter = _take(transport, DEAD_LETTER_QUEUE)
    assert letter.body == b"keeps failing"
    assert letter.headers["x-first-death-reason"] == "delivery_limit"
    assert letter.headers["x-first-death-queue"] == MONEY
    # `dlq list` shows why and where it came from, though the worker never saw it die
    read = read_dead_letter(QueuedMessage(0, letter.body, letter.routing_key, dict(letter.headers)))
    assert (read.reason, read.work_queue) == ("delivery_limit", MONEY)


def test_a_delivery_rejected_without_requeue_is_dead_lettered_by_its_queue(
    connect,  # type: ignore[no-untyped-def]
) -> None:
    transport = connect()
    transport.publish(Outgoing("", MONEY, b"rejected"))
    transport.nack(_take(transport, MONEY, ack=False).tag, requeue=False)
    letter = _take(transport, DEAD_LETTER_QUEUE)
    assert (letter.body, letter.headers["x-first-death-reason"]) == (b"rejected", "rejected")


def test_an_event_with_an_unknown_routing_key_lands_in_the_unroutable_queue(
    connect,  # type: ignore[no-untyped-def]
) -> None:
    transport = connect()
    transport.publish(Outgoing(EVENTS_EXCHANGE, "payment.requestd", b"a typo"))
    transport.publish(Outgoing(EVENTS_EXCHANGE, "payment.requested", b"known"))
    lost = _take(transport, UNROUTABLE_QUEUE)
    assert (lost.body, lost.routing_key, lost.exchange) == (
        b"a typo",
        "payment.requestd",
        EVENTS_EXCHANGE,
    )
    known = _take(transport, MONEY)
    assert (known.body, known.exchange) == (b"known", EVENTS_EXCHANGE)


def test_a_delivery_says_which_exchange_it_came_through(
    connect,  # type: ignore[no-untyped-def]
) -> None:
    transport = connect()
    transport.publish(Outgoing("", MONEY, b"the worker's own"))
    assert _take(transport, MONEY).exchange == ""


@pytest.mark.parametrize(
    "message",
    [
        Outgoing("", MONEY, b"{}", message_id="e" * 256),
        Outgoing("", "q" * 256, b"{}"),
        Outgoing("", MONEY, b"{}", correlation_id="\u4e2d" * 86),  # 258 bytes in UTF-8
        Outgoing("", MONEY, b"{}", headers={"x-bad": object()}),
    ],
    ids=["message_id", "routing_key", "correlation_id", "header_value"],
)
def test_a_message_amqp_cannot_carry_is_refused_and_the_connection_stays_usable(
    connect,
    message: Outgoing,  # type: ignore[no-untyped-def]
) -> None:
    transport = connect()
    confirms: list[tuple[int, bool, bool]] = []
    transport.on_confirm(lambda seq, multiple, ok: confirms.append((seq, multiple, ok)))
    with pytest.raises(UnpublishableMessage):
        transport.publish(message)
    seq = transport.publish(Outgoing("", MONEY, b"fine", message_id="e" * 255))
    assert seq == 1, "the refused message used no publish sequence number"
    deadline = time.monotonic() + 10
    while not confirms:
        assert time.monotonic() < deadline
        transport.poll(0.05)
    assert confirms[0][2] is True
    assert _take(transport, MONEY).body == b"fine"


@pytest.mark.rabbitmq
def test_the_consumed_queues_declare_their_own_limits_on_rabbitmq(
    own_vhost: tuple[str, str],
) -> None:
    name, url = own_vhost
    transport = AmqpTransport(url)
    transport.connect()
    try:
        transport.declare(build_topology([0.2], 0.0, delivery_limit=7))
    finally:
        transport.close()
    listing = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", name, "name", "arguments"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    arguments = dict(line.split("\t", 1) for line in listing.splitlines() if "\t" in line)
    for queue in (*[work_queue_name(c) for c in WorkClass], UNROUTABLE_QUEUE):
        assert '{"x-delivery-limit",7}' in arguments[queue], arguments[queue]
        assert '{"x-dead-letter-strategy","at-least-once"}' in arguments[queue]
        assert '{"x-dead-letter-routing-key","huimin.dead-letter"}' in arguments[queue]
        assert '{"x-overflow","reject-publish"}' in arguments[queue]
    assert "x-delivery-limit" not in arguments[DEAD_LETTER_QUEUE], "a limit would drop letters"


@pytest.mark.rabbitmq
@pytest.mark.parametrize("old", ["queue", "exchange"])
def test_a_queue_or_exchange_declared_by_an_older_version_is_one_clear_error(
    own_vhost: tuple[str, str], old: str
) -> None:
    name, url = own_vhost
    connection = amqp.Connection(
        "127.0.0.1:5672", userid="guest", password="guest", virtual_host=name
    )
    connection.connect()
    channel = connection.channel()
    if old == "queue":  # as the previous version declared it: no limits
        channel.queue_declare(
            MONEY, durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"}
        )
    else:  # no alternate exchange
        channel.exchange_declare(EVENTS_EXCHANGE, "topic", durable=True, auto_delete=False)
    connection.close()
    transport = AmqpTransport(url)
    transport.connect()
    try:
        with pytest.raises(TopologyConflict) as raised:
            transport.declare(build_topology([0.2], 0.0))
    finally:
        transport.close()
    text = str(raised.value)
    assert "\n" not in text and "PRECONDITION_FAILED" in text
    assert "docs/deployment.md" in text
    assert (MONEY if old == "queue" else EVENTS_EXCHANGE) in text


@pytest.mark.rabbitmq
def test_the_engine_stops_on_a_topology_conflict_instead_of_reconnecting_forever(
    own_vhost: tuple[str, str],
) -> None:
    name, url = own_vhost
    connection = amqp.Connection(
        "127.0.0.1:5672", userid="guest", password="guest", virtual_host=name
    )
    connection.connect()
    connection.channel().exchange_declare(EVENTS_EXCHANGE, "topic", durable=True, auto_delete=False)
    connection.close()
    config = EngineConfig(
        queues=[MONEY], concurrency=1, prefetch=1, confirm_timeout_s=1, shutdown_deadline_s=1
    )
    engine = Engine(
        AmqpTransport(url), build_topology([0.2], 0.0), lambda delivery: Disposition(), config
    )
    started = time.monotonic()
    with pytest.raises(TopologyConflict):
        engine.run()
    assert time.monotonic() - started < 10
    assert not engine.transport.connected


@pytest.mark.rabbitmq
def test_dlq_list_names_the_delivery_limit_for_a_message_rabbitmq_dead_lettered_itself(
    own_vhost: tuple[str, str],
    tmp_path: Path,
    cli,  # type: ignore[no-untyped-def]
) -> None:
    _, url = own_vhost
    settings = Backend("rabbitmq-sqlite", url, sqlite_url(tmp_path)).settings(
        "http://127.0.0.1:1/api", delivery_limit=2
    )
    transport = AmqpTransport(url)
    transport.connect()
    try:
        transport.declare(build_topology([0.2], 0.0, delivery_limit=2))
        body = json.dumps(event("payment.requested", example("HOS00003"))).encode()
        transport.publish(Outgoing(EVENTS_EXCHANGE, "payment.requested", body))
        got: list[Delivery] = []
        transport.consume([MONEY], 1, got.append)
        for count in range(1, 4):  # a worker that dies on it, three times
            _next(transport, got, count)
            transport.nack(got[-1].tag, requeue=True)
    finally:
        transport.close()
    deadline = time.monotonic() + 10
    while True:
        code, out = cli(settings, "dlq", "list", "--json")
        listed = json.loads(out) if code == 0 else {}
        if listed.get("messages") or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    [letter] = listed["messages"]
    assert letter["reason"] == "delivery_limit", letter
    assert (letter["type"], letter["workQueue"]) == ("payment.requested", MONEY)
    assert "x-delivery-limit" in letter["error"] and MONEY in letter["error"]
