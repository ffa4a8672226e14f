"""`dlq replay`: dead letters back to their work queues, at most once per dead-lettered message.

For each selected message:

    1. re-validate it through the worker's own intake path (pipeline/intake.py); an event still
       invalid stays in the dead-letter queue, with the reason printed;
    2. check the ledger: a message already replayed is never published again (below); an event
       recorded as invalid, or under the same eventId with another payload, is refused;
    3. ledger first: a failed/unknown event is reopened (result set aside in the journal,
       attempts kept, so a money call is reconciled by its status query before any send); an
       event the ledger never saw is recorded as the worker would;
    4. the marker: a `replayed` journal entry naming this message's fingerprint, the operator
       and the time, committed BEFORE the publish;
    5. publish the body unchanged (same eventId, same x-huimin-routing-key) to the event's work
       queue, persistent, and wait for RabbitMQ's confirm; the worker signs at send time;
    6. `replay_published` in the journal, then ack the dead letter.

At most once: a crash anywhere from 4 on leaves the dead letter in the queue WITH its marker.
A later replay finds the marker and does not publish again: with `replay_published` the copy is
known to be on the work queue, so the dead letter is removed as a duplicate; without it the
replay is in doubt, the message stays, and the operator decides (`trace`, then `purge --id`).
Nothing is lost meanwhile: after step 3 the event is unfinished in the ledger, so the worker's
sweeper re-injects it if the copy never arrived. A new dead-lettering of the same event after a
replay is a different message (its x-huimin-replays generation, and usually attempts and
error, differ), so it can be replayed in its turn.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from worker.broker.messages import Outgoing, without_broker_headers
from worker.broker.topology import (
    H_ATTEMPTS,
    H_ERROR,
    H_HANDLER_ERRORS,
    H_REASON,
    H_RETRY,
    H_ROUTING_KEY,
    H_WORK_QUEUE,
    work_queue_name,
)
from worker.clock import Clock
from worker.contract import events as ev
from worker.errors import ConfigurationError, InvalidEvent
from worker.ledger.base import EventRecord, EventState, Ledger
from worker.logs import mask
from worker.ops.dead_letters import H_REPLAYED_BY, H_REPLAYS, DeadLetter, Selection
from worker.ops.dlq import HeldQueue, Session, browsing, select
from worker.pipeline import intake
from worker.settings import Settings

ReplayStatus = Literal[
    "replayed", "would_replay", "invalid", "refused", "in_doubt", "duplicate_removed"
]
LedgerAction = Literal["record", "reopen", "resume", "republish"]
#: what the worker will do with the replayed event, per ledger action
ACTION_TEXT: dict[str, str] = {
    "record": "new to the ledger: recorded, then processed as a first delivery",
    "reopen": "result reopened: processed again (a money call reconciles before any send)",
    "resume": "unfinished in the ledger: the worker continues it (a money call reconciles)",
    "republish": "already succeeded: the worker republishes the stored result, no call",
}
#: the dead-lettering's own headers, and RabbitMQ's bookkeeping, do not travel with a replay
_DROPPED = (H_REASON, H_ERROR, H_ATTEMPTS, H_WORK_QUEUE, H_RETRY, H_HANDLER_ERRORS)
INVALID_HASH = intake.INVALID_PAYLOAD_HASH  # how the worker records an event it refused


@dataclass(frozen=True)
class ReplayOptions:
    selection: Selection
    operator: str
    rate_per_s: float
    limit: int | None = None
    dry_run: bool = False


@dataclass(frozen=True)
class ReplayLine:
    letter: DeadLetter
    status: ReplayStatus
    detail: str
    work_queue: str | None = None


@dataclass(frozen=True)
class Target:
    """A dead letter that is a valid event: where and how it goes back."""

    prepared: ev.PreparedEvent
    routing_key: str
    work_queue: str

    @property
    def event_id(self) -> str:
        return self.prepared.event.eventId


class Pacer:
    """At most `rate_per_s` publishes per second, evenly spaced."""

    def __init__(
        self,
        rate_per_s: float,
        *,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate_per_s <= 0:
            raise ValueError("the replay rate must be positive")
        self.interval, self.sleep, self.monotonic = 1.0 / rate_per_s, sleep, monotonic
        self.next_at: float | None = None

    def wait(self) -> None:
        now = self.monotonic()
        if self.next_at is not None and now < self.next_at:
            self.sleep(self.next_at - now)
            now = self.next_at
        self.next_at = now + self.interval


def replay(
    settings: Settings,
    ledger: Ledger,
    options: ReplayOptions,
    *,
    clock: Clock,
    pacer: Pacer | None = None,
    queue: HeldQueue | None = None,
) -> list[ReplayLine]:
    """`queue`: an open dead-letter queue (its caller closes it); by default RabbitMQ's."""
    pacer = pacer or Pacer(options.rate_per_s)
    with browsing(settings, queue) as session:
        replayer = Replayer(settings, ledger, session, options, clock, pacer)
        return replayer.run(select(session.letters, options.selection, ledger))


