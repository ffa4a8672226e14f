"""The sweeper: recovery that does not depend on redelivery alone.

Run at start and every HUIMIN_SWEEP_INTERVAL_S in the engine's pool, it
* re-injects events left unfinished (a crashed worker, a lost retry message) into their work
  queue: the processor then reconciles a money call by its status query, never re-sends it
  blindly, and the ledger makes the re-injection idempotent;
* republishes results that were stored but whose publish was never confirmed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import timedelta

from worker.broker.messages import Delivery, Disposition, Outgoing
from worker.broker.result_message import result_message
from worker.broker.topology import H_RETRY, H_ROUTING_KEY, work_queue_for
from worker.clock import Clock
from worker.contract.events import read_identity
from worker.contract.identifiers import event_id_or_none, printable
from worker.contract.results import Result
from worker.ledger.base import EventRecord, EventState, EventStore
from worker.protocol.registry import EVENT_TYPES

log = logging.getLogger(__name__)


class Sweeper:
    def __init__(
        self, ledger: EventStore, clock: Clock, grace: timedelta, batch: int = 100
    ) -> None:
        self.ledger, self.clock, self.grace, self.batch = ledger, clock, grace, batch

    def sweep(self) -> Disposition | None:
        unpublished = self._unpublished_results()
        messages = [*self._stale_events(), *(self._result(r) for r in unpublished)]
        if not messages:
            return None
        log.info("sweeper re-injected %d message(s)", len(messages))

        def published() -> None:
            for record in unpublished:
                self.ledger.mark_result_published(record.event_id, self.clock())

        return Disposition(tuple(messages), on_confirmed=published, label="swept")

    def _stale_events(self) -> list[Outgoing]:
        now = self.clock()
        stale = self.ledger.unfinished_events(now - self.grace, self.batch)
        return [m for record in stale if (m := self._reinject(record)) is not None]

    def _reinject(self, record: EventRecord) -> Outgoing | None:
        queue = work_queue_for(record.event_type)
        if queue is None or record.event_type not in EVENT_TYPES or not _well_formed(record):
            return None
        now = self.clock()
        self.ledger.set_state(record.event_id, record.state, now)  # touch: not again next sweep
        self.ledger.record(record.event_id, "swept", {"state": record.state.value}, now)
        body = json.dumps(record.payload, ensure_ascii=False).encode("utf-8")
        headers = {H_RETRY: 1, H_ROUTING_KEY: record.event_type}
        return Outgoing("", queue, body, headers, message_id=record.event_id)

    def _unpublished_results(self) -> list[EventRecord]:
        cutoff = self.clock() - self.grace
        records = self.ledger.unpublished_results(self.batch)
        return [r for r in records if r.updated_at < cutoff and r.result and _well_formed(r)]

    def _result(self, record: EventRecord) -> Outgoing:
        return result_message(Result.model_validate(record.result), record.event_id)


def _well_formed(record: EventRecord) -> bool:
    """A ledger written before intake checked identifiers may hold an eventId that cannot go
    into an AMQP header (it stopped the worker at every start): left for an operator."""
    if event_id_or_none(record.event_id) is not None:
        return True
    log.warning(
        "sweeper skips event %s: its eventId is malformed (trace it, then fix by hand)",
        printable(record.event_id),
    )
    return False


def parker(ledger: EventStore, clock: Clock) -> Callable[[Delivery, str], None]:
    """What the engine calls once a dead letter of its own (handler_error, unpublishable) is
    confirmed: the event, if the ledger holds it unfinished, is parked, so the sweeper does not
    re-inject it every few minutes (each time to fail and be dead-lettered again); `dlq replay`
    resumes it once the cause is fixed."""

    def park(delivery: Delivery, reason: str) -> None:
        event_id = event_id_or_none(delivery.message_id) or read_identity(delivery.body)[0]
        record = None if event_id is None else ledger.get_event(event_id)
        if record is None or record.state is EventState.COMPLETED:
            return
        now = clock()
        ledger.set_state(record.event_id, EventState.PARKED, now)
        ledger.record(record.event_id, "dead_lettered", {"reason": reason, "by": "engine"}, now)

    return park
