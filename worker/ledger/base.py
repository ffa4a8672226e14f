"""The ledger's records and its protocols: `EventStore`, `LedgerQueries` and `Ledger`.

The ledger is the worker's idempotency and audit store. Two promises matter above all:

* a redelivered or duplicated event finds its stored result, so the platform is never called
  twice for one payment (`begin_event` + `complete_event`, first writer wins);
* every platform attempt is committed BEFORE it is sent (`start_attempt`), so a crash
  mid-payment leaves a trace to reconcile by status query instead of a blind re-send.

It is pure of clocks: every method that records a time takes it as an argument.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal, Protocol, runtime_checkable

from worker.errors import CallerError, LedgerUnavailable

BeginKind = Literal["new", "existing", "conflict", "duplicate_key"]
AttemptPurpose = Literal["call", "status_query"]
AttemptOutcome = Literal["succeeded", "rejected", "retry_safe", "unknown", "config_error"]


class EventState(StrEnum):
    RECEIVED = "received"  # recorded, no platform call yet
    IN_FLIGHT = "in_flight"  # a platform call may be outstanding (attempt started, not finished)
    RECONCILING = "reconciling"  # outcome unknown; status queries in progress
    WAITING = "waiting"  # a retry is scheduled (backoff queue)
    COMPLETED = "completed"  # result stored (final)
    # dead-lettered by the engine (handler_error, unpublishable) with no result: the sweeper
    # leaves it to a person (`dlq replay` resumes it), instead of re-injecting it for ever
    PARKED = "parked"


class UnknownEvent(CallerError, LookupError):
    """No event with this id is in the ledger: a caller bug, never worth retrying."""


class UnknownAttempt(CallerError, LookupError):
    """No attempt with this id is in the ledger: a caller bug, never worth retrying."""


class DuplicateSeqId(CallerError, ValueError):
    """A platformSeqId was used before. Nothing was sent: draw a fresh id and start again."""


@dataclass(frozen=True)
class NewEvent:
    event_id: str
    event_type: str
    trans_code: str | None
    payload: dict  # the event as received (parsed JSON)
    payload_hash: str  # hex sha256 of the canonical payload `data` (computed by the caller)
    business_key: str | None  # "HOS00003:ORD2026..."; None for events that move no money
    keys: Mapping[str, str]  # trace keys: {"orderId": ..., "treatmentSerialNo": ...}
    received_at: datetime
    # a new event is inserted already leased to the worker that received it: one transaction
    # fewer per event than begin_event + try_lease (an existing event is leased as before)
    lease_owner: str | None = None
    lease_until: datetime | None = None


@dataclass(frozen=True)
class EventRecord:
    event_id: str
    event_type: str
    trans_code: str | None
    payload: dict
    payload_hash: str
    business_key: str | None
    state: EventState
    outcome: str | None
    result: dict | None
    result_published_at: datetime | None
    received_at: datetime
    updated_at: datetime
    lease_owner: str | None
    lease_until: datetime | None
    delivery_count: int


@dataclass(frozen=True)
class Begin:
    """What `begin_event` found.

    new            first sight of this event (and of its business key, if any)
    existing       this event_id is known (a redelivery); delivery_count was incremented
    conflict       `record` is the OTHER event holding the business key, with a different
                   payload_hash: publish an idempotency-conflict failure
    duplicate_key  `record` is the OTHER event holding the business key, with the same
                   payload_hash (HIS re-sent the payment under a new eventId): mirror its result

    The incoming event is recorded in every case. Its own redelivery is "existing" once it
    has a result; until then it reports "conflict"/"duplicate_key" again, so a crash between
    `begin_event` and `complete_event` can never make it look like work to send.
    """

    kind: BeginKind
    record: EventRecord


@dataclass(frozen=True)
class AttemptRecord:
    attempt_id: int
    event_id: str
    trans_code: str
    platform_seq_id: str
    purpose: AttemptPurpose
    started_at: datetime
    finished_at: datetime | None
    duration_ms: float | None
    http_status: int | None
    rt_code: str | None
    outcome: AttemptOutcome | None
    error: str | None


@dataclass(frozen=True)
class JournalEntry:
    entry_id: int
    event_id: str
    at: datetime
    kind: str  # received, duplicate, attempt_started, ..., result_published, dead_lettered
    detail: dict


# The ledger is read and written by two kinds of code with different needs. The hot path
# (the pipeline, the gateway, the readiness probe) claims events, records attempts before
# they are sent and stores results: `EventStore`. People and reports (trace, dlq, recheck,
# the statement job, the metrics gauges) list, look up and audit: `LedgerQueries`. A module
# is typed to the half it uses, so what the hot path depends on stays visible and small.


@runtime_checkable
class EventStore(Protocol):
    """The hot path: an event's life from first sight to its published result."""

    def begin_event(self, event: NewEvent) -> Begin: ...
    def get_event(self, event_id: str) -> EventRecord | None: ...
    def try_lease(self, event_id: str, owner: str, until: datetime, at: datetime) -> bool: ...
    def release_lease(self, event_id: str, owner: str) -> None: ...
    def set_state(self, event_id: str, state: EventState, at: datetime) -> None: ...
    def start_attempt(
        self,
        event_id: str,
        trans_code: str,
        platform_seq_id: str,
        purpose: AttemptPurpose,
        at: datetime,
        *,
        owner: str | None = None,
        lease_until: datetime | None = None,
    ) -> int: ...
    # With `owner`, compare-and-set: the attempt is recorded only while `owner` holds a live
    # lease on the event (lease_until > at, not completed), and the lease is extended to at
    # least `lease_until` in the same transaction; otherwise LeaseLost and nothing recorded.
    # Without: recorded whoever holds the event (callers that take no lease).
    def finish_attempt(
        self,
        attempt_id: int,
        *,
        at: datetime,
        http_status: int | None,
        rt_code: str | None,
        outcome: AttemptOutcome,
        error: str | None,
    ) -> None: ...
    def attempts(self, event_id: str) -> list[AttemptRecord]: ...
    # `keys` are added and the lease of `release_owner` released in the same transaction.
    # With `owner`, compare-and-set: nothing is stored while another owner's lease is live
    # (the returned record is then not completed, or completed by someone else).
    def complete_event(
        self,
        event_id: str,
        outcome: str,
        result: dict,
        at: datetime,
        *,
        keys: Mapping[str, str] | None = None,
        release_owner: str | None = None,
        owner: str | None = None,
    ) -> EventRecord: ...
    # An event refused at intake, recorded already completed with its `failed` result in one
    # transaction, and only when its eventId is new ("new"); a known eventId is left exactly
    # as it is ("existing", its record): an invalid copy never decides another's event.
    def record_refused(
        self, event: NewEvent, outcome: str, result: dict, at: datetime
    ) -> Begin: ...
    # With `journal`, a journal entry of that kind is written in the same transaction.
    def mark_result_published(
        self, event_id: str, at: datetime, *, journal: dict | None = None
    ) -> None: ...
    # The sweeper's work lists: stale unfinished events, results not yet published.
    def unfinished_events(
        self, updated_before: datetime, limit: int = 100
    ) -> list[EventRecord]: ...
    def unpublished_results(self, limit: int = 100) -> list[EventRecord]: ...
    def add_keys(self, event_id: str, keys: Mapping[str, str]) -> None: ...
    def record(self, event_id: str, kind: str, detail: dict, at: datetime) -> None: ...
    # The inbound gateway's memory, committed when these return. remember_*: True the first
    # time the key is seen (INSERT ... ON CONFLICT DO NOTHING: one winner across replicas),
    # False when it was already there. A platformSeqId is remembered when its request is
    # accepted; an eventId once the platform event is published (confirmed).
    def remember_inbound_seq_id(
        self, platform_seq_id: str, trans_code: str, at: datetime
    ) -> bool: ...
    def remember_inbound_event(self, event_id: str, trans_code: str, at: datetime) -> bool: ...
    def inbound_event_known(self, event_id: str) -> bool: ...


