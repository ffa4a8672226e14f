"""Prometheus metrics: one object that is the engine's and the client's observer.

Everything registers on the `CollectorRegistry` it is given (the app creates one per worker),
never on prometheus_client's global registry, and nothing happens at import time. Labels are
bounded: event types, transCodes, rtCodes and reasons come from the project's own tables and
anything else is reported as `other`. Never a patient, order or event id.

The label scheme of `huimin_events_finished_total{outcome}` is `Disposition.finished_as`:
the outcome a delivery decided (succeeded | failed | unknown), else what it did with the
event (retry | requeued | republished | dead_lettered). The structured log line of each
finished delivery carries the same word in its `outcome` field.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from worker.broker.messages import Delivery, Disposition
from worker.broker.topology import H_ROUTING_KEY
from worker.clock import Clock, system_clock
from worker.errors import HuiminError
from worker.ledger.base import LedgerQueries
from worker.platform.attempts import Attempt
from worker.protocol.answers import ANSWER_FIELDS, label_pairs
from worker.protocol.registry import EVENT_TYPES, TRANSACTIONS
from worker.protocol.verdicts import RT_CODES

log = logging.getLogger(__name__)

OTHER = "other"
FINISHED_OUTCOMES = frozenset(
    {"succeeded", "failed", "unknown", "retry", "requeued", "republished", "dead_lettered"}
)
RECONCILIATION_RESULTS = frozenset(
    {"succeeded", "failed", "pending", "not_found", "rejected", "query_failed"}
)
CONFIRM_RESULTS = frozenset({"ack", "nack", "timeout"})
SIGNATURE_DIRECTIONS = frozenset({"request", "response"})
INSECURE_TRANSPORT_REASONS = ("tls_verify_off", "plain_http")  # settings.insecure_transport

# Seconds. A handler's work is a ledger write or two plus at most one platform call.
PROCESSING_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# occurredAt -> result: includes queueing, backoff and reconciliation, so up to hours.
RESULT_LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
PLATFORM_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# How long a scrape reuses the ledger-derived gauge: stats() counts the events table.
LEDGER_GAUGE_TTL_S = 30.0
# Results published as `unknown` stay on the gauge this long (a person must look).
UNRESOLVED_WINDOW = timedelta(hours=24)
UNRESOLVED_CAP = 1000  # the gauge reads "at least 1000" beyond this
MAX_DISCREPANCY_KINDS = 20


def _reasons() -> frozenset[str]:
    """Every `reason` a HuiminError subclass declares: the dead-letter reasons' universe."""
    found: set[str] = set()
    pending: list[type[HuiminError]] = [HuiminError]
    while pending:
        cls = pending.pop()
        found.add(cls.reason)
        pending.extend(cls.__subclasses__())
    return frozenset(found | {"retries_exhausted"})


def bounded(value: str | None, allowed: Iterable[str]) -> str:
    return value if value is not None and value in allowed else OTHER


def rt_code_label(attempt: Attempt) -> str:
    """The platform's rtCode when it answered; else what went wrong on the way (bounded)."""
    if attempt.rt_code is not None:
        return bounded(attempt.rt_code, RT_CODES)
    status = attempt.http_status
    if status is not None and status != 200:
        return f"http_{status}" if 100 <= status <= 599 else OTHER
    if status == 200:
        return "invalid_response"  # answered, but the envelope did not open or verify
    error = (attempt.error or "").lower()
    if "cannot connect" in error:
        return "connect_error"
    if "timed out" in error:
        return "timeout"
    return "transport_error"


def retry_label(retry: int, schedule_length: int) -> str:
    """1..N, one per delay of HUIMIN_RETRY_DELAYS_S; later retries reuse the last delay and
    share the label `N+1+` (`6+` with the default five delays)."""
    return str(retry) if 1 <= retry <= schedule_length else f"{schedule_length + 1}+"


