"""One mapping between the worker's messages and AMQP's, one result message, one topology walk.

* every property of an Outgoing survives the trip to AMQP and back, for any message AMQP can
  carry (a property, on the pure mapping), and through the operator's dead-letter connection
  on the real RabbitMQ: replays used to lose correlation_id, expiration and content_encoding;
* the worker's transport and the operator's connection put the same properties on the wire;
* a result becomes one message, `<event type>.<outcome>` on his.results, whoever sends it;
* a topology is declared exchanges first, then each queue with its bindings.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import amqp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.broker.amqp import AmqpTransport
from worker.broker.amqp_messages import encodable, to_amqp, to_delivery, to_queued
from worker.broker.declaring import declare_topology
from worker.broker.messages import Delivery, Outgoing, QueuedMessage, without_broker_headers
from worker.broker.result_message import result_message
from worker.broker.topology import RESULTS_EXCHANGE, Exchange, Queue, build_topology
from worker.contract.results import Outcome, build_result, result_body
from worker.gateway.events import Handoff
from worker.gateway.publisher import DIRECT_REPLY_TO, handoff_message
from worker.ops.broker import DeadLetterQueue

_short_text = st.text(max_size=40)  # shortstr properties: at most 255 bytes in UTF-8
_header_value = st.one_of(
    st.text(max_size=40), st.integers(-(2**31), 2**31 - 1), st.booleans(), st.none()
)
outgoing_messages = st.builds(
    Outgoing,
    exchange=st.sampled_from(["", "his.events", RESULTS_EXCHANGE]),
    routing_key=st.text(min_size=1, max_size=40),
    body=st.binary(max_size=200),
    # names of the application's own: x-death, x-delivery-count... are RabbitMQ's to set
    headers=st.dictionaries(
        st.text(min_size=1, max_size=20).filter(lambda name: not name.startswith("x-")),
        _header_value,
        max_size=5,
    ),
    message_id=st.none() | _short_text,
    correlation_id=st.none() | _short_text,
    expiration_ms=st.none() | st.integers(0, 10**9),
    content_type=st.sampled_from(["application/json", "text/plain"]),
    reply_to=st.none() | _short_text,
    type=st.none() | _short_text,
)


def over_the_wire(message: Outgoing, tag: int = 7) -> amqp.Message:
    """The AMQP message a receiver parses from what `message` is encoded to."""
    sent = encodable(message)
    received = amqp.Message(body=message.body)
    received._load_properties(sent.CLASS_ID, sent._serialize_properties(), 0)
    received.delivery_info = {
        "delivery_tag": tag,
        "routing_key": message.routing_key,
        "exchange": message.exchange,
        "redelivered": False,
    }
    return received


def expected_properties(message: Outgoing) -> dict[str, Any]:
    """Every basic property an Outgoing sets, as AMQP carries it. An empty message_id or
    correlation_id names nothing and is left out."""
    props: dict[str, Any] = {
        "content_type": message.content_type,
        "content_encoding": "utf-8",
        "delivery_mode": 2,
    }
    if message.message_id:
        props["message_id"] = message.message_id
    if message.correlation_id:
        props["correlation_id"] = message.correlation_id
    if message.expiration_ms is not None:
        props["expiration"] = str(message.expiration_ms)
    if message.reply_to:
        props["reply_to"] = message.reply_to
    if message.type:
        props["type"] = message.type
    return props


def assert_delivered_as_sent(delivery: Delivery, sent: Outgoing) -> None:
    assert delivery.body == sent.body
    assert delivery.routing_key == sent.routing_key
    assert without_broker_headers(delivery.headers) == dict(sent.headers)
    assert delivery.message_id == (sent.message_id or None)
    assert delivery.correlation_id == (sent.correlation_id or None)


@given(outgoing_messages)
def test_every_property_survives_the_mapping_to_amqp_and_back(message: Outgoing) -> None:
    received = over_the_wire(message)

    assert_delivered_as_sent(to_delivery(received, "a.queue"), message)
    queued = to_queued(received)
    assert queued == QueuedMessage(
        7, message.body, message.routing_key, dict(message.headers), expected_properties(message)
    )


# --- against RabbitMQ ---------------------------------------------------------------------------

ROUND_TRIP_QUEUE = "huimin.test.message-mapping"
EVERY_PROPERTY = Outgoing(
    "",
    ROUND_TRIP_QUEUE,
    '{"note": "中文 body"}'.encode(),
    headers={"x-huimin-retry": 2, "x-huimin-routing-key": "payment.requested", "x-flag": True},
    message_id="evt-mapping-0001",
    correlation_id="corr-mapping-0001",
    expiration_ms=600_000,  # ten minutes: long enough to be read back, never hit
    content_type="application/json",
)


@pytest.fixture
def transport(vhost: str) -> Iterator[AmqpTransport]:
    transport = AmqpTransport(vhost)
    transport.connect()
    # only the test's queue: the worker's own topology with everything else left out
    only = replace(build_topology([1], 0.0), exchanges=(), queues=(Queue(ROUND_TRIP_QUEUE),))
    transport.declare(only)
    yield transport
    transport.close()


@pytest.fixture
def dead_letters(vhost: str, transport: AmqpTransport) -> Iterator[DeadLetterQueue]:
    with DeadLetterQueue(vhost, queue=ROUND_TRIP_QUEUE) as queue:
        yield queue


def browse_one(queue: DeadLetterQueue) -> QueuedMessage:
    deadline = time.monotonic() + 10
    while queue.ready_count() < 1:  # the confirm came; the count may follow a moment later
        assert time.monotonic() < deadline, "the message never became ready"
        time.sleep(0.02)
    (message,) = queue.browse()
    queue.ack(message)
    return message


def publish_confirmed(transport: AmqpTransport, message: Outgoing) -> None:
    confirms: list[bool] = []
    transport.on_confirm(lambda seq, multiple, ok: confirms.append(ok))
    transport.publish(message)
    deadline = time.monotonic() + 10
    while not confirms:
        assert time.monotonic() < deadline, "no confirm from RabbitMQ"
        transport.poll(0.05)
    assert confirms == [True]


@pytest.mark.rabbitmq
def test_the_operators_connection_keeps_every_property_of_what_it_publishes(
    dead_letters: DeadLetterQueue,
) -> None:
    dead_letters.publish(EVERY_PROPERTY)

    read = browse_one(dead_letters)

    assert read.body == EVERY_PROPERTY.body
    # the quorum queue adds its own x-delivery-count: the broker's bookkeeping, not ours
    assert without_broker_headers(read.headers) == dict(EVERY_PROPERTY.headers)
    assert read.properties == expected_properties(EVERY_PROPERTY)
    assert read.properties["correlation_id"] == "corr-mapping-0001"
    assert read.properties["expiration"] == "600000"
    assert read.properties["content_encoding"] == "utf-8"


@pytest.mark.rabbitmq
def test_what_the_operator_replays_reaches_the_worker_as_it_was_sent(
    dead_letters: DeadLetterQueue, transport: AmqpTransport
) -> None:
    dead_letters.publish(EVERY_PROPERTY)

    got: list[Delivery] = []
    transport.consume([ROUND_TRIP_QUEUE], 1, got.append)
    deadline = time.monotonic() + 10
    while not got:
        assert time.monotonic() < deadline, "nothing delivered"
        transport.poll(0.05)
    transport.ack(got[0].tag)

    assert_delivered_as_sent(got[0], EVERY_PROPERTY)
    assert got[0].queue == ROUND_TRIP_QUEUE


@pytest.mark.rabbitmq
def test_the_worker_and_the_operator_put_the_same_properties_on_the_wire(
    dead_letters: DeadLetterQueue, transport: AmqpTransport
) -> None:
    publish_confirmed(transport, EVERY_PROPERTY)
    by_worker = browse_one(dead_letters)
    dead_letters.publish(EVERY_PROPERTY)
    by_operator = browse_one(dead_letters)

    assert by_worker.properties == by_operator.properties == expected_properties(EVERY_PROPERTY)
    assert by_worker.headers == by_operator.headers


# --- the result message -------------------------------------------------------------------------


def test_a_result_is_published_as_type_dot_outcome_on_his_results_correlated_to_its_event() -> None:
    result = build_result(
        event_id="evt-result-0001",
        event_type="payment.requested",
        trans_code="HOS00003",
        outcome=Outcome.UNKNOWN,
        at=datetime(2025, 9, 1, 8, 0, tzinfo=UTC),
        attempts=3,
        result_id="res-0001",
    )

    assert result_message(result, "evt-result-0001") == Outgoing(
        RESULTS_EXCHANGE,
        "payment.requested.unknown",
        result_body(result),
        message_id="res-0001",  # the HIS de-duplicates on it: the same for a republish
        correlation_id="evt-result-0001",
    )


# --- declaring a topology -----------------------------------------------------------------------


class Recorder:
    """A Declarer that writes down what it is asked, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def declare_exchange(self, exchange: Exchange) -> None:
        self.calls.append(("exchange", exchange.name))

    def declare_queue(self, name: str, arguments: Mapping[str, Any], durable: bool) -> None:
        self.calls.append(("queue", name))

    def bind(self, queue: str, exchange: str, routing_key: str) -> None:
        self.calls.append(("bind", queue, exchange, routing_key))


