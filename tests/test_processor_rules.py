"""The money rules of worker/pipeline/processor.py, one test per rule of its docstring.

`Processor.handle(delivery)` is called directly: no engine, no threads, no broker, no sleeps.
The platform is scripted (tests/platform_fakes.py), the ledger a SQLite file in tmp_path, the
clock fixed. Each test asserts the three things the processor decides: the Disposition it
returns, the ledger rows it leaves, and the platform calls it made.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.platform_fakes import FakePlatform, signed
from worker.broker.messages import Delivery, Disposition, Outgoing
from worker.broker.topology import (
    DEAD_LETTER_QUEUE,
    EVENTS_EXCHANGE,
    H_REASON,
    H_RETRY,
    RESULTS_EXCHANGE,
    topology_for,
    work_queue_for,
)
from worker.clock import FixedClock
from worker.ledger import EventState, Ledger, open_ledger
from worker.pipeline.intake import IntakeRules
from worker.pipeline.processor import Processor
from worker.platform.client import PlatformClient
from worker.protocol.models.examples import EXAMPLES
from worker.retry import RetryPolicy
from worker.settings import Settings

START = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)
PAY = EXAMPLES["HOS00003"]
QUERY = EXAMPLES["HOS00012"]
SIGNING_URL = EXAMPLES["HOS00025"]


def make_processor(
    settings: Settings, platform: FakePlatform, ledger: Ledger, clock: FixedClock
) -> Processor:
    """The one place that knows how a Processor is built (as worker/app.py builds it)."""
    policy = RetryPolicy.from_settings(settings)
    client = PlatformClient(
        settings, transport=platform.transport(), clock=clock, policy=policy, sleep=lambda _: None
    )
    return Processor(
        ledger,
        client,
        topology_for(policy),
        policy=policy,
        rules=IntakeRules.from_settings(settings),
        clock=clock,
        owner="test-worker",
        rng=random.Random(0),
    )


@dataclass
class Rig:
    """A processor with its scripted platform, its ledger and its clock."""

    processor: Processor
    settings: Settings
    platform: FakePlatform
    ledger: Ledger
    clock: FixedClock

    def handle(self, delivery: Delivery) -> Disposition:
        return self.processor.handle(delivery)

    def calls(self) -> list[str]:
        """The transCodes the platform received, in order."""
        return [request.trans_code for request in self.platform.received]

    def script(self, *answers: httpx.Response | Exception) -> None:
        self.platform.answers.extend(answers)


@pytest.fixture
def make_rig(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    """Rigs with settings overridden as a test needs; their ledgers closed at the end."""
    ledgers: list[Ledger] = []

    def make(**overrides: Any) -> Rig:
        settings = Settings(
            platform_url="http://127.0.0.1:9/api",  # never dialled: the fake answers,
            ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
            retry_jitter=0,  # the backoff schedule exactly as configured
            **overrides,
        )
        clock, platform = FixedClock(START), FakePlatform()
        ledger = open_ledger(settings.ledger_url.get_secret_value())
        ledgers.append(ledger)
        ledger.migrate()
        processor = make_processor(settings, platform, ledger, clock)
        return Rig(processor, settings, platform, ledger, clock)

    yield make
    for ledger in ledgers:
        ledger.close()


@pytest.fixture
def rig(make_rig: Callable[..., Rig]) -> Rig:
    return make_rig()


# --- events and deliveries ----------------------------------------------------------------


def event(event_type: str, data: dict[str, Any], event_id: str = "evt-signing") -> dict[str, Any]:
    return {
        "eventId": event_id,
        "type": event_type,
        "occurredAt": START.isoformat(),
        "data": data,
    }


def payment(event_id: str = "evt-payment", **changes: Any) -> dict[str, Any]:
    return event("payment.requested", {**PAY.request, **changes}, event_id)


def delivered(body: dict[str, Any] | bytes, *, redelivered: bool = False) -> Delivery:
    """As the HIS published it: on its type's work queue, from the events exchange."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    event_type = "payment.requested" if isinstance(body, bytes) else body["type"]
    return Delivery(
        raw,
        event_type,
        message_id=None if isinstance(body, bytes) else body["eventId"],
        redelivered=redelivered,
        queue=work_queue_for(event_type) or "",
        exchange=EVENTS_EXCHANGE,
    )


