"""The inbound gateway end to end: the platform's calls (the simulator's `notify` client, real
HTTP) through the gateway to a HIS on real RabbitMQ (a throw-away vhost), with the ledger.

Specification, in short: a verified call is answered 0000 only once its message is confirmed
on `platform.events`; HIS00003 is answered with the HIS's list; every refusal is a signed
answer with the spec's rtCode and publishes nothing; a platformSeqId is accepted once, also
after a restart and across two gateways on one PostgreSQL ledger.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import amqp
import httpx
import pytest
from kombu import Connection, Exchange, Producer, Queue
from pydantic import SecretStr

from tests.worker_harness import postgres_schema
from worker.clock import Clock, FixedClock
from worker.gateway.events import PLATFORM_EXCHANGE, PlatformEvent
from worker.gateway.publisher import AmqpPublisher
from worker.gateway.server import GatewayParts, build_gateway
from worker.protocol import envelope
from worker.protocol.models.examples import EXAMPLES
from worker.sandbox.simulator.notify import notify
from worker.sandbox.simulator.server import serving_in_thread
from worker.settings import Settings

pytestmark = pytest.mark.rabbitmq

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
HIS_QUEUE = "his.platform-events"
VISITS_QUEUE = "his.visits-requested"


def example(trans_code: str) -> dict[str, Any]:
    return EXAMPLES[trans_code].copy().request


# --- the HIS side -----------------------------------------------------------------------------


class HisInbox:
    """A HIS queue bound to every platform event: what the gateway handed over."""

    def __init__(self, url: str) -> None:
        self.conn = Connection(url)
        self.channel = self.conn.channel()
        self.channel.exchange_declare(PLATFORM_EXCHANGE, "topic", durable=True, auto_delete=False)
        self.channel.queue_declare(HIS_QUEUE, durable=True, auto_delete=False)
        self.channel.queue_bind(HIS_QUEUE, PLATFORM_EXCHANGE, "#")
        self.channel.queue_purge(HIS_QUEUE)

    def messages(self) -> list[amqp.Message]:
        found = []
        while (message := self.channel.basic_get(HIS_QUEUE, no_ack=True)) is not None:
            found.append(message)
        return found

    def close(self) -> None:
        self.conn.release()


@contextmanager
def visits_responder(url: str, reply: Any = None) -> Iterator[list[dict[str, Any]]]:
    """The README's example HIS responder for HIS00003 (kombu), in a thread: answers every
    request with `reply` (default: the shared example's treatmentList)."""
    platform = Exchange(PLATFORM_EXCHANGE, type="topic", durable=True)
    visits = Queue(VISITS_QUEUE, platform, routing_key="visits.requested", durable=True)
    seen: list[dict[str, Any]] = []
    stop = threading.Event()
    ready = threading.Event()

    def run() -> None:
        with Connection(url) as conn:
            producer = Producer(conn.channel())

            def answer(body: dict[str, Any], message: Any) -> None:
                seen.append(body)
                producer.publish(
                    reply if reply is not None else EXAMPLES["HIS00003"].response,
                    exchange="",
                    routing_key=message.properties["reply_to"],
                    correlation_id=message.properties["correlation_id"],
                )
                message.ack()

            with conn.Consumer(visits, callbacks=[answer]):
                ready.set()
                while not stop.is_set():
                    try:
                        conn.drain_events(timeout=0.1)
                    except TimeoutError:
                        pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10), "the responder did not start"
    try:
        yield seen
    finally:
        stop.set()
        thread.join(5)


# --- the gateway ------------------------------------------------------------------------------


def gateway_settings(ledger_url: str, broker_url: str, **overrides: Any) -> Settings:
    return Settings(
        ledger_url=ledger_url,
        broker_url=broker_url,
        statement_enabled=False,
        gateway_his_timeout_s=2.0,
        **overrides,
    )