class WorkerMetrics:
    """The metrics of one worker; also its EngineObserver and ClientObserver."""

    def __init__(self, registry: CollectorRegistry, retry_schedule_length: int) -> None:
        self.registry = registry
        self.retry_schedule_length = retry_schedule_length
        self._reasons = _reasons()
        self._discrepancy_kinds: set[str] = set()
        self._kinds_lock = threading.Lock()
        self._events(registry)
        self._platform(registry)
        self._broker(registry)
        self._money(registry)
        self._transport_safety(registry)
        self._answer_matching(registry)
        self._start_at_zero()

    def _events(self, registry: CollectorRegistry) -> None:
        self.events_received = Counter(
            "huimin_events_received",
            "Deliveries taken off the work queues (retries included).",
            ["event_type"],
            registry=registry,
        )
        self.events_finished = Counter(
            "huimin_events_finished",
            "Deliveries finished, by the outcome decided or what was "
            "done (retry, requeued, republished, dead_lettered).",
            ["event_type", "outcome"],
            registry=registry,
        )
        self.processing = Histogram(
            "huimin_event_processing_seconds",
            "Handler time of one delivery.",
            ["event_type"],
            buckets=PROCESSING_BUCKETS,
            registry=registry,
        )
        self.result_latency = Histogram(
            "huimin_event_result_latency_seconds",
            "From the event's occurredAt to its result being decided.",
            ["event_type"],
            buckets=RESULT_LATENCY_BUCKETS,
            registry=registry,
        )
        self.retries = Counter(
            "huimin_retries_scheduled",
            "Retries parked in a retry queue, by retry number.",
            ["retry"],
            registry=registry,
        )
        self.dead_lettered = Counter(
            "huimin_dead_lettered",
            "Messages moved to huimin.dead-letter, by reason.",
            ["reason"],
            registry=registry,
        )

    def _platform(self, registry: CollectorRegistry) -> None:
        self.platform_requests = Counter(
            "huimin_platform_requests",
            "HTTP exchanges with the platform, by rtCode or transport outcome.",
            ["trans_code", "rt_code"],
            registry=registry,
        )
        self.platform_seconds = Histogram(
            "huimin_platform_request_seconds",
            "Duration of one HTTP exchange with the platform.",
            ["trans_code"],
            buckets=PLATFORM_BUCKETS,
            registry=registry,
        )
        self.signature_failures = Counter(
            "huimin_signature_failures",
            "Envelopes that failed verification or decryption.",
            ["direction"],
            registry=registry,
        )

    def _broker(self, registry: CollectorRegistry) -> None:
        self.confirms = Counter(
            "huimin_result_confirms",
            "Publisher confirms of published messages.",
            ["result"],
            registry=registry,
        )
        self.broker_connected = Gauge(
            "huimin_broker_connected",
            "1 while connected to the broker and consuming.",
            registry=registry,
        )
        self.broker_reconnects = Counter(
            "huimin_broker_reconnects",
            "Connections re-established after a loss.",
            registry=registry,
        )
        # --- the engine's pause while the ledger is down (issue 10) ---
        self.consuming_paused_gauge = Gauge(
            "huimin_consuming_paused",
            "1 while consuming is paused because the ledger is "
            "down (deliveries held, the ledger probed with backoff).",
            registry=registry,
        )
        self.ledger_outages = Counter(
            "huimin_ledger_outages",
            "Pauses of consuming because the ledger was down.",
            registry=registry,
        )

    def _money(self, registry: CollectorRegistry) -> None:
        self.reconciliations = Counter(
            "huimin_reconciliations",
            "Status queries reconciling a money call, by what they said.",
            ["trans_code", "result"],
            registry=registry,
        )
        self.discrepancies = Counter(
            "huimin_statement_discrepancies",
            "Differences found between the daily statement and the ledger.",
            ["kind"],
            registry=registry,
        )

    def _transport_safety(self, registry: CollectorRegistry) -> None:
        self.insecure_transport = Gauge(
            "huimin_insecure_platform_transport",
            "1 while the way to the platform is insecure: "
            "tls_verify_off (HUIMIN_TLS_VERIFY=false) or plain_http (http:// to a host that is "
            "not loopback).",
            ["reason"],
            registry=registry,
        )
        for reason in INSECURE_TRANSPORT_REASONS:
            self.insecure_transport.labels(reason).set(0)

    # --- answers that do not match their request (answers.py) ----------------------------

    def _answer_matching(self, registry: CollectorRegistry) -> None:
        self.answer_mismatches = Counter(
            "huimin_platform_answer_mismatch",
            "Verified platform answers that do not echo "
            "their request (another order, amount or kind; an old answer replayed), by the "
            "first field that differs.",
            ["trans_code", "field"],
            registry=registry,
        )
        for trans_code, field in label_pairs():  # alerted on with increase(): born at 0
            self.answer_mismatches.labels(trans_code, field)

    def answer_mismatch(self, trans_code: str, field: str) -> None:
        self.answer_mismatches.labels(
            bounded(trans_code, TRANSACTIONS), bounded(field, ANSWER_FIELDS)
        ).inc()

    def _start_at_zero(self) -> None:
        """Alerts use increase(); a series born at 1 has no increase, so the ones alerted on
        exist at 0 from the start."""
        for reason in self._reasons:
            self.dead_lettered.labels(reason)
        for direction in SIGNATURE_DIRECTIONS:
            self.signature_failures.labels(direction)
        for result in CONFIRM_RESULTS:
            self.confirms.labels(result)

    # --- label helpers ----------------------------------------------------------------------

    @staticmethod
    def event_type_of(delivery: Delivery | None, disposition: Disposition | None = None) -> str:
        candidates = [disposition.event_type if disposition else None]
        if delivery is not None:
            candidates += [delivery.headers.get(H_ROUTING_KEY), delivery.routing_key]
        return next((c for c in candidates if isinstance(c, str) and c in EVENT_TYPES), OTHER)

    # --- the engine's observer (plus the handler wrapper's `delivery_received`) -------------

    def delivery_received(self, delivery: Delivery) -> None:
        self.events_received.labels(self.event_type_of(delivery)).inc()

    def delivery_done(
        self, delivery: Delivery | None, disposition: Disposition, seconds: float
    ) -> None:
        if delivery is None:
            return  # the sweeper's periodic job, not an event
        event_type = self.event_type_of(delivery, disposition)
        finished = bounded(disposition.finished_as, FINISHED_OUTCOMES)
        self.events_finished.labels(event_type, finished).inc()
        self.processing.labels(event_type).observe(seconds)
        if disposition.outcome is not None and disposition.occurred_at is not None:
            latency = time.time() - disposition.occurred_at.timestamp()
            self.result_latency.labels(event_type).observe(max(0.0, latency))
        if disposition.retry is not None:
            self.retries.labels(retry_label(disposition.retry, self.retry_schedule_length)).inc()
        if disposition.reason is not None:
            self.dead_lettered.labels(bounded(disposition.reason, self._reasons)).inc()
        if disposition.reconciliation is not None:
            self.reconciliations.labels(
                bounded(disposition.trans_code, TRANSACTIONS),
                bounded(disposition.reconciliation, RECONCILIATION_RESULTS),
            ).inc()

    def confirm(self, result: str) -> None:
        self.confirms.labels(bounded(result, CONFIRM_RESULTS)).inc()

    def connection(self, connected: bool, reconnect: bool) -> None:
        self.broker_connected.set(1 if connected else 0)
        if connected and reconnect:
            self.broker_reconnects.inc()

    def consuming_paused(self, paused: bool) -> None:
        self.consuming_paused_gauge.set(1 if paused else 0)
        if paused:
            self.ledger_outages.inc()

    # --- the client's observer --------------------------------------------------------------

    def request_finished(self, attempt: Attempt) -> None:
        trans_code = bounded(attempt.trans_code, TRANSACTIONS)
        self.platform_requests.labels(trans_code, rt_code_label(attempt)).inc()
        self.platform_seconds.labels(trans_code).observe(attempt.duration_s)

    def verification_failed(self, direction: str, reason: str) -> None:
        self.signature_failures.labels(bounded(direction, SIGNATURE_DIRECTIONS)).inc()

    # --- the statement reconciliation job's observer ----------------------------------------

    def discrepancy_found(self, kind: str) -> None:
        self.discrepancies.labels(self._discrepancy_kind(kind)).inc()

    def _discrepancy_kind(self, kind: str) -> str:
        """Kinds are the statement job's own words: normalised, and capped in number."""
        label = re.sub(r"[^a-z0-9_]+", "_", kind.lower()).strip("_")[:40] or OTHER
        with self._kinds_lock:
            if label not in self._discrepancy_kinds:
                if len(self._discrepancy_kinds) >= MAX_DISCREPANCY_KINDS:
                    return OTHER
                self._discrepancy_kinds.add(label)
        return label

    # --- the platform transport, as configured (set once at start) ------------------------

    def insecure_platform_transport(self, reasons: Mapping[str, bool]) -> None:
        for reason in INSECURE_TRANSPORT_REASONS:
            self.insecure_transport.labels(reason).set(1 if reasons.get(reason) else 0)

    # --- ledger-derived gauges --------------------------------------------------------------

    def watch_ledger(self, ledger: LedgerQueries, clock: Clock = system_clock) -> None:
        self.registry.register(UnknownOutcomesCollector(ledger, clock))


