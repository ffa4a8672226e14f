"""The business payload models, read as a specification.

Every registered transaction: its example round-trips, and a missing M field, an over-long
field and a bad enum value (or wrong type) are each rejected, naming the field. Then the
rules that cut across transactions: amounts in fen, presence, ranges, formats, extra fields,
conditional fields, and the registry itself.
"""

from __future__ import annotations

import copy
import string
from dataclasses import dataclass
from typing import Any, Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.errors import AbolishedTransaction, GiveUp, UnknownTransaction, ValidationFailed
from worker.protocol.models.base import MAX_FEN, EmptyResponse
from worker.protocol.models.examples import EXAMPLES
from worker.protocol.registry import (
    ABOLISHED,
    TRANSACTIONS,
    WorkClass,
    get_transaction,
    to_wire,
    validate_request,
    validate_response,
)

Side = Literal["request", "response"]
DELETE = object()  # the sentinel for "remove this field"


def example(trans_code: str, side: Side) -> dict[str, Any]:
    return copy.deepcopy(getattr(EXAMPLES[trans_code], side))


def validate(trans_code: str, side: Side, data: dict[str, Any]) -> Any:
    check = validate_request if side == "request" else validate_response
    return check(trans_code, data)


def set_path(data: dict[str, Any], path: str, value: object) -> None:
    """Set (or, with DELETE, remove) the field at a dotted path such as feeList.0.payId."""
    *parents, last = path.split(".")
    node: Any = data
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value


def rejected(trans_code: str, side: Side, data: dict[str, Any]) -> dict[str, str]:
    """Validate expecting failure; the field errors as {dotted path: message}."""
    with pytest.raises(ValidationFailed) as caught:
        validate(trans_code, side, data)
    return {error.field: error.message for error in caught.value.errors}


def broken(trans_code: str, side: Side, path: str, value: object) -> dict[str, str]:
    data = example(trans_code, side)
    set_path(data, path, value)
    return rejected(trans_code, side, data)


# --- every transaction -------------------------------------------------------------------


@pytest.mark.parametrize("trans_code", sorted(TRANSACTIONS))
@pytest.mark.parametrize("side", ["request", "response"])
def test_example_round_trips(trans_code: str, side: Side) -> None:
    data = example(trans_code, side)
    model = validate(trans_code, side, data)
    wire = to_wire(model)
    assert wire == data
    assert to_wire(validate(trans_code, side, wire)) == wire


@dataclass(frozen=True)
class Breakage:
    side: Side
    path: str
    value: object


def missing(side: Side, path: str) -> Breakage:
    return Breakage(side, path, DELETE)


def too_long(side: Side, path: str, limit: int, char: str = "9") -> Breakage:
    return Breakage(side, path, char * (limit + 1))


