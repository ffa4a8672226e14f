"""Observability end to end: the real worker's /metrics, /healthz and /readyz over HTTP, and
the chart's alert rules and dashboard checked by promtool.

A mixed batch of events (successes, a business rejection, an invalid event, retries, a
signature failure, exhausted retries, a duplicate and a lost answer settled by the status
query) goes through the worker on the in-memory broker and on RabbitMQ + PostgreSQL; the
scraped counters must have moved exactly as the batch implies, and `promtool check metrics`
must accept the exposition. promtool comes from the Debian package `prometheus`
(`.ci/install-promtool.sh`); under CI=true a missing promtool fails these tests.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.worker_harness import (
    Backend,
    start_worker,
)
from worker.app import Worker, start_health_server
from worker.protocol.models.examples import EXAMPLES
from worker.sandbox.his import HisSide, ReceivedResult
from worker.sandbox.simulator.server import SimulatorHandle

ROOT = Path(__file__).resolve().parents[1]
ALERTS = ROOT / "helm" / "huimin-worker" / "files" / "alerts.yaml"
DASHBOARD = ROOT / "helm" / "huimin-worker" / "files" / "dashboard.json"
PROMTOOL_TESTS = sorted((ROOT / "tests" / "promtool").glob("*_test.yaml"))
OPERATIONS_DOC = ROOT / "docs" / "operations.md"

BACKENDS = ["memory-sqlite", "rabbitmq-postgres"]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# --- promtool ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    message = "promtool is not installed (bash .ci/install-promtool.sh)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI=true: the observability checks must not be skipped)")
    pytest.skip(message)


def run_promtool(
    promtool: str, *args: str, stdin: str | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], input=stdin, capture_output=True, text=True, cwd=cwd, timeout=120
    )


# --- backends (as in tests/test_worker.py, on fewer combinations) ---------------------------


# --- running the worker with its health server -----------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    worker: Worker
    url: str
    engine_thread: threading.Thread


@contextmanager
def serving(worker: Worker) -> Iterator[Served]:
    """The engine in a thread and the health server app.py starts for it, until the block
    ends; then drained, the server stopped and the worker closed."""
    thread = threading.Thread(target=worker.engine.run, name="huimin-engine", daemon=True)
    server = start_health_server(worker, thread)
    assert server is not None, "metrics_port must not be 0 here"
    thread.start()
    try:
        if not worker.engine.ready.wait(15):
            raise RuntimeError("the worker did not connect")
        yield Served(worker, server.url, thread)
    finally:
        worker.engine.stop()
        thread.join(15)
        server.stop()
        worker.close()


def obs_settings(backend: Backend, simulator: SimulatorHandle, **overrides: Any) -> Any:
    return backend.settings(
        simulator.base_url + "/api", metrics_host="127.0.0.1", metrics_port=free_port(), **overrides
    )


def get(url: str) -> tuple[int, str, str]:
    """(status, content type, body) of a GET, errors included."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def scrape(base_url: str) -> tuple[str, Samples]:
    status, content_type, text = get(base_url + "/metrics")
    assert status == 200 and content_type.startswith("text/plain"), (status, content_type)
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def wait_until(condition: Any, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# --- events ----------------------------------------------------------------------------------


def event(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "eventId": f"evt-{uuid.uuid4().hex}",
        "type": event_type,
        "occurredAt": datetime.now(UTC).isoformat(),
        "data": data,
    }


def example(code: str, **changes: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(EXAMPLES[code].request))
    data.update(changes)
    return data


def order_id(prefix: str = "PAY") -> str:
    return f"{prefix}{uuid.uuid4().hex[:20].upper()}"


def results(his: HisSide, count: int) -> list[ReceivedResult]:
    return [his.next_result(30) for _ in range(count)]


def run_mixed_batch(his: HisSide, simulator: SimulatorHandle) -> dict[str, str]:
    """Events of every fate; returns {eventId: result routing key}. Needs max_attempts=2."""
    lost = event("payment.requested", example("HOS00003", orderId=order_id()))
    simulator.add_fault("lose_response", "HOS00003", times=1, seconds=1.5)
    his.publish(lost)  # alone: the fault must hit this payment and no other
    found = results(his, 1)
    simulator.add_fault("reject_503", "HOS00001", times=1)
    simulator.add_fault("corrupt_signature", "HOS00029", times=1)
    simulator.add_fault("reject_503", "HOS00020")  # for ever: retries run out
    paid = event("payment.requested", example("HOS00003", orderId=order_id()))
    batch = [
        paid,
        event(
            "payment.requested",
            example("HOS00003", orderId=order_id(), signToken="NOSUCHTOKEN0001"),
        ),  # rejected: 0001
        event("payment.requested", example("HOS00003", amt="100")),  # invalid
        event("signing.status.requested", example("HOS00001")),  # 503 once, then fine
        event("claim-case.status.requested", example("HOS00029")),  # bad signature once
        event("patient.posted", example("HOS00020")),  # 503 twice: dead-lettered
    ]
    for sent in batch:
        his.publish(sent)
    found += results(his, len(batch))
    his.publish(paid)  # a duplicate: the stored result again
    found += results(his, 1)
    return {r.correlation_id or "": r.routing_key for r in found}


# --- the acceptance test ---------------------------------------------------------------------


def test_a_mixed_batch_moves_the_counters_and_promtool_accepts_the_exposition(
    backend: Backend, simulator: SimulatorHandle, promtool: str
) -> None:
    settings = obs_settings(backend, simulator, max_attempts=2)
    his = backend.his(settings)
    try:
        with serving(start_worker(backend, settings)) as served:
            outcomes = run_mixed_batch(his, simulator)
            # the last confirm is counted just after the result reached the HIS
            wait_until(
                lambda: (
                    value(scrape(served.url)[1], "huimin_result_confirms_total", result="ack") >= 14
                ),
                what="14 confirms",
            )
            text, samples = scrape(served.url)
            assert get(served.url + "/healthz")[0] == 200
            assert get(served.url + "/readyz")[0] == 200
    finally:
        his.close()
    assert sorted(k.rsplit(".", 1)[1] for k in outcomes.values()) == [
        "failed",
        "failed",
        "failed",
        "succeeded",
        "succeeded",
        "succeeded",
        "succeeded",
    ]
    _assert_counters(samples)
    checked = run_promtool(promtool, "check", "metrics", stdin=text)
    assert checked.returncode == 0 and not checked.stdout.strip(), checked.stdout + checked.stderr


def _assert_counters(samples: Samples) -> None:
    def v(name: str, **labels: str) -> float:
        return value(samples, name, **labels)

    pay, sign, claim, patient = (
        "payment.requested",
        "signing.status.requested",
        "claim-case.status.requested",
        "patient.posted",
    )
    # lost (2 deliveries) + paid + rejected + invalid + duplicate; the others once plus a retry
    assert v("huimin_events_received_total", event_type=pay) == 6
    for other in (sign, claim, patient):
        assert v("huimin_events_received_total", event_type=other) == 2, other
    finished = {
        (dict(labels)["event_type"], dict(labels)["outcome"]): count
        for (name, labels), count in samples.items()
        if name == "huimin_events_finished_total" and count
    }
    assert finished == {
        (pay, "succeeded"): 2,
        (pay, "failed"): 2,
        (pay, "retry"): 1,
        (pay, "republished"): 1,
        (sign, "retry"): 1,
        (sign, "succeeded"): 1,
        (claim, "retry"): 1,
        (claim, "succeeded"): 1,
        (patient, "retry"): 1,
        (patient, "failed"): 1,
    }
    assert v("huimin_event_processing_seconds_count", event_type=pay) == 6
    # results decided from a parsed event: the invalid one has no trustworthy occurredAt
    assert v("huimin_event_result_latency_seconds_count", event_type=pay) == 3
    assert v("huimin_retries_scheduled_total", retry="1") == 4
    assert v("huimin_dead_lettered_total", reason="invalid_event") == 1
    assert v("huimin_dead_lettered_total", reason="retries_exhausted") == 1
    requests = {
        (dict(labels)["trans_code"], dict(labels)["rt_code"]): count
        for (name, labels), count in samples.items()
        if name == "huimin_platform_requests_total"
    }
    assert requests == {
        ("HOS00003", "timeout"): 1,
        ("HOS00012", "0000"): 1,
        ("HOS00003", "0000"): 1,
        ("HOS00003", "0001"): 1,
        ("HOS00001", "http_503"): 1,
        ("HOS00001", "0000"): 1,
        ("HOS00029", "invalid_response"): 1,
        ("HOS00029", "0000"): 1,
        ("HOS00020", "http_503"): 2,
    }
    assert v("huimin_platform_request_seconds_count", trans_code="HOS00003") == 3
    assert v("huimin_signature_failures_total", direction="response") == 1
    assert v("huimin_reconciliations_total", trans_code="HOS00003", result="succeeded") == 1
    # 7 results + 4 retry messages + 2 dead letters + the republished result
    assert v("huimin_result_confirms_total", result="ack") == 14
    assert v("huimin_result_confirms_total", result="nack") == 0
    assert v("huimin_broker_connected") == 1
    assert v("huimin_broker_reconnects_total") == 0
    assert v("huimin_outcomes_unknown", state="reconciling") == 0
    assert v("huimin_outcomes_unknown", state="unresolved") == 0


def test_an_unsettled_reconciliation_shows_as_an_unknown_outcome(
    memory_backend: Backend, simulator: SimulatorHandle
) -> None:
    settings = obs_settings(memory_backend, simulator, reconcile_max_queries=1)
    simulator.add_fault("lose_response", "HOS00003", times=1, seconds=1.5)
    simulator.set_pending_queries(5)  # the status query keeps answering "in progress"
    his = memory_backend.his(settings)
    with serving(start_worker(memory_backend, settings)) as served:
        his.publish(event("payment.requested", example("HOS00003", orderId=order_id())))
        result = his.next_result(20)
        _, samples = scrape(served.url)
    assert result.routing_key == "payment.requested.unknown"
    assert (
        value(
            samples,
            "huimin_events_finished_total",
            event_type="payment.requested",
            outcome="unknown",
        )
        == 1
    )
    assert (
        value(samples, "huimin_reconciliations_total", trans_code="HOS00003", result="pending") == 1
    )
    assert value(samples, "huimin_outcomes_unknown", state="unresolved") == 1


# --- the chart's alerts and dashboard --------------------------------------------------------


def test_alert_rules_pass_promtool_check(promtool: str) -> None:
    checked = run_promtool(promtool, "check", "rules", str(ALERTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_alert_rules_pass_their_promtool_unit_tests(promtool: str) -> None:
    assert PROMTOOL_TESTS, "tests/promtool/*_test.yaml"
    tested = run_promtool(promtool, "test", "rules", *map(str, PROMTOOL_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_a_firing_unit_test_and_a_runbook_section() -> None:
    alerts = [
        rule["alert"]
        for group in yaml.safe_load(ALERTS.read_text("utf-8"))["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]
    fired = {
        case["alertname"]
        for path in PROMTOOL_TESTS
        for test in yaml.safe_load(path.read_text("utf-8"))["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert len(alerts) >= 7 and set(alerts) <= fired, set(alerts) - fired
    headings = re.findall(r"^#{2,4} (Huimin\w+)", OPERATIONS_DOC.read_text("utf-8"), re.M)
    assert set(alerts) <= set(headings), set(alerts) - set(headings)


def dashboard_exprs() -> list[str]:
    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    board = json.loads(DASHBOARD.read_text("utf-8"))
    return [t["expr"] for p in panels(board["panels"]) for t in p.get("targets", [])]


# Grafana's built-in range variables and the dashboard's own (namespace, release's job), as
# Prometheus would see them after interpolation
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "6h",
    "$namespace": "prod",
    "$job": "hw-huimin-worker",
}


def test_every_dashboard_query_parses(promtool: str, tmp_path: Path) -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 15
    rules = []
    for number, expr in enumerate(exprs):
        for variable, duration in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, duration)
        assert "$" not in expr, f"unknown dashboard variable in {expr}"
        rules.append({"record": f"dashboard:query_{number}", "expr": expr})
    rules_file = tmp_path / "dashboard-rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = run_promtool(promtool, "check", "rules", str(rules_file))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_dashboard_and_alerts_only_query_metrics_the_worker_exposes() -> None:
    from prometheus_client import CollectorRegistry

    from worker.metrics import UnknownOutcomesCollector, WorkerMetrics

    registry = CollectorRegistry()
    WorkerMetrics(registry, retry_schedule_length=3)
    families = {f.name for f in registry.collect()} | {UnknownOutcomesCollector.NAME}
    exposed = {
        f + suffix for f in families for suffix in ("", "_total", "_bucket", "_sum", "_count")
    }
    alert_exprs = [
        rule["expr"]
        for group in yaml.safe_load(ALERTS.read_text("utf-8"))["groups"]
        for rule in group["rules"]
    ]
    used = {
        name
        for expr in [*dashboard_exprs(), *alert_exprs]
        for name in re.findall(r"\bhuimin_[a-z0-9_]+", expr)
    }
    assert used and used <= exposed, used - exposed
    shown = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in used}
    assert families <= shown, f"metrics on no dashboard panel or alert: {families - shown}"


# --- scoping: one Prometheus, several releases (issue 11) --------------------------------------

#: the labels the chart's ServiceMonitor adds that tell one release from another
SCOPE = {"namespace", "job"}
#: RabbitMQ's per-object metrics: their own namespace/job, and the object they describe
BROKER_SCOPE = SCOPE | {"vhost", "queue"}


def alert_rules() -> list[dict[str, Any]]:
    return [
        rule
        for group in yaml.safe_load(ALERTS.read_text("utf-8"))["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def test_every_alert_keeps_the_release_scoping_labels() -> None:
    """Every aggregation of every rule keeps namespace and job (a `by` clause naming both):
    no rule adds up two releases. The promtool cases in scoping_test.yaml show it firing
    for the release that is down only."""
    for rule in alert_rules():
        groupings = re.findall(r"\b(?:sum|max|min|avg|count)\s+by\s*\(([^)]*)\)", rule["expr"])
        assert groupings, f"{rule['alert']}: aggregate by (namespace, job, ...)"
        scope = BROKER_SCOPE if "rabbitmq_" in rule["expr"] else SCOPE
        for grouping in groupings:
            labels = {label.strip() for label in grouping.split(",")}
            assert scope <= labels, f"{rule['alert']}: by ({grouping}) drops {scope - labels}"
        assert "without" not in rule["expr"] and "vector(" not in rule["expr"], rule["alert"]


def test_every_alert_links_its_runbook_section() -> None:
    anchors = {
        re.sub(r"[^a-z0-9-]", "", heading.lower())
        for heading in re.findall(r"^#{2,4} (.+)$", OPERATIONS_DOC.read_text("utf-8"), re.M)
    }
    for rule in alert_rules():
        url = rule["annotations"]["runbook_url"]
        assert url == f"docs/operations.md#{rule['alert'].lower()}", rule["alert"]
        assert url.split("#")[1] in anchors, url
        assert "runbook" not in rule["annotations"], "runbook_url only"


def test_the_broker_side_alerts_read_rabbitmq_s_per_object_metrics() -> None:
    exprs = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    assert "rabbitmq_queue_consumers" in exprs["HuiminWorkQueueNoConsumer"]
    assert "rabbitmq_queue_messages_ready" in exprs["HuiminWorkQueueBacklogGrowing"]
    assert 'queue="huimin.dead-letter"' in exprs["HuiminDeadLetterQueueNotEmpty"]


def test_every_dashboard_query_is_scoped_by_the_dashboard_variables() -> None:
    board = json.loads(DASHBOARD.read_text("utf-8"))
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert {"datasource", "namespace", "job"} <= set(variables)
    assert "$namespace" in variables["job"]["definition"], "the job list follows the namespace"
    for expr in dashboard_exprs():
        selectors = re.findall(r"\bhuimin_[a-z0-9_]+(\{[^}]*\})?", expr)
        assert selectors, expr
        for selector in selectors:
            assert 'namespace="$namespace"' in selector and 'job=~"$job"' in selector, expr
