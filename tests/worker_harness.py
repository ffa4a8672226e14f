"""Run the real worker against a backend: (memory | RabbitMQ) x (SQLite | PostgreSQL).

The same integration tests run on every backend (faststream's spirit): the in-memory broker
proves the logic quickly, RabbitMQ + PostgreSQL prove it where it will run.
"""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg

from worker.app import Worker, build_worker
from worker.broker.amqp import AmqpTransport
from worker.broker.base import Transport
from worker.broker.memory import MemoryBroker
from worker.broker.memory_transport import MemoryTransport
from worker.broker.topology import topology_for
from worker.ledger import Ledger, open_ledger
from worker.retry import RetryPolicy
from worker.sandbox.his import AmqpHis, HisSide, MemoryHis
from worker.settings import Settings

FAST_RETRIES: dict[str, Any] = {
    "retry_delays_s": [0.2, 0.4, 0.8],
    "retry_jitter": 0.1,
    "read_timeout_s": 1.0,
    "connect_timeout_s": 1.0,
    "confirm_timeout_s": 5.0,
    "shutdown_deadline_s": 5.0,
    "sweep_interval_s": 3600.0,
    # the daily statement job would otherwise publish into the tests' result queues
    "statement_enabled": False,
}


def create_vhost(name: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", name], check=True, capture_output=True)
    subprocess.run(
        ["rabbitmqctl", "-q", "set_permissions", "-p", name, "guest", ".*", ".*", ".*"],
        check=True,
        capture_output=True,
    )


def delete_vhost(name: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", name], capture_output=True)


def vhost_url(base_url: str, vhost: str) -> str:
    """amqp://user:pass@host:port/<vhost>, whatever vhost the base URL named."""
    scheme, rest = base_url.split("://", 1)
    authority = rest.split("/", 1)[0]
    return f"{scheme}://{authority}/{quote(vhost, safe='')}"


@dataclass
class Backend:
    """Where the worker's broker and ledger live for one test."""

    name: str
    broker_url: str | None  # None: in-memory
    ledger_url: str
    memory: MemoryBroker | None = None

    def settings(self, platform_url: str, **overrides: Any) -> Settings:
        values = {
            **FAST_RETRIES,
            "platform_url": platform_url,
            "ledger_url": self.ledger_url,
            "broker_url": self.broker_url or "memory://",
            **overrides,
        }
        return Settings(**values)

    def transport(self) -> Transport:
        if self.memory is not None:
            return MemoryTransport(self.memory)
        assert self.broker_url
        return AmqpTransport(self.broker_url, heartbeat=10)

    def his(self, settings: Settings) -> HisSide:
        topology = topology_for(RetryPolicy.from_settings(settings))  # the worker's own
        if self.memory is not None:
            return MemoryHis(self.memory, topology)
        assert self.broker_url
        his = AmqpHis(self.broker_url, topology)
        his.purge_all(topology)
        return his

    def ledger(self) -> Ledger:
        ledger = open_ledger(self.ledger_url)
        ledger.migrate()
        return ledger

    def settle(self, rabbitmq_wait_s: float, timeout: float = 30.0) -> None:
        """Wait until nothing more will happen on the broker. The in-memory broker knows
        (MemoryBroker.join: every message consumed and settled, no retry waiting out its
        TTL); RabbitMQ cannot say, so there the test waits `rabbitmq_wait_s`, long enough
        for whatever would otherwise follow."""
        if self.memory is not None:
            self.memory.join(timeout)
        else:
            time.sleep(rabbitmq_wait_s)


@contextmanager
def backend_for(kind: str, request: Any, tmp_path: Path) -> Iterator[Backend]:
    """`memory-sqlite`, `rabbitmq-sqlite` or `rabbitmq-postgres`, from pytest's fixtures (the
    module's `vhost` and `postgres_url` are only requested when the backend needs them)."""
    broker, ledger = kind.split("-")
    broker_url = None if broker == "memory" else request.getfixturevalue("vhost")
    memory = MemoryBroker() if broker == "memory" else None
    if ledger == "sqlite":
        yield Backend(kind, broker_url, sqlite_url(tmp_path), memory)
        return
    with postgres_schema(request.getfixturevalue("postgres_url")) as url:
        yield Backend(kind, broker_url, url, memory)


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@contextmanager
def postgres_schema(postgres_url: str) -> Iterator[str]:
    schema = "t_" + uuid.uuid4().hex[:12]
    try:
        yield f"{postgres_url}?schema={schema}"
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextmanager
def running(worker: Worker) -> Iterator[Worker]:
    """The engine in a background thread until the block ends (then drained and closed)."""
    thread = threading.Thread(target=worker.engine.run, name="huimin-engine", daemon=True)
    thread.start()
    try:
        if not worker.engine.ready.wait(15):
            raise RuntimeError("the worker did not connect")
        yield worker
    finally:
        worker.engine.stop()
        thread.join(15)
        worker.close()


def start_worker(backend: Backend, settings: Settings, **kwargs: Any) -> Worker:
    # on the real clock the daily statement job runs only after 13:00 China time: a test
    # that let it run would pass or fail with the time of day (issue 8)
    if settings.statement_enabled and "clock" not in kwargs:
        raise ValueError("a worker with the statement job needs an injected clock in tests")
    return build_worker(settings, transport=backend.transport(), **kwargs)