@contextmanager
def serving(settings: Settings, clock: Clock) -> Iterator[tuple[str, GatewayParts]]:
    parts = build_gateway(settings, clock=clock)
    try:
        with serving_in_thread(parts.app) as base_url:
            yield base_url + "/", parts
    finally:
        parts.close()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def settings(vhost: str, tmp_path: Any) -> Settings:
    return gateway_settings(f"sqlite:///{tmp_path / 'ledger.db'}", vhost)


@pytest.fixture
def inbox(vhost: str) -> Iterator[HisInbox]:
    box = HisInbox(vhost)
    yield box
    box.close()


@pytest.fixture
def gateway(settings: Settings, clock: FixedClock, inbox: HisInbox) -> Iterator[str]:
    with serving(settings, clock) as (url, _):
        yield url


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


@pytest.fixture
def credentials(settings: Settings) -> envelope.Credentials:
    return envelope.Credentials.from_settings(settings)


def call(
    url: str,
    trans_code: str,
    business: dict[str, Any],
    *,
    http: httpx.Client,
    credentials: envelope.Credentials,
    clock: Clock,
) -> envelope.OpenedResponse:
    return notify(url, trans_code, business, credentials=credentials, client=http, clock=clock)


def post(url: str, body: bytes | dict[str, Any], http: httpx.Client) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return http.post(url, content=content, headers={"content-type": "application/json"})


def answer_of(
    response: httpx.Response, credentials: envelope.Credentials
) -> envelope.OpenedResponse:
    """The gateway's answer, which must be signed with the shared key whatever happened."""
    assert response.status_code == 200
    return envelope.open_response(response.content, credentials=credentials)


def sealed(
    trans_code: str,
    business: dict[str, Any],
    credentials: envelope.Credentials,
    at: datetime = NOW,
    seq_id: str | None = None,
) -> dict[str, str]:
    return envelope.seal_request(
        trans_code, business, credentials=credentials, seq_id=seq_id or envelope.new_seq_id(), at=at
    )


# --- each call end to end ---------------------------------------------------------------------


def test_a_claim_result_is_published_confirmed_then_answered_0000(
    gateway: str,
    inbox: HisInbox,
    http: httpx.Client,
    credentials: envelope.Credentials,
    clock: FixedClock,
) -> None:
    business = example("HIS00004")
    answer = call(gateway, "HIS00004", business, http=http, credentials=credentials, clock=clock)

    assert (answer.rt_code, answer.business) == (
        "0000",
        {"treatmentSerialNo": business["treatmentSerialNo"]},
    )
    [message] = inbox.messages()
    event = PlatformEvent.model_validate_json(message.body)
    assert event.type == "claim-result.notified" == message.delivery_info["routing_key"]
    assert (event.transCode, event.data) == ("HIS00004", business)
    assert message.properties["message_id"] == event.eventId
    assert message.properties["delivery_mode"] == 2  # persistent


def test_the_same_notification_under_a_new_seq_id_is_answered_but_not_published_twice(
    gateway: str,
    inbox: HisInbox,
    http: httpx.Client,
    credentials: envelope.Credentials,
    clock: FixedClock,
) -> None:
    business = example("HIS00004")
    first = call(gateway, "HIS00004", business, http=http, credentials=credentials, clock=clock)
    again = call(gateway, "HIS00004", business, http=http, credentials=credentials, clock=clock)
    other = call(
        gateway,
        "HIS00004",
        {**business, "claimNode": "9"},
        http=http,
        credentials=credentials,
        clock=clock,
    )

    assert [first.rt_code, again.rt_code, other.rt_code] == ["0000"] * 3
    events = [json.loads(m.body) for m in inbox.messages()]
    assert [e["data"]["claimNode"] for e in events] == ["4", "9"]
    assert len({e["eventId"] for e in events}) == 2


def test_an_authorisation_letter_reaches_the_his_with_its_file(
    gateway: str,
    inbox: HisInbox,
    http: httpx.Client,
    credentials: envelope.Credentials,
    clock: FixedClock,
) -> None:
    business = example("HIS00002")
    answer = call(gateway, "HIS00002", business, http=http, credentials=credentials, clock=clock)

    assert answer.rt_code == "0000"
    [message] = inbox.messages()
    event = json.loads(message.body)
    assert message.delivery_info["routing_key"] == "authorization.received"
    assert event["data"]["file"] == business["file"]
    assert event["platformSeqId"] in event["eventId"]


