"""`huimin-worker recheck EVENT_ID`: ask the platform again about an outcome left `unknown`.

A money call whose status queries all failed was published `unknown` for a person to look at.
Once the platform answers again, the on-call engineer re-checks it: the event is reopened in
the ledger (its old result kept in the journal, its attempts kept) and put back on its work
queue. The worker then sees a money call whose last attempt's outcome is unknown, so it asks
the status query first: it publishes the final result when the platform reports one, and sends
the payment again only if the platform says it never accepted it. Nothing is ever re-sent blind.

If the publish fails after the reopen, nothing is lost: the event is unfinished in the ledger
and the worker's sweeper re-injects it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from worker.broker.messages import Outgoing
from worker.broker.topology import H_ROUTING_KEY, work_queue_for
from worker.clock import Clock
from worker.errors import ConfigurationError, GiveUp
from worker.ledger.base import EventRecord, EventState, Ledger
from worker.ops.broker import DeadLetterQueue
from worker.protocol.registry import EVENT_TYPES


class RecheckRefused(GiveUp):
    """The event cannot be re-checked; the message says why."""

    reason = "recheck_refused"


@dataclass(frozen=True)
class Recheck:
    event_id: str
    event_type: str
    work_queue: str


def recheck(
    ledger: Ledger, queue: DeadLetterQueue, event_id: str, *, operator: str, clock: Clock
) -> Recheck:
    """Reopen an `unknown` event and queue it for the worker; RecheckRefused otherwise."""
    record = _unknown_event(ledger, event_id)
    work_queue = work_queue_for(record.event_type)
    assert work_queue is not None  # _unknown_event checked the type
    if not queue.queue_exists(work_queue):
        raise ConfigurationError(
            f"work queue {work_queue} does not exist on this vhost: "
            "start the worker once (it declares its queues)"
        )
    now = clock()
    ledger.reopen_event(event_id, now, {"by": "reconcile", "operator": operator})
    ledger.record(event_id, "reconcile_requested", {"operator": operator}, now)
    queue.publish(_message(record, work_queue, operator))
    return Recheck(event_id, record.event_type, work_queue)


def _unknown_event(ledger: Ledger, event_id: str) -> EventRecord:
    record = ledger.get_event(event_id)
    if record is None:
        raise RecheckRefused(f"the ledger has no event {event_id}")
    if record.state is not EventState.COMPLETED or record.outcome != "unknown":
        state = record.outcome or record.state.value
        raise RecheckRefused(
            f"event {event_id} is {state}: only an `unknown` outcome is "
            "re-checked (an unfinished event is still being worked on)"
        )
    if record.event_type not in EVENT_TYPES:
        raise RecheckRefused(f"event {event_id} has no work queue (type {record.event_type})")
    return record


def _message(record: EventRecord, work_queue: str, operator: str) -> Outgoing:
    body = json.dumps(record.payload, ensure_ascii=False).encode("utf-8")
    headers = {H_ROUTING_KEY: record.event_type, "x-huimin-rechecked-by": operator}
    return Outgoing("", work_queue, body, headers, message_id=record.event_id)
