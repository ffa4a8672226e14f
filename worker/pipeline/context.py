"""One delivery being processed, and the one log line that says how it finished.

Apart from processor.py so that the processor keeps to its decisions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from worker.broker.messages import Delivery, Disposition
from worker.contract import events as ev
from worker.contract.identifiers import printable
from worker.ledger.base import EventRecord
from worker.pipeline.money_calls import AttemptCount


@dataclass(frozen=True)
class Context:
    """One delivery being processed."""

    delivery: Delivery
    prepared: ev.PreparedEvent
    record: EventRecord
    retry: int  # retries so far, from the message header
    owner: str  # this delivery's lease token (Processor._delivery_owner)
    fresh: bool = False  # first sight of the event: it has no attempts before this delivery
    count: AttemptCount = field(default_factory=AttemptCount)

    @property
    def event_id(self) -> str:
        return self.prepared.event.eventId

    @property
    def event_type(self) -> str:
        return self.prepared.event.type


def log_finished(log: logging.Logger, delivery: Delivery, disposition: Disposition) -> None:
    """One line per finished delivery, on the processor's logger (`log`: log filters select
    on it); the ids go in `extra` for the JSON formatter (masked like the message)."""
    finished = disposition.finished_as
    fields = {
        # what the HIS put in message_id and the routing key is unchecked: printable only
        "event_id": disposition.event_id or printable(delivery.message_id or "") or None,
        "event_type": disposition.event_type or printable(delivery.routing_key),
        "trans_code": disposition.trans_code,
        "outcome": finished,
        "attempts": disposition.attempts,
        "retry": disposition.retry,
        "reason": disposition.reason,
    }
    if disposition.requeue:  # held while the ledger is down: the engine says it once
        return
    needs_a_look = finished == "unknown" or disposition.reason is not None
    log.log(
        logging.WARNING if needs_a_look else logging.INFO,
        "delivery finished: %s",
        finished,
        extra={k: v for k, v in fields.items() if v is not None},
    )
