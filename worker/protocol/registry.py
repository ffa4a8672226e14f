"""Every transaction the worker calls or serves: the one table, one entry per transCode.

An entry holds all the worker knows about its transCode: the request and response models, the
HIS event that asks for the call and the work queue it waits in, whether it moves money, how
an unknown outcome is settled (the status query and its request), the orderStatus codes of
its answers and its line in the daily statement. Every other module reads these here, so
adding a transCode is one entry (docs/development.md, "Adding a transaction code"); the
specification of the table is tests/test_transactions.py. It does no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from worker.errors import AbolishedTransaction, FieldError, UnknownTransaction, ValidationFailed
from worker.protocol.models import claim_cases, claims, inbound, payment, settlement
from worker.protocol.models.base import EmptyResponse


class WorkClass(StrEnum):
    """Separate work queues, so a backlog of image uploads never delays a payment."""

    MONEY = "money"
    CLAIMS = "claims"
    QUERIES = "queries"


@dataclass(frozen=True)
class StatusQuery:
    """How an unknown outcome of a money call is settled: the query's transCode, and its
    request built from the call's (PROTOCOL.md, "Transactions")."""

    trans_code: str
    copied: tuple[str, ...]  # the call's request fields the query repeats, same names
    fixed: tuple[tuple[str, str], ...] = ()  # (field, value) the query always sends

    def request(self, call: Mapping[str, Any]) -> dict[str, Any]:
        """The status query's business payload for the money call whose payload is `call`."""
        return {name: call[name] for name in self.copied} | dict(self.fixed)


@dataclass(frozen=True)
class OrderFamily:
    """The orderStatus codes of one kind of order (spec appendix 订单状态): a first digit of
    its own, then 1 in progress, 2 succeeded, 3 failed."""

    digit: str

    @property
    def pending(self) -> str:
        return f"{self.digit}1"

    @property
    def succeeded(self) -> str:
        return f"{self.digit}2"

    @property
    def failed(self) -> str:
        return f"{self.digit}3"


@dataclass(frozen=True)
class StatementLine:
    """How a money call appears in the daily statement file (HOS00013, spec 3.2.10)."""

    trade_type: str  # the line's type field: 01 pay, 02 refund
    amount_field: str  # the call's request field that the line's amount (fen) equals


@dataclass(frozen=True)
class Transaction:
    trans_code: str  # "HOS00003"
    spec_section: str  # "3.2.3"
    title: str  # English, short: "pay"
    direction: Literal["outbound", "inbound"]  # outbound = hospital->platform (HOS*)
    request: type[BaseModel]
    response: type[BaseModel]  # EmptyResponse where the spec's response table is empty
    event_type: str | None = None  # the HIS event asking for this call (outbound only)
    work_class: WorkClass | None = None  # the work queue that event waits in
    moves_money: bool = False
    business_key: str | None = None  # the request field naming the business operation
    status_query: StatusQuery | None = None  # money calls: how an unknown outcome is settled
    order_family: OrderFamily | None = None  # money calls: the orderStatus of their answers
    statement: StatementLine | None = None  # pay and refund: their daily statement line


@dataclass(frozen=True)
class EventType:
    """An HIS event type: a view of the transaction whose call it asks for."""

    name: str
    trans_code: str
    work_class: WorkClass


def _out(
    code: str,
    section: str,
    title: str,
    event: str,
    work: WorkClass,
    request: type[BaseModel],
    response: type[BaseModel],
    **flags: Any,
) -> Transaction:
    return Transaction(code, section, title, "outbound", request, response, event, work, **flags)


def _in(
    code: str, section: str, title: str, request: type[BaseModel], response: type[BaseModel]
) -> Transaction:
    return Transaction(code, section, title, "inbound", request, response)


