"""WorkerMetrics and the health server: label bounds, the ledger-derived gauge, no global
state, and the probes, in isolation and on a running worker (in-memory broker). The mixed-batch
acceptance test and the promtool checks are in tests/test_observability.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests.test_observability import get as http_get
from tests.test_observability import obs_settings, scrape, serving, value, wait_until
from tests.worker_harness import Backend, start_worker
from worker.app import run_until_signalled, start_health_server
from worker.broker.messages import Delivery, Disposition
from worker.errors import LedgerUnavailable
from worker.health import Checks, HealthServer, worker_checks
from worker.metrics import (
    MAX_DISCREPANCY_KINDS,
    UnknownOutcomesCollector,
    WorkerMetrics,
    retry_label,
    rt_code_label,
)
from worker.platform.attempts import Attempt
from worker.sandbox.simulator.server import SimulatorHandle

NOW = datetime(2025, 9, 1, 8, 30, tzinfo=UTC)


def metrics() -> WorkerMetrics:
    return WorkerMetrics(CollectorRegistry(), retry_schedule_length=5)


def sample(m: WorkerMetrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def attempt(**fields: Any) -> Attempt:
    return Attempt("HOS00003", "seq", NOW, **fields)


# --- labels ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "label"),
    [
        ({"rt_code": "0000", "http_status": 200}, "0000"),
        ({"rt_code": "5501", "http_status": 200}, "5501"),
        ({"rt_code": "7777", "http_status": 200}, "other"),  # an unlisted rtCode stays bounded
        ({"http_status": 503, "error": "PlatformUnavailable: HTTP 503"}, "http_503"),
        (
            {"http_status": 200, "error": "OutcomeUnknown: answer failed verification"},
            "invalid_response",
        ),
        ({"error": "OutcomeUnknown: timed out after sending: ReadTimeout()"}, "timeout"),
        (
            {"error": "PlatformUnavailable: cannot connect to the platform: ConnectError()"},
            "connect_error",
        ),
        (
            {"error": "OutcomeUnknown: connection failed after sending: RemoteProtocolError()"},
            "transport_error",
        ),
    ],
)
def test_rt_code_label_is_the_rt_code_or_a_bounded_transport_outcome(
    fields: dict[str, Any], label: str
) -> None:
    assert rt_code_label(attempt(**fields)) == label


def test_retry_labels_follow_the_schedule_then_share_one_label() -> None:
    assert [retry_label(n, 5) for n in (1, 2, 5, 6, 40)] == ["1", "2", "5", "6+", "6+"]


def test_platform_requests_are_counted_with_bounded_trans_codes() -> None:
    m = metrics()
    m.request_finished(attempt(rt_code="0000", http_status=200, duration_s=0.2))
    m.request_finished(Attempt("HOS99999", "seq", NOW, rt_code="0000", http_status=200))
    assert sample(m, "huimin_platform_requests_total", trans_code="HOS00003", rt_code="0000") == 1
    assert sample(m, "huimin_platform_requests_total", trans_code="other", rt_code="0000") == 1
    assert sample(m, "huimin_platform_request_seconds_sum", trans_code="HOS00003") == 0.2


def test_statement_discrepancy_kinds_are_normalised_and_capped() -> None:
    m = metrics()
    m.discrepancy_found("amount_mismatch")
    m.discrepancy_found("Amount Mismatch")
    for n in range(MAX_DISCREPANCY_KINDS + 5):
        m.discrepancy_found(f"kind-{n}")
    assert sample(m, "huimin_statement_discrepancies_total", kind="amount_mismatch") == 2
    assert sample(m, "huimin_statement_discrepancies_total", kind="other") == 6


# --- the engine's observer -------------------------------------------------------------------


def delivery(routing_key: str = "payment.requested") -> Delivery:
    return Delivery(b"{}", routing_key, message_id="evt-1")


def test_a_decided_result_counts_its_outcome_and_latency() -> None:
    m = metrics()
    occurred = datetime.now(UTC) - timedelta(seconds=3)
    m.delivery_received(delivery())
    m.delivery_done(
        delivery(),
        Disposition(
            event_type="payment.requested",
            label="succeeded",
            outcome="succeeded",
            occurred_at=occurred,
            trans_code="HOS00003",
            reconciliation="succeeded",
        ),
        0.05,
    )
    assert sample(m, "huimin_events_received_total", event_type="payment.requested") == 1
    assert (
        sample(
            m, "huimin_events_finished_total", event_type="payment.requested", outcome="succeeded"
        )
        == 1
    )
    latency = sample(m, "huimin_event_result_latency_seconds_sum", event_type="payment.requested")
    assert latency is not None and 3 <= latency < 10
    assert sample(m, "huimin_reconciliations_total", trans_code="HOS00003", result="succeeded") == 1


def test_retries_dead_letters_and_unknown_labels_stay_bounded() -> None:
    m = metrics()
    m.delivery_done(
        delivery("no.such.type"), Disposition(label="dead_lettered", reason="invalid_event"), 0.01
    )
    m.delivery_done(delivery(), Disposition(label="retry", retry=9), 0.01)
    m.delivery_done(delivery(), Disposition(label="dead_lettered", reason="made-up"), 0.01)
    m.delivery_done(delivery(), Disposition(label="weird"), 0.01)
    assert (
        sample(m, "huimin_events_finished_total", event_type="other", outcome="dead_lettered") == 1
    )
    assert sample(m, "huimin_retries_scheduled_total", retry="6+") == 1
    assert sample(m, "huimin_dead_lettered_total", reason="invalid_event") == 1
    assert sample(m, "huimin_dead_lettered_total", reason="other") == 1
    assert (
        sample(m, "huimin_events_finished_total", event_type="payment.requested", outcome="other")
        == 1
    )


def test_the_sweepers_job_is_not_an_event() -> None:
    m = metrics()
    m.delivery_done(None, Disposition(label="swept"), 0.01)
    assert not [
        s for f in m.registry.collect() if f.name == "huimin_events_finished" for s in f.samples
    ]


def test_alerted_series_exist_at_zero_from_the_start() -> None:
    m = metrics()
    assert sample(m, "huimin_dead_lettered_total", reason="retries_exhausted") == 0
    assert sample(m, "huimin_dead_lettered_total", reason="invalid_event") == 0
    assert sample(m, "huimin_signature_failures_total", direction="response") == 0
    assert sample(m, "huimin_broker_connected") == 0


def test_connection_changes_and_confirms() -> None:
    m = metrics()
    m.connection(True, reconnect=False)
    m.connection(False, reconnect=False)
    m.connection(True, reconnect=True)
    for result in ("ack", "ack", "nack", "timeout"):
        m.confirm(result)
    m.verification_failed("response", "signature_mismatch")
    assert sample(m, "huimin_broker_connected") == 1
    assert sample(m, "huimin_broker_reconnects_total") == 1
    assert sample(m, "huimin_result_confirms_total", result="ack") == 2
    assert sample(m, "huimin_result_confirms_total", result="timeout") == 1
    assert sample(m, "huimin_signature_failures_total", direction="response") == 1


# --- the ledger-derived gauge ----------------------------------------------------------------


class FakeLedger:
    def __init__(self, reconciling: int = 2, unknown: int = 3, broken: bool = False) -> None:
        self.reconciling, self.unknown, self.broken = reconciling, unknown, broken
        self.reads: list[dict[str, Any]] = []

    def stats(self) -> dict[str, int]:
        if self.broken:
            raise LedgerUnavailable("down")
        return {"received": 0, "reconciling": self.reconciling, "completed": 9}

    def recent_events(
        self,
        since: datetime | None = None,
        event_type: str | None = None,
        outcome: str | None = None,
        limit: int = 100,
    ) -> list[object]:
        self.reads.append({"since": since, "outcome": outcome, "limit": limit})
        return [object()] * self.unknown

    def get_event(self, event_id: str) -> None:
        if self.broken:
            raise LedgerUnavailable("down")


def test_unknown_outcomes_come_from_stats_and_recent_unknown_results() -> None:
    ledger = FakeLedger()
    m = metrics()
    m.watch_ledger(ledger, lambda: NOW)  # type: ignore[arg-type]
    assert sample(m, "huimin_outcomes_unknown", state="reconciling") == 2
    assert sample(m, "huimin_outcomes_unknown", state="unresolved") == 3
    assert ledger.reads == [
        {"since": NOW - timedelta(hours=24), "outcome": "unknown", "limit": 1000}
    ]


def test_the_gauge_is_cached_between_scrapes_and_absent_when_the_ledger_fails() -> None:
    ledger = FakeLedger()
    collector = UnknownOutcomesCollector(ledger, lambda: NOW, ttl_s=3600)  # type: ignore[arg-type]
    collector.collect()
    collector.collect()
    assert len(ledger.reads) == 1
    broken = UnknownOutcomesCollector(FakeLedger(broken=True), lambda: NOW)  # type: ignore[arg-type]
    (family,) = broken.collect()
    assert family.samples == []


def test_registration_does_not_read_the_ledger() -> None:
    ledger = FakeLedger(broken=True)
    metrics().watch_ledger(ledger, lambda: NOW)  # type: ignore[arg-type]
    assert ledger.reads == []


def test_nothing_registers_on_the_global_registry() -> None:
    code = (
        "import worker.app, worker.metrics, worker.health\n"
        "from prometheus_client import REGISTRY\n"
        "from worker.app import build_metrics\nfrom worker.retry import RetryPolicy\n"
        "from worker.settings import Settings\npolicy = RetryPolicy.from_settings(Settings())\n"
        "build_metrics(policy); build_metrics(policy)\n"
        "print([n for n in REGISTRY._names_to_collectors if n.startswith('huimin')])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


# --- the health server -----------------------------------------------------------------------


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_the_endpoints_answer_what_the_checks_say() -> None:
    state = {"alive": True, "failing": []}
    checks = Checks(lambda: state["alive"], lambda: list(state["failing"]))  # type: ignore[arg-type]
    m = metrics()
    with HealthServer("127.0.0.1", 0, m.registry, checks) as server:
        assert get(server.url + "/healthz") == (200, '{"alive": true}')
        assert get(server.url + "/readyz") == (200, '{"ready": true, "failing": []}')
        state.update(alive=False, failing=["ledger"])
        assert get(server.url + "/healthz")[0] == 503
        assert json.loads(get(server.url + "/readyz")[1]) == {"ready": False, "failing": ["ledger"]}
        status, body = get(server.url + "/metrics")
        assert status == 200 and "huimin_broker_connected 0.0" in body
        assert get(server.url + "/nope")[0] == 404
    with pytest.raises(OSError):
        urllib.request.urlopen(server.url + "/healthz", timeout=2)


class FakeEngine:
    def __init__(self) -> None:
        self.ready, self.stop_requested = threading.Event(), threading.Event()
        self.paused = threading.Event()


def test_readiness_names_the_broker_the_ledger_and_draining() -> None:
    engine, thread = FakeEngine(), threading.current_thread()
    checks = worker_checks(engine, FakeLedger(broken=True), lambda: thread)  # type: ignore[arg-type]
    assert checks.alive()
    assert checks.failing() == ["broker", "ledger"]
    engine.ready.set()
    assert worker_checks(engine, FakeLedger(), lambda: thread).failing() == []  # type: ignore[arg-type]
    engine.stop_requested.set()
    assert worker_checks(engine, FakeLedger(), lambda: None).failing() == ["stopping"]  # type: ignore[arg-type]
    engine.stop_requested.clear()
    engine.paused.set()  # consuming paused by a ledger outage: not ready, even if it answers
    assert worker_checks(engine, FakeLedger(), lambda: thread).failing() == ["paused"]  # type: ignore[arg-type]
    assert not worker_checks(engine, FakeLedger(), lambda: None).alive()  # type: ignore[arg-type]


# --- the probes on a running worker ---------------------------------------------------------


def test_readyz_fails_while_the_broker_is_down_and_recovers(
    memory_backend: Backend, simulator: SimulatorHandle
) -> None:
    settings = obs_settings(memory_backend, simulator)
    assert memory_backend.memory is not None
    with serving(start_worker(memory_backend, settings)) as served:
        assert http_get(served.url + "/readyz")[:2] == (200, "application/json")
        memory_backend.memory.down = True
        wait_until(lambda: http_get(served.url + "/readyz")[0] == 503, what="/readyz 503")
        status, _, body = http_get(served.url + "/readyz")
        assert json.loads(body) == {"ready": False, "failing": ["broker"]}
        assert http_get(served.url + "/healthz")[0] == 200  # alive: reconnecting is not a hang
        assert value(scrape(served.url)[1], "huimin_broker_connected") == 0
        memory_backend.memory.down = False
        wait_until(lambda: http_get(served.url + "/readyz")[0] == 200, what="/readyz 200 again")
        _, samples = scrape(served.url)
    assert value(samples, "huimin_broker_connected") == 1
    assert value(samples, "huimin_broker_reconnects_total") == 1


def test_healthz_fails_once_the_engine_thread_has_ended(
    memory_backend: Backend, simulator: SimulatorHandle
) -> None:
    worker = start_worker(memory_backend, obs_settings(memory_backend, simulator))
    thread = threading.Thread(target=worker.engine.run, name="huimin-engine", daemon=True)
    server = start_health_server(worker, thread)
    assert server is not None
    try:
        assert http_get(server.url + "/healthz")[0] == 503  # not started yet
        thread.start()
        wait_until(worker.engine.ready.is_set, what="the engine")
        assert http_get(server.url + "/healthz") == (200, "application/json", '{"alive": true}')
        worker.engine.stop()
        thread.join(15)
        assert http_get(server.url + "/healthz")[0] == 503
        assert json.loads(http_get(server.url + "/readyz")[2])["ready"] is False
    finally:
        worker.engine.stop()
        server.stop()
        worker.close()


def test_run_until_signalled_serves_health_and_metrics_and_stops_on_sigterm(
    memory_backend: Backend, simulator: SimulatorHandle
) -> None:
    settings = obs_settings(memory_backend, simulator)
    worker = start_worker(memory_backend, settings)
    base = f"http://127.0.0.1:{settings.metrics_port}"
    seen: dict[str, int] = {}

    def probe_then_signal() -> None:
        try:
            wait_until(lambda: _status(base + "/readyz") == 200, what="readiness")
            seen.update({path: _status(base + path) for path in ("/healthz", "/metrics")})
            os.kill(os.getpid(), signal.SIGTERM)
        finally:
            time.sleep(5)
            worker.engine.stop()  # never leave the test hanging, whatever happened above

    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    prober = threading.Thread(target=probe_then_signal, daemon=True)
    prober.start()
    try:
        assert run_until_signalled(worker) == 0
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    assert seen == {"/healthz": 200, "/metrics": 200}
    assert _status(base + "/healthz") is None, "the server is stopped with the worker"


def _status(url: str) -> int | None:
    try:
        return http_get(url)[0]
    except OSError:
        return None
