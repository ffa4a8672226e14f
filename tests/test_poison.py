"""No message stops the engine or loops: a handler that raises, a Disposition AMQP cannot carry.

The real worker on the in-memory broker and on RabbitMQ (SQLite ledger). The handler is the
real processor, wrapped so that one chosen event misbehaves the way a bug or a poison message
would; every other event goes through untouched, and a payment published after the poison
must still succeed.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.test_worker import event, example, new_order_id
from tests.worker_harness import Backend, running, start_worker
from worker.app import build_worker
from worker.broker.base import Transport
from worker.broker.messages import Delivery, Disposition, Outgoing
from worker.broker.topology import (
    DEAD_LETTER_QUEUE,
    H_ERROR,
    H_HANDLER_ERRORS,
    H_REASON,
    RESULTS_EXCHANGE,
)
from worker.errors import UnpublishableMessage
from worker.sandbox.his import HisSide
from worker.sandbox.simulator.server import SimulatorHandle

BACKENDS = ["memory-sqlite", "rabbitmq-sqlite"]
RETRY_DELAYS_S = [0.2, 0.4, 0.8]  # worker_harness.FAST_RETRIES
JITTER = 0.1


def _event_id() -> str:
    return f"evt-{uuid.uuid4().hex}"


def _dead_letters(his: HisSide, count: int, timeout: float = 20.0) -> list[Delivery]:
    letters: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(letters) < count:
        assert time.monotonic() < deadline, f"{len(letters)} dead letters of {count}"
        letters += his.dead_letters()
        time.sleep(0.05)
    return letters


def _payment_succeeds(his: HisSide, simulator: SimulatorHandle) -> None:
    """A payment published after the poison is processed: the worker is still up."""
    order_id = new_order_id()
    payment = event("payment.requested", example("HOS00003", orderId=order_id))
    his.publish(payment)
    deadline = time.monotonic() + 20
    while True:
        result = his.next_result(max(0.1, deadline - time.monotonic()))
        if result.correlation_id == payment["eventId"]:
            break
    assert result.routing_key == "payment.requested.succeeded"
    assert simulator.receipts(order_id) == 1


Handle = Callable[[Delivery], Disposition]


def _wrap(handle: Handle, poison_id: str, misbehave: Handle) -> Handle:
    def handler(delivery: Delivery) -> Disposition:
        return misbehave(delivery) if delivery.message_id == poison_id else handle(delivery)

    return handler


def test_a_handler_that_raises_is_retried_with_backoff_then_dead_lettered_handler_error(
    backend: Backend, simulator: SimulatorHandle, his: HisSide, caplog: pytest.LogCaptureFixture
) -> None:
    settings = backend.settings(simulator.base_url + "/api", handler_error_retries=2)
    poison_id = _event_id()
    calls: list[float] = []

    def raises(delivery: Delivery) -> Disposition:
        calls.append(time.monotonic())
        raise RecursionError(f"maximum recursion depth exceeded ({poison_id})")

    worker = start_worker(backend, settings)
    worker.engine.handler = _wrap(worker.engine.handler, poison_id, raises)
    with caplog.at_level(logging.INFO, logger="worker"), running(worker):
        his.publish(event("signing.status.requested", example("HOS00001"), poison_id))
        [letter] = _dead_letters(his, 1)
        _payment_succeeds(his, simulator)
        backend.settle(rabbitmq_wait_s=0.5)  # nothing else happens to it
    assert len(calls) == 3, "the first delivery and 2 retries, never more"
    gaps = [later - earlier for earlier, later in zip(calls, calls[1:], strict=False)]
    for gap, delay in zip(gaps, RETRY_DELAYS_S, strict=False):
        assert gap >= delay * (1 - JITTER) - 0.05, f"retried after {gap:.2f} s, not backed off"
    assert letter.message_id == poison_id
    assert letter.headers[H_REASON] == "handler_error"
    assert "RecursionError: maximum recursion depth exceeded" in letter.headers[H_ERROR]
    assert letter.headers[H_HANDLER_ERRORS] == 2
    failures = [r for r in caplog.records if r.name == "worker.pipeline.engine" and r.levelno >= 40]
    assert len(failures) == 3, "one line per failure"
    assert [bool(r.exc_info) for r in failures] == [True, False, False], "one traceback"


BAD_MESSAGES: dict[str, Callable[[Delivery], Outgoing]] = {
    "a 300-byte message_id": lambda d: Outgoing(
        RESULTS_EXCHANGE, "payment.requested.failed", b"{}", message_id="m" * 300
    ),
    "a 300-byte routing key": lambda d: Outgoing(RESULTS_EXCHANGE, "r" * 300, b"{}"),
    "a header value of no AMQP type": lambda d: Outgoing(
        RESULTS_EXCHANGE, "x.failed", b"{}", headers={"x-bad": object()}
    ),
}


@pytest.mark.parametrize("bad", list(BAD_MESSAGES))
def test_a_disposition_that_cannot_be_published_is_dead_lettered_unpublishable(
    backend: Backend,
    simulator: SimulatorHandle,
    his: HisSide,
    bad: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = backend.settings(simulator.base_url + "/api")
    poison_id = _event_id()

    def unpublishable(delivery: Delivery) -> Disposition:
        return Disposition((BAD_MESSAGES[bad](delivery),), event_id=poison_id, label="failed")

    worker = start_worker(backend, settings)
    worker.engine.handler = _wrap(worker.engine.handler, poison_id, unpublishable)
    with caplog.at_level(logging.INFO, logger="worker"), running(worker) as running_worker:
        his.publish(event("signing.status.requested", example("HOS00001"), poison_id))
        [letter] = _dead_letters(his, 1)
        _payment_succeeds(his, simulator)
        assert running_worker.engine.ready.is_set()
    assert letter.headers[H_REASON] == "unpublishable"
    assert "could not be published" in letter.headers[H_ERROR]
    assert letter.message_id == poison_id
    errors = [r for r in caplog.records if r.name == "worker.pipeline.engine" and r.levelno >= 40]
    assert len(errors) == 1 and not errors[0].exc_info


class _NoDeadLetters:
    """A transport that cannot publish to the dead-letter queue either (the last resort)."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner

    def publish(self, message: Outgoing) -> int:
        if message.routing_key == DEAD_LETTER_QUEUE or message.message_id == "m" * 300:
            raise UnpublishableMessage("test: cannot publish this")
        return self.inner.publish(message)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_when_even_the_dead_letter_cannot_be_published_the_delivery_is_rejected_to_its_queues_dlx(
    backend: Backend, simulator: SimulatorHandle, his: HisSide
) -> None:
    settings = backend.settings(simulator.base_url + "/api")
    poison_id = _event_id()
    worker = build_worker(settings, transport=_NoDeadLetters(backend.transport()))  # type: ignore[arg-type]
    bad = BAD_MESSAGES["a 300-byte message_id"]
    worker.engine.handler = _wrap(
        worker.engine.handler, poison_id, lambda d: Disposition((bad(d),))
    )
    with running(worker):
        his.publish(event("signing.status.requested", example("HOS00001"), poison_id))
        [letter] = _dead_letters(his, 1)  # RabbitMQ's own dead-lettering (the queue's DLX)
        _payment_succeeds(his, simulator)
    assert letter.headers["x-first-death-reason"] == "rejected"
    assert letter.message_id == poison_id


