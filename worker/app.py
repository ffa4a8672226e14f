"""Wiring: build the worker's parts from Settings. The only place that knows all of them."""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from prometheus_client import CollectorRegistry

from worker import __version__
from worker.broker.amqp import SQLITE_OWNER_QUEUE, AmqpTransport
from worker.broker.base import Transport
from worker.broker.messages import Delivery, Disposition
from worker.broker.topology import Topology, topology_for
from worker.clock import Clock, system_clock
from worker.health import HealthServer, probe_ledger, worker_checks
from worker.ledger import Ledger
from worker.ledger.open import open_migrated_ledger
from worker.metrics import WorkerMetrics
from worker.pipeline.engine import Engine, EngineConfig, EngineObserver, Handler
from worker.pipeline.intake import IntakeRules
from worker.pipeline.processor import Processor
from worker.pipeline.sweeper import Sweeper, parker
from worker.platform.attempts import Attempt, ClientObserver
from worker.platform.client import PlatformClient
from worker.platform.http import build_download_transport
from worker.protocol import envelope
from worker.retry import RetryPolicy
from worker.settings import Settings, insecure_transport
from worker.statement.job import StatementJob

log = logging.getLogger(__name__)

#: how often the worker asks whether yesterday's statement is due (it runs once a day)
STATEMENT_CHECK_INTERVAL_S = 60.0


@dataclass
class Worker:
    settings: Settings
    ledger: Ledger
    client: PlatformClient
    topology: Topology
    processor: Processor
    sweeper: Sweeper
    engine: Engine
    metrics: WorkerMetrics = field(default_factory=lambda: WorkerMetrics(CollectorRegistry(), 1))
    statement: StatementJob | None = None
    statement_http: httpx.Client | None = None

    def close(self) -> None:
        self.client.close()
        if self.statement_http is not None:
            self.statement_http.close()
        self.ledger.close()


def worker_name(settings: Settings) -> str:
    return settings.worker_name or f"{socket.gethostname()}:{os.getpid()}"


def build_metrics(policy: RetryPolicy) -> WorkerMetrics:
    """The worker's metrics on a registry of its own (never prometheus_client's global one),
    with one retry label per delay of the policy's schedule."""
    return WorkerMetrics(CollectorRegistry(), retry_schedule_length=len(policy.schedule.delays_s))


def build_worker(
    settings: Settings,
    *,
    transport: Transport | None = None,
    platform_transport: httpx.BaseTransport | None = None,
    ledger: Ledger | None = None,
    clock: Clock = system_clock,
    client_observer: ClientObserver | None = None,
    engine_observer: EngineObserver | None = None,
    metrics: WorkerMetrics | None = None,
) -> Worker:
    """The worker's parts. Metrics are always collected; the given observers see everything
    the metrics see. The retry policy is built here, once, and handed to every part."""
    policy = RetryPolicy.from_settings(settings)
    metrics = metrics or build_metrics(policy)
    if ledger is None:
        url = settings.ledger_url.get_secret_value()
        ledger = open_migrated_ledger(url, settings.ledger_start_wait_s)
    else:
        ledger.migrate()
    metrics.watch_ledger(ledger, clock)
    client = PlatformClient(
        settings,
        transport=platform_transport,
        clock=clock,
        observer=_ClientObservers(metrics, client_observer),
        policy=policy,
        seq_ids=envelope.seq_ids_from(random.Random()),  # no syscall per attempt
    )
    topology = topology_for(policy)
    processor = Processor(
        ledger,
        client,
        topology,
        policy=policy,
        rules=IntakeRules.from_settings(settings),
        clock=clock,
        owner=worker_name(settings),
    )
    sweeper = Sweeper(ledger, clock, policy.sweep_grace())
    periodic = [(settings.sweep_interval_s, sweeper.sweep)]
    statement_http = statement = None
    if settings.statement_enabled:
        # downloads the statement file from wherever the platform's settleFileUrl points
        statement_http = httpx.Client(
            transport=platform_transport or build_download_transport(settings),
            follow_redirects=True,
            timeout=httpx.Timeout(settings.read_timeout_s, connect=settings.connect_timeout_s),
        )
        statement = StatementJob(
            settings, ledger, client, clock=clock, http=statement_http, observer=metrics
        )
        periodic.append((STATEMENT_CHECK_INTERVAL_S, statement.run_due))
    config = EngineConfig(
        queues=[q.name for q in topology.consumed_queues()],
        concurrency=settings.concurrency,
        prefetch=settings.prefetch or 2 * settings.concurrency,
        confirm_timeout_s=settings.confirm_timeout_s,
        shutdown_deadline_s=settings.shutdown_deadline_s,
        periodic=periodic,
        probe=lambda: probe_ledger(ledger),  # while paused by a ledger outage
        handler_error_retries=policy.handler_error_retries,
        reconnect_delays_s=policy.reconnect_delays_s,
        probe_delays_s=policy.probe_delays_s,
        park=parker(ledger, clock),  # the sweeper leaves what the engine dead-lettered
    )
    transport = transport or AmqpTransport(
        settings.broker_url.get_secret_value(), exclusive_claim=ledger_claim(settings)
    )
    engine = Engine(
        transport,
        topology,
        _counting_received(processor.handle, metrics),
        config,
        observer=_EngineObservers(metrics, engine_observer),
    )
    return Worker(
        settings,
        ledger,
        client,
        topology,
        processor,
        sweeper,
        engine,
        metrics,
        statement,
        statement_http,
    )


def ledger_claim(settings: Settings) -> str | None:
    """The broker-side claim a SQLite ledger needs: the chart cannot see inside an existing
    Secret, so the application itself refuses a second worker on a private ledger."""
    url = settings.ledger_url.get_secret_value()
    return SQLITE_OWNER_QUEUE if url.lower().startswith("sqlite:") else None


