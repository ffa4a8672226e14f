"""`dlq list | show | purge | history`: read and clean the dead-letter queue (replay: replay.py).

Every command browses the queue (broker.py: a snapshot held unacked, then given back), so
listing and showing never lose or reorder-away a message; purge acks only what it removed.
Each takes an optional open `queue` (HeldQueue: memory_dlq.py's on the in-memory broker);
without one it opens RabbitMQ's per settings.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from worker.broker.messages import Outgoing, QueuedMessage
from worker.clock import Clock
from worker.contract.identifiers import event_id_or_none
from worker.errors import BrokerUnavailable, ConfigurationError
from worker.ledger import (
    AttemptRecord,
    EventRecord,
    EventStore,
    JournalEntry,
    Ledger,
    LedgerQueries,
    open_ledger,
)
from worker.logs import mask
from worker.ops.broker import DeadLetterQueue
from worker.ops.dead_letters import DeadLetter, Group, Selection, by_event, group, read_dead_letter
from worker.settings import Settings

#: the journal kinds that make up the operations audit trail (`dlq history`)
AUDIT_KINDS = ("replayed", "purged", "replay_duplicate_removed")


class HeldQueue(Protocol):
    """What a browse needs of the dead-letter queue: ops/broker.py's DeadLetterQueue on
    RabbitMQ, ops/memory_dlq.py's on the in-memory broker (tests, the demo)."""

    def browse(self, limit: int | None = None) -> list[QueuedMessage]: ...
    def ack(self, message: QueuedMessage) -> None: ...
    def release(self, messages: list[QueuedMessage]) -> None: ...
    def queue_exists(self, name: str) -> bool: ...
    def publish(self, message: Outgoing) -> None: ...


@dataclass
class Session:
    """One browse of the dead-letter queue; whatever is not acked goes back at the end."""

    queue: HeldQueue
    letters: list[DeadLetter]
    acked: set[int] = field(default_factory=set)

    def ack(self, letter: DeadLetter) -> None:
        self.queue.ack(letter.message)
        self.acked.add(letter.message.tag)

    def release_rest(self) -> None:
        rest = [x.message for x in self.letters if x.message.tag not in self.acked]
        try:
            self.queue.release(rest)
        except BrokerUnavailable:
            pass  # the connection is gone, and with it our hold: RabbitMQ has requeued them


@contextmanager
def browsing(settings: Settings, queue: HeldQueue | None = None) -> Iterator[Session]:
    """`queue`: an open queue, which its caller closes; by default RabbitMQ's, per settings."""
    with ExitStack() as opened:
        if queue is None:
            url = settings.broker_url.get_secret_value()
            confirm_timeout = settings.confirm_timeout_s
            queue = opened.enter_context(DeadLetterQueue(url, confirm_timeout=confirm_timeout))
        session = Session(queue, [read_dead_letter(m) for m in queue.browse()])
        try:
            yield session
        finally:
            session.release_rest()


@contextmanager
def opened_ledger(settings: Settings) -> Iterator[Ledger]:
    """The worker's ledger; a SQLite file that does not exist is a wrong URL, not a new ledger."""
    url = settings.ledger_url.get_secret_value()
    if url.lower().startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).exists():
        raise ConfigurationError(
            f"no ledger file at {url[len('sqlite:///') :]}: check "
            "HUIMIN_LEDGER_URL (the worker's own ledger)"
        )
    ledger = open_ledger(url)
    try:
        ledger.migrate()  # additive and idempotent; a newer tool may bring an index
        yield ledger
    finally:
        ledger.close()


def default_operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers): the uid is still someone
        return f"uid:{os.getuid()}"


def dead_lettered_at(letter: DeadLetter, ledger: EventStore | None) -> datetime | None:
    """RabbitMQ's own time (x-death) if it dead-lettered it, else the ledger's last change."""
    if letter.dead_lettered_at is not None or ledger is None or letter.event_id is None:
        return letter.dead_lettered_at
    record = ledger.get_event(letter.event_id)
    return None if record is None else record.updated_at