def test_an_event_the_engine_dead_lettered_is_parked_and_not_swept_again(
    backend: Backend, simulator: SimulatorHandle, his: HisSide
) -> None:
    """The event is in the ledger, unfinished, when its handling starts raising: once its
    dead letter is confirmed the event is parked, so the sweeper does not re-inject it every
    few minutes (to fail and be dead-lettered again); `dlq replay` resumes it."""
    from datetime import timedelta

    from worker.ledger.base import EventState

    settings = backend.settings(simulator.base_url + "/api")
    worker = start_worker(backend, settings)
    payment = event("payment.requested", example("HOS00003", orderId=new_order_id()))

    def broken_call(*_: Any, **__: Any) -> Any:
        raise RuntimeError("a bug after the event was recorded")

    worker.processor.client.call = broken_call  # type: ignore[method-assign]
    with running(worker):
        his.publish(payment)
        letters = _dead_letters(his, 1)
        deadline = time.monotonic() + 10
        while (
            (record := worker.ledger.get_event(payment["eventId"])) is not None
            and record.state is not EventState.PARKED
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        much_later = worker.sweeper.clock() + timedelta(days=1)
        stale = worker.ledger.unfinished_events(much_later)
    assert letters[0].headers[H_REASON] == "handler_error"
    assert record is not None and record.state is EventState.PARKED
    assert payment["eventId"] not in {r.event_id for r in stale}
    assert simulator.stats() == {}
