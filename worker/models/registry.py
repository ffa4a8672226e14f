"""Every transaction the worker calls or serves, with its request and response models.

The registry is the one place that knows which model belongs to which transCode, which calls
move money and how each is reconciled. It does no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from worker.errors import AbolishedTransaction, FieldError, UnknownTransaction, ValidationFailed
from worker.models import claim_cases, claims, inbound, payment, settlement
from worker.models.base import EmptyResponse


@dataclass(frozen=True)
class Transaction:
    trans_code: str  # "HOS00003"
    spec_section: str  # "3.2.3"
    title: str  # English, short: "pay"
    direction: Literal["outbound", "inbound"]  # outbound = hospital->platform (HOS*)
    request: type[BaseModel]
    response: type[BaseModel]  # EmptyResponse where the spec's response table is empty
    moves_money: bool = False
    status_query: str | None = None  # the transCode that reconciles an unknown outcome
    business_key: str | None = None  # the request field naming the business operation
    is_query: bool = False  # read-only: safe to repeat


def _out(
    code: str,
    section: str,
    title: str,
    request: type[BaseModel],
    response: type[BaseModel],
    **flags: Any,
) -> Transaction:
    return Transaction(code, section, title, "outbound", request, response, **flags)


def _in(
    code: str, section: str, title: str, request: type[BaseModel], response: type[BaseModel]
) -> Transaction:
    return Transaction(code, section, title, "inbound", request, response)


# The table reads best one transaction per entry, so the formatter leaves it alone.
# fmt: off
_ALL = (
    _out("HOS00025", "3.2.1", "signing URL", payment.SignUrlRequest, payment.SignUrlResponse),
    _out("HOS00001", "3.2.2", "signing status", payment.SignStatusRequest,
         payment.SignStatusResponse, is_query=True),
    _out("HOS00003", "3.2.3", "pay", payment.PayRequest, payment.PayResponse,
         moves_money=True, status_query="HOS00012", business_key="orderId"),
    _out("HOS00004", "3.2.4", "refund", payment.RefundRequest, payment.RefundResponse,
         moves_money=True, status_query="HOS00012", business_key="orderId"),
    _out("HOST0014", "3.2.5", "settlement trial", settlement.SettlementTrialRequest,
         settlement.SettlementTrialResponse, business_key="trialId"),
    _out("HOS00014", "3.2.6", "discharge settlement", settlement.SettlementRequest,
         settlement.SettlementResponse,
         moves_money=True, status_query="HOS00016", business_key="orderId"),
    _out("HOS00016", "3.2.8", "settlement status query", settlement.SettlementQueryRequest,
         settlement.SettlementQueryResponse, is_query=True),
    _out("HOS00012", "3.2.9", "pay/refund status query", payment.OrderStatusRequest,
         payment.OrderStatusResponse, is_query=True),
    _out("HOS00013", "3.2.10", "daily statement", payment.StatementRequest,
         payment.StatementResponse, is_query=True),
    _out("HOS00020", "3.2.11", "patient data", claims.PatientDataRequest, EmptyResponse),
    _out("HOS00021", "3.2.12", "medical record", claims.MedicalRecordRequest, EmptyResponse),
    _out("HOS00022", "3.2.13", "fee data", claims.FeeDataRequest, EmptyResponse),
    _out("HOS00023", "3.2.14", "electronic invoices", claims.InvoiceRequest, EmptyResponse),
    _out("HOS00024", "3.2.15", "examination reports", claims.ExaminationReportRequest,
         EmptyResponse),
    _out("HOS00026", "3.2.16", "cancel claim case", claim_cases.CancelClaimRequest, EmptyResponse,
         status_query="HOS00029"),
    _out("HOS00027", "3.2.17", "submit claim", claim_cases.SubmitClaimRequest, EmptyResponse,
         status_query="HOS00029"),
    _out("HOS00028", "3.2.18", "image upload", claim_cases.ImageUploadRequest, EmptyResponse),
    _out("HOS00029", "3.2.19", "claim case status", claim_cases.ClaimStatusRequest,
         claim_cases.ClaimStatusResponse, is_query=True),
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