#: HOS00012 (3.2.9) finds a pay or a refund by the call's orderId
_ORDER_QUERY = StatusQuery("HOS00012", ("orderId", "hospitalId", "cityCode"))
#: HOS00016 (3.2.8) finds a settlement by its orderId and stay; type 01 = the settlement
#: (02 asked for the settlement revoke, abolished with HOS00015)
_SETTLEMENT_QUERY = StatusQuery(
    "HOS00016", ("orderId", "hospitalId", "cityCode", "treatmentSerialNo"), (("type", "01"),)
)
#: the orderStatus families (spec appendix): pay 0x, refund 1x, settlement 3x
_PAID, _REFUNDED, _SETTLED = OrderFamily("0"), OrderFamily("1"), OrderFamily("3")

_MONEY, _CLAIMS, _QUERIES = WorkClass.MONEY, WorkClass.CLAIMS, WorkClass.QUERIES

# One entry per transCode: code, spec section, title, HIS event, work class, request and
# response models, then what only some have. It reads best one entry per block, so the
# formatter leaves the table alone.
# fmt: off
_ALL = (
    _out("HOS00025", "3.2.1", "signing URL", "signing.url.requested", _QUERIES,
         payment.SignUrlRequest, payment.SignUrlResponse),
    _out("HOS00001", "3.2.2", "signing status", "signing.status.requested", _QUERIES,
         payment.SignStatusRequest, payment.SignStatusResponse),
    _out("HOS00003", "3.2.3", "pay", "payment.requested", _MONEY,
         payment.PayRequest, payment.PayResponse,
         moves_money=True, business_key="orderId", status_query=_ORDER_QUERY,
         order_family=_PAID, statement=StatementLine("01", "amt")),
    _out("HOS00004", "3.2.4", "refund", "refund.requested", _MONEY,
         payment.RefundRequest, payment.RefundResponse,
         moves_money=True, business_key="orderId", status_query=_ORDER_QUERY,
         order_family=_REFUNDED, statement=StatementLine("02", "amtRefund")),
    # money queue, so a discharge's trial is never stuck behind claims; it moves no money
    _out("HOST0014", "3.2.5", "settlement trial", "discharge.trial.requested", _MONEY,
         settlement.SettlementTrialRequest, settlement.SettlementTrialResponse,
         business_key="trialId"),
    _out("HOS00014", "3.2.6", "discharge settlement", "discharge.ready", _MONEY,
         settlement.SettlementRequest, settlement.SettlementResponse,
         moves_money=True, business_key="orderId", status_query=_SETTLEMENT_QUERY,
         order_family=_SETTLED),
    _out("HOS00016", "3.2.8", "settlement status query", "discharge.status.requested", _QUERIES,
         settlement.SettlementQueryRequest, settlement.SettlementQueryResponse),
    _out("HOS00012", "3.2.9", "pay/refund status query", "order.status.requested", _QUERIES,
         payment.OrderStatusRequest, payment.OrderStatusResponse),
    _out("HOS00013", "3.2.10", "daily statement", "statement.requested", _QUERIES,
         payment.StatementRequest, payment.StatementResponse),
    _out("HOS00020", "3.2.11", "patient data", "patient.posted", _CLAIMS,
         claims.PatientDataRequest, EmptyResponse),
    _out("HOS00021", "3.2.12", "medical record", "medical-record.posted", _CLAIMS,
         claims.MedicalRecordRequest, EmptyResponse),
    _out("HOS00022", "3.2.13", "fee data", "fee.posted", _CLAIMS,
         claims.FeeDataRequest, EmptyResponse),
    _out("HOS00023", "3.2.14", "electronic invoices", "invoice.posted", _CLAIMS,
         claims.InvoiceRequest, EmptyResponse),
    _out("HOS00024", "3.2.15", "examination reports", "exam-report.posted", _CLAIMS,
         claims.ExaminationReportRequest, EmptyResponse),
    _out("HOS00026", "3.2.16", "cancel claim case", "claim-case.cancelled", _CLAIMS,
         claim_cases.CancelClaimRequest, EmptyResponse),
    _out("HOS00027", "3.2.17", "submit claim", "claim.submitted", _CLAIMS,
         claim_cases.SubmitClaimRequest, EmptyResponse),
    _out("HOS00028", "3.2.18", "image upload", "image.posted", _CLAIMS,
         claim_cases.ImageUploadRequest, EmptyResponse),
    _out("HOS00029", "3.2.19", "claim case status", "claim-case.status.requested", _QUERIES,
         claim_cases.ClaimStatusRequest, claim_cases.ClaimStatusResponse),
    _in("HIS00002", "3.1.2", "authorisation letter", inbound.AuthorisationLetterRequest,
        inbound.AuthorisationLetterResponse),
    _in("HIS00003", "3.1.3", "visit records", inbound.VisitRecordsRequest,
        inbound.VisitRecordsResponse),
    _in("HIS00004", "3.1.4", "claim result notification", inbound.ClaimResultRequest,
        inbound.ClaimResultResponse),
)
# fmt: on