class Replayer:
    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        session: Session,
        options: ReplayOptions,
        clock: Clock,
        pacer: Pacer,
    ) -> None:
        self.settings, self.ledger, self.session = settings, ledger, session
        self.options, self.clock, self.pacer = options, clock, pacer
        self._known_queues: set[str] = set()

    def run(self, letters: list[DeadLetter]) -> list[ReplayLine]:
        lines: list[ReplayLine] = []
        sent = 0
        for letter in letters:
            if self.options.limit is not None and sent >= self.options.limit:
                break  # the rest stays in the queue untouched
            line = self.one(letter)
            sent += line.status in ("replayed", "would_replay")
            lines.append(line)
        return lines

    def one(self, letter: DeadLetter) -> ReplayLine:
        try:
            target = validate(letter, self.settings)
        except InvalidEvent as exc:
            return ReplayLine(letter, "invalid", f"still invalid, left in the queue: {_why(exc)}")
        earlier = self._earlier_replay(letter, target)
        if earlier is not None:
            return earlier
        record = self.ledger.get_event(target.event_id)
        refusal = refusal_for(record, target)
        if refusal is not None:
            return ReplayLine(letter, "refused", refusal + "; left in the queue")
        action = ledger_action(record)
        if self.options.dry_run:
            return ReplayLine(letter, "would_replay", ACTION_TEXT[action], target.work_queue)
        return self._replay(letter, target, action)

    def _earlier_replay(self, letter: DeadLetter, target: Target) -> ReplayLine | None:
        kinds = {
            e.kind
            for e in self.ledger.journal(target.event_id)
            if e.detail.get("message") == letter.fingerprint
        }
        if "replay_published" in kinds:
            return self._duplicate(letter, target)
        if "replayed" in kinds:
            return ReplayLine(
                letter,
                "in_doubt",
                "a replay of this very message started but "
                "its publish was never confirmed: not replayed again; check "
                f"`trace {target.event_id}`, then `dlq purge --id "
                f"{letter.label} --yes`",
            )
        return None

    def _duplicate(self, letter: DeadLetter, target: Target) -> ReplayLine:
        """Replayed and confirmed, but the tool stopped before its ack: only a leftover."""
        if self.options.dry_run:
            return ReplayLine(
                letter,
                "duplicate_removed",
                "already replayed and confirmed: this leftover copy would be removed, not replayed",
            )
        self._remove_duplicate(letter, target)
        return ReplayLine(
            letter,
            "duplicate_removed",
            "already replayed and confirmed (the "
            "tool stopped before its ack): this leftover copy removed",
        )

    def _remove_duplicate(self, letter: DeadLetter, target: Target) -> None:
        detail = {"message": letter.fingerprint, "operator": self.options.operator}
        self.ledger.record(target.event_id, "replay_duplicate_removed", detail, self.clock())
        self.session.ack(letter)

    def _replay(self, letter: DeadLetter, target: Target, action: LedgerAction) -> ReplayLine:
        self._check_queue(target.work_queue)
        self.pacer.wait()
        self._prepare_ledger(target, action, letter)
        marker = marker_detail(letter, target, action, self.options.operator)
        self.ledger.record(target.event_id, "replayed", marker, self.clock())
        self.session.queue.publish(replay_message(letter, target, self.options.operator))
        self.ledger.record(
            target.event_id, "replay_published", {"message": letter.fingerprint}, self.clock()
        )
        self.session.ack(letter)
        return ReplayLine(letter, "replayed", ACTION_TEXT[action], target.work_queue)

    def _check_queue(self, name: str) -> None:
        if name not in self._known_queues:
            if not self.session.queue.queue_exists(name):
                raise ConfigurationError(
                    f"work queue {name} does not exist on this vhost: "
                    "start the worker once (it declares its queues)"
                )
            self._known_queues.add(name)

    def _prepare_ledger(self, target: Target, action: LedgerAction, letter: DeadLetter) -> None:
        now = self.clock()
        if action == "record":
            self.ledger.begin_event(intake.new_event(target.prepared, now))
        elif action == "reopen":
            note = {
                "by": "dlq replay",
                "operator": self.options.operator,
                "message": letter.fingerprint,
            }
            self.ledger.reopen_event(target.event_id, now, note)


