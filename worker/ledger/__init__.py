"""The ledger: the worker's idempotency and audit store (SQLite or PostgreSQL).

    ledger = open_ledger("sqlite:////var/lib/huimin/ledger.db")  # or postgresql://...
    ledger.migrate()

Backends are imported lazily by `open_ledger`, so SQLite users need no psycopg.
"""

from worker.ledger.base import (
    AttemptOutcome,
    AttemptPurpose,
    AttemptRecord,
    Begin,
    BeginKind,
    DuplicateSeqId,
    EventRecord,
    EventState,
    JournalEntry,
    Ledger,
    NewEvent,
    UnknownAttempt,
    UnknownEvent,
    open_ledger,
)

__all__ = [
    "AttemptOutcome",
    "AttemptPurpose",
    "AttemptRecord",
    "Begin",
    "BeginKind",
    "DuplicateSeqId",
    "EventRecord",
    "EventState",
    "JournalEntry",
    "Ledger",
    "NewEvent",
    "UnknownAttempt",
    "UnknownEvent",
    "open_ledger",
]