#: per transaction: a missing M field, an over-long field, a bad code (or wrong type)
BREAKAGES: dict[str, tuple[Breakage, Breakage, Breakage]] = {
    "HOS00025": (
        missing("request", "mobile"),
        too_long("request", "idNo", 32),
        Breakage("request", "mobile", 13800000001),
    ),
    "HOS00001": (
        missing("request", "treatmentSerialNo"),
        too_long("request", "userName", 64, "张"),
        Breakage("request", "idType", "07"),
    ),
    "HOS00003": (
        missing("request", "signToken"),
        too_long("request", "orderId", 40),
        Breakage("request", "orderType", "7"),
    ),
    "HOS00004": (
        missing("request", "origOrderId"),
        too_long("request", "cityCode", 6),
        Breakage("response", "orderStatus", "99"),
    ),
    "HOST0014": (
        missing("request", "trialId"),
        too_long("request", "setlId", 32),
        Breakage("request", "settleAmt", 700000.0),
    ),
    "HOS00014": (
        missing("request", "grAmt"),
        too_long("request", "treatmentSerialNo", 20),
        Breakage("response", "orderList.1.orderStatus", "5"),
    ),
    "HOS00016": (
        missing("request", "type"),
        too_long("request", "orderId", 40),
        Breakage("request", "type", "03"),
    ),
    "HOS00012": (
        missing("response", "tradeNo"),
        too_long("request", "hospitalId", 40),
        Breakage("response", "orderStatus", "04"),
    ),
    "HOS00013": (
        missing("request", "settleDate"),
        too_long("response", "settleFileUrl", 1024),
        Breakage("request", "settleDate", 20250901),
    ),
    "HOS00020": (
        missing("request", "treatmentTime"),
        too_long("request", "address", 256),
        Breakage("request", "dischargeState", "3"),
    ),
    "HOS00021": (
        missing("request", "diagnosisList.0.diseaseCode"),
        too_long("request", "chiefComplaint", 1024),
        Breakage("request", "gender", 3),
    ),
    "HOS00022": (
        missing("request", "feeList.0.detailList.0.itemNo"),
        too_long("request", "feeList.0.payId", 128),
        Breakage("request", "expenMode", "0010"),
    ),
    "HOS00023": (
        missing("request", "billList.0.elecSetlCertChkcode"),
        too_long("request", "fixmedinsName", 200),
        Breakage("request", "billList.0.rcptDcType", "X"),
    ),
    "HOS00024": (
        missing("request", "reviewingDoctor"),
        too_long("request", "examinationList.0.inspectionName", 32),
        Breakage("request", "gender", "3"),
    ),
    "HOS00026": (
        missing("request", "idNo"),
        too_long("request", "idNo", 18),
        Breakage("request", "treatmentSerialNo", 123),
    ),
    "HOS00027": (
        missing("request", "status"),
        too_long("request", "treatmentSerialNo", 128),
        Breakage("request", "status", "3"),
    ),
    "HOS00028": (
        missing("request", "imageBase64"),
        too_long("request", "fileType", 3, "p"),
        Breakage("request", "imageType", "3002"),
    ),
    "HOS00029": (
        missing("request", "hospitalId"),
        too_long("response", "insuranceId", 8),
        Breakage("response", "claimNode", "5"),
    ),
    "HIS00002": (
        missing("request", "file"),
        too_long("request", "idNo", 32),
        Breakage("request", "claimType", "3"),
    ),
    "HIS00003": (
        missing("request", "medType"),
        too_long("response", "treatmentList.0.departmentName", 64),
        Breakage("request", "medType", "0050"),
    ),
    "HIS00004": (
        missing("request", "claimNode"),
        too_long("request", "insuranceId", 8),
        Breakage("request", "claimNode", "5"),
    ),
}


def test_every_transaction_has_an_example_and_breakages() -> None:
    assert set(EXAMPLES) == set(TRANSACTIONS) == set(BREAKAGES)


@pytest.mark.parametrize("trans_code", sorted(BREAKAGES))
def test_missing_mandatory_field_is_rejected(trans_code: str) -> None:
    breakage = BREAKAGES[trans_code][0]
    errors = broken(trans_code, breakage.side, breakage.path, breakage.value)
    assert errors[breakage.path].startswith("Field required")


@pytest.mark.parametrize("trans_code", sorted(BREAKAGES))
def test_over_long_field_is_rejected(trans_code: str) -> None:
    breakage = BREAKAGES[trans_code][1]
    errors = broken(trans_code, breakage.side, breakage.path, breakage.value)
    assert "at most" in errors[breakage.path]


@pytest.mark.parametrize("trans_code", sorted(BREAKAGES))
def test_bad_code_or_wrong_type_is_rejected(trans_code: str) -> None:
    breakage = BREAKAGES[trans_code][2]
    errors = broken(trans_code, breakage.side, breakage.path, breakage.value)
    assert list(errors) == [breakage.path]


# --- amounts -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "amount",
    [500000.0, 5000.5, True, False, "500000", None, -1, MAX_FEN + 1],
    ids=["float", "fractional", "true", "false", "numeric-string", "null", "negative", "12-digits"],
)
def test_int_amounts_are_whole_fen_json_integers(amount: object) -> None:
    assert "amt" in broken("HOS00003", "request", "amt", amount)


def test_amounts_of_eleven_digits_are_accepted() -> None:
    data = example("HOS00003", "request")
    data["amt"] = MAX_FEN
    assert to_wire(validate_request("HOS00003", data))["amt"] == 99_999_999_999


