"""Signing and deposit-free payment: spec 3.2.1 - 3.2.4, 3.2.9, 3.2.10.

Field names, presence and lengths mirror the spec tables row by row; deviations are recorded
in docs/protocol-notes.md.
"""

from __future__ import annotations

from typing import Annotated

from worker.protocol.models.base import (
    CityCode,
    CompactDate,
    CompactTimestamp,
    Fen,
    HospitalId,
    HospitalMessage,
    Id8to40,
    JsonText,
    Note,
    Opt,
    PlatformMessage,
    up_to,
)
from worker.protocol.models.enums import (
    AccType,
    CreditPay,
    IdType,
    OrderStatus,
    OrderType,
    SignStatus,
)

# --- 3.2.1 HOS00025 申请签约H5地址 ------------------------------------------------------


class SignUrlRequest(HospitalMessage):
    idNo: Annotated[str, up_to(32)]
    userName: Annotated[str, up_to(32)]
    mobile: Annotated[str, up_to(11)]
    cityCode: CityCode
    hospitalId: HospitalId
    treatmentSerialNo: Opt[Annotated[str, up_to(32)]] = None


class SignUrlResponse(PlatformMessage):
    forwardUrl: Annotated[str, up_to(1024)]


# --- 3.2.2 HOS00001 签约查询 ------------------------------------------------------------


class SignStatusRequest(HospitalMessage):
    idNo: Annotated[str, up_to(32)]
    idType: IdType
    userName: Annotated[str, up_to(64)]
    hospitalId: HospitalId
    cityCode: CityCode
    treatmentSerialNo: Annotated[str, up_to(32)]
    mobile: Opt[Annotated[str, up_to(11)]] = None


class SignStatusResponse(PlatformMessage):
    signStatus: SignStatus
    signToken: Opt[Annotated[str, up_to(64)]] = None  # present when signed; used to pay
    signDate: Opt[CompactTimestamp] = None
    creditPay: Opt[CreditPay] = None
    forwardUrl: Opt[Annotated[str, up_to(1024)]] = None  # present when not signed
    # 参保类型; "999" = unknown. Two overlapping appendix lists exist, so no enum is enforced.
    insutype: Opt[Annotated[str, up_to(3)]] = None


# --- 3.2.3 HOS00003 支付 ----------------------------------------------------------------


class PayRequest(HospitalMessage):
    signToken: Annotated[str, up_to(64)]
    orderId: Id8to40  # unique per payment; the idempotency key
    amt: Fen
    hospitalId: HospitalId
    cityCode: CityCode
    orderType: OrderType
    extParams: Opt[JsonText] = None  # commercial-insurance parameters, a JSON string
    mdtrtId: Annotated[str, up_to(30)]
    setlId: Annotated[str, up_to(30)]


class PayResponse(PlatformMessage):
    orderId: Id8to40
    queryId: Id8to40  # the platform's order id: a refund's origOrderId
    orderTime: CompactTimestamp
    accType: Opt[AccType] = None  # M, but empty when the amount is 0
    amt: Fen
    psnAmt: Opt[Fen] = None
    orderStatus: OrderStatus
    couponInfo: Opt[Annotated[str, up_to(1028)]] = None
    msg: Note


# --- 3.2.4 HOS00004 退费 ----------------------------------------------------------------


class RefundRequest(HospitalMessage):
    orderId: Id8to40  # unique; must differ from the payment's orderId
    origOrderId: Id8to40  # the payment's queryId (platform order id)
    amtRefund: Fen
    hospitalId: HospitalId
    cityCode: CityCode


class RefundResponse(PlatformMessage):
    orderId: Id8to40
    queryId: Id8to40
    origOrderId: Id8to40  # described as the original *hospital* pay order id
    orderTime: CompactTimestamp
    accType: Opt[AccType] = None
    amt: Fen
    orderStatus: OrderStatus  # the spec's length 1 is a slip: the codes have 2 digits
    msg: Note


# --- 3.2.9 HOS00012 交易状态查询 --------------------------------------------------------


class OrderStatusRequest(HospitalMessage):
    orderId: Id8to40  # the pay or refund orderId being reconciled
    hospitalId: HospitalId
    cityCode: CityCode


class OrderStatusResponse(PlatformMessage):
    orderId: Id8to40
    queryId: Id8to40
    tradeNo: Id8to40
    # typed "8 — 40" by the spec, which fits no orderType code: a plain string, no enum
    orderType: Annotated[str, up_to(40)]
    orderTime: CompactTimestamp
    accType: Opt[AccType] = None
    amt: Fen
    insureSettleAmt: Opt[Fen] = None
    psnAmt: Opt[Fen] = None
    orderStatus: OrderStatus
    couponInfo: Opt[Annotated[str, up_to(1028)]] = None
    msg: Note


# --- 3.2.10 HOS00013 对账单查询 ---------------------------------------------------------


class StatementRequest(HospitalMessage):
    settleDate: CompactDate
    hospitalId: HospitalId
    cityCode: CityCode


class StatementResponse(PlatformMessage):
    settleDate: CompactDate
    settleFileUrl: Annotated[str, up_to(1024)]
