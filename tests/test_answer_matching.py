"""Answers matched to requests: a verified answer about another order, another amount, another
kind of order or another request (an old answer replayed) is never believed.

From the rule table (answers.py) through the client (OutcomeUnknown for money, counted and
logged) to the money call (reconciled by the status query) and the whole worker (the
simulator's `replay_answer` fault: one charge, the right result).
"""

from __future__ import annotations

import copy
import json
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from tests.platform_fakes import CREDS, FakePlatform, signed
from tests.platform_fakes import settings as platform_settings
from tests.worker_harness import Backend, running, start_worker
from worker.clock import FixedClock
from worker.contract import events as ev
from worker.contract.results import Outcome
from worker.errors import HuiminError, OutcomeUnknown, PlatformRejected, PlatformUnavailable
from worker.ledger import Ledger, open_ledger
from worker.metrics import WorkerMetrics
from worker.pipeline.intake import new_event
from worker.pipeline.money_calls import MoneyCall
from worker.platform.client import PlatformClient
from worker.protocol import answers, envelope
from worker.protocol.envelope import OpenedRequest
from worker.protocol.models.examples import EXAMPLES
from worker.sandbox.his import HisSide
from worker.sandbox.simulator.server import SimulatorHandle

PAY, REFUND, SETTLE = EXAMPLES["HOS00003"], EXAMPLES["HOS00004"], EXAMPLES["HOS00014"]
T0 = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)


def _registry_value(metrics: WorkerMetrics, trans_code: str, field: str) -> float:
    value = metrics.registry.get_sample_value(
        "huimin_platform_answer_mismatch_total", {"trans_code": trans_code, "field": field}
    )
    return value or 0.0


def _client(platform: FakePlatform, metrics: WorkerMetrics | None = None) -> PlatformClient:
    return PlatformClient(
        platform_settings(),
        transport=platform.transport(),
        clock=FixedClock(T0),
        observer=metrics,
        sleep=lambda _: None,
    )


def _metrics() -> WorkerMetrics:
    return WorkerMetrics(CollectorRegistry(), retry_schedule_length=5)


# --- the rule table ------------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["HOS00003", "HOS00004", "HOS00014", "HOST0014"])
def test_the_spec_examples_answer_their_own_requests(code: str) -> None:
    example = EXAMPLES[code]
    assert answers.mismatch(answers.for_call(code, example.request), example.response) is None


@pytest.mark.parametrize(("query", "call"), [("HOS00012", "HOS00003"), ("HOS00016", "HOS00014")])
def test_a_status_query_example_answers_the_call_it_reconciles(query: str, call: str) -> None:
    expected = answers.for_query(query, call, EXAMPLES[call].request)
    assert answers.mismatch(expected, EXAMPLES[query].response) is None


def test_a_refund_answer_names_the_pays_hospital_order_and_is_not_compared_on_it() -> None:
    # spec 3.2.4: the request's origOrderId is the pay's queryId, the answer's the pay's orderId
    assert REFUND.response["origOrderId"] != REFUND.request["origOrderId"]
    assert answers.mismatch(answers.for_call("HOS00004", REFUND.request), REFUND.response) is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"orderId": "PAY209901010000000009"}, "orderId"),
        ({"amt": 499999}, "amt"),
        ({"amt": "500000"}, "amt"),  # a string is not an amount in fen
        ({"orderStatus": "12"}, "orderStatus"),  # a refund's status on a pay
        ({"orderStatus": "42"}, "orderStatus"),
        ({"orderStatus": None}, "orderStatus"),
    ],
)
def test_a_pay_answer_that_does_not_echo_its_request_names_the_field(
    change: dict[str, Any], field: str
) -> None:
    answer = {**PAY.response, **change}
    assert answers.mismatch(answers.for_call("HOS00003", PAY.request), answer) == field


def test_a_refusal_is_checked_only_on_the_fields_it_carries() -> None:
    expected = answers.for_call("HOS00003", PAY.request)
    assert answers.mismatch(expected, None, complete=False) is None
    assert answers.mismatch(expected, {"orderId": PAY.request["orderId"]}, complete=False) is None
    assert answers.mismatch(expected, {"orderId": "PAY2099OTHER00001"}, complete=False) == "orderId"


def test_calls_without_a_rule_expect_nothing() -> None:
    assert answers.for_call("HOS00001", EXAMPLES["HOS00001"].request) == answers.NOTHING


