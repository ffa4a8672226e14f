"""A worker killed with SIGKILL mid-payment, then restarted, finishes it with one charge."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_worker import event, example, new_order_id
from tests.worker_harness import (
    FAST_RETRIES,
    create_vhost,
    delete_vhost,
    postgres_schema,
    sqlite_url,
    vhost_url,
)
from worker.broker.topology import build_topology
from worker.sandbox.his import AmqpHis, ReceivedResult
from worker.sandbox.simulator.server import SimulatorHandle, run_in_thread


@pytest.fixture
def vhost(rabbitmq_url: str) -> Iterator[str]:
    name = f"huimin-crash-{uuid.uuid4().hex[:8]}"
    create_vhost(name)
    try:
        yield vhost_url(rabbitmq_url, name)
    finally:
        delete_vhost(name)


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
        return
    with postgres_schema(request.getfixturevalue("postgres_url")) as url:
        yield url


def worker_process(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "run"],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def environment(broker_url: str, ledger_url: str, platform_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUIMIN_")}
    env |= {
        "HUIMIN_BROKER_URL": broker_url,
        "HUIMIN_LEDGER_URL": ledger_url,
        "HUIMIN_PLATFORM_URL": platform_url,
        "HUIMIN_READ_TIMEOUT_S": "10",
        "HUIMIN_RETRY_DELAYS_S": str(FAST_RETRIES["retry_delays_s"]),
        # a stable replica name: the restarted worker resumes its own lease at once
        "HUIMIN_WORKER_NAME": "crash-test-worker",
        "HUIMIN_METRICS_PORT": "0",
        "HUIMIN_LOG_FORMAT": "text",
        # the daily statement job would publish into his.results once 13:00 China time passed
        "HUIMIN_STATEMENT_ENABLED": "false",
    }
    return env


def wait_for(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def result_for(his: AmqpHis, event_id: str, timeout: float) -> ReceivedResult:
    """The result of this event: whatever else reaches his.results is not its answer."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        result = his.next_result(timeout=left)
        if result.correlation_id == event_id:
            return result
    raise AssertionError(f"no result for {event_id} within {timeout} s")


def test_sigkill_mid_payment_then_restart_charges_once(
    vhost: str, ledger_url: str, tmp_path: Path
) -> None:
    with run_in_thread(seed=1) as simulator:
        _crash_and_recover(simulator, vhost, ledger_url, tmp_path)


def _crash_and_recover(
    simulator: SimulatorHandle, vhost: str, ledger_url: str, tmp_path: Path
) -> None:
    # the platform processes the payment, then sits on the answer for 5 s
    simulator.add_fault("lose_response", "HOS00003", times=1, seconds=5)
    env = environment(vhost, ledger_url, simulator.base_url + "/api")
    his = AmqpHis(vhost, build_topology(FAST_RETRIES["retry_delays_s"], 0.2))
    log = tmp_path / "worker.log"
    order_id = new_order_id()
    payment = event("payment.requested", example("HOS00003", orderId=order_id))
    first = worker_process(env, log)
    try:
        his.publish(payment)
        wait_for(lambda: simulator.receipts(order_id) == 1, 20, "the platform to charge")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        second = worker_process(env, log)
        try:
            result = result_for(his, payment["eventId"], timeout=30)
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(20) == 0, log.read_text()
    finally:
        first.kill()
        his.close()
    assert result.routing_key == "payment.requested.succeeded", log.read_text()
    assert simulator.receipts(order_id) == 1