def test_visit_records_are_asked_of_the_his_and_returned_to_the_platform(
    gateway: str,
    vhost: str,
    http: httpx.Client,
    credentials: envelope.Credentials,
    clock: FixedClock,
) -> None:
    with visits_responder(vhost) as seen:
        answer = call(
            gateway,
            "HIS00003",
            example("HIS00003"),
            http=http,
            credentials=credentials,
            clock=clock,
        )

    assert answer.rt_code == "0000"
    assert answer.business == EXAMPLES["HIS00003"].response
    assert [request["data"] for request in seen] == [example("HIS00003")]


def test_visit_records_the_his_does_not_answer_in_time_are_a_signed_9999_in_time(
    gateway: str,
    vhost: str,
    settings: Settings,
    http: httpx.Client,
    credentials: envelope.Credentials,
    clock: FixedClock,
) -> None:
    with Connection(vhost) as conn:  # a HIS queue, but nobody answering
        Queue(
            VISITS_QUEUE, Exchange(PLATFORM_EXCHANGE, type="topic"), routing_key="visits.requested"
        )(conn.channel()).declare()
        started = time.monotonic()
        answer = call(
            gateway,
            "HIS00003",
            example("HIS00003"),
            http=http,
            credentials=credentials,
            clock=clock,
        )
        waited = time.monotonic() - started

    assert answer.rt_code == "9999"
    assert settings.gateway_his_timeout_s <= waited < settings.gateway_his_timeout_s + 2


@pytest.mark.parametrize(
    ("reply", "rt_code"),
    [
        ({"error": "no such patient"}, "1000"),
        ({"treatmentList": [{"treatmentSerialNo": "ZY1"}]}, "9999"),  # fields missing
        ({"treatmentList": []}, "0000"),
    ],
)
def test_the_his_reply_decides_the_visit_records_answer(
    gateway: str,
    vhost: str,
    http: httpx.Client,
    credentials: envelope.Credentials,
    clock: FixedClock,
    reply: dict[str, Any],
    rt_code: str,
) -> None:
    with visits_responder(vhost, reply=reply):
        answer = call(
            gateway,
            "HIS00003",
            example("HIS00003"),
            http=http,
            credentials=credentials,
            clock=clock,
        )
    assert answer.rt_code == rt_code


def test_a_call_no_his_queue_is_bound_for_is_9999_not_dropped(
    settings: Settings,
    clock: FixedClock,
    http: httpx.Client,
    credentials: envelope.Credentials,
    vhost: str,
) -> None:
    with Connection(vhost) as conn:  # no inbox fixture: nothing bound to platform.events
        conn.channel().queue_delete(HIS_QUEUE)
    with serving(settings, clock) as (url, _):
        answer = call(
            url, "HIS00004", example("HIS00004"), http=http, credentials=credentials, clock=clock
        )
    assert answer.rt_code == "9999"


# --- refusals: signed, with the spec's rtCode, nothing published ------------------------------


def refused(
    url: str, body: bytes | dict[str, Any], http: httpx.Client, credentials: envelope.Credentials
) -> tuple[str, str]:
    answer = answer_of(post(url, body, http), credentials)
    assert answer.business is None
    return answer.rt_code, answer.rt_msg


def test_a_forged_signature_is_refused_4000(
    gateway: str,
    inbox: HisInbox,
    http: httpx.Client,
    credentials: envelope.Credentials,
) -> None:
    forged = sealed("HIS00004", example("HIS00004"), credentials)
    forged["signData"] = "0" * 64
    assert refused(gateway, forged, http, credentials)[0] == "4000"
    assert inbox.messages() == []


