"""The one builder of a dead-letter message: the delivery's body unchanged, why in headers.

The processor (invalid events, give-ups) and the engine (a handler that raised, a Disposition
that could not be published) both dead-letter through it, so the operator's tools read one
format. Identifiers are checked before they reach a header or `message_id`.
"""

from __future__ import annotations

from worker.broker.messages import Delivery, Outgoing, without_broker_headers
from worker.broker.topology import (
    DEAD_LETTER_QUEUE,
    H_ATTEMPTS,
    H_ERROR,
    H_REASON,
    H_ROUTING_KEY,
    H_WORK_QUEUE,
    work_queue_for,
)
from worker.contract.identifiers import event_id_or_none, printable, shortstr_or_none

#: x-huimin-error holds at most this many characters
ERROR_MAX = 1000


def dead_letter(
    delivery: Delivery,
    *,
    reason: str,
    error: str,
    routing_key: str,
    attempts: int = 0,
    event_id: str | None = None,
    event_type: str | None = None,
) -> Outgoing:
    """`routing_key` is the event's original routing key (its type), as the caller trusts it."""
    headers = {
        **without_broker_headers(delivery.headers),
        H_REASON: reason,
        H_ERROR: printable(error, ERROR_MAX),
        H_ATTEMPTS: attempts,
        H_ROUTING_KEY: shortstr_or_none(routing_key) or "",
        H_WORK_QUEUE: work_queue_for(event_type or "") or delivery.queue,
    }
    return Outgoing(
        "", DEAD_LETTER_QUEUE, delivery.body, headers, message_id=event_id_or_none(event_id)
    )