TRANSACTIONS: Mapping[str, Transaction] = MappingProxyType({t.trans_code: t for t in _ALL})

ABOLISHED: Mapping[str, str] = MappingProxyType(
    {"HOS00015": "settlement revoke, abolished in v2.7.1 (spec 3.2.7)"}
)
#: HOS00015's orderStatus codes 41/42/43: no call of ours has them, the appendix still lists them
ABOLISHED_ORDER_FAMILY = OrderFamily("4")

#: the HIS event catalogue, in table order: event type -> the transaction it asks for
EVENT_TYPES: Mapping[str, EventType] = MappingProxyType(
    {
        t.event_type: EventType(t.event_type, t.trans_code, t.work_class)
        for t in _ALL
        if t.event_type is not None and t.work_class is not None
    }
)

#: the daily statement's trade types: type field -> the money call it lists
STATEMENT_TRADES: Mapping[str, Transaction] = MappingProxyType(
    {t.statement.trade_type: t for t in _ALL if t.statement is not None}
)


def get_transaction(trans_code: str) -> Transaction:
    """The transaction for `trans_code`; abolished and unknown codes are permanent errors."""
    if trans_code in ABOLISHED:
        raise AbolishedTransaction(f"{trans_code} is no longer callable: {ABOLISHED[trans_code]}")
    try:
        return TRANSACTIONS[trans_code]
    except KeyError:
        raise UnknownTransaction(f"unknown transCode {trans_code!r}") from None


def validate_request(trans_code: str, data: Mapping[str, object]) -> BaseModel:
    """Validate a business request payload; raises ValidationFailed naming each bad field."""
    return _validate(get_transaction(trans_code).request, data, f"{trans_code} request")


def validate_response(trans_code: str, data: Mapping[str, object]) -> BaseModel:
    """Validate a business response payload; raises ValidationFailed naming each bad field."""
    return _validate(get_transaction(trans_code).response, data, f"{trans_code} response")


def to_wire(model: BaseModel) -> dict[str, object]:
    """The JSON-ready dict for `model`: wire names, absent optional fields left out."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def _validate(model: type[BaseModel], data: Mapping[str, object], what: str) -> BaseModel:
    # a Mapping that is not a dict (e.g. MappingProxyType) is still a valid payload
    payload = dict(data) if isinstance(data, Mapping) else data
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        errors = field_errors(exc)
        summary = "; ".join(f"{e.field}: {e.message}" for e in errors[:5])
        more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
        raise ValidationFailed(f"{what} is invalid: {summary}{more}", errors) from None


def field_errors(exc: ValidationError) -> tuple[FieldError, ...]:
    """One FieldError per pydantic error, with a dotted path (feeList.0.payId)."""
    return tuple(
        FieldError(field=_dotted(error["loc"]), message=error["msg"])
        # no inputs in the messages: they carry identity numbers and base64 files
        for error in exc.errors(include_url=False, include_input=False, include_context=False)
    )


def _dotted(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(payload)"