def select(
    letters: list[DeadLetter], selection: Selection, ledger: EventStore | None
) -> list[DeadLetter]:
    def when(letter: DeadLetter) -> datetime | None:
        return dead_lettered_at(letter, ledger) if selection.since is not None else None

    return [letter for letter in letters if selection.matches(letter, when(letter))]


# --- list ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Listing:
    total: int
    selected: list[DeadLetter]

    @property
    def groups(self) -> list[Group]:
        return group(self.selected)


def list_dead_letters(
    settings: Settings,
    selection: Selection,
    ledger: EventStore | None = None,
    queue: HeldQueue | None = None,
) -> Listing:
    with browsing(settings, queue) as session:
        return Listing(len(session.letters), select(session.letters, selection, ledger))


# --- show ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventView:
    """The ledger's view of one event."""

    record: EventRecord | None
    attempts: list[AttemptRecord]
    journal: list[JournalEntry]


@dataclass(frozen=True)
class ShowReport:
    event_id: str
    letters: list[DeadLetter]
    ledger: EventView


def ledger_view(ledger: Ledger, event_id: str) -> EventView:
    return EventView(
        ledger.get_event(event_id), ledger.attempts(event_id), ledger.journal(event_id)
    )


def show(
    settings: Settings, ledger: Ledger, event_id: str, queue: HeldQueue | None = None
) -> ShowReport:
    with browsing(settings, queue) as session:
        letters = by_event(session.letters, event_id)
    own_id = next((x.event_id for x in letters if x.event_id), event_id)
    return ShowReport(own_id, letters, ledger_view(ledger, own_id))


# --- purge ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Purged:
    letter: DeadLetter
    journaled: bool  # the ledger's journal recorded the purge (always, once confirmed)


def purge(
    settings: Settings,
    ledger: EventStore,
    selection: Selection,
    *,
    operator: str,
    confirmed: bool,
    clock: Clock,
    queue: HeldQueue | None = None,
) -> list[Purged]:
    """Remove the selected dead letters (only with `confirmed`; else just say which)."""
    if not selection.explicit:
        raise ValueError("purge needs a filter (--type, --reason, --id, --since) or --all")
    with browsing(settings, queue) as session:
        chosen = select(session.letters, selection, ledger)
        if not confirmed:
            return [Purged(letter, journaled=False) for letter in chosen]
        return [_purge_one(session, ledger, letter, operator, clock) for letter in chosen]


def _purge_one(
    session: Session, ledger: EventStore, letter: DeadLetter, operator: str, clock: Clock
) -> Purged:
    # journal first: a crash before the ack leaves the message AND the audit line
    ledger.record(journal_id(letter), "purged", purge_detail(letter, operator), clock())
    session.ack(letter)
    return Purged(letter, journaled=True)


def journal_id(letter: DeadLetter) -> str:
    """Under which id a purge is journaled: the eventId when it has the contract's shape (an
    event the ledger may not know), else the label `dlq list` shows for it (#<key>): an
    unreadable message is purged on the record too, and an oversized or NUL-bearing "eventId"
    never reaches a SQL row."""
    return event_id_or_none(letter.event_id) or f"#{letter.key}"


def purge_detail(letter: DeadLetter, operator: str) -> dict:
    return {
        "message": letter.fingerprint,
        "key": letter.key,
        "operator": operator,
        "type": letter.event_type,
        "reason": letter.reason,
        "error": mask(letter.error)[:300],
        "attempts": letter.attempts,
    }


# --- history -------------------------------------------------------------------------------------


def history(ledger: LedgerQueries, since: datetime | None, limit: int) -> list[JournalEntry]:
    """Who replayed and purged what, newest first."""
    entries = [e for kind in AUDIT_KINDS for e in ledger.journal_by_kind(kind, since, limit)]
    entries.sort(key=lambda e: (e.at, e.entry_id), reverse=True)
    return entries[:limit]