class UnknownOutcomesCollector(Collector):
    """`huimin_outcomes_unknown{state}`, read from the ledger at scrape time (cached).

    reconciling  events whose money call's outcome is being reconciled now: `stats()`
    unresolved   results published as `unknown` in the last 24 h, which a person must check
                 against the platform: `recent_events(since, outcome="unknown")`, an index
                 range on received_at, capped at 1000
    Every replica reports the same ledger-wide numbers: aggregate with max, not sum.
    """

    NAME = "huimin_outcomes_unknown"
    HELP = "Events whose money outcome is not known: being reconciled, or published unknown."

    def __init__(
        self, ledger: LedgerQueries, clock: Clock, ttl_s: float = LEDGER_GAUGE_TTL_S
    ) -> None:
        self.ledger, self.clock, self.ttl_s = ledger, clock, ttl_s
        self._lock = threading.Lock()
        self._cached: dict[str, int] | None = None
        self._read_at = float("-inf")

    def describe(self) -> list[GaugeMetricFamily]:
        # lets the registry learn the name without reading the ledger at registration
        return [GaugeMetricFamily(self.NAME, self.HELP, labels=["state"])]

    def collect(self) -> list[GaugeMetricFamily]:
        counts = self._counts()
        family = GaugeMetricFamily(self.NAME, self.HELP, labels=["state"])
        for state, count in (counts or {}).items():
            family.add_metric([state], count)
        return [family]

    def _counts(self) -> dict[str, int] | None:
        with self._lock:
            if time.monotonic() - self._read_at >= self.ttl_s:
                self._cached = self._read()
                self._read_at = time.monotonic()
            return self._cached

    def _read(self) -> dict[str, int] | None:
        try:
            reconciling = self.ledger.stats().get("reconciling", 0)
            since: datetime = self.clock() - UNRESOLVED_WINDOW
            unresolved = self.ledger.recent_events(
                since=since, outcome="unknown", limit=UNRESOLVED_CAP
            )
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail with the ledger
            log.debug("cannot read unknown outcomes from the ledger: %s", exc)
            return None  # no sample rather than a stale one; /readyz reports the ledger
        return {"reconciling": reconciling, "unresolved": len(unresolved)}