def test_a_topology_is_declared_exchanges_first_then_each_queue_before_its_bindings() -> None:
    topology = build_topology([1, 5], 0.1)
    recorder = Recorder()

    declare_topology(topology, recorder)

    exchanges = [c for c in recorder.calls if c[0] == "exchange"]
    assert recorder.calls[: len(exchanges)] == [("exchange", e.name) for e in topology.exchanges]
    declared: set[str] = set()
    for call in recorder.calls[len(exchanges) :]:
        if call[0] == "queue":
            declared.add(call[1])
        else:
            assert call[0] == "bind" and call[1] in declared, call
    assert declared == {q.name for q in topology.queues}
    assert sum(c[0] == "bind" for c in recorder.calls) == sum(
        len(q.bindings) for q in topology.queues
    )


def test_a_gateway_hand_off_goes_through_the_same_mapper_with_its_reply_address() -> None:
    visits = Handoff("evt-visits-0001", "platform.visits.requested", "HIS00003", b"{}", True)
    asked = to_amqp(handoff_message(visits, correlation_id="c-1")).properties
    told = to_amqp(handoff_message(visits)).properties

    assert asked["reply_to"] == DIRECT_REPLY_TO and asked["correlation_id"] == "c-1"
    assert asked["type"] == told["type"] == "platform.visits.requested"
    assert told["message_id"] == "evt-visits-0001" and "reply_to" not in told
