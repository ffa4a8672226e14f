"""Rotating the platform secret with no failed call (issue 11).

Both sides are configured with the current secret, the next one and the switch time
(HUIMIN_PLATFORM_SECRET_NEXT, HUIMIN_PLATFORM_SECRET_SWITCH_AT). Each seals under the key active
on its own clock and opens under either, so a call sealed just before the switch and answered
just after it still verifies. The load test runs payments across the switch and checks every
envelope on the wire: before the switch under the old key, after it under the new one.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from tests.test_worker import event, example, new_order_id
from tests.worker_harness import Backend, running, start_worker
from worker.errors import EnvelopeError
from worker.protocol import envelope
from worker.sandbox.simulator.server import run_in_thread
from worker.settings import Settings, error_lines

OLD = "OLD-KEY-0123456789abcdef"
NEW = "NEW-KEY-fedcba9876543210"
AT = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


def rotating(switch_at: datetime | None = AT) -> envelope.Credentials:
    """The sandbox platformId with the old key, the new one and the switch time."""
    return envelope.Credentials(
        "HOSP0001", SecretStr(OLD), next_secret=SecretStr(NEW), switch_at=switch_at
    )


def only(secret: str) -> envelope.Credentials:
    return envelope.Credentials("HOSP0001", SecretStr(secret))


def opens_with(sealed: dict[str, str], secret: str, direction: str) -> bool:
    opener = envelope.open_request if direction == "request" else envelope.open_response
    try:
        opener(sealed, credentials=only(secret))
    except EnvelopeError:
        return False
    return True


# --- the envelope: seal under the active key, open under either --------------------------------


@pytest.mark.parametrize(
    ("at", "secret"), [(AT - timedelta(seconds=1), OLD), (AT, NEW), (AT + timedelta(days=1), NEW)]
)
def test_requests_are_sealed_under_the_key_active_at_their_time(at: datetime, secret: str) -> None:
    sealed = envelope.seal_request(
        "HOS00001", {"a": "1"}, credentials=rotating(), seq_id=envelope.new_seq_id(), at=at
    )
    assert opens_with(sealed, secret, "request")
    assert not opens_with(sealed, OLD if secret == NEW else NEW, "request")
    assert envelope.open_request(sealed, credentials=rotating()).business == {"a": "1"}


def test_answers_follow_the_answering_side_s_clock() -> None:
    before = envelope.seal_response(
        "0000", "ok", {"b": 2}, credentials=rotating(), at=AT - timedelta(seconds=1)
    )
    after = envelope.seal_response("0000", "ok", {"b": 2}, credentials=rotating(), at=AT)
    assert opens_with(before, OLD, "response") and opens_with(after, NEW, "response")
    for sealed in (before, after):
        assert envelope.open_response(sealed, credentials=rotating()).business == {"b": 2}
    undated = envelope.seal_response("0000", "ok", None, credentials=rotating())
    assert opens_with(undated, OLD, "response"), "no time given: the current secret"


def test_without_a_switch_time_the_next_key_is_only_accepted() -> None:
    """Stage 1 of the runbook: both sides learn the new key before anyone uses it."""
    staged = rotating(switch_at=None)
    sealed = envelope.seal_request(
        "HOS00001", {}, credentials=staged, seq_id=envelope.new_seq_id(), at=AT + timedelta(days=9)
    )
    assert opens_with(sealed, OLD, "request")
    theirs = envelope.seal_response("0000", "ok", {"c": 3}, credentials=only(NEW))
    assert envelope.open_response(theirs, credentials=staged).business == {"c": 3}


@pytest.mark.parametrize("tamper", ["signData", "encData"])
def test_an_envelope_under_neither_key_is_still_refused(tamper: str) -> None:
    sealed = envelope.seal_response("0000", "ok", {"d": 4}, credentials=only("THIRD-KEY-00000000"))
    with pytest.raises(EnvelopeError):
        envelope.open_response(sealed, credentials=rotating())
    good = envelope.seal_response("0000", "ok", {"d": 4}, credentials=rotating(), at=AT)
    good[tamper] = ("0" if good[tamper][0] != "0" else "1") + good[tamper][1:]
    with pytest.raises(EnvelopeError):
        envelope.open_response(good, credentials=rotating())


# --- settings: never echo a secret ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"platform_secret_next": "short-Sécret"},
            "HUIMIN_PLATFORM_SECRET_NEXT: must be at least 16",
        ),
        (
            {"platform_secret_switch_at": "2026-12-01T02:00:00+08:00"},
            "SWITCH_AT is set without HUIMIN_PLATFORM_SECRET_NEXT",
        ),
        (
            {"platform_secret_next": NEW, "platform_secret_switch_at": "2026-12-01T02:00:00"},
            "HUIMIN_PLATFORM_SECRET_SWITCH_AT: needs a UTC offset",
        ),
        ({"platform_secret": NEW, "platform_secret_next": NEW}, "is the current secret"),
    ],
)
def test_rotation_settings_are_checked_without_echoing_them(
    values: dict[str, str], message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(**{"platform_secret": OLD, **values})
    lines = "\n".join(error_lines(caught.value))
    assert message in lines, lines
    for secret in (OLD, NEW, "short-Sécret"):
        assert secret not in lines


def test_the_settings_carry_the_rotation_into_the_credentials() -> None:
    settings = Settings(
        platform_secret=OLD,
        platform_secret_next=NEW,
        platform_secret_switch_at="2026-12-01T10:00:00+08:00",
    )
    credentials = envelope.Credentials.from_settings(settings)
    assert credentials.switch_at == AT
    assert [c.secret.get_secret_value() for c in credentials.accepted] == [OLD, NEW]
    assert NEW not in repr(settings) and NEW not in repr(credentials)


# --- under load: payments flow while both sides switch --------------------------------------------


class Wiretap(httpx.BaseTransport):
    """The worker's HTTP transport, keeping a copy of every request and answer body."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.exchanges: list[tuple[dict[str, str], dict[str, str]]] = []
        self.lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        body = response.read()
        with self.lock:
            self.exchanges.append((json.loads(request.content), json.loads(body)))
        return httpx.Response(response.status_code, headers=response.headers, content=body)

    def close(self) -> None:
        self.inner.close()


