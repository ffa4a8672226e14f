"""Building the gateway from settings, and serving it with uvicorn.

app = build_gateway(settings)                    # RabbitMQ + the ledger of the settings
app = build_gateway(settings, publisher=..., ledger=..., clock=...)   # tests, the demo
serve(app, settings, host=..., port=...)         # foreground, until SIGINT/SIGTERM
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from types import FrameType

import uvicorn
from prometheus_client import CollectorRegistry

from worker.clock import Clock, system_clock
from worker.gateway.app import GatewayApp, Limits
from worker.gateway.metrics import GatewayMetrics
from worker.gateway.publisher import AmqpPublisher, Publisher
from worker.gateway.service import Gateway, GatewayOptions
from worker.health import ledger_answers
from worker.ledger import Ledger, open_ledger
from worker.protocol import envelope
from worker.settings import Settings

log = logging.getLogger(__name__)

#: connections beyond the handled ones that may wait for a thread; more get HTTP 503
WAITING_PER_SLOT = 4


@dataclass
class GatewayParts:
    """The app and what it holds, so the caller can close them."""

    app: GatewayApp
    ledger: Ledger
    publisher: Publisher

    def close(self) -> None:
        self.publisher.close()
        self.ledger.close()


def build_gateway(
    settings: Settings,
    *,
    publisher: Publisher | None = None,
    ledger: Ledger | None = None,
    clock: Clock = system_clock,
    registry: CollectorRegistry | None = None,
) -> GatewayParts:
    ledger = ledger or open_ledger(settings.ledger_url.get_secret_value())
    ledger.migrate()
    publisher = publisher or AmqpPublisher(
        settings.broker_url.get_secret_value(),
        # +1: the readiness probe never waits behind a full house of requests
        pool_size=settings.gateway_concurrency + 1,
        confirm_timeout_s=settings.confirm_timeout_s,
        connect_timeout_s=settings.connect_timeout_s,
    )
    metrics = GatewayMetrics(registry or CollectorRegistry())
    options = GatewayOptions(
        credentials=envelope.Credentials.from_settings(settings),
        max_skew=timedelta(seconds=settings.max_clock_skew_s),
        his_timeout_s=settings.gateway_his_timeout_s,
    )
    gateway = Gateway(options, ledger=ledger, publisher=publisher, metrics=metrics, clock=clock)
    limits = Limits(
        settings.gateway_max_body_bytes,
        settings.gateway_read_timeout_s,
        settings.gateway_concurrency,
    )
    app = GatewayApp(
        gateway, limits=limits, metrics=metrics, readiness=lambda: _failing(publisher, ledger)
    )
    return GatewayParts(app, ledger, publisher)


def _failing(publisher: Publisher, ledger: Ledger) -> list[str]:
    failing = []
    try:
        publisher.declare()
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready", never a crash
        log.debug("readiness: the broker did not answer: %s", exc)
        failing.append("broker")
    if not ledger_answers(ledger):
        failing.append("ledger")
    return failing


def uvicorn_config(
    parts: GatewayParts, settings: Settings, *, host: str, port: int
) -> uvicorn.Config:
    return uvicorn.Config(
        parts.app,
        host=host,
        port=port,
        lifespan="on",
        access_log=False,
        log_config=None,
        limit_concurrency=settings.gateway_concurrency * (1 + WAITING_PER_SLOT),
        # a request that is still queued when SIGTERM comes gets this long to be answered
        timeout_graceful_shutdown=int(settings.gateway_his_timeout_s + 10),
        server_header=False,
    )


class _Server(uvicorn.Server):
    """uvicorn re-raises a captured SIGTERM once its graceful shutdown is over: the process
    would then die of it (exit -15) before the publisher and the ledger are closed. A gateway
    that drained exits 0, like the worker."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()  # uvicorn's own list of signals to re-raise


def serve(parts: GatewayParts, settings: Settings, *, host: str, port: int) -> None:
    """In the foreground until SIGINT/SIGTERM (uvicorn's handlers), then closed."""
    try:
        parts.publisher.declare()  # fail early and say why, instead of 9999 to the platform
    except Exception as exc:  # noqa: BLE001 - a broker down at start is not fatal: retried
        log.warning("the broker is not reachable yet (answering 9999 until it is): %s", exc)
    log.info("inbound gateway on %s:%d", host, port)
    try:
        _Server(uvicorn_config(parts, settings, host=host, port=port)).run()
    finally:
        parts.close()
