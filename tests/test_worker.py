"""The event worker end to end: HIS events in, platform calls to the simulator, results out.

Each test runs on the in-memory broker with SQLite, and on the real RabbitMQ with SQLite and
with PostgreSQL. The simulator's receipt counts are the oracle for "money moves at most once".
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from tests.worker_harness import (
    Backend,
    running,
    start_worker,
)
from worker.broker.topology import H_REASON
from worker.protocol.models.examples import EXAMPLES
from worker.sandbox.his import HisSide, ReceivedResult
from worker.sandbox.simulator.server import SimulatorHandle

BACKENDS = ["memory-sqlite", "rabbitmq-sqlite", "rabbitmq-postgres"]


def event(event_type: str, data: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    return {
        "eventId": event_id or f"evt-{uuid.uuid4().hex}",
        "type": event_type,
        "occurredAt": datetime.now(UTC).isoformat(),
        "data": data,
    }


def example(code: str, **changes: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(EXAMPLES[code].request))
    data.update(changes)
    return data


def new_order_id(prefix: str = "PAY") -> str:
    return f"{prefix}{uuid.uuid4().hex[:20].upper()}"


def results_for(his: HisSide, count: int, timeout: float = 20.0) -> dict[str, ReceivedResult]:
    found: dict[str, ReceivedResult] = {}
    while len(found) < count:
        result = his.next_result(timeout)
        found[result.correlation_id or ""] = result
    return found


def one_result(his: HisSide, timeout: float = 20.0) -> ReceivedResult:
    return his.next_result(timeout)


# --- the journey: every event type produces its result -----------------------------------------


def test_every_event_type_produces_its_result(
    backend: Backend, simulator: SimulatorHandle, his: HisSide
) -> None:
    settings = backend.settings(simulator.base_url + "/api")
    with running(start_worker(backend, settings)):
        pay_id, settle_id = new_order_id(), new_order_id("STL")
        pay = _publish_and_wait(his, "payment.requested", example("HOS00003", orderId=pay_id))
        query_id = pay.body["data"]["queryId"]
        steps = [
            ("signing.url.requested", example("HOS00025")),
            ("signing.status.requested", example("HOS00001")),
            ("order.status.requested", {"orderId": pay_id}),
            (
                "refund.requested",
                example(
                    "HOS00004", orderId=new_order_id("REF"), origOrderId=query_id, amtRefund=100
                ),
            ),
            # spend (400000 - 50000 non-credit - 100000 insurer) is within the 500000 deposit
            (
                "discharge.trial.requested",
                example("HOST0014", origPayQueryId=query_id, settleAmt=400000),
            ),
            (
                "discharge.ready",
                example(
                    "HOS00014",
                    origPayQueryId=query_id,
                    orderId=settle_id,
                    settleAmt=400000,
                    grAmt=300000,
                ),
            ),
            ("statement.requested", example("HOS00013")),
            ("patient.posted", example("HOS00020")),
            ("medical-record.posted", example("HOS00021")),
            ("fee.posted", example("HOS00022")),
            ("invoice.posted", example("HOS00023")),
            ("exam-report.posted", example("HOS00024")),
            ("image.posted", example("HOS00028")),
            ("claim.submitted", example("HOS00027")),
            ("claim-case.status.requested", example("HOS00029")),
            ("claim-case.cancelled", example("HOS00026")),
        ]
        outcomes = {}
        for event_type, data in steps:
            result = _publish_and_wait(his, event_type, data)
            outcomes[event_type] = (result.routing_key, result.body["rtCode"], result.body["rtMsg"])
        status = _publish_and_wait(
            his, "discharge.status.requested", example("HOS00016", orderId=settle_id)
        )
    assert pay.routing_key == "payment.requested.succeeded"
    assert {k: v[0] for k, v in outcomes.items()} == {k: f"{k}.succeeded" for k, _ in steps}, (
        outcomes
    )
    assert status.routing_key == "discharge.status.requested.succeeded"


def _publish_and_wait(his: HisSide, event_type: str, data: dict[str, Any]) -> ReceivedResult:
    sent = event(event_type, data)
    his.publish(sent)
    result = one_result(his)
    assert result.correlation_id == sent["eventId"]
    assert result.body["causationId"] == sent["eventId"]
    return result


# --- idempotency -------------------------------------------------------------------------------


def test_a_duplicated_event_republishes_the_stored_result_without_calling_again(
    backend: Backend, simulator: SimulatorHandle, his: HisSide
) -> None:
    order_id = new_order_id()
    payment = event("payment.requested", example("HOS00003", orderId=order_id))
    with running(start_worker(backend, backend.settings(simulator.base_url + "/api"))):
        his.publish(payment)
        first = one_result(his)
        his.publish(payment)
        second = one_result(his)
    assert first.body == second.body  # same resultId, same everything
    assert first.routing_key == "payment.requested.succeeded"
    assert simulator.receipts(order_id) == 1
    assert simulator.stats()["HOS00003"]["0000"] == 1


def test_same_payment_under_a_new_event_id_mirrors_the_first_result(
    backend: Backend, simulator: SimulatorHandle, his: HisSide
) -> None:
    order_id = new_order_id()
    data = example("HOS00003", orderId=order_id)
    with running(start_worker(backend, backend.settings(simulator.base_url + "/api"))):
        his.publish(event("payment.requested", data))
        first = one_result(his)
        again = event("payment.requested", data)
        his.publish(again)
        second = one_result(his)
    assert second.correlation_id == again["eventId"]
    assert second.body["resultId"] != first.body["resultId"]
    assert second.routing_key == first.routing_key == "payment.requested.succeeded"
    assert second.body["attempts"] == 0
    assert simulator.receipts(order_id) == 1


def test_reusing_an_order_id_with_a_different_payload_is_an_idempotency_conflict(
    backend: Backend, simulator: SimulatorHandle, his: HisSide
) -> None:
    order_id = new_order_id()
    with running(start_worker(backend, backend.settings(simulator.base_url + "/api"))):
        his.publish(event("payment.requested", example("HOS00003", orderId=order_id)))
        one_result(his)
        his.publish(event("payment.requested", example("HOS00003", orderId=order_id, amt=1)))
        conflict = one_result(his)
    assert conflict.routing_key == "payment.requested.failed"
    assert "idempotency conflict" in conflict.body["rtMsg"]
    assert simulator.receipts(order_id) == 1


# --- invalid events ----------------------------------------------------------------------------


def test_an_invalid_event_is_dead_lettered_with_a_reason_and_a_failed_result(
    backend: Backend, simulator: SimulatorHandle, his: HisSide
) -> None:
    bad = event("payment.requested", example("HOS00003", amt="100"))
    with running(start_worker(backend, backend.settings(simulator.base_url + "/api"))):
        his.publish(bad)
        result = one_result(his)
        his.publish(b"{not json", routing_key="payment.requested")
        his.publish(event("payment.refunded.maybe", {}), routing_key="payment.requested")
        result_unknown_type = one_result(his)
        letters = _wait_dead_letters(his, 3)
    assert result.routing_key == "payment.requested.failed"
    assert {"field": "data.amt"}.items() <= result.body["errors"][0].items()
    assert result_unknown_type.body["errors"][0]["field"] == "type"
    reasons = sorted(letter.headers[H_REASON] for letter in letters)  # handled concurrently
    assert reasons == ["invalid_event", "invalid_event", "unknown_type"]
    assert simulator.stats() == {}  # the platform was never called


def _wait_dead_letters(his: HisSide, count: int, timeout: float = 10.0) -> list:
    import time

    letters: list = []
    deadline = time.monotonic() + timeout
    while len(letters) < count and time.monotonic() < deadline:
        letters += his.dead_letters()
        time.sleep(0.05)
    return letters


# --- faults: backoff, lost responses, reconciliation --------------------------------------------


def test_retryable_failures_back_off_without_blocking_other_events(
    backend: Backend, simulator: SimulatorHandle, his: HisSide
) -> None:
    simulator.add_fault("reject_503", "HOS00001", times=2)
    status_event = event("signing.status.requested", example("HOS00001"))
    order_id = new_order_id()
    with running(start_worker(backend, backend.settings(simulator.base_url + "/api"))):
        his.publish(status_event)
        his.publish(event("payment.requested", example("HOS00003", orderId=order_id)))
        first, second = one_result(his), one_result(his)
    assert first.routing_key == "payment.requested.succeeded"  # not stuck behind the retries
    assert second.routing_key == "signing.status.requested.succeeded"
    assert second.body["attempts"] == 3


def test_processed_but_response_lost_ends_succeeded_via_the_status_query(
    backend: Backend, simulator: SimulatorHandle, his: HisSide
) -> None:
    simulator.add_fault("lose_response", "HOS00003", times=1, seconds=1.5)
    order_id = new_order_id()
    with running(start_worker(backend, backend.settings(simulator.base_url + "/api"))):
        his.publish(event("payment.requested", example("HOS00003", orderId=order_id)))
        result = one_result(his)
    assert result.routing_key == "payment.requested.succeeded"
    assert result.body["orderStatus"] == "02"
    assert simulator.receipts(order_id) == 1
    assert simulator.stats()["HOS00012"]["0000"] >= 1


def test_9999_after_processing_is_reconciled_not_resent(
    backend: Backend, simulator: SimulatorHandle, his: HisSide
) -> None:
    simulator.add_fault("fail_after_processing", "HOS00003", times=1)
    order_id = new_order_id()
    with running(start_worker(backend, backend.settings(simulator.base_url + "/api"))):
        his.publish(event("payment.requested", example("HOS00003", orderId=order_id)))
        result = one_result(his)
    assert result.routing_key == "payment.requested.succeeded"
    assert simulator.receipts(order_id) == 1


def test_9999_without_processing_is_resent_after_the_query_says_not_found(
    backend: Backend, simulator: SimulatorHandle, his: HisSide
) -> None:
    simulator.add_fault("fail_before_processing", "HOS00003", times=1)
    order_id = new_order_id()
    with running(start_worker(backend, backend.settings(simulator.base_url + "/api"))):
        his.publish(event("payment.requested", example("HOS00003", orderId=order_id)))
        result = one_result(his)
    assert result.routing_key == "payment.requested.succeeded"
    assert simulator.receipts(order_id) == 1
    assert simulator.stats()["HOS00012"]["1000"] == 1


def test_a_pending_order_status_is_polled_until_final(
    backend: Backend, simulator: SimulatorHandle, his: HisSide
) -> None:
    simulator.set_pending_queries(2)
    order_id = new_order_id()
    with running(start_worker(backend, backend.settings(simulator.base_url + "/api"))):
        his.publish(event("payment.requested", example("HOS00003", orderId=order_id)))
        result = one_result(his)
    assert result.routing_key == "payment.requested.succeeded"
    assert result.body["orderStatus"] == "02"
    assert simulator.receipts(order_id) == 1


def test_a_business_rejection_is_a_failed_result(
    backend: Backend, simulator: SimulatorHandle, his: HisSide
) -> None:
    data = example("HOS00003", orderId=new_order_id(), signToken="NOSUCHTOKEN0001")
    with running(start_worker(backend, backend.settings(simulator.base_url + "/api"))):
        his.publish(event("payment.requested", data))
        result = one_result(his)
    assert result.routing_key == "payment.requested.failed"
    assert result.body["rtCode"] == "0001"


def test_exhausted_retries_dead_letter_and_fail(
    backend: Backend, simulator: SimulatorHandle, his: HisSide
) -> None:
    simulator.add_fault("reject_503", "HOS00020")
    settings = backend.settings(simulator.base_url + "/api", max_attempts=2)
    with running(start_worker(backend, settings)):
        his.publish(event("patient.posted", example("HOS00020")))
        result = one_result(his)
        letters = _wait_dead_letters(his, 1)
    assert result.routing_key == "patient.posted.failed"
    assert letters[0].headers[H_REASON] == "retries_exhausted"


def test_an_event_whose_type_is_not_its_routing_key_is_refused(
    backend: Backend, simulator: SimulatorHandle, his: HisSide
) -> None:
    mislabelled = event("claim-case.status.requested", example("HOS00029"))
    with running(start_worker(backend, backend.settings(simulator.base_url + "/api"))):
        his.publish(mislabelled, routing_key="claim-case.cancelled")
        result = one_result(his)
    assert result.routing_key == "claim-case.status.requested.failed"
    assert "routing key" in result.body["errors"][0]["message"]
    assert simulator.stats() == {}