def test_amounts_are_integers_in_responses_too() -> None:
    assert "orderList.0.amt" in broken("HOS00014", "response", "orderList.0.amt", "500000")


@pytest.mark.parametrize("amount", ["12.50", "1,250", "-5", " 100", "", 1250])
def test_string_amounts_are_digits_of_fen(amount: object) -> None:
    assert "feeList.0.total" in broken("HOS00022", "request", "feeList.0.total", amount)


def test_invoice_amounts_are_fen_digits_not_yuan_decimals() -> None:
    assert "billList.0.billAmt" in broken("HOS00023", "request", "billList.0.billAmt", "7000.00")
    data = example("HOS00023", "request")
    data["billList"][0]["billAmt"] = "9" * 12
    validate_request("HOS00023", data)


def test_settlement_non_credit_amount_cannot_exceed_the_total() -> None:
    errors = broken("HOST0014", "request", "nonCreditPayAmt", 700001)
    assert errors == {"nonCreditPayAmt": "must not exceed settleAmt"}


# --- presence, lengths, formats -----------------------------------------------------------


@pytest.mark.parametrize(
    ("trans_code", "path", "value"),
    [
        ("HOS00003", "orderId", "PAY0001"),  # 8 — 40
        ("HOS00003", "hospitalId", "H000001"),  # 8 — 40
        ("HOST0014", "setlId", "SETL001"),  # 8 — 32
        ("HOS00020", "name", "张"),  # 2-8
        ("HOS00024", "reportingDoctor", "周"),  # 2-10
    ],
)
def test_length_ranges_enforce_the_minimum(trans_code: str, path: str, value: str) -> None:
    assert "at least" in broken(trans_code, "request", path, value)[path]


def test_mandatory_fields_must_not_be_empty() -> None:
    assert "signToken" in broken("HOS00003", "request", "signToken", "")


def test_optional_empty_string_means_absent_and_is_not_sent() -> None:
    data = example("HOS00001", "request")
    data["mobile"] = ""
    assert "mobile" not in to_wire(validate_request("HOS00001", data))


def test_account_type_may_be_empty_or_absent_when_nothing_was_charged() -> None:
    for acc_type in ("", None, DELETE):
        data = example("HOS00003", "response")
        data.update(amt=0, psnAmt=0)
        set_path(data, "accType", acc_type)
        assert "accType" not in to_wire(validate_response("HOS00003", data))


def test_platform_messages_may_be_empty() -> None:
    data = example("HOS00003", "response")
    data["msg"] = ""
    validate_response("HOS00003", data)


@pytest.mark.parametrize(
    ("trans_code", "side", "path", "value"),
    [
        ("HIS00003", "request", "medStartDate", "20251301"),  # yyyyMMdd, not yyyyHHdd
        ("HIS00003", "request", "medEndDate", "2025-09-10"),
        ("HOS00003", "response", "orderTime", "2025090108301"),  # yyyyMMddHHmmss
        ("HOS00001", "response", "signDate", "20250901250000"),
        ("HOS00020", "request", "treatmentTime", "2025/09/01 08:00:00"),
        ("HOS00024", "request", "inspectionDate", "2025-9-1"),  # yyyy-MM-dd
        ("HOS00023", "request", "billList.0.begntime", "2025-09-01T08:00:00"),
    ],
)
def test_dates_and_times_follow_the_spec_formats(
    trans_code: str, side: Side, path: str, value: str
) -> None:
    assert path in broken(trans_code, side, path, value)


def test_ext_params_must_be_a_json_object_string() -> None:
    assert "extParams" in broken("HOS00003", "request", "extParams", "socialInsuranceTotal=0")


def test_error_messages_do_not_echo_personal_data() -> None:
    id_no = "4418021990010112349999999999999999"
    with pytest.raises(ValidationFailed) as caught:
        validate_request("HOS00001", {**example("HOS00001", "request"), "idNo": id_no})
    assert id_no not in str(caught.value)
    assert caught.value.errors[0].as_dict() == {
        "field": "idNo",
        "message": "String should have at most 32 characters",
    }


# --- extra fields --------------------------------------------------------------------------


