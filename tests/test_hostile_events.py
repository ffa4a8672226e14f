"""Hostile and unlucky events: none may stop the worker, loop, vanish or decide another's event.

Each test runs on the in-memory broker with SQLite, and on the real RabbitMQ with SQLite and
with PostgreSQL (where a NUL or an 8,000-character id used to be refused by the database).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

import amqp
import pytest

from tests.test_worker import event, example, new_order_id
from tests.worker_harness import Backend, running, start_worker
from worker.broker.messages import Delivery, Outgoing
from worker.broker.topology import EVENTS_EXCHANGE, H_ERROR, H_REASON, H_ROUTING_KEY
from worker.sandbox.his import AmqpHis, HisSide, MemoryHis, ReceivedResult
from worker.sandbox.simulator.server import SimulatorHandle

BACKENDS = ["memory-sqlite", "rabbitmq-sqlite", "rabbitmq-postgres"]
#: small enough that a test can send a body over it cheaply
MAX_EVENT_BYTES = 16 * 1024


def _body(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False).encode("utf-8")


def _id() -> str:
    return f"evt-{uuid.uuid4().hex}"


def _nested(depth: int) -> bytes:
    return b'{"eventId": "evt-deep-0001", "data": ' + b"[" * depth + b"]" * depth + b"}"


def _poison() -> list[tuple[str, bytes, str, str | None]]:
    """(what, body, the dead-letter reason, the eventId that gets a `failed` result or None)."""
    payment = example("HOS00003", orderId=new_order_id())
    readable_nul, readable_big = _id(), _id()
    big = event("payment.requested", {**payment, "remark": "x" * MAX_EVENT_BYTES}, readable_big)
    return [
        (
            "a 300-byte eventId",
            _body(event("payment.requested", payment, "e" * 300)),
            "invalid_event",
            None,
        ),
        (
            "an 8,000-character eventId",
            _body(event("payment.requested", payment, "e" * 8000)),
            "invalid_event",
            None,
        ),
        (
            "a NUL in the eventId",
            _body(event("payment.requested", payment, "evt-nul\x00-0001")),
            "invalid_event",
            None,
        ),
        (
            "a NUL in data.orderId",
            _body(event("payment.requested", {**payment, "orderId": "PAY\x00X"}, readable_nul)),
            "invalid_event",
            readable_nul,
        ),
        (
            "a 300-character type",
            _body({**event("payment.requested", payment), "type": "t" * 300}),
            "unknown_type",
            None,
        ),
        ("JSON nested 5,000 deep", _nested(5000), "invalid_event", None),
        ("a body over HUIMIN_MAX_EVENT_BYTES", _body(big), "too_large", readable_big),
        ("not JSON", b"{not json", "invalid_event", None),
        ("a JSON array", b"[1, 2, 3]", "invalid_event", None),
        ("not UTF-8", b'{"eventId": "\xff\xfe"}', "invalid_event", None),
    ]


def test_each_poison_message_is_dead_lettered_once_and_the_worker_goes_on(
    backend: Backend, simulator: SimulatorHandle, his: HisSide, caplog: pytest.LogCaptureFixture
) -> None:
    poison = _poison()
    settings = backend.settings(simulator.base_url + "/api", max_event_bytes=MAX_EVENT_BYTES)
    order_id = new_order_id()
    with caplog.at_level(logging.INFO), running(start_worker(backend, settings)):
        for _, body, _, _ in poison:
            his.publish(body, routing_key="payment.requested")
        payment = event("payment.requested", example("HOS00003", orderId=order_id))
        his.publish(payment)
        expected = {payment["eventId"], *(event_id for *_, event_id in poison if event_id)}
        results = _results_for(his, expected)
        letters = _dead_letters(his, len(poison))
    by_body = {_bytes(letter.body): letter for letter in letters}
    assert len(letters) == len(poison), "each poison message is dead-lettered exactly once"
    for what, body, reason, _ in poison:
        assert by_body[body].headers[H_REASON] == reason, what
        assert by_body[body].headers[H_ERROR], what
    assert sorted(r.correlation_id or "" for r in results) == sorted(expected)
    outcomes = {r.correlation_id: r.routing_key for r in results}
    assert outcomes.pop(payment["eventId"]) == "payment.requested.succeeded"
    assert set(outcomes.values()) == {"payment.requested.failed"}
    assert simulator.receipts(order_id) == 1
    worker_lines = [r for r in caplog.records if r.name.startswith("worker.")]
    assert len(worker_lines) <= 4 * (len(poison) + 1), "a bounded number of log lines"
    assert not any(r.exc_info for r in worker_lines), "no tracebacks"


def test_an_invalid_copy_of_an_in_flight_payment_leaves_it_succeeded_with_one_receipt(
    backend: Backend, simulator: SimulatorHandle, his: HisSide
) -> None:
    # the platform takes 1.5 s to answer: the invalid copy arrives while the call is in flight
    simulator.add_fault("latency", "HOS00003", times=1, distribution="fixed", ms=1500)
    settings = backend.settings(simulator.base_url + "/api", read_timeout_s=10.0)
    order_id = new_order_id()
    payment = event("payment.requested", example("HOS00003", orderId=order_id, amt=250))
    copy = {**payment, "data": {**payment["data"], "amt": 250.5}}  # re-serialised by someone
    with running(start_worker(backend, settings)) as worker:
        his.publish(payment)
        _wait(lambda: simulator.stats().get("HOS00003"), "the payment to reach the platform")
        his.publish(copy)
        letters = _dead_letters(his, 1)
        results = _results_until(his, payment["eventId"])
        backend.settle(rabbitmq_wait_s=0.5)  # a second result, if any, would be out by now
        late = _drain_results(his)
        record = worker.ledger.get_event(payment["eventId"])
        counted = worker.metrics.registry.get_sample_value(
            "huimin_dead_lettered_total", {"reason": "invalid_copy"}
        )
    assert [letter.headers[H_REASON] for letter in letters] == ["invalid_copy"]
    assert counted == 1, "counted under its own reason, not `other`"
    assert [r.routing_key for r in results + late] == ["payment.requested.succeeded"]
    assert record is not None and record.outcome == "succeeded"
    assert simulator.receipts(order_id) == 1


def test_an_invalid_copy_of_a_finished_event_changes_nothing(
    backend: Backend, simulator: SimulatorHandle, his: HisSide
) -> None:
    settings = backend.settings(simulator.base_url + "/api")
    order_id = new_order_id()
    payment = event("payment.requested", example("HOS00003", orderId=order_id))
    with running(start_worker(backend, settings)) as worker:
        his.publish(payment)
        first = _results_until(his, payment["eventId"])[-1]
        his.publish({**payment, "occurredAt": "yesterday"})
        letters = _dead_letters(his, 1)
        his.publish(payment)  # a valid redelivery still republishes the one stored result
        again = _results_until(his, payment["eventId"])[-1]
        record = worker.ledger.get_event(payment["eventId"])
    assert [letter.headers[H_REASON] for letter in letters] == ["invalid_copy"]
    assert first.routing_key == again.routing_key == "payment.requested.succeeded"
    assert first.body["resultId"] == again.body["resultId"]
    assert record is not None and record.outcome == "succeeded"
    assert simulator.receipts(order_id) == 1


def test_a_refused_event_delivered_again_republishes_its_one_failed_result(
    backend: Backend, simulator: SimulatorHandle, his: HisSide
) -> None:
    settings = backend.settings(simulator.base_url + "/api")
    bad = event("payment.requested", example("HOS00003", amt="100"))
    with running(start_worker(backend, settings)):
        his.publish(bad)
        first = _results_until(his, bad["eventId"])[-1]
        his.publish(bad)
        again = _results_until(his, bad["eventId"])[-1]
        letters = _dead_letters(his, 2)
    assert first.routing_key == "payment.requested.failed"
    assert again.body["resultId"] == first.body["resultId"]
    assert [letter.headers[H_REASON] for letter in letters] == ["invalid_event"] * 2
    assert simulator.stats() == {}


# --- helpers -----------------------------------------------------------------------------------


def _results_until(his: HisSide, event_id: str, timeout: float = 30.0) -> list[ReceivedResult]:
    """Every result up to and including the first one for `event_id`."""
    results: list[ReceivedResult] = []
    deadline = time.monotonic() + timeout
    while not results or results[-1].correlation_id != event_id:
        results.append(his.next_result(max(0.1, deadline - time.monotonic())))
    return results


def _results_for(his: HisSide, event_ids: set[str], timeout: float = 30.0) -> list[ReceivedResult]:
    """Results until one has come for each of `event_ids`, then whatever else follows at once
    (a second result for any of them would be a broken promise)."""
    results: list[ReceivedResult] = []
    deadline = time.monotonic() + timeout
    while not event_ids <= {r.correlation_id for r in results}:
        results.append(his.next_result(max(0.1, deadline - time.monotonic())))
    return results + _drain_results(his)


def _drain_results(his: HisSide) -> list[ReceivedResult]:
    found: list[ReceivedResult] = []
    while True:
        try:
            found.append(his.next_result(0.2))
        except TimeoutError:
            return found


def _dead_letters(his: HisSide, count: int, timeout: float = 15.0) -> list[Delivery]:
    letters: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(letters) < count and time.monotonic() < deadline:
        letters += his.dead_letters()
        time.sleep(0.05)
    time.sleep(0.2)
    return letters + his.dead_letters()  # and nothing more than expected


def _bytes(body: bytes | str) -> bytes:
    """py-amqp hands a body published with content_encoding utf-8 back as str."""
    return body if isinstance(body, bytes) else body.encode("utf-8", "surrogateescape")


def _wait(condition: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_an_event_with_an_unknown_routing_key_is_dead_lettered_and_answered(
    backend: Backend, simulator: SimulatorHandle, his: HisSide
) -> None:
    settings = backend.settings(simulator.base_url + "/api")
    typo = event("payment.requestd", example("HOS00003"))  # no work queue is bound to it
    with running(start_worker(backend, settings)):
        his.publish(typo)
        result = _results_until(his, typo["eventId"])[-1]
        letters = _dead_letters(his, 1)
    assert result.routing_key == "payment.requestd.failed"
    assert result.body["errors"][0]["field"] == "type"
    assert [letter.headers[H_REASON] for letter in letters] == ["unknown_type"]
    assert simulator.stats() == {}


def test_a_routing_key_header_from_the_his_is_not_believed(
    backend: Backend, simulator: SimulatorHandle, his: HisSide
) -> None:
    """A payment published as `fee.posted` with the worker's own header claiming
    `payment.requested` must not run on the claims queue: the header is ours, not the HIS's."""
    settings = backend.settings(simulator.base_url + "/api")
    payment = event("payment.requested", example("HOS00003", orderId=new_order_id()))
    with running(start_worker(backend, settings)):
        _publish_with_headers(his, payment, "fee.posted", {H_ROUTING_KEY: "payment.requested"})
        result = _results_until(his, payment["eventId"])[-1]
        letters = _dead_letters(his, 1)
    assert result.routing_key == "payment.requested.failed"
    assert "routing key 'fee.posted'" in result.body["rtMsg"]
    assert [letter.headers[H_REASON] for letter in letters] == ["invalid_event"]
    assert simulator.stats() == {}


def _publish_with_headers(
    his: HisSide, document: dict[str, Any], routing_key: str, headers: dict[str, Any]
) -> None:
    message = Outgoing(
        EVENTS_EXCHANGE, routing_key, _body(document), headers, message_id=document["eventId"]
    )
    if isinstance(his, MemoryHis):
        his.broker.publish(message)
        return
    assert isinstance(his, AmqpHis)
    his.channel.basic_publish(
        amqp.Message(
            message.body,
            content_type="application/json",
            delivery_mode=2,
            application_headers=dict(headers),
            message_id=message.message_id,
        ),
        exchange=EVENTS_EXCHANGE,
        routing_key=routing_key,
    )
