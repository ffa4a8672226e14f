"""The ledger: the worker's idempotency and audit store (SQLite or PostgreSQL).

    ledger = open_ledger("sqlite:////var/lib/huimin/ledger.db")  # or postgresql://...
    ledger.migrate()

Code on the hot path depends on `EventStore`, ops code on `LedgerQueries`; `Ledger` is both,
plus migrate/close (base.py). Backends are imported lazily by `open_ledger` (open.py), so
SQLite users need no psycopg.
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
    EventStore,
    JournalEntry,
    Ledger,
    LedgerQueries,
    NewEvent,
    UnknownAttempt,
    UnknownEvent,
)
from worker.ledger.open import open_ledger

__all__ = [
    "AttemptOutcome",
    "AttemptPurpose",
    "AttemptRecord",
    "Begin",
    "BeginKind",
    "DuplicateSeqId",
    "EventRecord",
    "EventState",
    "EventStore",
    "JournalEntry",
    "Ledger",
    "LedgerQueries",
    "NewEvent",
    "UnknownAttempt",
    "UnknownEvent",
    "open_ledger",
]