def test_extra_field_on_a_request_is_rejected() -> None:
    errors = broken("HOS00003", "request", "amount", 500000)
    assert errors == {"amount": "Extra inputs are not permitted"}


def test_extra_field_on_a_response_is_accepted_and_kept() -> None:
    data = example("HOS00003", "response")
    data["newPlatformField"] = "x"
    assert to_wire(validate_response("HOS00003", data))["newPlatformField"] == "x"


def test_extra_field_on_an_empty_response_is_accepted() -> None:
    assert get_transaction("HOS00022").response is EmptyResponse
    validate_response("HOS00022", {"status": "ok"})


def test_inbound_roles_are_swapped_platform_request_tolerant_our_response_strict() -> None:
    validate_request("HIS00004", {**example("HIS00004", "request"), "noticeTime": "x"})
    assert "extra" in broken("HIS00004", "response", "extra", "x")


def test_fee_details_travel_as_detail_list_inside_each_fee() -> None:
    data = example("HOS00022", "request")
    fee = data["feeList"][0]
    fee["DetailList"] = fee.pop("detailList")
    assert set(rejected("HOS00022", "request", data)) == {
        "feeList.0.detailList",
        "feeList.0.DetailList",
    }


# --- conditional fields and lists ------------------------------------------------------------


def test_deleting_an_invoice_needs_only_the_bill_identity() -> None:
    data = example("HOS00023", "request")
    bill = data["billList"][0]
    data["billList"] = [
        {"rcptType": "D", **{k: bill[k] for k in ("payId", "elecSetlCertCode", "elecSetlCertNo")}}
    ]
    validate_request("HOS00023", data)
    del data["billList"][0]["rcptType"]
    errors = rejected("HOS00023", "request", data)
    assert "billList.0.billAmt" in errors
    assert errors["billList.0.medSumfee"] == "Field required when rcptType is not 'D' (delete)"


def test_a_reversal_invoice_names_the_original() -> None:
    errors = broken("HOS00023", "request", "billList.0.elecSetlCertFlag", "1")
    assert set(errors) == {"billList.0.relElecSetlCertCode", "billList.0.relElecSetlCertNo"}


def test_price_limit_required_when_flagged() -> None:
    path = "feeList.0.detailList.0.priceLimit"
    assert broken("HOS00022", "request", path, DELETE) == {
        path: "Field required when priceLimitFlag is 1"
    }


def test_mandatory_lists_must_not_be_empty() -> None:
    assert "diagnosisList" in broken("HOS00021", "request", "diagnosisList", [])


def test_an_empty_visit_list_is_a_valid_answer() -> None:
    validate_response("HIS00003", {"treatmentList": []})


def test_newborn_object_is_typed() -> None:
    data = example("HOS00020", "request")
    data["newBorn"] = {"name": "张", "documentsType": "11"}
    assert set(rejected("HOS00020", "request", data)) == {"newBorn.name", "newBorn.documentsNo"}


def test_integer_codes_reject_strings_and_booleans() -> None:
    for value in ("1", True):
        assert "gender" in broken("HOS00021", "request", "gender", value)


def test_deposit_query_ids_are_sent_as_a_comma_separated_string() -> None:
    data = example("HOS00014", "request")
    data["origPayQueryId"] = data["origPayQueryId"].split(",")
    wire = to_wire(validate_request("HOS00014", data))
    assert wire["origPayQueryId"] == EXAMPLES["HOS00014"].request["origPayQueryId"]
    for bad in ("Q202509,Q202509030900000000000003", "Q202509010830150000000001, Q20250903"):
        assert "origPayQueryId" in broken("HOS00014", "request", "origPayQueryId", bad)


def test_image_base64_has_no_length_limit_but_must_be_base64() -> None:
    data = example("HOS00028", "request")
    data["imageBase64"] = "QUJD" * 1_000_000  # 4 MB
    validate_request("HOS00028", data)
    assert "imageBase64" in broken("HOS00028", "request", "imageBase64", "/tmp/scan.png")


# --- the registry -------------------------------------------------------------------------