@runtime_checkable
class LedgerQueries(Protocol):
    """Ops: listings, lookups by trace key, the audit trail, and the one write only a person
    asks for (`reopen_event`). Nothing on the hot path calls these."""

    def find_events(self, key: str, limit: int = 100) -> list[EventRecord]: ...
    def journal(self, event_id: str) -> list[JournalEntry]: ...
    # Entries of one kind (replayed, purged...), newest first: the operations audit trail.
    def journal_by_kind(
        self, kind: str, since: datetime | None = None, limit: int = 100
    ) -> list[JournalEntry]: ...
    # A failed/unknown event becomes work again (RECEIVED; result, outcome and publication time
    # cleared, the old ones kept in a `reopened` journal entry with `note`, in the same
    # transaction). Attempts and the business key stay. False: it had no result (nothing to
    # reopen). A succeeded event is never reopened (ValueError); an unknown id: UnknownEvent.
    def reopen_event(self, event_id: str, at: datetime, note: dict) -> bool: ...
    def events_by_business_key(self, business_key: str) -> list[EventRecord]: ...
    def recent_events(
        self,
        since: datetime | None = None,
        event_type: str | None = None,
        outcome: str | None = None,
        limit: int = 100,
    ) -> list[EventRecord]: ...
    def stats(self) -> dict[str, int]: ...