def start_health_server(
    worker: Worker, engine_thread: threading.Thread | None
) -> HealthServer | None:
    """/metrics, /healthz and /readyz on HUIMIN_METRICS_HOST:PORT; None when the port is 0."""
    settings = worker.settings
    if settings.metrics_port == 0:
        return None
    checks = worker_checks(worker.engine, worker.ledger, lambda: engine_thread)
    server = HealthServer(
        settings.metrics_host, settings.metrics_port, worker.metrics.registry, checks
    )
    return server.start()


def run_worker(settings: Settings, build: Callable[[Settings], Worker] = build_worker) -> int:
    """`huimin-worker run`: build the worker, then consume until SIGTERM/SIGINT.

    The signal handlers come before anything slow (opening and migrating the ledger can take
    seconds, a PostgreSQL that does not answer much longer): a SIGTERM then ends the process
    at once with 0. Nothing was consumed yet, so there is nothing to drain; without a handler
    the pod's SIGTERM killed it with -15 mid-migration."""
    _on_signals(_exit_during_start_up)
    log.info("huimin-worker %s starting", __version__)
    return run_until_signalled(build(settings))


def _exit_during_start_up(signum: int, _frame: object) -> None:
    log.info("signal %s during start-up: exiting, nothing to drain", signal.Signals(signum).name)
    raise SystemExit(0)


def _on_signals(handler: Callable[[int, object], None]) -> None:
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def announce_transport(worker: Worker) -> None:
    """A loud warning, and the gauge an alert can watch, when the way to the platform can be
    read or forged on the network (issue 8): both are legitimate in a sandbox, never live."""
    reasons = insecure_transport(worker.settings)
    worker.metrics.insecure_platform_transport(reasons)
    if reasons["tls_verify_off"]:
        log.warning(
            "INSECURE: HUIMIN_TLS_VERIFY=false: the platform's TLS certificate is not "
            "checked, anyone on the path can impersonate it"
        )
    if reasons["plain_http"]:
        log.warning(
            "INSECURE: the platform URL (HUIMIN_PLATFORM_URL/HUIMIN_PLATFORM_URLS) is "
            "plain http:// to a host that is not loopback: use https://"
        )


def run_until_signalled(worker: Worker) -> int:
    """Consume until SIGTERM/SIGINT, then drain within HUIMIN_SHUTDOWN_DEADLINE_S.

    The engine runs in its own thread so that /healthz can tell whether it is alive; the main
    thread keeps receiving the signals."""

    def stop(signum: int, _frame: object) -> None:
        log.info("signal %s: draining", signal.Signals(signum).name)
        worker.engine.stop()

    _on_signals(stop)  # from here on a signal drains (the engine may start any moment)
    announce_transport(worker)
    engine = _EngineThread(worker.engine)
    health: HealthServer | None = None
    try:
        health = _health_server(worker, engine)  # before: probes answer while it connects
        engine.start()
        while engine.is_alive():
            engine.join(0.5)  # a timeout, so signal handlers run promptly
    finally:
        worker.engine.stop()
        if health is not None:
            health.stop()
        worker.close()
    if engine.error is not None:
        raise engine.error
    return 0


def _health_server(worker: Worker, engine: threading.Thread) -> HealthServer | None:
    try:
        return start_health_server(worker, engine)
    except OSError as exc:  # the port taken, or not ours to bind: say which setting
        settings = worker.settings
        raise OSError(
            exc.errno,
            f"HUIMIN_METRICS_PORT={settings.metrics_port}: cannot listen on "
            f"{settings.metrics_host}:{settings.metrics_port} ({exc.strerror}); choose "
            "a free port, or 0 to turn /metrics and the probes off",
        ) from exc


class _EngineThread(threading.Thread):
    """Runs the engine; an error it dies of is re-raised by the main thread."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(name="huimin-engine")
        self.engine = engine
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.engine.run()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.error = exc


def _counting_received(handle: Handler, metrics: WorkerMetrics) -> Handler:
    def handler(delivery: Delivery) -> Disposition:
        metrics.delivery_received(delivery)
        return handle(delivery)

    return handler


class _ClientObservers:
    """The metrics, then the caller's own observer (the demo's timeline), if any."""

    def __init__(self, metrics: WorkerMetrics, other: ClientObserver | None) -> None:
        self.observers: list[ClientObserver] = [metrics, *([other] if other else [])]

    def request_finished(self, attempt: Attempt) -> None:
        for observer in self.observers:
            observer.request_finished(attempt)

    def verification_failed(self, direction: str, reason: str) -> None:
        for observer in self.observers:
            observer.verification_failed(direction, reason)

    def answer_mismatch(self, trans_code: str, field: str) -> None:
        for observer in self.observers:
            observer.answer_mismatch(trans_code, field)


class _EngineObservers:
    def __init__(self, metrics: WorkerMetrics, other: EngineObserver | None) -> None:
        self.observers: list[EngineObserver] = [metrics, *([other] if other else [])]

    def delivery_done(
        self, delivery: Delivery | None, disposition: Disposition, seconds: float
    ) -> None:
        for observer in self.observers:
            observer.delivery_done(delivery, disposition, seconds)

    def confirm(self, result: str) -> None:
        for observer in self.observers:
            observer.confirm(result)

    def connection(self, connected: bool, reconnect: bool) -> None:
        for observer in self.observers:
            observer.connection(connected, reconnect)

    def consuming_paused(self, paused: bool) -> None:
        for observer in self.observers:
            observer.consuming_paused(paused)
