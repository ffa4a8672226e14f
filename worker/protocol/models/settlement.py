"""Discharge settlement: spec 3.2.5 HOST0014, 3.2.6 HOS00014, 3.2.8 HOS00016.

(3.2.7 HOS00015, settlement revoke, was abolished in v2.7.1 and has no model.)
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, StringConstraints, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from worker.protocol.models.base import (
    CityCode,
    CompactTimestamp,
    Fen,
    HospitalId,
    HospitalMessage,
    Id8to40,
    JsonText,
    Note,
    Opt,
    PlatformMessage,
    between,
    must_match,
    up_to,
)
from worker.protocol.models.enums import AccType, OrderStatus, SettlementQueryType


def _join_list(value: object) -> object:
    # HOS00014 types origPayQueryId "Array" while describing "aa,bb,cc"; HOST0014 types it
    # string. We always send the string; an HIS that hands us a list gets it joined.
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        return ",".join(value)
    return value


#: platform order ids (queryId, 8-40 chars each) joined by English commas: "aa,bb,cc"
QueryIdList = Annotated[
    str,
    BeforeValidator(_join_list),
    StringConstraints(strict=True, min_length=1),
    must_match(
        r"[^,\s]{8,40}(,[^,\s]{8,40})*",
        "platform order ids of 8-40 characters joined by commas, e.g. 'aa,bb,cc'",
    ),
]

#: 住院流水号登记号 in the settlement interfaces (20, unlike 32 in HOS00001)
InpatientSerialNo = Annotated[str, up_to(20)]
#: 医院费用结算号 (setlId) of the medical-insurance settlement
SettlementNo = Annotated[str, between(8, 32)]


def _not_above_settle_amt(value: int, info: ValidationInfo) -> int:
    # the spec's identity: nonCreditPayAmt + credit payment (+ insurer) = settleAmt
    settle_amt = info.data.get("settleAmt")
    if isinstance(settle_amt, int) and value > settle_amt:
        raise PydanticCustomError("amount_rule", "must not exceed settleAmt")
    return value


# --- 3.2.5 HOST0014 出院结算试算 --------------------------------------------------------


class SettlementTrialRequest(HospitalMessage):
    trialId: Id8to40
    treatmentSerialNo: InpatientSerialNo
    setlId: SettlementNo
    hospitalId: HospitalId
    cityCode: CityCode
    origPayQueryId: QueryIdList  # the deposits' queryIds
    settleAmt: Fen
    nonCreditPayAmt: Fen
    extParams: Opt[JsonText] = None

    _non_credit = field_validator("nonCreditPayAmt")(_not_above_settle_amt)


class SettlementTrialResponse(PlatformMessage):
    trialId: Id8to40
    supplementAmt: Fen  # the patient must pay this much more
    refundAmt: Fen  # or is owed this much back
    psnAmt: Fen  # deposit-free payments found from the queryIds sent
    budgetAmt: Fen  # the insurer's estimate


# --- 3.2.6 HOS00014 出院结算 ------------------------------------------------------------


class SettlementRequest(HospitalMessage):
    trialId: Id8to40  # the HOST0014 trialId
    orderId: Id8to40  # unique per settlement; the idempotency key
    treatmentSerialNo: InpatientSerialNo
    setlId: SettlementNo
    hospitalId: HospitalId
    cityCode: CityCode
    origPayQueryId: QueryIdList  # deposits plus any supplement payment after the trial
    settleAmt: Fen
    thirdpartyPayTotal: Opt[Fen] = None
    nonCreditPayAmt: Fen
    miAmt: Fen
    budgetAmt: Fen
    grAmt: Fen

    _non_credit = field_validator("nonCreditPayAmt")(_not_above_settle_amt)


class SettlementOrder(PlatformMessage):
    """An `orderList` item (unnamed in the spec; named after the HOS00003 response)."""

    orderId: Id8to40
    queryId: Id8to40
    orderTime: CompactTimestamp
    accType: Opt[AccType] = None
    amt: Fen
    orderStatus: OrderStatus  # length 1 in the spec: a slip, the codes have 2 digits
    msg: Note


class SettlementResponse(PlatformMessage):
    orderId: Id8to40
    queryId: Opt[Id8to40] = None
    orderStatus: OrderStatus
    settleAmt: Fen
    insureSettleAmt: Fen
    supplementAmt: Fen
    refundAmt: Fen
    msg: Note
    psnAmt: Fen
    orderList: list[SettlementOrder]  # may be empty, e.g. when the settlement failed
    miAmt: Opt[Fen] = None
    budgetAmt: Opt[Fen] = None
    grAmt: Opt[Fen] = None


# --- 3.2.8 HOS00016 出院结算结果查询 ----------------------------------------------------


class SettlementQueryRequest(HospitalMessage):
    orderId: Id8to40  # the HOS00014 orderId
    treatmentSerialNo: InpatientSerialNo
    hospitalId: HospitalId
    cityCode: CityCode
    type: SettlementQueryType


class SettlementQueryOrder(SettlementOrder):
    """An `orderList` item of HOS00016: a deposit, its spend (`amt`) and its refund."""

    # 住院押金退款金额: unnamed in the spec; named after HOST0014's refundAmt. Optional
    # because the name is ours: a platform spelling it otherwise must not fail the query.
    refundAmt: Opt[Fen] = None


class SettlementQueryResponse(PlatformMessage):
    orderId: Id8to40
    queryId: Opt[Id8to40] = None
    orderStatus: OrderStatus
    settleAmt: Fen
    insureSettleAmt: Fen
    supplementAmt: Fen
    refundAmt: Fen
    msg: Note  # listed twice in the spec
    orderList: list[SettlementQueryOrder]
    miAmt: Opt[Fen] = None
    budgetAmt: Opt[Fen] = None
    grAmt: Opt[Fen] = None