BACKENDS = ["memory-sqlite", "rabbitmq-postgres"]  # what conftest.py runs `backend` on


def test_payments_across_the_switch_never_fail(backend: Backend) -> None:
    switch_at = datetime.now(UTC) + timedelta(seconds=3)
    tap = Wiretap()
    with run_in_thread(credentials=[rotating(switch_at)], seed=11) as simulator:
        settings = backend.settings(
            simulator.base_url + "/api",
            platform_secret=OLD,
            platform_secret_next=NEW,
            platform_secret_switch_at=switch_at,
            statement_enabled=False,
            concurrency=8,
        )
        his = backend.his(settings)
        orders: list[str] = []
        with running(start_worker(backend, settings, platform_transport=tap)) as worker:
            deadline = switch_at + timedelta(seconds=3)
            while datetime.now(UTC) < deadline:  # ~10 payments a second, across the switch
                order_id = new_order_id()
                orders.append(order_id)
                his.publish(event("payment.requested", example("HOS00003", orderId=order_id)))
                time.sleep(0.1)
            keys = [his.next_result(30).routing_key for _ in orders]
            registry = worker.metrics.registry
            verify_failed = sum(
                registry.get_sample_value("huimin_signature_failures_total", {"direction": d}) or 0
                for d in ("request", "response")
            )
        his.close()
        receipts = [simulator.receipts(order_id) for order_id in orders]
    assert keys == ["payment.requested.succeeded"] * len(orders)
    assert receipts == [1] * len(orders), "each paid once: no call was retried or re-sent"
    assert verify_failed == 0
    _assert_each_side_switched(tap.exchanges, switch_at)


def _assert_each_side_switched(
    exchanges: list[tuple[dict[str, str], dict[str, str]]], switch_at: datetime
) -> None:
    """Every request and answer on the wire opens under exactly one key, the one active when
    it was sealed: the old key before the switch, the new one after (both seen)."""
    sealed_under: dict[str, int] = {OLD: 0, NEW: 0}
    for request, answer in exchanges:
        sent = datetime.strptime(
            request["platformTransDate"] + request["platformTransTime"], "%Y%m%d%H%M%S"
        ).replace(tzinfo=envelope.CHINA_TZ)
        (key,) = [k for k in (OLD, NEW) if opens_with(request, k, "request")]
        if abs(sent - switch_at) > timedelta(seconds=1):  # whole seconds on the wire
            assert key == (NEW if sent > switch_at else OLD), (sent, switch_at)
        sealed_under[key] += 1
        assert [k for k in (OLD, NEW) if opens_with(answer, k, "response")], "answer verifies"
    assert sealed_under[OLD] >= 5 and sealed_under[NEW] >= 5, sealed_under


@pytest.mark.parametrize(
    ("now", "secret"), [(AT - timedelta(seconds=5), OLD), (AT + timedelta(seconds=5), NEW)]
)
def test_the_gateway_answers_under_the_key_active_on_its_clock(
    tmp_path: Path, now: datetime, secret: str
) -> None:
    """A platform call sealed under the old key just before the switch is accepted, and the
    gateway's answer (and a refusal) is signed with the key active when it answers."""
    from prometheus_client import CollectorRegistry

    from worker.broker.memory import MemoryBroker
    from worker.clock import FixedClock
    from worker.gateway.metrics import GatewayMetrics
    from worker.gateway.publisher import MemoryPublisher
    from worker.gateway.service import Gateway, GatewayOptions
    from worker.ledger import open_ledger
    from worker.protocol.models.examples import EXAMPLES

    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.migrate()
    options = GatewayOptions(rotating(), max_skew=timedelta(minutes=5), his_timeout_s=1.0)
    gateway = Gateway(
        options,
        ledger=ledger,
        publisher=MemoryPublisher(MemoryBroker()),
        metrics=GatewayMetrics(CollectorRegistry()),
        clock=FixedClock(now),
    )
    request = envelope.seal_request(
        "HIS00004",
        EXAMPLES["HIS00004"].request,
        credentials=only(OLD),
        seq_id=envelope.new_seq_id(),
        at=now - timedelta(seconds=10),
    )
    body = json.dumps(request).encode()
    answer, refusal = gateway.handle(body), gateway.handle(body)  # the second is a replay
    ledger.close()
    assert envelope.open_response(answer, credentials=only(secret)).rt_code == "0000"
    assert envelope.open_response(refusal, credentials=only(secret)).rt_code == "4008"
    other = NEW if secret == OLD else OLD
    assert not opens_with(answer, other, "response")