def test_a_payload_that_is_not_an_object_is_rejected_as_a_whole() -> None:
    with pytest.raises(ValidationFailed) as caught:
        validate_request("HOS00012", ["PAY202509010000000001"])  # type: ignore[arg-type]
    assert [error.field for error in caught.value.errors] == ["(payload)"]


def test_abolished_settlement_revoke_is_not_callable() -> None:
    assert "HOS00015" in ABOLISHED and "HOS00015" not in TRANSACTIONS
    with pytest.raises(AbolishedTransaction):
        get_transaction("HOS00015")
    with pytest.raises(AbolishedTransaction):
        validate_request("HOS00015", {"orderId": "STL202509100000000001"})


def test_unknown_trans_code_is_rejected() -> None:
    with pytest.raises(UnknownTransaction) as caught:
        validate_response("HOS99999", {})
    assert isinstance(caught.value, GiveUp)


def test_money_moving_calls_and_how_they_are_reconciled() -> None:
    money = {code: t for code, t in TRANSACTIONS.items() if t.moves_money}
    reconciled_by = {
        code: (t.status_query.trans_code if t.status_query else None, t.business_key)
        for code, t in money.items()
    }
    assert reconciled_by == {
        "HOS00003": ("HOS00012", "orderId"),
        "HOS00004": ("HOS00012", "orderId"),
        "HOS00014": ("HOS00016", "orderId"),
    }
    assert get_transaction("HOST0014").business_key == "trialId"
    # claim cases are retried, never reconciled: HOS00029 is the HIS's own question
    # (docs/protocol-notes.md, "Claim cases have no status query")
    assert {get_transaction(c).status_query for c in ("HOS00026", "HOS00027")} == {None}


def test_status_queries_are_read_only_queries() -> None:
    targets = {t.status_query.trans_code for t in TRANSACTIONS.values() if t.status_query}
    assert targets == {"HOS00012", "HOS00016"}
    for code in targets:
        query = get_transaction(code)
        assert (query.moves_money, query.status_query) == (False, None)
        assert query.work_class is WorkClass.QUERIES


def test_directions_follow_the_trans_code_prefix() -> None:
    for code, transaction in TRANSACTIONS.items():
        expected = "inbound" if code.startswith("HIS") else "outbound"
        assert (transaction.trans_code, transaction.direction) == (code, expected)


def test_examples_tell_one_coherent_story() -> None:
    pay, refund = EXAMPLES["HOS00003"], EXAMPLES["HOS00004"]
    assert refund.request["origOrderId"] == pay.response["queryId"]
    assert refund.request["orderId"] != pay.request["orderId"]
    assert EXAMPLES["HOS00012"].request["orderId"] == pay.request["orderId"]
    trial, settle = EXAMPLES["HOST0014"], EXAMPLES["HOS00014"]
    assert settle.request["trialId"] == trial.request["trialId"]
    assert pay.response["queryId"] in settle.request["origPayQueryId"].split(",")
    assert EXAMPLES["HOS00016"].request["orderId"] == settle.request["orderId"]


# --- properties ---------------------------------------------------------------------------


@given(st.text(alphabet=string.ascii_letters + string.digits, min_size=8, max_size=40))
def test_any_alphanumeric_order_id_of_8_to_40_is_accepted(order_id: str) -> None:
    data = example("HOS00003", "request")
    data["orderId"] = order_id
    assert to_wire(validate_request("HOS00003", data))["orderId"] == order_id


@given(st.text(min_size=33, max_size=200))
def test_any_id_number_over_32_characters_is_rejected(id_no: str) -> None:
    assert "idNo" in broken("HOS00001", "request", "idNo", id_no)


@given(st.integers(min_value=0, max_value=MAX_FEN))
def test_any_amount_of_at_most_11_digits_is_accepted(amount: int) -> None:
    data = example("HOS00004", "request")
    data["amtRefund"] = amount
    assert to_wire(validate_request("HOS00004", data))["amtRefund"] == amount


@given(st.floats(allow_nan=True) | st.decimals().map(str))
def test_no_float_or_decimal_text_is_an_int_amount(amount: object) -> None:
    assert "amtRefund" in broken("HOS00004", "request", "amtRefund", amount)