def back_from_retry(retry: Outgoing) -> Delivery:
    """The retry message once its TTL ran out: dead-lettered back onto its work queue."""
    work_queue = work_queue_for(json.loads(retry.body)["type"]) or ""
    return Delivery(
        retry.body,
        work_queue,
        headers=retry.headers,
        message_id=retry.message_id,
        queue=work_queue,
        exchange="",
    )


def result_of(disposition: Disposition) -> dict[str, Any]:
    (message,) = [m for m in disposition.messages if m.exchange == RESULTS_EXCHANGE]
    return json.loads(message.body)


def dead_letter_of(disposition: Disposition) -> Outgoing:
    (message,) = [m for m in disposition.messages if m.routing_key == DEAD_LETTER_QUEUE]
    return message


def paid() -> httpx.Response:
    return signed("0000", "交易成功", PAY.response)


def queried(order_status: str = "02") -> httpx.Response:
    return signed("0000", "交易成功", {**QUERY.response, "orderStatus": order_status})


# --- rule 1: a redelivered or duplicated event republishes its stored result ---------------


@pytest.mark.parametrize("redelivered", [True, False], ids=["redelivered", "duplicated"])
def test_a_second_delivery_republishes_the_stored_result_without_calling_the_platform(
    rig: Rig, redelivered: bool
) -> None:
    rig.script(paid())
    first = rig.handle(delivered(payment()))
    again = rig.handle(delivered(payment(), redelivered=redelivered))
    assert (first.label, again.label) == ("succeeded", "republished")
    assert result_of(again) == result_of(first)  # the same resultId: HIS deduplicates it
    assert rig.calls() == ["HOS00003"]
    assert [e.kind for e in rig.ledger.journal("evt-payment")].count("duplicate") == 1


def test_a_second_copy_in_the_same_worker_waits_while_the_first_is_mid_call(rig: Rig) -> None:
    """Only the delivery that owns the event decides it, even when both copies are in one
    worker (a retry and the sweeper's re-injection): the lease is the delivery's, not the
    worker's. benchmarks/chaos.py found both copies sending the payment."""
    second: list[Disposition] = []
    arrived = False

    def second_copy_arrives(_request: object) -> None:
        nonlocal arrived
        if not arrived:  # while the payment is on its way to the platform
            arrived = True
            second.append(rig.handle(delivered(payment(), redelivered=True)))

    rig.platform.on_request = second_copy_arrives
    rig.script(paid(), queried(), paid())  # what a second copy that went ahead would get
    first = rig.handle(delivered(payment()))
    assert (first.label, second[0].label) == ("succeeded", "retry")
    assert rig.calls() == ["HOS00003"]  # one payment, and no status query by the second copy


# --- rule 2: a business key reused with a different payload is an idempotency conflict ----


def test_a_business_key_reused_with_a_different_payload_is_failed_without_a_call(
    rig: Rig,
) -> None:
    rig.script(paid())
    rig.handle(delivered(payment("evt-first")))
    conflict = rig.handle(delivered(payment("evt-second", amt=PAY.request["amt"] + 1)))
    result = result_of(conflict)
    assert (conflict.outcome, result["outcome"]) == ("failed", "failed")
    assert "idempotency conflict" in result["rtMsg"] and "evt-first" in result["rtMsg"]
    assert [e["field"] for e in result["errors"]] == ["data"]
    assert rig.calls() == ["HOS00003"]  # the second payment never reached the platform
    assert rig.ledger.get_event("evt-first").outcome == "succeeded"  # type: ignore[union-attr]


def test_the_same_business_key_and_payload_under_a_new_event_id_answers_as_the_first(
    rig: Rig,
) -> None:
    rig.script(paid())
    first = result_of(rig.handle(delivered(payment("evt-first"))))
    mirror = result_of(rig.handle(delivered(payment("evt-second"))))
    assert mirror["outcome"] == first["outcome"] == "succeeded"
    assert mirror["data"] == first["data"] and mirror["causationId"] == "evt-second"
    assert rig.calls() == ["HOS00003"]


