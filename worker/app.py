"""Wiring: build the worker's parts from Settings. The only place that knows all of them."""

from __future__ import annotations

import logging
import os
import signal
import socket
from dataclasses import dataclass
from datetime import timedelta

import httpx

from .client import ClientObserver, PlatformClient
from .clock import Clock, system_clock
from .engine import Engine, EngineConfig, EngineObserver
from .ledger.base import Ledger, open_ledger
from .processor import Processor
from .settings import Settings
from .sweeper import Sweeper
from .topology import Topology, build_topology
from .transport import Transport
from .transport.amqp import AmqpTransport

log = logging.getLogger(__name__)


@dataclass
class Worker:
    settings: Settings
    ledger: Ledger
    client: PlatformClient
    topology: Topology
    processor: Processor
    sweeper: Sweeper
    engine: Engine

    def close(self) -> None:
        self.client.close()
        self.ledger.close()


def worker_name(settings: Settings) -> str:
    return settings.worker_name or f"{socket.gethostname()}:{os.getpid()}"


def sweep_grace(settings: Settings) -> timedelta:
    """Never sweep an event that is merely waiting out its longest backoff delay."""
    longest = max(settings.retry_delays_s) * (1 + settings.retry_jitter)
    return timedelta(seconds=max(settings.sweep_grace_s, longest + 4 * settings.read_timeout_s))


def build_worker(
    settings: Settings,
    *,
    transport: Transport | None = None,
    platform_transport: httpx.BaseTransport | None = None,
    ledger: Ledger | None = None,
    clock: Clock = system_clock,
    client_observer: ClientObserver | None = None,
    engine_observer: EngineObserver | None = None,
) -> Worker:
    ledger = ledger or open_ledger(settings.ledger_url.get_secret_value())
    ledger.migrate()
    client = PlatformClient(settings, transport=platform_transport, clock=clock,
                            observer=client_observer)  # fmt: skip
    topology = build_topology(settings.retry_delays_s, settings.retry_jitter)
    processor = Processor(settings, ledger, client, topology, clock=clock,
                          owner=worker_name(settings))  # fmt: skip
    sweeper = Sweeper(ledger, clock, sweep_grace(settings))
    config = EngineConfig(
        queues=[q.name for q in topology.work_queues()],
        concurrency=settings.concurrency,
        prefetch=settings.prefetch or 2 * settings.concurrency,
        confirm_timeout_s=settings.confirm_timeout_s,
        shutdown_deadline_s=settings.shutdown_deadline_s,
        periodic=[(settings.sweep_interval_s, sweeper.sweep)],
    )
    transport = transport or AmqpTransport(settings.broker_url.get_secret_value())
    engine = Engine(transport, topology, processor.handle, config, observer=engine_observer)
    return Worker(settings, ledger, client, topology, processor, sweeper, engine)


def run_until_signalled(worker: Worker) -> int:
    """Consume until SIGTERM/SIGINT, then drain within HUIMIN_SHUTDOWN_DEADLINE_S."""

    def stop(signum: int, _frame: object) -> None:
        log.info("signal %s: draining", signal.Signals(signum).name)
        worker.engine.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        worker.engine.run()
    finally:
        worker.close()
    return 0
