"""The application guards its SQLite ledger itself (issue 11): the chart cannot see inside an
existing Secret, so two replicas on two private SQLite ledgers would each believe an event new
and charge it twice. A worker on SQLite holds an exclusive, auto-delete queue
`huimin.ledger.sqlite-owner` on its connection, in its vhost; a second one is refused by
RabbitMQ (405 RESOURCE_LOCKED) and exits with one line and its own exit code."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from tests.test_engine_resilience import _close_connections, wait_until
from tests.test_worker import event, example, new_order_id
from tests.worker_harness import Backend, running, sqlite_url
from worker.app import build_worker, ledger_claim
from worker.broker.amqp import SQLITE_OWNER_QUEUE, AmqpTransport
from worker.broker.topology import build_topology
from worker.cli.startup import EXIT_LEDGER_CLAIMED
from worker.errors import LedgerClaimed
from worker.sandbox.simulator.server import SimulatorHandle
from worker.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def _second_worker(vhost: str, platform_url: str, ledger: Path) -> subprocess.CompletedProcess[str]:
    """`huimin-worker run` as a pod would start it: its own SQLite file, the same vhost."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUIMIN_")}
    env.update(
        HUIMIN_BROKER_URL=vhost,
        HUIMIN_LEDGER_URL=f"sqlite:///{ledger}",
        HUIMIN_PLATFORM_URL=platform_url,
        HUIMIN_METRICS_PORT="0",
        HUIMIN_STATEMENT_ENABLED="false",
        HUIMIN_LOG_LEVEL="WARNING",
    )
    return subprocess.run(
        [sys.executable, "-m", "worker", "run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _worker_settings(backend: Backend, platform_url: str) -> Settings:
    return backend.settings(platform_url, statement_enabled=False, metrics_port=0)


def test_a_second_worker_on_sqlite_in_the_same_vhost_exits_with_one_line(
    vhost: str, simulator: SimulatorHandle, tmp_path: Path
) -> None:
    platform_url = simulator.base_url + "/api"
    backend = Backend("rabbitmq-sqlite", vhost, sqlite_url(tmp_path))
    settings = _worker_settings(backend, platform_url)
    with running(build_worker(settings)) as first:  # the app's own transport: claims
        second = _second_worker(vhost, platform_url, tmp_path / "second.db")
        assert second.returncode == EXIT_LEDGER_CLAIMED, second.stderr
        (line,) = second.stderr.strip().splitlines()
        assert line.startswith("huimin-worker: another worker on this RabbitMQ vhost holds")
        assert SQLITE_OWNER_QUEUE in line and "use PostgreSQL for several replicas" in line
        assert first.engine.ready.is_set(), "the first keeps working"
        his = backend.his(settings)
        order_id = new_order_id()
        his.publish(event("payment.requested", example("HOS00003", orderId=order_id)))
        assert his.next_result(20).routing_key == "payment.requested.succeeded"
        his.close()
    assert simulator.receipts(order_id) == 1


def test_the_claim_is_taken_again_after_a_reconnect(
    vhost: str, simulator: SimulatorHandle, tmp_path: Path
) -> None:
    platform_url = simulator.base_url + "/api"
    backend = Backend("rabbitmq-sqlite", vhost, sqlite_url(tmp_path))
    with running(build_worker(_worker_settings(backend, platform_url))) as first:
        assert _close_connections(vhost.rsplit("/", 1)[1]) >= 1
        wait_until(lambda: not first.engine.ready.is_set())
        wait_until(first.engine.ready.is_set, timeout=30)
        second = _second_worker(vhost, platform_url, tmp_path / "second.db")
        assert second.returncode == EXIT_LEDGER_CLAIMED, second.stderr


def test_the_claim_ends_with_its_worker(vhost: str, tmp_path: Path) -> None:
    first = AmqpTransport(vhost, exclusive_claim=SQLITE_OWNER_QUEUE)
    other = AmqpTransport(vhost, exclusive_claim=SQLITE_OWNER_QUEUE)
    topology = build_topology([1.0], 0.0)
    first.connect()
    first.declare(topology)
    other.connect()
    with pytest.raises(LedgerClaimed, match="use PostgreSQL for several replicas"):
        other.declare(topology)
    other.close()
    first.close()  # a stopped (or crashed: its TCP connection closes) worker frees the claim
    deadline = time.monotonic() + 10
    while True:
        other.connect()
        try:
            other.declare(topology)
            break
        except LedgerClaimed:
            other.close()
            assert time.monotonic() < deadline, "the claim outlived its connection"
            time.sleep(0.2)
    other.close()


@pytest.mark.parametrize(
    ("ledger", "claim"),
    [
        ("sqlite:////var/lib/huimin/ledger.db", SQLITE_OWNER_QUEUE),
        ("SQLITE:///relative.db", SQLITE_OWNER_QUEUE),
        ("postgresql://huimin@db/huimin", None),
        ("postgres://huimin@db/huimin", None),
    ],
)
def test_only_a_sqlite_ledger_claims_the_vhost(ledger: str, claim: str | None) -> None:
    settings = Settings.model_construct(ledger_url=SecretStr(ledger))
    assert ledger_claim(settings) == claim