# --- rule 3: money calls are recorded before sending; unknown outcomes are reconciled -----


def test_a_money_call_is_in_the_ledger_before_it_is_sent(rig: Rig) -> None:
    seen: list[tuple[str, datetime | None]] = []

    def check(request: Any) -> None:  # runs inside the platform, before it answers
        (attempt,) = rig.ledger.attempts("evt-payment")
        seen.append((attempt.platform_seq_id, attempt.finished_at))
        assert rig.ledger.get_event("evt-payment").state is EventState.IN_FLIGHT  # type: ignore[union-attr]

    rig.platform.on_request = check
    rig.script(paid())
    done = rig.handle(delivered(payment()))
    assert seen == [(rig.platform.received[0].platform_seq_id, None)]
    assert done.outcome == "succeeded"
    (attempt,) = rig.ledger.attempts("evt-payment")
    assert (attempt.purpose, attempt.outcome, attempt.rt_code) == ("call", "succeeded", "0000")


def test_an_unknown_outcome_is_reconciled_by_the_status_query_never_by_resending(
    rig: Rig,
) -> None:
    rig.script(httpx.ReadTimeout("the answer never came"), queried("02"))
    unknown = rig.handle(delivered(payment()))
    assert (unknown.label, unknown.outcome) == ("retry", None)  # nothing decided yet
    assert rig.ledger.get_event("evt-payment").state is EventState.RECONCILING  # type: ignore[union-attr]
    (retry,) = unknown.messages
    settled = rig.handle(back_from_retry(retry))
    assert rig.calls() == ["HOS00003", "HOS00012"]  # asked, never paid twice
    assert (settled.outcome, settled.reconciliation) == ("succeeded", "succeeded")
    assert result_of(settled)["data"]["orderStatus"] == "02"
    purposes = [(a.purpose, a.outcome) for a in rig.ledger.attempts("evt-payment")]
    assert purposes == [("call", "unknown"), ("status_query", "succeeded")]


def test_the_status_queries_follow_the_backoff_schedule(rig: Rig) -> None:
    rig.script(httpx.ReadTimeout("lost"), queried("01"), queried("01"))
    delays = rig.settings.retry_delays_s
    disposition = rig.handle(delivered(payment()))
    expirations = []
    for _ in range(3):
        (retry,) = disposition.messages
        expirations.append(retry.expiration_ms)
        assert retry.headers[H_RETRY] == len(expirations)
        if len(expirations) < 3:
            disposition = rig.handle(back_from_retry(retry))
    assert expirations == [int(d * 1000) for d in delays[:3]]
    assert rig.calls() == ["HOS00003", "HOS00012", "HOS00012"]  # orderStatus 01: not final


def test_the_payment_is_sent_again_only_once_the_query_proves_the_platform_never_had_it(
    rig: Rig,
) -> None:
    not_found = signed("1000", "订单不存在")
    rig.script(httpx.ReadTimeout("lost"), not_found, not_found, paid())
    (retry,) = rig.handle(delivered(payment())).messages
    # "no such order" right after the call proves nothing: it may still be on its way
    early = rig.handle(back_from_retry(retry))
    assert (early.label, early.reconciliation) == ("retry", "not_found")
    assert rig.calls() == ["HOS00003", "HOS00012"]
    # long after the call's deadline, the same answer means it was never accepted
    rig.clock.advance(3600)
    (retry,) = early.messages
    late = rig.handle(back_from_retry(retry))
    assert rig.calls() == ["HOS00003", "HOS00012", "HOS00012", "HOS00003"]
    assert (late.outcome, late.reconciliation) == ("succeeded", "not_found")
    seq_ids = [r.platform_seq_id for r in rig.platform.received if r.trans_code == "HOS00003"]
    assert len(set(seq_ids)) == 2  # a fresh platformSeqId, as for any new attempt


