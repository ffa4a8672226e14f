"""Result events (output): exactly one final result per input event. Pure.

Published to `his.results` with routing key `<event type>.<outcome>` and the input eventId as
AMQP correlation_id. A redelivered or duplicated event republishes the stored result unchanged
(same resultId), so the HIS can de-duplicate on resultId.
"""

from __future__ import annotations

import random
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from worker.errors import FieldError

#: the type of the daily statement reconciliation's result: it answers no HIS event (its
#: causationId is the synthetic `statement:YYYYMMDD`), so it is not in the event catalogue
STATEMENT_RESULT_TYPE = "statement.reconciled"


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"  # the platform did it
    FAILED = "failed"  # a definitive platform rejection, or an invalid event
    UNKNOWN = "unknown"  # reconciliation gave up: a person must look


class ResultError(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str
    message: str


class Result(BaseModel):
    """The body of a result event."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    resultId: str = Field(description="Unique per result; stable across republishing.")
    type: str = Field(description="The input event's type.")
    causationId: str = Field(description="The input eventId.")
    transCode: str | None = Field(description="The platform transaction, if one applies.")
    outcome: Outcome
    rtCode: str | None = Field(description="The platform's rtCode, when it answered.")
    rtMsg: str | None = Field(description="The platform's rtMsg, or our explanation.")
    orderStatus: str | None = Field(description="The final orderStatus of a money call.")
    data: dict[str, Any] | None = Field(description="The decrypted platform answer.")
    errors: list[ResultError] = Field(default_factory=list, description="Field errors.")
    attempts: int = Field(ge=0, description="Platform calls made for this event.")
    occurredAt: datetime = Field(description="When the result was decided.")

    @property
    def routing_key(self) -> str:
        return f"{self.type}.{self.outcome.value}"


def new_result_id(rng: random.Random | None = None) -> str:
    """A fresh resultId; from `rng` (seeded once from os.urandom) on the worker's hot path, so
    that it costs no syscall (envelope.seq_ids_from says why that is enough)."""
    return "res-" + (f"{rng.getrandbits(128):032x}" if rng is not None else uuid.uuid4().hex)


def build_result(
    *,
    event_id: str,
    event_type: str,
    trans_code: str | None,
    outcome: Outcome,
    at: datetime,
    attempts: int,
    rt_code: str | None = None,
    rt_msg: str | None = None,
    data: dict[str, Any] | None = None,
    errors: tuple[FieldError, ...] = (),
    result_id: str | None = None,
) -> Result:
    order_status = data.get("orderStatus") if isinstance(data, dict) else None
    return Result(
        resultId=result_id or new_result_id(),
        type=event_type,
        causationId=event_id,
        transCode=trans_code,
        outcome=outcome,
        rtCode=rt_code,
        rtMsg=rt_msg,
        orderStatus=order_status if isinstance(order_status, str) else None,
        data=data,
        errors=[ResultError(field=e.field, message=e.message) for e in errors],
        attempts=attempts,
        occurredAt=at,
    )


def result_body(result: Result) -> bytes:
    return result.model_dump_json().encode("utf-8")
