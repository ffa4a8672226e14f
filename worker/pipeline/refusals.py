"""A delivery intake refused: dead-lettered with its reason, answered only when that is safe.

    identity unreadable            dead letter only (nothing can carry a result)
    eventId new to the ledger      recorded completed with a `failed` result in one transaction,
                                   dead letter + result
    the same refused event again   its stored `failed` result again (its ack was lost)
    eventId held as a valid event  an invalid copy: dead-lettered `invalid_copy`; the event's
                                   state and result stay with the delivery that owns it

The ledger enforces the last rule (`record_refused` never touches a known eventId), not only
this module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from worker.broker.messages import Delivery, Disposition, Outgoing
from worker.clock import Clock

#: (event_id, result, label) -> the Disposition that publishes it: the processor's one way
#: (event_id, result, label) -> the Disposition that publishes it: the processor's one way
from worker.contract.results import Outcome, Result, build_result
from worker.errors import InvalidCopy, InvalidEvent
from worker.ledger.base import EventRecord, EventStore, NewEvent
from worker.pipeline import intake
from worker.pipeline.dead_letter import dead_letter

#: (event_id, result, label) -> the Disposition that publishes it: the processor's one way
PublishResult = Callable[[str, Result, str], Disposition]


class Refusals:
    def __init__(
        self, ledger: EventStore, clock: Clock, rules: intake.IntakeRules, publish: PublishResult
    ) -> None:
        self.ledger, self.clock, self.rules, self.publish = ledger, clock, rules, publish

    def refuse(self, delivery: Delivery, exc: InvalidEvent) -> Disposition:
        who = intake.identity(delivery.body, self.rules)
        dead = self.dead_letter(
            delivery, who.event_id, who.event_type, exc.reason, intake.describe(exc)
        )
        if who.event_id is None or who.event_type is None:
            return Disposition((dead,), label="dead_lettered", reason=exc.reason)
        now = self.clock()
        result = build_result(
            event_id=who.event_id,
            event_type=who.event_type,
            trans_code=None,
            outcome=Outcome.FAILED,
            at=now,
            attempts=0,
            rt_msg=str(exc),
            errors=exc.errors,
        )
        begin = self.ledger.record_refused(
            _refused_event(delivery, who, now),
            result.outcome.value,
            result.model_dump(mode="json"),
            now,
        )
        if begin.kind != "new":
            return self._known(delivery, who, exc, begin.record)
        self.ledger.record(who.event_id, "dead_lettered", {"reason": exc.reason}, now)
        return prepend(dead, self.publish(who.event_id, result, "failed"), exc.reason)

    def _known(
        self, delivery: Delivery, who: intake.Identity, exc: InvalidEvent, record: EventRecord
    ) -> Disposition:
        event_id = record.event_id
        if record.payload_hash == intake.INVALID_PAYLOAD_HASH and record.result:
            dead = self.dead_letter(
                delivery, event_id, who.event_type, exc.reason, intake.describe(exc)
            )
            stored = Result.model_validate(record.result)
            return prepend(dead, self.publish(event_id, stored, "republished"), exc.reason)
        why = (
            f"invalid copy of event {event_id}, which the ledger holds as a valid event "
            f"({record.state.value}); its outcome stays with the delivery that owns it: "
            f"{intake.describe(exc)}"
        )
        copy = InvalidCopy.reason
        self.ledger.record(event_id, copy, {"reason": exc.reason, "error": why[:300]}, self.clock())
        dead = self.dead_letter(delivery, event_id, record.event_type, copy, why)
        return Disposition(
            (dead,),
            event_id=event_id,
            event_type=record.event_type,
            label="dead_lettered",
            reason=copy,
        )

    def dead_letter(
        self,
        delivery: Delivery,
        event_id: str | None,
        event_type: str | None,
        reason: str,
        error: str,
    ) -> Outgoing:
        attempts = len(self.ledger.attempts(event_id)) if event_id else 0
        return dead_letter(
            delivery,
            reason=reason,
            error=error,
            attempts=attempts,
            routing_key=intake.routed_key(delivery),
            event_id=event_id,
            event_type=event_type,
        )


def _refused_event(delivery: Delivery, who: intake.Identity, at: datetime) -> NewEvent:
    assert who.event_id is not None and who.event_type is not None
    return NewEvent(
        event_id=who.event_id,
        event_type=who.event_type,
        trans_code=None,
        payload=intake.kept_raw(delivery.body),
        payload_hash=intake.INVALID_PAYLOAD_HASH,
        business_key=None,
        keys={},
        received_at=at,
    )


def prepend(message: Outgoing, disposition: Disposition, reason: str) -> Disposition:
    """The dead letter goes out with the result, and the delivery counts as dead-lettered."""
    return replace(
        disposition, messages=(message, *disposition.messages), label="dead_lettered", reason=reason
    )