def test_an_outcome_still_unknown_after_the_last_query_is_published_unknown(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(reconcile_max_queries=1)
    rig.script(httpx.ReadTimeout("lost"), httpx.ReadTimeout("lost again"))
    (retry,) = rig.handle(delivered(payment())).messages
    final = rig.handle(back_from_retry(retry))
    assert (final.outcome, result_of(final)["outcome"]) == ("unknown", "unknown")
    assert "outcome unknown after reconciliation" in result_of(final)["rtMsg"]
    assert rig.calls() == ["HOS00003", "HOS00012"]  # for a person to look at: never re-sent


# --- rule 4: retries, dead letters and invalid events -------------------------------------


def test_a_retryable_failure_waits_in_the_first_retry_queue(rig: Rig) -> None:
    rig.script(httpx.Response(503))
    retried = rig.handle(delivered(event("signing.url.requested", SIGNING_URL.request)))
    (retry,) = retried.messages
    assert (retried.label, retried.retry, retried.outcome) == ("retry", 1, None)
    assert retry.exchange == "" and retry.routing_key.startswith("huimin.retry")
    assert retry.headers[H_RETRY] == 1
    assert rig.ledger.get_event("evt-signing").state is EventState.WAITING  # type: ignore[union-attr]
    assert rig.calls() == ["HOS00025"]


def test_exhausted_retries_are_dead_lettered_and_answered_failed(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(max_attempts=2)
    rig.script(httpx.Response(503), httpx.Response(503))
    (retry,) = rig.handle(delivered(event("signing.url.requested", SIGNING_URL.request))).messages
    given_up = rig.handle(back_from_retry(retry))
    assert (given_up.label, given_up.reason) == ("dead_lettered", "retries_exhausted")
    assert dead_letter_of(given_up).headers[H_REASON] == "retries_exhausted"
    assert result_of(given_up)["outcome"] == "failed"
    assert rig.ledger.get_event("evt-signing").outcome == "failed"  # type: ignore[union-attr]
    assert rig.calls() == ["HOS00025", "HOS00025"]


def test_a_permanent_failure_is_dead_lettered_and_answered_failed_at_once(rig: Rig) -> None:
    rig.script(httpx.Response(400))  # our settings are wrong: no retry will fix that
    given_up = rig.handle(delivered(event("signing.url.requested", SIGNING_URL.request)))
    assert (given_up.label, given_up.reason) == ("dead_lettered", "configuration_error")
    assert result_of(given_up)["outcome"] == "failed"
    assert [e.kind for e in rig.ledger.journal("evt-signing")].count("dead_lettered") == 1
    assert rig.calls() == ["HOS00025"]


def test_a_platform_rejection_is_an_answer_failed_without_a_dead_letter(rig: Rig) -> None:
    rig.script(signed("5501", "余额不足"))
    rejected = rig.handle(delivered(payment()))
    assert (rejected.label, rejected.outcome) == ("failed", "failed")
    assert [m.exchange for m in rejected.messages] == [RESULTS_EXCHANGE]
    assert result_of(rejected)["rtCode"] == "5501"


def test_an_invalid_event_is_dead_lettered_with_its_field_errors_and_answered_failed(
    rig: Rig,
) -> None:
    data = {k: v for k, v in PAY.request.items() if k != "orderId"}
    refused = rig.handle(delivered({**payment(), "data": data}))
    assert (refused.label, refused.reason) == ("dead_lettered", "invalid_event")
    assert dead_letter_of(refused).headers[H_REASON] == "invalid_event"
    result = result_of(refused)
    assert result["outcome"] == "failed"
    assert any("orderId" in e["field"] for e in result["errors"])
    assert rig.ledger.get_event("evt-payment").outcome == "failed"  # type: ignore[union-attr]
    assert rig.calls() == []


def test_an_event_without_a_readable_identity_is_only_dead_lettered(rig: Rig) -> None:
    refused = rig.handle(delivered(b"not json at all"))
    assert (refused.label, refused.reason) == ("dead_lettered", "invalid_event")
    assert [m.routing_key for m in refused.messages] == [DEAD_LETTER_QUEUE]  # no result
    assert rig.calls() == []