@runtime_checkable
class Ledger(EventStore, LedgerQueries, Protocol):
    """A whole ledger, as `open_ledger` returns it: both halves, and its own lifecycle, which
    belongs to whoever opened it (the wiring in app.py, the CLI's commands)."""

    def migrate(self) -> None: ...
    def close(self) -> None: ...


def utc(at: datetime) -> datetime:
    """Refuse naive datetimes: a ledger mixing local and UTC times cannot order its work."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"ledger times must be timezone-aware, got naive {at!r}")
    return at.astimezone(UTC)


def redelivery(record: EventRecord, holder: EventRecord | None) -> Begin:
    """Classify a known event_id; `holder` is the event holding its business key, if any."""
    if holder is None or holder.event_id == record.event_id:
        return Begin("existing", record)
    if record.state is EventState.COMPLETED:
        return Begin("existing", record)
    return duplicate(record.payload_hash, holder)


def duplicate(payload_hash: str, holder: EventRecord | None) -> Begin:
    """Another event holds the business key: same payload -> mirror it, else a conflict."""
    if holder is None:  # the claim that beat ours vanished (purged meanwhile): try again
        raise LedgerUnavailable("a business key changed hands while recording an event")
    kind: BeginKind = "duplicate_key" if holder.payload_hash == payload_hash else "conflict"
    return Begin(kind, holder)


#: `journal_by_kind` without `since`: from the beginning
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
REOPENABLE_OUTCOMES = ("failed", "unknown")


def reopenable(record: EventRecord) -> bool:
    """Whether `reopen_event` has anything to do; a succeeded event must never run again."""
    if record.state is not EventState.COMPLETED:
        return False
    if record.outcome not in REOPENABLE_OUTCOMES:
        raise ValueError(
            f"event {record.event_id} ended {record.outcome!r}: only a failed or unknown "
            "result is ever reopened (a replay of it republishes the stored result)"
        )
    return True


def reopened_detail(record: EventRecord, note: dict) -> dict:
    """The `reopened` journal entry: why (note), and the result being set aside."""
    published = record.result_published_at
    return {
        **note,
        "previous": {
            "outcome": record.outcome,
            "result": record.result,
            "resultPublishedAt": None if published is None else published.isoformat(),
        },
    }


Row = Mapping[str, Any]
LoadJson = Callable[[Any], dict]
LoadTime = Callable[[Any], datetime]


def _maybe(load: Callable[[Any], Any], value: Any) -> Any:
    return None if value is None else load(value)


def event_from_row(row: Row, load_json: LoadJson, load_time: LoadTime) -> EventRecord:
    return EventRecord(
        event_id=row["event_id"],
        event_type=row["event_type"],
        trans_code=row["trans_code"],
        payload=load_json(row["payload"]),
        payload_hash=row["payload_hash"],
        business_key=row["business_key"],
        state=EventState(row["state"]),
        outcome=row["outcome"],
        result=_maybe(load_json, row["result"]),
        result_published_at=_maybe(load_time, row["result_published_at"]),
        received_at=load_time(row["received_at"]),
        updated_at=load_time(row["updated_at"]),
        lease_owner=row["lease_owner"],
        lease_until=_maybe(load_time, row["lease_until"]),
        delivery_count=row["delivery_count"],
    )


def attempt_from_row(row: Row, load_time: LoadTime) -> AttemptRecord:
    return AttemptRecord(
        attempt_id=row["attempt_id"],
        event_id=row["event_id"],
        trans_code=row["trans_code"],
        platform_seq_id=row["platform_seq_id"],
        purpose=row["purpose"],
        started_at=load_time(row["started_at"]),
        finished_at=_maybe(load_time, row["finished_at"]),
        duration_ms=row["duration_ms"],
        http_status=row["http_status"],
        rt_code=row["rt_code"],
        outcome=row["outcome"],
        error=row["error"],
    )


def journal_from_row(row: Row, load_json: LoadJson, load_time: LoadTime) -> JournalEntry:
    return JournalEntry(
        entry_id=row["entry_id"],
        event_id=row["event_id"],
        at=load_time(row["at"]),
        kind=row["kind"],
        detail=load_json(row["detail"]),
    )


def trace_keys(event_id: str, keys: Mapping[str, str]) -> list[tuple[str, str]]:
    """(name, value) pairs to index; the event id is one, so find_events needs one lookup."""
    pairs = [("eventId", event_id)]
    pairs += [(name, value) for name, value in keys.items() if value]
    return pairs
