"""The operations HTTP server: /metrics, /healthz (liveness) and /readyz (readiness).

A stdlib ThreadingHTTPServer in a daemon thread: a slow ledger check in /readyz never holds
up a /metrics scrape, and nothing here touches the broker connection (its thread owns it).

    /metrics  the worker's CollectorRegistry in the Prometheus text format
    /healthz  200 while the process and its engine thread are alive (else the pod is restarted)
    /readyz   200 while the engine is connected and consuming (not paused by a ledger
              outage) and the ledger answers a primary-key lookup; 503 with the failing
              checks otherwise (the pod gets no traffic: here, nothing routes to it, but
              rollouts wait for it)
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from worker.ledger.base import EventStore

log = logging.getLogger(__name__)

READY_PROBE_EVENT_ID = "huimin-readyz-probe"  # never a real eventId: the lookup finds nothing


class EngineState(Protocol):
    """What readiness reads from the engine (worker.pipeline.engine.Engine has both)."""

    ready: threading.Event  # connected, declared and consuming
    stop_requested: threading.Event  # draining after SIGTERM
    paused: threading.Event  # consumers cancelled while the ledger is down


@dataclass(frozen=True)
class Checks:
    """The probes' questions; each answers without raising."""

    alive: Callable[[], bool]
    failing: Callable[[], list[str]]  # names of the readiness checks that fail; [] = ready


def worker_checks(
    engine: EngineState, ledger: EventStore, engine_thread: Callable[[], threading.Thread | None]
) -> Checks:
    """Liveness and readiness of a worker whose engine runs in `engine_thread()`."""

    def alive() -> bool:
        thread = engine_thread()
        return thread is not None and thread.is_alive()

    def failing() -> list[str]:
        problems = []
        if not engine.ready.is_set():
            problems.append("broker")
        if engine.stop_requested.is_set():
            problems.append("stopping")
        if engine.paused.is_set():
            problems.append("paused")
        if not ledger_answers(ledger):
            problems.append("ledger")
        return problems

    return Checks(alive, failing)


def probe_ledger(ledger: EventStore) -> None:
    """A cheap round trip: a primary-key lookup of an id that is never used. Raises when the
    ledger does not answer (also the engine's probe while it is paused)."""
    ledger.get_event(READY_PROBE_EVENT_ID)


def ledger_answers(ledger: EventStore) -> bool:
    try:
        probe_ledger(ledger)
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready", never a crash
        log.debug("readiness: the ledger did not answer: %s", exc)
        return False
    return True


class HealthServer:
    """Serves the three endpoints until `stop()`. Port 0 binds a free port (see `.port`)."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, checks: Checks) -> None:
        handler = _handler_class(registry, checks)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="huimin-health",
            daemon=True,
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = str(self._server.server_address[0])
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return f"http://{host}:{self.port}"

    def start(self) -> HealthServer:
        self._thread.start()
        log.info("metrics and health checks on port %d", self.port)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()  # waits for serve_forever to return
            self._thread.join(5)
        self._server.server_close()

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _handler_class(registry: CollectorRegistry, checks: Checks) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "huimin-worker"

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                alive = checks.alive()
                self._send_json(200 if alive else 503, {"alive": alive})
            elif path == "/readyz":
                failing = checks.failing()
                self._send_json(503 if failing else 200, {"ready": not failing, "failing": failing})
            else:
                self._send_json(404, {"error": "not found"})

        def _send_json(self, status: int, body: dict[str, object]) -> None:
            self._send(status, json.dumps(body).encode(), "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # probes every few seconds would drown the worker's own log lines

    return Handler