# --- the client ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"orderId": "PAY209901010000000009"}, "orderId"),
        ({"amt": 1}, "amt"),
        ({"orderStatus": "32"}, "orderStatus"),
    ],
)
def test_a_verified_success_about_something_else_is_unknown_counted_and_logged(
    change: dict[str, Any], field: str, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = _metrics()
    platform = FakePlatform([signed("0000", "交易成功", {**PAY.response, **change})])
    with (
        caplog.at_level(logging.WARNING, logger="worker.platform.client"),
        pytest.raises(OutcomeUnknown, match="suspected replay"),
    ):
        _client(platform, metrics).call("HOS00003", PAY.request)
    assert _registry_value(metrics, "HOS00003", field) == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("suspected replay" in w and field in w for w in warnings)
    # names only: never the order ids or amounts, ours or the answer's
    assert not any(PAY.request["orderId"] in w or "PAY2099" in w for w in warnings)


def _with_seq_id(seq_id: str | None) -> httpx.Response:
    sealed = envelope.seal_response("0000", "ok", PAY.response, credentials=CREDS)
    if seq_id is not None:
        sealed["platformSeqId"] = seq_id
    return httpx.Response(200, json=sealed)


def test_an_answer_carrying_another_platform_seq_id_is_an_old_answer_replayed() -> None:
    metrics = _metrics()
    platform = FakePlatform([_with_seq_id("00000000000000000000000000000001")])
    with pytest.raises(OutcomeUnknown):
        _client(platform, metrics).call("HOS00003", PAY.request)
    assert _registry_value(metrics, "HOS00003", "platformSeqId") == 1


def test_an_answer_carrying_our_own_platform_seq_id_is_believed() -> None:
    platform = FakePlatform([lambda req: _with_seq_id(req.platform_seq_id)])
    assert _client(platform).call("HOS00003", PAY.request).data == PAY.response


def test_a_refusal_about_another_order_does_not_fail_this_one() -> None:
    other = {"orderId": "PAY209901010000000009", "orderStatus": "03"}
    metrics = _metrics()
    with pytest.raises(OutcomeUnknown):
        _client(FakePlatform([signed("1000", "支付失败", other)]), metrics).call(
            "HOS00003", PAY.request
        )
    assert _registry_value(metrics, "HOS00003", "orderId") == 1


def test_a_refusal_about_this_order_stays_a_refusal() -> None:
    mine = {"orderId": PAY.request["orderId"], "orderStatus": "03"}
    with pytest.raises(PlatformRejected):
        _client(FakePlatform([signed("1000", "支付失败", mine)])).call("HOS00003", PAY.request)


def test_a_status_query_answer_about_another_order_is_retry_later_never_final() -> None:
    expect = answers.for_query("HOS00012", "HOS00003", PAY.request)
    other = {**EXAMPLES["HOS00012"].response, "orderId": "PAY209901010000000009"}
    with pytest.raises(PlatformUnavailable):
        _client(FakePlatform([signed("0000", "ok", other)])).call(
            "HOS00012", EXAMPLES["HOS00012"].request, expect=expect
        )


def test_the_attempt_of_a_mismatched_answer_records_no_rt_code() -> None:
    # an answer that is not ours proves nothing about whether our request arrived
    platform = FakePlatform([signed("0000", "ok", {**PAY.response, "amt": 1})])
    seen: list[Any] = []

    class Recorder:
        def started(self, attempt: Any) -> object:
            return None

        def finished(self, handle: object, attempt: Any) -> None:
            seen.append(attempt)

    with pytest.raises(OutcomeUnknown):
        _client(platform).call("HOS00003", PAY.request, recorder=Recorder())
    assert seen[0].rt_code is None and seen[0].outcome == "unknown"


RT_CODES = st.sampled_from(["0000", "0000", "0000", "1000", "0001", "5501", "9999", "4104", "7777"])
FIELD_VALUES = st.one_of(
    st.none(),
    st.integers(-1, 10**12),
    st.text(max_size=45),
    st.sampled_from(
        [PAY.request["orderId"], PAY.request["amt"], "01", "02", "03", "12", "32", "42"]
    ),
)


@settings(max_examples=200, deadline=None)
@given(
    rt_code=RT_CODES,
    changes=st.dictionaries(
        st.sampled_from(["orderId", "amt", "orderStatus", "queryId"]), FIELD_VALUES, max_size=4
    ),
    seq_id=st.one_of(st.none(), st.just("OLD0000000001")),
)
def test_a_believed_pay_answer_always_echoes_its_request(
    rt_code: str, changes: dict[str, Any], seq_id: str | None
) -> None:
    """Mutated answers through the client: whatever is believed (a reply, or a refusal that
    fails the order) is about this order; everything else is a HuiminError naming why."""
    business = {k: v for k, v in {**PAY.response, **changes}.items() if v is not None}
    sealed = envelope.seal_response(rt_code, "msg", business, credentials=CREDS)
    if seq_id is not None:
        sealed["platformSeqId"] = seq_id
    platform = FakePlatform([httpx.Response(200, json=sealed)] * 3)
    try:
        reply = _client(platform).call("HOS00003", PAY.request)
    except PlatformRejected as refused:
        assert seq_id is None and refused.rt_code == rt_code
        assert (refused.data or {}).get("orderId", PAY.request["orderId"]) == PAY.request["orderId"]
        return
    except HuiminError as error:
        assert error.reason  # a named reason, nothing else escapes
        return
    assert seq_id is None and rt_code == "0000"
    assert (reply.data["orderId"], reply.data["amt"]) == (
        PAY.request["orderId"],
        PAY.request["amt"],
    )
    assert reply.data["orderStatus"] in ("01", "02", "03")


# --- the money call: reconciled by the status query ----------------------------------------------


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    opened = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    opened.migrate()
    yield opened
    opened.close()


def _prepared(order_id: str) -> ev.PreparedEvent:
    body = {
        "eventId": f"evt-{uuid.uuid4().hex}",
        "type": "payment.requested",
        "occurredAt": T0.isoformat(),
        "data": {**PAY.request, "orderId": order_id},
    }
    event = ev.parse_event(json.dumps(body).encode())
    return ev.prepare(
        event, hospital_id=PAY.request["hospitalId"], city_code=PAY.request["cityCode"]
    )


def _record(ledger: Ledger, prepared: ev.PreparedEvent) -> None:
    ledger.begin_event(new_event(prepared, T0, owner="w1", lease_until=T0 + timedelta(minutes=5)))


def _answer_for(order_id: str, status: str = "02") -> dict[str, Any]:
    return {**EXAMPLES["HOS00012"].response, "orderId": order_id, "orderStatus": status}


def test_a_pay_answered_about_another_order_is_settled_by_the_status_query(
    ledger: Ledger,
) -> None:
    order_id = "PAY2026112500000777"
    prepared = _prepared(order_id)
    _record(ledger, prepared)
    platform = FakePlatform(
        [
            signed("0000", "ok", {**PAY.response, "orderId": "PAY2026112500000001"}),  # not ours
            signed(
                "0000", "ok", _answer_for("PAY2026112500000001")
            ),  # the query's, not ours either
            signed("0000", "ok", _answer_for(order_id)),  # the true answer
        ]
    )
    clock = FixedClock(T0)
    client = PlatformClient(
        platform_settings(), transport=platform.transport(), clock=clock, sleep=lambda _: None
    )

    def step() -> Any:
        return MoneyCall(ledger, client, prepared, clock, owner="w1").step()

    first = step()
    assert first.final is None and "suspected replay" in first.reason
    second = step()
    assert second.final is None and second.reconciliation == "query_failed"
    third = step()
    assert third.final is Outcome.SUCCEEDED and third.data is not None
    assert third.data["orderId"] == order_id
    assert [r.trans_code for r in platform.received] == ["HOS00003", "HOS00012", "HOS00012"]


def test_a_not_found_after_a_mismatched_answer_waits_for_the_calls_deadline(
    ledger: Ledger,
) -> None:
    """The mismatched answer proves nothing about our request: "no such order" allows a resend
    only when asked once the pay's deadline has passed twice over (it might still be arriving,
    or waiting at the platform: tests/test_late_processing.py)."""
    order_id = "PAY2026112500000778"
    prepared = _prepared(order_id)
    _record(ledger, prepared)
    charges: list[OpenedRequest] = []
    platform = FakePlatform(
        [
            signed("0000", "ok", {**PAY.response, "orderId": "PAY2026112500000001"}),
            signed("1000", "订单不存在"),
            signed("1000", "订单不存在"),
            lambda req: signed("0000", "ok", {**PAY.response, "orderId": order_id}),
        ],
        on_request=lambda req: charges.append(req) if req.trans_code == "HOS00003" else None,
    )
    clock = FixedClock(T0)
    client = PlatformClient(
        platform_settings(call_deadline_s=45),
        transport=platform.transport(),
        clock=clock,
        sleep=lambda _: None,
    )

    def step() -> Any:
        return MoneyCall(ledger, client, prepared, clock, owner="w1").step()

    assert step().final is None
    early = step()
    assert early.final is None and early.reconciliation == "not_found" and len(charges) == 1
    clock.advance(91)
    ledger.try_lease(prepared.event.eventId, "w1", clock() + timedelta(minutes=5), clock())
    late = step()
    assert late.final is Outcome.SUCCEEDED and len(charges) == 2


# --- the whole worker: the simulator replays an answer about another order -----------------------


BACKENDS = ["memory-sqlite", "rabbitmq-postgres"]  # what conftest.py runs `backend` on


@pytest.mark.parametrize("field", ["orderId", "amt"])
def test_the_worker_settles_a_replayed_answer_by_the_status_query_with_one_charge(
    backend: Backend, simulator: SimulatorHandle, field: str
) -> None:
    worker_settings = backend.settings(simulator.base_url + "/api")
    his: HisSide = backend.his(worker_settings)
    metrics = _metrics()
    simulator.add_fault("replay_answer", "HOS00003", times=1, field=field)
    order_id = f"PAY{uuid.uuid4().hex[:20].upper()}"
    event = {
        "eventId": f"evt-{uuid.uuid4().hex}",
        "type": "payment.requested",
        "occurredAt": datetime.now(UTC).isoformat(),
        "data": copy.deepcopy({**PAY.request, "orderId": order_id}),
    }
    try:
        with running(start_worker(backend, worker_settings, metrics=metrics)):
            his.publish(event)
            result = his.next_result(20.0)
    finally:
        his.close()
    assert result.routing_key == "payment.requested.succeeded"
    assert result.body["data"]["orderId"] == order_id
    assert simulator.receipts(order_id) == 1
    assert simulator.stats()["HOS00012"]["0000"] >= 1
    assert _registry_value(metrics, "HOS00003", field) == 1
