"""The simulator's state machine, driven through the project's PlatformClient over real HTTP."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from worker.clock import CHINA_TZ, FixedClock
from worker.errors import PlatformRejected
from worker.protocol import answers
from worker.protocol.models.examples import EXAMPLES
from worker.sandbox.simulator import SimulatorHandle, run_in_thread
from worker.statement.file import iter_zip_rows

from .simulator_helpers import (
    SIGN_TOKEN,
    SIGNED_ID_NO,
    client_for,
    order_query,
    pay,
    refund,
    request,
    unique,
)


@pytest.fixture(scope="module")
def server() -> Iterator[SimulatorHandle]:
    with run_in_thread() as sim:
        yield sim


@pytest.fixture
def sim(server: SimulatorHandle) -> SimulatorHandle:
    server.reset()
    server.clear_faults()
    server.set_pending_queries(0)
    return server


def rejected(sim: SimulatorHandle, trans_code: str, business: dict) -> PlatformRejected:
    with client_for(sim) as client, pytest.raises(PlatformRejected) as caught:
        client.call(trans_code, business)
    return caught.value


def call(sim: SimulatorHandle, trans_code: str, business: dict) -> dict:
    with client_for(sim) as client:
        return client.call(trans_code, business).data


def test_every_hospital_to_platform_transaction_is_served(sim: SimulatorHandle) -> None:
    with client_for(sim) as client:
        paid = client.call("HOS00003", pay(unique("PAY"), 1000)).data
        for code in (
            "HOS00025",
            "HOS00001",
            "HOS00013",
            "HOS00020",
            "HOS00021",
            "HOS00022",
            "HOS00023",
            "HOS00024",
            "HOS00028",
            "HOS00027",
            "HOS00029",
            "HOS00026",
        ):
            assert client.call(code, request(code)).rt_code == "0000", code
        client.call("HOS00004", refund(unique("RFD"), paid["queryId"], 100))
        client.call("HOS00012", order_query(paid["orderId"]))
        trial = request(
            "HOST0014",
            trialId=unique("TRL"),
            origPayQueryId=paid["queryId"],
            settleAmt=900,
            nonCreditPayAmt=0,
        )
        client.call("HOST0014", trial)
        settle = request(
            "HOS00014",
            trialId=trial["trialId"],
            orderId=unique("STL"),
            origPayQueryId=paid["queryId"],
            settleAmt=900,
            nonCreditPayAmt=0,
            budgetAmt=0,
            miAmt=0,
            grAmt=900,
        )
        client.call("HOS00014", settle)
        client.call("HOS00016", request("HOS00016", orderId=settle["orderId"]))
    assert set(sim.stats()) >= {
        "HOS00003",
        "HOS00004",
        "HOS00012",
        "HOST0014",
        "HOS00014",
        "HOS00016",
        "HOS00029",
    }


# --- signing ---------------------------------------------------------------------------------


def test_signed_patient_gets_the_token_that_pays(sim: SimulatorHandle) -> None:
    answer = call(sim, "HOS00001", request("HOS00001"))
    assert answer["signStatus"] == "1" and answer["signToken"] == SIGN_TOKEN
    assert answer["creditPay"] == "01" and len(answer["signDate"]) == 14


def test_unsigned_patient_signs_on_the_forward_url_page(sim: SimulatorHandle) -> None:
    newcomer = request("HOS00001", idNo="110101199901010011")
    answer = call(sim, "HOS00001", newcomer)
    assert answer["signStatus"] == "0"
    assert httpx.get(answer["forwardUrl"]).status_code == 200  # the H5 page signs them
    assert call(sim, "HOS00001", newcomer)["signStatus"] == "1"


def test_signing_url_names_the_simulator(sim: SimulatorHandle) -> None:
    assert call(sim, "HOS00025", request("HOS00025"))["forwardUrl"].startswith(sim.base_url)


def test_frozen_patient_reports_9_and_cannot_pay(sim: SimulatorHandle) -> None:
    sim.set_patient(SIGNED_ID_NO, "frozen")
    assert call(sim, "HOS00001", request("HOS00001"))["signStatus"] == "9"
    assert rejected(sim, "HOS00003", pay(unique("PAY"), 100)).rt_code == "0002"


def test_unknown_sign_token_is_0001(sim: SimulatorHandle) -> None:
    refused = rejected(sim, "HOS00003", pay(unique("PAY"), 100, signToken="STKNOBODY"))
    assert refused.rt_code == "0001"


# --- pay, query, refund ----------------------------------------------------------------------


def test_pay_then_query_reports_paid(sim: SimulatorHandle) -> None:
    order_id = unique("PAY")
    paid = call(sim, "HOS00003", pay(order_id, 12_345))
    assert paid["orderStatus"] == "02" and paid["amt"] == 12_345
    queried = call(sim, "HOS00012", order_query(order_id))
    assert (queried["orderStatus"], queried["queryId"]) == ("02", paid["queryId"])


def test_repeated_order_id_is_never_charged_twice(sim: SimulatorHandle) -> None:
    order_id = unique("PAY")
    first = call(sim, "HOS00003", pay(order_id, 500))
    again = call(sim, "HOS00003", pay(order_id, 500))
    assert again["queryId"] == first["queryId"]
    assert rejected(sim, "HOS00003", pay(order_id, 501)).rt_code == "1000"
    assert [o["orderId"] for o in sim.orders()] == [order_id]
    assert sim.order(order_id)["receipts"] == 3  # three calls reached processing, one charge


def test_order_reports_paying_for_the_configured_number_of_queries(sim: SimulatorHandle) -> None:
    sim.set_pending_queries(2)
    order_id = unique("PAY")
    assert call(sim, "HOS00003", pay(order_id, 100))["orderStatus"] == "01"
    statuses = [call(sim, "HOS00012", order_query(order_id))["orderStatus"] for _ in range(3)]
    assert statuses == ["01", "02", "02"]


def test_partial_refunds_up_to_the_original_amount(sim: SimulatorHandle) -> None:
    paid = call(sim, "HOS00003", pay(unique("PAY"), 1000))
    first = call(sim, "HOS00004", refund(unique("RFD"), paid["queryId"], 600))
    second = call(sim, "HOS00004", refund(unique("RFD"), paid["queryId"], 400))
    assert (first["orderStatus"], second["orderStatus"]) == ("12", "12")
    assert first["origOrderId"] == paid["orderId"]  # "原支付医院订单号"
    over = rejected(sim, "HOS00004", refund(unique("RFD"), paid["queryId"], 1))
    assert over.rt_code == "1000"
    assert sim.order(paid["orderId"])["refunded"] == 1000


def test_refund_over_the_original_amount_is_rejected(sim: SimulatorHandle) -> None:
    paid = call(sim, "HOS00003", pay(unique("PAY"), 1000))
    assert rejected(sim, "HOS00004", refund(unique("RFD"), paid["queryId"], 1001)).rt_code == "1000"


def test_refund_order_id_must_differ_from_the_pay_order_id(sim: SimulatorHandle) -> None:
    paid = call(sim, "HOS00003", pay(unique("PAY"), 1000))
    assert rejected(sim, "HOS00004", refund(paid["orderId"], paid["queryId"], 10)).rt_code == "1000"


def test_refund_of_an_unknown_payment_is_rejected(sim: SimulatorHandle) -> None:
    assert rejected(sim, "HOS00004", refund(unique("RFD"), "Q-NOT-A-PAYMENT", 10)).rt_code == "1000"


def test_refunds_close_30_days_after_the_payment() -> None:
    clock = FixedClock(datetime(2025, 9, 1, 2, 0, tzinfo=UTC))
    with run_in_thread(clock=clock) as sim, client_for(sim, clock=clock) as client:
        paid = client.call("HOS00003", pay(unique("PAY"), 1000)).data
        clock.advance(timedelta(days=31).total_seconds())
        with pytest.raises(PlatformRejected):
            client.call("HOS00004", refund(unique("RFD"), paid["queryId"], 10))


def test_status_query_for_an_order_never_accepted_is_1000(sim: SimulatorHandle) -> None:
    assert rejected(sim, "HOS00012", order_query(unique("PAY"))).rt_code == "1000"


def test_payment_above_the_credit_limit_fails_with_03() -> None:
    from worker.sandbox.simulator import Patient

    with run_in_thread(
        patients=[Patient("440000200001010000", credit_limit=100, sign_token="STKLIMITED")]
    ) as sim:
        answer = call(sim, "HOS00003", pay(unique("PAY"), 101, signToken="STKLIMITED"))
    assert answer["orderStatus"] == "03"


# --- discharge settlement --------------------------------------------------------------------


def deposits(sim: SimulatorHandle, *amounts: int) -> list[dict]:
    return [call(sim, "HOS00003", pay(unique("PAY"), amt)) for amt in amounts]


def trial(sim: SimulatorHandle, query_ids: str, settle_amt: int, non_credit: int) -> dict:
    body = request(
        "HOST0014",
        trialId=unique("TRL"),
        origPayQueryId=query_ids,
        settleAmt=settle_amt,
        nonCreditPayAmt=non_credit,
    )
    return call(sim, "HOST0014", body)


def settlement(
    trial_id: str, query_ids: str, settle_amt: int, non_credit: int, budget: int = 0
) -> dict:
    return request(
        "HOS00014",
        trialId=trial_id,
        orderId=unique("STL"),
        origPayQueryId=query_ids,
        settleAmt=settle_amt,
        nonCreditPayAmt=non_credit,
        budgetAmt=budget,
        miAmt=0,
        grAmt=settle_amt - non_credit - budget,
    )


def test_trial_computes_refund_from_deposits_minus_their_refunds(sim: SimulatorHandle) -> None:
    first, second = deposits(sim, 5000, 2000)
    call(sim, "HOS00004", refund(unique("RFD"), first["queryId"], 1000))
    ids = f"{first['queryId']},{second['queryId']}"
    answer = trial(sim, ids, settle_amt=6000, non_credit=500)
    assert (answer["psnAmt"], answer["refundAmt"], answer["supplementAmt"]) == (6000, 500, 0)
    assert answer["budgetAmt"] == 0


def test_trial_asks_for_a_supplement_when_deposits_fall_short(sim: SimulatorHandle) -> None:
    (only,) = deposits(sim, 1000)
    answer = trial(sim, only["queryId"], settle_amt=1500, non_credit=0)
    assert (answer["supplementAmt"], answer["refundAmt"]) == (500, 0)


def test_trial_then_settlement_then_status_query(sim: SimulatorHandle) -> None:
    first, second = deposits(sim, 5000, 2000)
    ids = f"{first['queryId']},{second['queryId']}"
    trial_id = trial(sim, ids, settle_amt=7000, non_credit=500)["trialId"]
    body = settlement(trial_id, ids, settle_amt=7000, non_credit=500, budget=1000)
    settled = call(sim, "HOS00014", body)
    assert (settled["orderStatus"], settled["refundAmt"], settled["psnAmt"]) == ("32", 1500, 7000)
    assert [o["queryId"] for o in settled["orderList"]] == [first["queryId"], second["queryId"]]
    assert call(sim, "HOS00014", body)["queryId"] == settled["queryId"]  # never twice
    queried = call(sim, "HOS00016", request("HOS00016", orderId=body["orderId"]))
    assert queried["orderStatus"] == "32"
    assert sum(o["refundAmt"] for o in queried["orderList"]) == 1500
    assert sim.order(body["orderId"])["receipts"] == 2


def test_settlement_spending_more_than_paid_is_5501(sim: SimulatorHandle) -> None:
    (only,) = deposits(sim, 1000)
    trial_id = trial(sim, only["queryId"], settle_amt=1500, non_credit=0)["trialId"]
    refused = rejected(sim, "HOS00014", settlement(trial_id, only["queryId"], 1500, 0))
    assert refused.rt_code == "5501"


def test_settled_deposits_cannot_be_refunded_or_settled_again(sim: SimulatorHandle) -> None:
    (only,) = deposits(sim, 1000)
    trial_id = trial(sim, only["queryId"], 800, 0)["trialId"]
    call(sim, "HOS00014", settlement(trial_id, only["queryId"], 800, 0))
    assert rejected(sim, "HOS00004", refund(unique("RFD"), only["queryId"], 10)).rt_code == "1000"
    assert (
        rejected(sim, "HOS00014", settlement(trial_id, only["queryId"], 800, 0)).rt_code == "1000"
    )


def test_settlement_needs_a_trial_and_unknown_settlements_are_1000(sim: SimulatorHandle) -> None:
    (only,) = deposits(sim, 1000)
    assert (
        rejected(sim, "HOS00014", settlement(unique("TRL"), only["queryId"], 800, 0)).rt_code
        == "1000"
    )
    assert rejected(sim, "HOS00016", request("HOS00016", orderId=unique("STL"))).rt_code == "1000"


# --- claim cases -------------------------------------------------------------------------------


def node(sim: SimulatorHandle, serial: str) -> str:
    return call(sim, "HOS00029", request("HOS00029", treatmentSerialNo=serial))["claimNode"]


def test_claim_case_lifecycle(sim: SimulatorHandle) -> None:
    serial = unique("ZY")
    assert node(sim, serial) == "0"
    call(sim, "HOS00020", request("HOS00020", treatmentSerialNo=serial))
    assert node(sim, serial) == "1"
    rejected_submit = rejected(sim, "HOS00027", request("HOS00027", treatmentSerialNo=serial))
    assert rejected_submit.rt_code == "1000"  # no fees uploaded yet
    for code in ("HOS00021", "HOS00022", "HOS00023", "HOS00024", "HOS00028"):
        call(sim, code, request(code, treatmentSerialNo=serial))
    assert node(sim, serial) == "2"
    call(sim, "HOS00027", request("HOS00027", treatmentSerialNo=serial, status="1"))
    assert node(sim, serial) == "3"
    call(sim, "HOS00026", request("HOS00026", treatmentSerialNo=serial))
    assert node(sim, serial) == "9"
    assert (
        rejected(sim, "HOS00022", request("HOS00022", treatmentSerialNo=serial)).rt_code == "1000"
    )
    (case,) = [c for c in sim.cases() if c["treatmentSerialNo"] == serial]
    assert case["uploads"]["HOS00022"] == 1


def test_cancelling_an_unknown_case_is_1000(sim: SimulatorHandle) -> None:
    assert (
        rejected(sim, "HOS00026", request("HOS00026", treatmentSerialNo=unique("ZY"))).rt_code
        == "1000"
    )


# --- statement ---------------------------------------------------------------------------------


def test_statement_zip_lists_the_days_pay_and_refund_orders(sim: SimulatorHandle) -> None:
    paid = call(sim, "HOS00003", pay(unique("PAY"), 1000))
    refunded = call(sim, "HOS00004", refund(unique("RFD"), paid["queryId"], 300))
    today = datetime.now(CHINA_TZ).strftime("%Y%m%d")
    answer = call(sim, "HOS00013", request("HOS00013", settleDate=today))
    download = httpx.get(answer["settleFileUrl"])
    rows = list(iter_zip_rows(io.BytesIO(download.content)))
    assert [(r.order_id, r.trade_type, r.amount) for r in rows] == [
        (paid["orderId"], "01", 1000),
        (refunded["orderId"], "02", 300),
    ]
    assert rows[0].platform_serial == paid["queryId"] and "*" in rows[0].id_no


def test_statement_of_a_future_day_is_not_ready(sim: SimulatorHandle) -> None:
    tomorrow = (datetime.now(CHINA_TZ) + timedelta(days=1)).strftime("%Y%m%d")
    assert rejected(sim, "HOS00013", request("HOS00013", settleDate=tomorrow)).rt_code == "1000"


def test_examples_replay_against_a_fresh_simulator(sim: SimulatorHandle) -> None:
    paid = call(sim, "HOS00003", EXAMPLES["HOS00003"].copy().request)
    assert paid["orderId"] == EXAMPLES["HOS00003"].request["orderId"]


def test_every_money_answer_and_status_answer_echoes_what_was_asked(sim: SimulatorHandle) -> None:
    """The simulator answers as answers.py expects (issue 8): the client checks the calls'
    answers itself; the status queries are checked against the call they reconcile."""
    paid_body = pay(unique("PAY"), 5000)
    paid = call(sim, "HOS00003", paid_body)
    refund_body = refund(unique("RFD"), paid["queryId"], 1200)
    call(sim, "HOS00004", refund_body)
    trial_id = trial(sim, paid["queryId"], settle_amt=3000, non_credit=0)["trialId"]
    settle_body = settlement(trial_id, paid["queryId"], settle_amt=3000, non_credit=0)
    call(sim, "HOS00014", settle_body)
    asked = [
        ("HOS00012", "HOS00003", paid_body, order_query(paid_body["orderId"])),
        ("HOS00012", "HOS00004", refund_body, order_query(refund_body["orderId"])),
        ("HOS00016", "HOS00014", settle_body, request("HOS00016", orderId=settle_body["orderId"])),
    ]
    with client_for(sim) as client:
        for query, code, body, query_body in asked:
            client.call(query, query_body, expect=answers.for_query(query, code, body))
