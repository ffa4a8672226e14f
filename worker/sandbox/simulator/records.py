"""The simulated platform's records: patients, orders, claim cases, and the Reply type.

Plain data with small helpers; `state.py` holds the rules that change them.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from worker.clock import CHINA_TZ

SUCCESS_MSG = "交易成功"
REFUND_WINDOW = timedelta(days=30)  # spec 3.2.4: online refunds within 30 days
PatientStatus = Literal["signed", "unsigned", "frozen"]
PATIENT_STATUSES: tuple[str, ...] = ("signed", "unsigned", "frozen")
Business = dict[str, Any]


@dataclass(frozen=True)
class Reply:
    rt_code: str
    rt_msg: str
    business: Business | None = None


def ok(business: Business | None = None) -> Reply:
    return Reply("0000", SUCCESS_MSG, business)


def failure(message: str, rt_code: str = "1000") -> Reply:
    return Reply(rt_code, message)


def about_another_order(reply: Reply, field: str = "orderId") -> Reply:
    """`reply` as a signed success about another order would be (the replay_answer fault):
    rtCode 0000 and `field` changed (a string's last character, an amount by one fen)."""
    business = dict(reply.business or {})
    value = business.get(field)
    if isinstance(value, int) and not isinstance(value, bool):
        business[field] = value + 1
    elif isinstance(value, str) and value:
        business[field] = value[:-1] + ("1" if value[-1] == "0" else "0")
    else:
        business[field] = "REPLAYED00000001"
    return ok(business)


def stamp(moment: datetime) -> str:
    """yyyyMMddHHmmss in China time, the spec's timestamp form."""
    return moment.astimezone(CHINA_TZ).strftime("%Y%m%d%H%M%S")


# --- patients --------------------------------------------------------------------------------


@dataclass
class Patient:
    id_no: str
    status: PatientStatus = "signed"
    name: str = "测试"
    sign_token: str = ""  # derived from the idNo when not given
    credit_limit: int | None = None  # fen; a payment above it fails with orderStatus 03
    signed_at: datetime | None = None  # None: signed before the simulator started

    def __post_init__(self) -> None:
        if not self.sign_token:
            digest = hashlib.sha256(self.id_no.encode()).hexdigest().upper()
            self.sign_token = "STK" + digest[:32]


def parse_patients(raw: Any) -> tuple[list[Patient], PatientStatus]:
    """A patients file: {"defaultStatus": ..., "patients": [{"idNo", "status", "name",
    "signToken", "creditLimit"}]}; returns the patients and the status of unknown idNos."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("patients", []), list):
        raise ValueError('a patients file is {"defaultStatus": ..., "patients": [...]}')
    default = raw.get("defaultStatus", "unsigned")
    if default not in PATIENT_STATUSES:
        raise ValueError(f"defaultStatus must be one of {PATIENT_STATUSES}")
    return [_patient(item) for item in raw.get("patients", [])], default


def _patient(item: Any) -> Patient:
    if not isinstance(item, Mapping) or not isinstance(item.get("idNo"), str):
        raise ValueError("each patient needs an idNo")
    status = item.get("status", "signed")
    if status not in PATIENT_STATUSES:
        raise ValueError(f"patient status must be one of {PATIENT_STATUSES}")
    limit = item.get("creditLimit")
    return Patient(
        item["idNo"],
        status,
        item.get("name", "测试"),
        item.get("signToken", ""),
        limit if isinstance(limit, int) else None,
    )


def default_patients() -> list[Patient]:
    """Every idNo in the shared examples is signed; the HOS00001 example's patient holds the
    HOS00003 example's signToken, so the examples can be replayed as they are."""
    from worker.protocol.models.examples import EXAMPLES

    main_id = EXAMPLES["HOS00001"].request["idNo"]
    patients = {
        main_id: Patient(
            main_id,
            "signed",
            EXAMPLES["HOS00001"].request["userName"],
            EXAMPLES["HOS00003"].request["signToken"],
        )
    }
    for example in EXAMPLES.values():
        for key in ("idNo", "documentsNo", "certno"):
            id_no = example.request.get(key)
            if isinstance(id_no, str) and id_no not in patients:
                patients[id_no] = Patient(id_no)
    return list(patients.values())


# --- orders ----------------------------------------------------------------------------------


@dataclass
class Order:
    """A pay (HOS00003) or refund (HOS00004) order, or a settlement (HOS00014)."""

    kind: Literal["pay", "refund", "settle"]
    order_id: str
    query_id: str
    trade_no: str
    amt: int
    created_at: datetime
    request: Business
    final_status: str
    pending_status: str
    pending_left: int
    patient: Patient | None = None
    pay: Order | None = None  # a refund's payment
    refunded: int = 0  # a payment's accepted refunds (fen)
    settled_by: str | None = None  # a payment's settlement orderId
    deposits: list[tuple[Order, int, int]] = field(default_factory=list)  # (pay, spent, refund)
    figures: dict[str, int] = field(default_factory=dict)  # a settlement's amounts

    @property
    def status(self) -> str:
        return self.pending_status if self.pending_left > 0 else self.final_status

    @property
    def available(self) -> int:
        return self.amt - self.refunded

    def queried(self) -> None:
        self.pending_left = max(0, self.pending_left - 1)


@dataclass
class ClaimCase:
    treatment_serial_no: str
    node: str = "1"
    id_no: str | None = None
    uploads: Counter[str] = field(default_factory=Counter)
    submitted: bool = False


@dataclass(frozen=True)
class Insurer:
    insurance_id: str = "INS00001"
    insurance_name: str = "中国人寿"
    claim_type: str = "2"