def validate(letter: DeadLetter, settings: Settings) -> Target:
    """The worker's own checks, in its order; InvalidEvent says what is wrong."""
    if letter.event_id is None:
        raise InvalidEvent("the body has no readable eventId")
    rules = intake.IntakeRules.from_settings(settings)
    prepared = intake.admit(letter.message.body, letter.routing_key or "", None, rules)
    return Target(prepared, prepared.event.type, work_queue_of(prepared.event))


def work_queue_of(event: ev.Event) -> str:
    # the event type decides, as when the HIS published it; x-huimin-work-queue says the same
    # unless the topology moved the type since (then the type's queue today is the right one)
    return work_queue_name(event.event_type.work_class)


def refusal_for(record: EventRecord | None, target: Target) -> str | None:
    if record is None:
        return None
    if record.payload_hash == INVALID_HASH:
        return (
            "the worker recorded this eventId as invalid, so the ledger holds no "
            "idempotency key for it: ask the HIS to send it again under a new eventId"
        )
    if record.payload_hash != target.prepared.payload_hash:
        return (
            "the ledger holds this eventId with a different payload: replaying it could "
            "run another transaction under the same id"
        )
    return None


def ledger_action(record: EventRecord | None) -> LedgerAction:
    if record is None:
        return "record"
    if record.state is not EventState.COMPLETED:
        return "resume"
    return "republish" if record.outcome == "succeeded" else "reopen"


def marker_detail(letter: DeadLetter, target: Target, action: str, operator: str) -> dict:
    return {
        "message": letter.fingerprint,
        "operator": operator,
        "reason": letter.reason,
        "error": mask(letter.error)[:300],
        "attempts": letter.attempts,
        "generation": letter.replays + 1,
        "workQueue": target.work_queue,
        "ledger": action,
    }


def replay_message(letter: DeadLetter, target: Target, operator: str) -> Outgoing:
    kept = {
        k: v for k, v in without_broker_headers(letter.message.headers).items() if k not in _DROPPED
    }
    headers = {
        **kept,
        H_ROUTING_KEY: target.routing_key,
        H_REPLAYS: letter.replays + 1,
        H_REPLAYED_BY: operator,
    }
    return Outgoing("", target.work_queue, letter.message.body, headers, message_id=target.event_id)


def _why(exc: InvalidEvent) -> str:
    return mask(intake.describe(exc))
