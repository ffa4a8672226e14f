"""The processor: one delivery in, one Disposition out. The worker's decisions live here.

It talks to the platform through the injected PlatformClient and to the ledger through the
injected Ledger; the broker never appears (the consumer carries out the Disposition). Rules:

* A redelivered or duplicated event republishes its stored result; the platform is not called.
* A business key reused with a different payload is an idempotency conflict: `failed`, no call.
* Money calls (HOS00003/HOS00004/HOS00014) are recorded before sending; an unknown outcome is
  reconciled by the status query on the backoff schedule and re-sent only when the query says
  the platform never accepted the order.
* Retryable failures wait in the retry queues; exhausted or permanent failures are dead-lettered
  and answered with a `failed` result; an invalid event is dead-lettered with its field errors.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from . import events as ev
from .client import PlatformClient
from .clock import Clock
from .errors import (
    FieldError,
    GiveUp,
    HuiminError,
    InvalidEvent,
    LedgerUnavailable,
    OutcomeUnknown,
    PlatformRejected,
    RetryLater,
)
from .ledger.base import Begin, EventRecord, EventState, Ledger, NewEvent
from .messages import Delivery, Disposition, Outgoing, int_header, without_broker_headers
from .models import registry
from .reconcile import AttemptCount, LedgerRecorder, MoneyCall, Step
from .results import Outcome, Result, build_result, result_body
from .settings import Settings
from .topology import (
    DEAD_LETTER_QUEUE,
    H_ATTEMPTS,
    H_ERROR,
    H_REASON,
    H_RETRY,
    H_ROUTING_KEY,
    H_WORK_QUEUE,
    RESULTS_EXCHANGE,
    Topology,
    work_queue_for,
)

log = logging.getLogger(__name__)

#: the payload_hash of an event recorded as invalid (no valid payload to hash); dlq replay
#: recognises such events by it
INVALID_PAYLOAD_HASH = "invalid"


@dataclass(frozen=True)
class Context:
    """One delivery being processed."""

    delivery: Delivery
    prepared: ev.PreparedEvent
    record: EventRecord
    retry: int  # retries so far, from the message header
    fresh: bool = False  # first sight of the event: it has no attempts before this delivery
    count: AttemptCount = field(default_factory=AttemptCount)

    @property
    def event_id(self) -> str:
        return self.prepared.event.eventId

    @property
    def event_type(self) -> str:
        return self.prepared.event.type


class Processor:
    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        client: PlatformClient,
        topology: Topology,
        *,
        clock: Clock,
        owner: str,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.client = client
        self.topology = topology
        self.clock = clock
        self.owner = owner
        self.rng = rng or random.Random()
        self.lease = timedelta(seconds=4 * settings.read_timeout_s + 30)

    # --- entry point --------------------------------------------------------------------------

    def handle(self, delivery: Delivery) -> Disposition:
        try:
            disposition = self._handle(delivery)
        except LedgerUnavailable as exc:
            log.warning("ledger unavailable, requeueing: %s", exc)
            disposition = Disposition(requeue=True, label="requeued")
        _log_finished(delivery, disposition)
        return disposition

    def _handle(self, delivery: Delivery) -> Disposition:
        try:
            event = ev.parse_event(delivery.body)
            _check_routing(event, delivery)
            prepared = ev.prepare(
                event, hospital_id=self.settings.hospital_id, city_code=self.settings.city_code
            )
        except InvalidEvent as exc:
            return self._invalid(delivery, exc)
        begin = self.ledger.begin_event(self._new_event(prepared))
        return self._after_begin(delivery, prepared, begin)

    def _new_event(self, prepared: ev.PreparedEvent) -> NewEvent:
        now = self.clock()
        return NewEvent(
            event_id=prepared.event.eventId,
            event_type=prepared.event.type,
            trans_code=prepared.trans_code,
            payload=prepared.event.model_dump(mode="json"),
            payload_hash=prepared.payload_hash,
            business_key=prepared.business_key,
            keys=prepared.keys,
            received_at=now,
            lease_owner=self.owner,
            lease_until=now + self.lease,
        )

    def _after_begin(
        self, delivery: Delivery, prepared: ev.PreparedEvent, begin: Begin
    ) -> Disposition:
        retry = int_header(delivery.headers, H_RETRY)
        own = begin.record if begin.kind in ("new", "existing") else self._own(prepared)
        ctx = Context(delivery, prepared, own, retry, fresh=begin.kind == "new")
        if own.state is EventState.COMPLETED:
            return self._republish(ctx)
        if begin.kind == "conflict":
            return self._conflict(ctx, begin.record)
        if begin.kind == "duplicate_key":
            return self._mirror(ctx, begin.record)
        return self._leased(ctx)

    def _own(self, prepared: ev.PreparedEvent) -> EventRecord:
        record = self.ledger.get_event(prepared.event.eventId)
        assert record is not None, "begin_event records the event in every case"
        return record

    # --- duplicates and conflicts -----------------------------------------------------------

    def _republish(self, ctx: Context) -> Disposition:
        self.ledger.record(ctx.event_id, "duplicate", {"redelivered": ctx.delivery.redelivered},
                           self.clock())  # fmt: skip
        result = Result.model_validate(ctx.record.result)
        return self._publish_result(ctx.event_id, result, label="republished")

    def _conflict(self, ctx: Context, holder: EventRecord) -> Disposition:
        key = ctx.prepared.business_key
        message = f"idempotency conflict: {key} already used by event {holder.event_id} " \
                  "with a different payload"  # fmt: skip
        return self._finish(ctx, Outcome.FAILED, rt_msg=message,
                            errors=(FieldError("data", message),))  # fmt: skip

    def _mirror(self, ctx: Context, holder: EventRecord) -> Disposition:
        """Same business key and payload under a new eventId: answer as the first one did."""
        if holder.state is not EventState.COMPLETED or not holder.result:
            return self._retry(ctx, "waiting for the event holding the same business key")
        first = Result.model_validate(holder.result)
        return self._finish(
            ctx, first.outcome, rt_code=first.rtCode, rt_msg=first.rtMsg, data=first.data,
            errors=tuple(FieldError(e.field, e.message) for e in first.errors),
        )  # fmt: skip

    # --- doing the work -----------------------------------------------------------------------

    def _leased(self, ctx: Context) -> Disposition:
        if not ctx.fresh and not self._lease(ctx.event_id):  # a new event came leased
            return self._retry(ctx, "another worker holds this event")
        try:
            return self._work(ctx)
        except GiveUp as exc:
            return self._give_up(ctx, exc)

    def _lease(self, event_id: str) -> bool:
        now = self.clock()
        return self.ledger.try_lease(event_id, self.owner, now + self.lease, now)

    def _work(self, ctx: Context) -> Disposition:
        transaction = registry.get_transaction(ctx.prepared.trans_code)
        if transaction.moves_money:
            return self._money(ctx)
        return self._plain_call(ctx)

    def _plain_call(self, ctx: Context) -> Disposition:
        try:
            reply = self.client.call(ctx.prepared.trans_code, ctx.prepared.business,
                                     recorder=self._recorder(ctx, "call"))  # fmt: skip
        except PlatformRejected as exc:
            return self._rejected(ctx, exc)
        except (RetryLater, OutcomeUnknown) as exc:
            return self._retry_or_give_up(ctx, exc)
        return self._finish(ctx, Outcome.SUCCEEDED, rt_code=reply.rt_code, rt_msg=reply.rt_msg,
                            data=reply.data)  # fmt: skip

    def _money(self, ctx: Context) -> Disposition:
        money = MoneyCall(self.ledger, self.client, ctx.prepared, self.clock,
                          fresh=ctx.fresh, count=ctx.count)  # fmt: skip
        step = money.step()
        return replace(self._after_step(ctx, money, step), reconciliation=step.reconciliation)

    def _after_step(self, ctx: Context, money: MoneyCall, step: Step) -> Disposition:
        if step.final is not None:
            return self._finish(ctx, step.final, rt_code=step.rt_code, rt_msg=step.rt_msg,
                                data=step.data)  # fmt: skip
        if money.status_queries() >= self.settings.reconcile_max_queries:
            return self._finish(ctx, Outcome.UNKNOWN, rt_code=step.rt_code,
                                rt_msg=f"outcome unknown after reconciliation: {step.reason}",
                                data=step.data)  # fmt: skip
        if step.give_up is not None:
            return self._retry_or_give_up(ctx, step.give_up)
        return self._retry(ctx, step.reason, EventState.RECONCILING)

    def _recorder(self, ctx: Context, purpose: str) -> LedgerRecorder:
        return LedgerRecorder(self.ledger, ctx.event_id, purpose, self.clock, ctx.count)

    def _rejected(self, ctx: Context, exc: PlatformRejected) -> Disposition:
        return self._finish(ctx, Outcome.FAILED, rt_code=exc.rt_code, rt_msg=exc.rt_msg,
                            data=exc.data)  # fmt: skip

    # --- retries, dead letters, results -------------------------------------------------------

    def _retry_or_give_up(self, ctx: Context, exc: HuiminError) -> Disposition:
        if self._call_attempts(ctx.event_id) >= self.settings.max_attempts:
            return self._give_up(ctx, exc, reason="retries_exhausted")
        return self._retry(ctx, str(exc))

    def _call_attempts(self, event_id: str) -> int:
        return sum(1 for a in self.ledger.attempts(event_id) if a.purpose == "call")

    def _retry(
        self, ctx: Context, why: str, state: EventState = EventState.WAITING
    ) -> Disposition:
        work_class = ctx.prepared.event.event_type.work_class
        step = self.topology.retry_step(work_class, ctx.retry + 1, self.rng)
        now = self.clock()
        self.ledger.set_state(ctx.event_id, state, now)
        self.ledger.record(ctx.event_id, "retry_scheduled",
                           {"retry": ctx.retry + 1, "queue": step.queue, "why": why}, now)
        self.ledger.release_lease(ctx.event_id, self.owner)
        headers = {**ctx.delivery.headers, H_RETRY: ctx.retry + 1,
                   H_ROUTING_KEY: ctx.event_type}  # fmt: skip
        message = Outgoing("", step.queue, ctx.delivery.body, without_broker_headers(headers),
                           message_id=ctx.event_id, expiration_ms=step.expiration_ms)
        return Disposition((message,), event_id=ctx.event_id, event_type=ctx.event_type,
                           label="retry", retry=ctx.retry + 1,
                           trans_code=ctx.prepared.trans_code)  # fmt: skip

    def _give_up(self, ctx: Context, exc: HuiminError, reason: str | None = None) -> Disposition:
        reason = reason or exc.reason
        errors = getattr(exc, "errors", ())
        rt_code = getattr(exc, "rt_code", None)
        finished = self._finish(ctx, Outcome.FAILED, rt_code=rt_code,
                                rt_msg=f"{reason}: {exc}", errors=errors)  # fmt: skip
        dead = self._dead_letter(ctx.delivery, ctx.event_id, ctx.event_type, reason, str(exc))
        self.ledger.record(ctx.event_id, "dead_lettered", {"reason": reason}, self.clock())
        return _prepend(dead, finished, "dead_lettered", reason)

    def _invalid(self, delivery: Delivery, exc: InvalidEvent) -> Disposition:
        event_id, event_type = ev.read_identity(delivery.body)
        dead = self._dead_letter(delivery, event_id, event_type, exc.reason, _describe(exc))
        if not (event_id and event_type):
            return Disposition((dead,), label="dead_lettered", reason=exc.reason)
        record = self.ledger.begin_event(self._invalid_event(delivery, event_id, event_type))
        if record.record.state is EventState.COMPLETED and record.kind == "existing":
            return _prepend(dead, self._publish_result(
                event_id, Result.model_validate(record.record.result), "republished"),
                "dead_lettered", exc.reason)  # fmt: skip
        result = build_result(
            event_id=event_id, event_type=event_type, trans_code=None, outcome=Outcome.FAILED,
            at=self.clock(), attempts=0, rt_msg=str(exc), errors=exc.errors,
        )  # fmt: skip
        stored = self.ledger.complete_event(event_id, result.outcome.value,
                                            result.model_dump(mode="json"), self.clock())
        self.ledger.record(event_id, "dead_lettered", {"reason": exc.reason}, self.clock())
        published = self._publish_result(event_id, Result.model_validate(stored.result), "failed")
        return _prepend(dead, published, "dead_lettered", exc.reason)

    def _invalid_event(self, delivery: Delivery, event_id: str, event_type: str) -> NewEvent:
        return NewEvent(
            event_id=event_id, event_type=event_type,
            trans_code=None, payload={"raw": delivery.body.decode("utf-8", "replace")},
            payload_hash=INVALID_PAYLOAD_HASH, business_key=None, keys={}, received_at=self.clock(),
        )  # fmt: skip

    def _dead_letter(
        self, delivery: Delivery, event_id: str | None, event_type: str | None,
        reason: str, error: str,
    ) -> Outgoing:  # fmt: skip
        attempts = len(self.ledger.attempts(event_id)) if event_id else 0
        headers = {
            **delivery.headers,
            H_REASON: reason, H_ERROR: error[:1000], H_ATTEMPTS: attempts,
            H_ROUTING_KEY: delivery.headers.get(H_ROUTING_KEY) or delivery.routing_key,
            H_WORK_QUEUE: work_queue_for(event_type or "") or delivery.queue,
        }  # fmt: skip
        return Outgoing("", DEAD_LETTER_QUEUE, delivery.body, without_broker_headers(headers),
                        message_id=event_id)  # fmt: skip

    def _finish(
        self, ctx: Context, outcome: Outcome, *, rt_code: str | None = None,
        rt_msg: str | None = None, data: dict[str, Any] | None = None,
        errors: tuple[FieldError, ...] = (),
    ) -> Disposition:  # fmt: skip
        """Store the one final result (first writer wins), then publish it."""
        now = self.clock()
        result = build_result(
            event_id=ctx.event_id, event_type=ctx.event_type, trans_code=ctx.prepared.trans_code,
            outcome=outcome, at=now, attempts=self._attempts_made(ctx),
            rt_code=rt_code, rt_msg=rt_msg, data=data, errors=errors,
        )  # fmt: skip
        stored = self.ledger.complete_event(
            ctx.event_id, outcome.value, result.model_dump(mode="json"), now,
            keys=ev.trace_keys(data) if data else None, release_owner=self.owner,
        )  # fmt: skip
        # first writer wins: publish what the ledger holds, which is ours unless another
        # worker completed the event first
        mine = stored.result and stored.result.get("resultId") == result.resultId
        final = result if mine else Result.model_validate(stored.result)
        return self._publish_result(ctx.event_id, final, final.outcome.value,
                                    occurred_at=ctx.prepared.event.occurredAt)  # fmt: skip

    def _attempts_made(self, ctx: Context) -> int:
        if ctx.fresh:
            return ctx.count.total
        return len(self.ledger.attempts(ctx.event_id))

    def _publish_result(
        self, event_id: str, result: Result, label: str, occurred_at: datetime | None = None
    ) -> Disposition:
        message = Outgoing(
            RESULTS_EXCHANGE, result.routing_key, result_body(result),
            message_id=result.resultId, correlation_id=event_id,
        )  # fmt: skip

        def published() -> None:
            self.ledger.mark_result_published(event_id, self.clock(),
                                              journal={"resultId": result.resultId})

        return Disposition(
            (message,), on_confirmed=published, event_id=event_id, event_type=result.type,
            label=label, outcome=None if label == "republished" else result.outcome.value,
            trans_code=result.transCode, attempts=result.attempts, occurred_at=occurred_at,
        )  # fmt: skip


def _prepend(message: Outgoing, disposition: Disposition, label: str, reason: str) -> Disposition:
    return replace(disposition, messages=(message, *disposition.messages), label=label,
                   reason=reason)  # fmt: skip


def _log_finished(delivery: Delivery, disposition: Disposition) -> None:
    """One line per finished delivery; the ids go in `extra` for the JSON formatter (masked by
    the logging filter like the message)."""
    finished = disposition.finished_as
    fields = {
        "event_id": disposition.event_id or delivery.message_id,
        "event_type": disposition.event_type or delivery.routing_key,
        "trans_code": disposition.trans_code, "outcome": finished,
        "attempts": disposition.attempts, "retry": disposition.retry, "reason": disposition.reason,
    }  # fmt: skip
    needs_a_look = finished in ("unknown", "requeued") or disposition.reason is not None
    log.log(logging.WARNING if needs_a_look else logging.INFO, "delivery finished: %s", finished,
            extra={k: v for k, v in fields.items() if v is not None})  # fmt: skip


def _check_routing(event: ev.Event, delivery: Delivery) -> None:
    """The body's type must be the routing key it was published with: otherwise a payment
    could travel on the claims queue, or one transaction be run for another."""
    routed = delivery.headers.get(H_ROUTING_KEY) or delivery.routing_key
    if routed != event.type:
        message = f"event type {event.type!r} was published with routing key {routed!r}"
        raise InvalidEvent(message, (FieldError("type", message),))


def _describe(exc: InvalidEvent) -> str:
    details = "; ".join(f"{e.field}: {e.message}" for e in exc.errors)
    return f"{exc}" + (f" ({details})" if details else "")