def test_a_request_signed_with_another_key_is_refused_4000(
    gateway: str,
    inbox: HisInbox,
    http: httpx.Client,
    credentials: envelope.Credentials,
) -> None:
    other = envelope.Credentials(credentials.platform_id, SecretStr("0123456789ABCDEF0123"))
    body = sealed("HIS00004", example("HIS00004"), other)
    assert refused(gateway, body, http, credentials)[0] == "4000"
    assert inbox.messages() == []


@pytest.mark.parametrize("minutes", [-6, 6])
def test_a_request_outside_the_time_window_is_refused_4000(
    gateway: str,
    inbox: HisInbox,
    http: httpx.Client,
    credentials: envelope.Credentials,
    minutes: int,
) -> None:
    body = sealed("HIS00004", example("HIS00004"), credentials, NOW + timedelta(minutes=minutes))
    code, message = refused(gateway, body, http, credentials)
    assert (code, "300 s" in message) == ("4000", True)
    assert inbox.messages() == []


def test_a_replayed_seq_id_is_refused_4008_and_published_once(
    gateway: str,
    inbox: HisInbox,
    http: httpx.Client,
    credentials: envelope.Credentials,
) -> None:
    body = sealed("HIS00002", example("HIS00002"), credentials)
    assert answer_of(post(gateway, body, http), credentials).rt_code == "0000"
    assert refused(gateway, body, http, credentials)[0] == "4008"
    assert len(inbox.messages()) == 1


def test_a_seq_id_is_remembered_across_a_gateway_restart(
    settings: Settings,
    clock: FixedClock,
    inbox: HisInbox,
    http: httpx.Client,
    credentials: envelope.Credentials,
) -> None:
    body = sealed("HIS00004", example("HIS00004"), credentials)
    with serving(settings, clock) as (url, _):
        assert answer_of(post(url, body, http), credentials).rt_code == "0000"
    with serving(settings, clock) as (url, _):
        assert refused(url, body, http, credentials)[0] == "4008"
    assert len(inbox.messages()) == 1


@pytest.mark.postgres
def test_a_seq_id_is_accepted_by_one_of_two_gateways_on_one_postgres_ledger(
    vhost: str,
    postgres_url: str,
    clock: FixedClock,
    inbox: HisInbox,
    http: httpx.Client,
) -> None:
    with postgres_schema(postgres_url) as ledger_url:
        settings = gateway_settings(ledger_url, vhost)
        credentials = envelope.Credentials.from_settings(settings)
        body = sealed("HIS00002", example("HIS00002"), credentials)
        with serving(settings, clock) as (first, _), serving(settings, clock) as (second, _):
            answers = [
                answer_of(post(url, body, http), credentials).rt_code
                for url in (first, second, first)
            ]
    assert answers == ["0000", "4008", "4008"]
    assert len(inbox.messages()) == 1


def test_an_unknown_platform_id_is_refused_4104(
    gateway: str,
    inbox: HisInbox,
    http: httpx.Client,
    credentials: envelope.Credentials,
) -> None:
    stranger = envelope.Credentials("OTHER001", credentials.secret)
    body = sealed("HIS00004", example("HIS00004"), stranger)
    assert refused(gateway, body, http, credentials)[0] == "4104"
    assert inbox.messages() == []


@pytest.mark.parametrize("body", [b"{not json", b"[]", b"\xff\xfe", b'{"platformId": 1}'])
def test_malformed_json_is_refused_4000(
    gateway: str,
    inbox: HisInbox,
    http: httpx.Client,
    credentials: envelope.Credentials,
    body: bytes,
) -> None:
    assert refused(gateway, body, http, credentials)[0] == "4000"
    assert inbox.messages() == []


def test_business_fields_that_break_the_model_are_refused_4000_naming_the_field(
    gateway: str,
    inbox: HisInbox,
    http: httpx.Client,
    credentials: envelope.Credentials,
) -> None:
    body = sealed("HIS00004", {**example("HIS00004"), "claimNode": "ZZ"}, credentials)
    code, message = refused(gateway, body, http, credentials)
    assert (code, "claimNode" in message) == ("4000", True)
    assert inbox.messages() == []


