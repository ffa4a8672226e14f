"""The worker survives a lost broker connection, and the sweeper recovers stale work."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.test_worker import event, example, new_order_id
from tests.worker_harness import (
    Backend,
    create_vhost,
    delete_vhost,
    running,
    sqlite_url,
    start_worker,
    vhost_url,
)
from worker.broker.amqp import AmqpTransport
from worker.broker.memory import MemoryBroker
from worker.broker.topology import work_queue_name
from worker.clock import FixedClock
from worker.contract.events import parse_event, prepare
from worker.ledger import EventState, NewEvent, open_ledger
from worker.pipeline.sweeper import Sweeper
from worker.protocol.registry import WorkClass
from worker.sandbox.simulator.server import SimulatorHandle

SIMULATOR_SEED = 3  # the simulator fixture (conftest.py)


def wait_until(condition, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_the_engine_reconnects_after_the_memory_broker_goes_down(
    simulator: SimulatorHandle, tmp_path: Path
) -> None:
    backend = Backend("memory", None, sqlite_url(tmp_path), MemoryBroker())
    settings = backend.settings(simulator.base_url + "/api")
    his = backend.his(settings)
    with running(start_worker(backend, settings)) as worker:
        assert backend.memory is not None
        backend.memory.down = True
        wait_until(lambda: not worker.engine.ready.is_set())
        backend.memory.down = False
        wait_until(worker.engine.ready.is_set)
        his.publish(event("signing.status.requested", example("HOS00001")))
        assert his.next_result(20).routing_key == "signing.status.requested.succeeded"


def _close_connections(vhost: str) -> int:
    listing = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "pid", "vhost"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pids = [line.split("\t")[0] for line in listing.splitlines() if line.endswith("\t" + vhost)]
    for pid in pids:
        subprocess.run(
            ["rabbitmqctl", "-q", "close_connection", pid, "test: connection lost"],
            capture_output=True,
        )
    return len(pids)


def test_the_worker_survives_rabbitmq_closing_its_connection(
    rabbitmq_url: str, simulator: SimulatorHandle, tmp_path: Path
) -> None:
    name = f"huimin-resilience-{uuid.uuid4().hex[:8]}"
    create_vhost(name)
    try:
        backend = Backend("rabbitmq", vhost_url(rabbitmq_url, name), sqlite_url(tmp_path))
        settings = backend.settings(simulator.base_url + "/api")
        with running(start_worker(backend, settings)) as worker:
            his = backend.his(settings)
            his.publish(event("signing.status.requested", example("HOS00001")))
            assert his.next_result(20).routing_key.endswith(".succeeded")
            his.close()
            assert _close_connections(name) >= 1
            wait_until(lambda: not worker.engine.ready.is_set())
            wait_until(worker.engine.ready.is_set, timeout=30)
            his = backend.his(settings)
            order_id = new_order_id()
            his.publish(event("payment.requested", example("HOS00003", orderId=order_id)))
            assert his.next_result(20).routing_key == "payment.requested.succeeded"
            his.close()
        assert simulator.receipts(order_id) == 1
    finally:
        delete_vhost(name)


def test_the_sweeper_reinjects_stale_unfinished_events(tmp_path: Path) -> None:
    clock = FixedClock(datetime(2026, 11, 25, 8, 0, tzinfo=UTC))
    ledger = open_ledger(sqlite_url(tmp_path))
    ledger.migrate()
    body = event("payment.requested", example("HOS00003", orderId=new_order_id()))
    prepared = prepare(
        parse_event(json.dumps(body).encode()), hospital_id="H0000001", city_code="441800"
    )
    ledger.begin_event(
        NewEvent(
            body["eventId"],
            body["type"],
            "HOS00003",
            body,
            prepared.payload_hash,
            prepared.business_key,
            prepared.keys,
            clock(),
        )
    )
    ledger.start_attempt(body["eventId"], "HOS00003", "SEQSTALE000001", "call", clock())
    sweeper = Sweeper(ledger, clock, timedelta(minutes=15))
    assert sweeper.sweep() is None  # fresh: a live worker may still be on it
    clock.advance(16 * 60)
    swept = sweeper.sweep()
    assert swept is not None and len(swept.messages) == 1
    message = swept.messages[0]
    assert message.routing_key == work_queue_name(WorkClass.MONEY)
    assert message.message_id == body["eventId"]
    assert ledger.get_event(body["eventId"]).state is EventState.IN_FLIGHT
    assert sweeper.sweep() is None  # touched: not re-injected on every sweep


def test_heartbeats_keep_flowing_while_a_platform_call_is_slow(
    rabbitmq_url: str, simulator: SimulatorHandle, tmp_path: Path
) -> None:
    # A 1 s heartbeat: RabbitMQ drops a connection that misses two. The platform takes 4 s.
    simulator.add_fault("latency", "HOS00001", times=1, ms=4000)
    name = f"huimin-heartbeat-{uuid.uuid4().hex[:8]}"
    create_vhost(name)
    try:
        url = vhost_url(rabbitmq_url, name)
        backend = Backend("rabbitmq", url, sqlite_url(tmp_path))
        settings = backend.settings(simulator.base_url + "/api", read_timeout_s=10.0)
        worker = start_worker(backend, settings)
        worker.engine.transport = AmqpTransport(url, heartbeat=1)
        with running(worker):
            his = backend.his(settings)
            his.publish(event("signing.status.requested", example("HOS00001")))
            result = his.next_result(30)
            his.close()
        assert result.routing_key == "signing.status.requested.succeeded"
        assert worker.metrics.registry.get_sample_value("huimin_broker_reconnects_total") == 0
    finally:
        delete_vhost(name)
