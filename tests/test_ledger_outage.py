"""A ledger outage makes the worker back off, not spin (issue 10).

While the ledger is down the engine holds the deliveries it has (unacked: RabbitMQ does not
count a redelivery), stops consuming, reports not-ready, counts the outage and probes the
ledger with backoff; when the ledger answers again it resumes by itself and finishes every
held event exactly once. One WARNING at the pause, one INFO at the resume.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.test_worker import event, example, new_order_id
from tests.worker_harness import Backend, running
from worker.app import build_worker
from worker.broker.messages import Delivery, Disposition
from worker.errors import LedgerUnavailable
from worker.health import worker_checks
from worker.ledger.base import Ledger
from worker.sandbox.his import HisSide
from worker.sandbox.simulator.server import SimulatorHandle

BACKENDS = ["memory-sqlite", "rabbitmq-sqlite"]
EVENTS = 6
CONCURRENCY = 2


class FlakyLedger:
    """The real ledger, unreachable while `down` is set (every call raises, as a refused
    PostgreSQL connection does through the ledger's own boundary)."""

    def __init__(self, inner: Ledger) -> None:
        self.inner = inner
        self.down = threading.Event()
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if not callable(attribute) or name in ("close", "migrate"):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.down.is_set():
                self.refused += 1
                raise LedgerUnavailable("test: connection refused")
            return attribute(*args, **kwargs)

        return call


class Recorder:
    """Wraps the engine's handler: every delivery it is given, with its broker bookkeeping."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.seen: list[Delivery] = []
        self.lock = threading.Lock()

    def __call__(self, delivery: Delivery) -> Disposition:
        with self.lock:
            self.seen.append(delivery)
        return self.handle(delivery)

    def count(self) -> int:
        with self.lock:
            return len(self.seen)


def _wait(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _results(his: HisSide, wanted: set[str], timeout: float = 30.0) -> dict[str, str]:
    found: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while not wanted <= found.keys():
        result = his.next_result(max(0.1, deadline - time.monotonic()))
        if result.correlation_id in wanted:
            assert result.correlation_id not in found, "one result per event"
            found[result.correlation_id] = result.routing_key
    return found


def test_a_ledger_outage_pauses_consuming_holds_the_deliveries_and_resumes_by_itself(
    backend: Backend, simulator: SimulatorHandle, his: HisSide, caplog: pytest.LogCaptureFixture
) -> None:
    settings = backend.settings(simulator.base_url + "/api", concurrency=CONCURRENCY, prefetch=4)
    ledger = FlakyLedger(backend.ledger())
    worker = build_worker(settings, transport=backend.transport(), ledger=ledger)  # type: ignore[arg-type]
    recorder = Recorder(worker.engine.handler)
    worker.engine.handler = recorder
    worker.engine.config.probe_delays_s = (0.2, 0.4)
    metric = worker.metrics.registry.get_sample_value
    orders = [new_order_id() for _ in range(EVENTS)]
    payments = [event("payment.requested", example("HOS00003", orderId=o)) for o in orders]
    with caplog.at_level(logging.INFO, logger="worker.pipeline.engine"), running(worker):
        time.sleep(0.3)  # the sweeper's first run at start-up is over
        ledger.down.set()
        for payment in payments:
            his.publish(payment)
        _wait(worker.engine.paused.is_set)
        thread = threading.current_thread()
        assert "paused" in worker_checks(worker.engine, ledger, lambda: thread).failing()  # type: ignore[arg-type]
        assert metric("huimin_consuming_paused") == 1
        during = recorder.count()
        time.sleep(2.0)  # a hot loop would run the handler hundreds of times by now
        assert recorder.count() == during <= CONCURRENCY, "no delivery is retried while paused"
        assert ledger.refused <= during + 15, "the ledger is probed with backoff, not hammered"
        ledger.down.clear()
        results = _results(his, {p["eventId"] for p in payments})
        _wait(lambda: not worker.engine.paused.is_set())
        assert worker_checks(worker.engine, ledger, lambda: thread).failing() == []  # type: ignore[arg-type]
    assert set(results.values()) == {"payment.requested.succeeded"}
    assert all(simulator.receipts(o) == 1 for o in orders), "each payment charged once"
    assert recorder.count() == EVENTS + during, "held deliveries handled again once, no more"
    # the held deliveries were never returned to the queue: handled again under the same
    # delivery tag, not redelivered, and RabbitMQ counted no delivery for them
    held = recorder.seen[:during]
    again = {d.tag: d for d in recorder.seen[during:]}
    assert all(
        again[d.tag].message_id == d.message_id
        and not again[d.tag].redelivered
        and "x-delivery-count" not in again[d.tag].headers
        for d in held
    )
    # RabbitMQ itself returns what it was sending to a consumer as it is cancelled (it counts
    # one delivery): at most a prefetch window, once per outage
    assert sum(d.redelivered for d in recorder.seen) <= 4
    assert metric("huimin_ledger_outages_total") == 1
    assert metric("huimin_consuming_paused") == 0
    engine_lines = [r for r in caplog.records if r.name == "worker.pipeline.engine"]
    assert len([r for r in engine_lines if r.levelno == logging.WARNING]) == 1
    assert len([r for r in engine_lines if "resumed" in r.getMessage()]) == 1


def test_a_ledger_unavailable_escaping_a_handler_pauses_like_a_requeue(
    backend: Backend, simulator: SimulatorHandle, his: HisSide
) -> None:
    settings = backend.settings(simulator.base_url + "/api", concurrency=1)
    worker = build_worker(settings, transport=backend.transport())
    down = threading.Event()
    down.set()
    real = worker.engine.handler

    def handler(delivery: Delivery) -> Disposition:
        if down.is_set():
            raise LedgerUnavailable("test: escaped the processor")
        return real(delivery)

    def probe() -> None:
        if down.is_set():
            raise LedgerUnavailable("test: still down")

    worker.engine.handler = handler
    worker.engine.config.probe = probe
    worker.engine.config.probe_delays_s = (0.2,)
    payment = event("payment.requested", example("HOS00003", orderId=new_order_id()))
    with running(worker):
        his.publish(payment)
        _wait(worker.engine.paused.is_set)
        assert not his.dead_letters(), "an outage is not a handler error"
        down.clear()
        assert _results(his, {payment["eventId"]}) == {
            payment["eventId"]: "payment.requested.succeeded"
        }


def test_a_delivery_the_ledger_keeps_refusing_while_it_answers_probes_is_not_held_forever(
    tmp_path: Path, simulator: SimulatorHandle
) -> None:
    # e.g. an id PostgreSQL refuses, misreported as an outage: every probe answers, yet the
    # delivery comes back "ledger unavailable" each time
    from tests.worker_harness import Backend, sqlite_url
    from worker.broker.memory import MemoryBroker
    from worker.pipeline.pause import HOLD_LIMIT

    backend = Backend("memory-sqlite", None, sqlite_url(tmp_path), MemoryBroker())
    settings = backend.settings(simulator.base_url + "/api", handler_error_retries=0)
    his = backend.his(settings)
    worker = build_worker(settings, transport=backend.transport())
    real, calls = worker.engine.handler, []

    def handler(delivery: Delivery) -> Disposition:
        if delivery.message_id == "evt-refused-0001":
            calls.append(delivery)
            return Disposition(requeue=True, label="requeued")
        return real(delivery)

    worker.engine.handler = handler
    worker.engine.config.probe_delays_s = (0.01,)
    with running(worker):
        his.publish(event("payment.requested", example("HOS00003"), "evt-refused-0001"))
        _wait(lambda: bool(his.dead_letters()) or len(calls) > 3 * HOLD_LIMIT)
        payment = event("payment.requested", example("HOS00003", orderId=new_order_id()))
        his.publish(payment)
        assert _results(his, {payment["eventId"]}) == {
            payment["eventId"]: "payment.requested.succeeded"
        }
    assert len(calls) == HOLD_LIMIT + 1, "held HOLD_LIMIT times, then given up on"


def test_a_broker_connection_lost_while_paused_abandons_the_held_deliveries_and_stays_paused(
    tmp_path: Path, simulator: SimulatorHandle
) -> None:
    from tests.worker_harness import Backend, sqlite_url
    from worker.broker.memory import MemoryBroker

    broker = MemoryBroker()
    backend = Backend("memory-sqlite", None, sqlite_url(tmp_path), broker)
    settings = backend.settings(simulator.base_url + "/api", concurrency=1)
    his = backend.his(settings)
    ledger = FlakyLedger(backend.ledger())
    worker = build_worker(settings, transport=backend.transport(), ledger=ledger)  # type: ignore[arg-type]
    recorder = Recorder(worker.engine.handler)
    worker.engine.handler = recorder
    payments = [
        event("payment.requested", example("HOS00003", orderId=new_order_id())) for _ in range(3)
    ]
    with running(worker):
        time.sleep(0.3)
        ledger.down.set()
        for payment in payments:
            his.publish(payment)
        _wait(worker.engine.paused.is_set)
        broker.down = True  # RabbitMQ takes the held deliveries back
        _wait(lambda: not worker.engine.ready.is_set())
        broker.down = False
        _wait(worker.engine.ready.is_set)
        seen = recorder.count()
        time.sleep(1.0)
        assert worker.engine.paused.is_set() and recorder.count() == seen, "still paused"
        ledger.down.clear()
        results = _results(his, {p["eventId"] for p in payments})
    assert set(results.values()) == {"payment.requested.succeeded"}
    redelivered = [d for d in recorder.seen if d.redelivered]
    assert redelivered, "the held deliveries came back from the broker"