def test_a_body_over_the_limit_is_http_413_whether_announced_or_streamed(
    vhost: str,
    tmp_path: Any,
    clock: FixedClock,
    inbox: HisInbox,
    http: httpx.Client,
) -> None:
    settings = gateway_settings(
        f"sqlite:///{tmp_path / 'l.db'}", vhost, gateway_max_body_bytes=64 * 1024
    )
    credentials = envelope.Credentials.from_settings(settings)
    business = {**example("HIS00002"), "file": "A" * 40 * 1024}  # ~80 kB once hex-encrypted
    body = json.dumps(sealed("HIS00002", business, credentials)).encode()

    def chunks() -> Iterator[bytes]:  # no Content-Length: read until the limit, then stop
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    with serving(settings, clock) as (url, _):
        assert post(url, body, http).status_code == 413
        assert http.post(url, content=chunks()).status_code == 413
    assert inbox.messages() == []


def test_a_3_mb_file_fits_the_default_limit(
    gateway: str,
    inbox: HisInbox,
    http: httpx.Client,
    credentials: envelope.Credentials,
    clock: FixedClock,
) -> None:
    business = {**example("HIS00002"), "file": "QUJD" * (3 * 1024 * 1024 // 3)}  # 4 MiB base64
    answer = call(gateway, "HIS00002", business, http=http, credentials=credentials, clock=clock)
    assert answer.rt_code == "0000"
    assert len(inbox.messages()) == 1


# --- operations -------------------------------------------------------------------------------


def test_health_readiness_and_metrics(
    settings: Settings,
    clock: FixedClock,
    inbox: HisInbox,
    http: httpx.Client,
    credentials: envelope.Credentials,
) -> None:
    with serving(settings, clock) as (url, _):
        call(url, "HIS00004", example("HIS00004"), http=http, credentials=credentials, clock=clock)
        post(url, b"{", http)
        health, ready = http.get(url + "healthz"), http.get(url + "readyz")
        metrics = http.get(url + "metrics").text

    assert (health.status_code, ready.status_code) == (200, 200)
    assert 'huimin_gateway_requests_total{rt_code="0000",trans_code="HIS00004"} 1.0' in metrics
    assert 'huimin_gateway_verification_failures_total{cause="malformed"} 1.0' in metrics
    assert "huimin_gateway_publish_seconds_count 1.0" in metrics


def test_readiness_fails_while_the_broker_is_unreachable(
    tmp_path: Any,
    clock: FixedClock,
    http: httpx.Client,
) -> None:
    settings = gateway_settings(
        f"sqlite:///{tmp_path / 'l.db'}", "amqp://guest:guest@127.0.0.1:1//", connect_timeout_s=0.5
    )
    with serving(settings, clock) as (url, _):
        ready = http.get(url + "readyz")
    assert (ready.status_code, ready.json()["failing"]) == (503, ["broker"])


def test_the_publisher_reuses_its_connections(vhost: str, inbox: HisInbox) -> None:
    publisher = AmqpPublisher(vhost, pool_size=2, confirm_timeout_s=5)
    try:
        publisher.declare()
        publisher.declare()
        assert publisher._idle.qsize() == 1  # noqa: SLF001 - the pool is the point here
    finally:
        publisher.close()


def test_a_body_that_does_not_arrive_in_time_is_http_408_and_other_paths_404_405(
    vhost: str,
    tmp_path: Any,
    clock: FixedClock,
    inbox: HisInbox,
    http: httpx.Client,
) -> None:
    settings = gateway_settings(f"sqlite:///{tmp_path / 'l.db'}", vhost, gateway_read_timeout_s=0.5)
    with serving(settings, clock) as (url, _):
        port = int(url.rsplit(":", 1)[1].strip("/"))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as slow:
            slow.sendall(b'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"plat')
            status_line = slow.recv(200).split(b"\r\n", 1)[0]
        statuses = (http.get(url).status_code, http.post(url + "other", content=b"{}").status_code)
    assert status_line == b"HTTP/1.1 408 Request Timeout"
    assert statuses == (405, 404)
    assert inbox.messages() == []
