"""The SQLite ledger: one file, WAL, fsync on every commit, one connection per thread.

Write transactions start with BEGIN IMMEDIATE: the write lock is taken up front, so a
read-modify-write (begin_event, complete_event) cannot interleave with another thread or
process, and a busy database waits `busy_timeout` instead of failing mid-transaction.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from worker.errors import LedgerUnavailable
from worker.ledger.base import (
    EPOCH,
    AttemptOutcome,
    AttemptPurpose,
    AttemptRecord,
    Begin,
    DuplicateSeqId,
    EventRecord,
    EventState,
    JournalEntry,
    NewEvent,
    UnknownAttempt,
    UnknownEvent,
    attempt_from_row,
    duplicate,
    event_from_row,
    journal_from_row,
    redelivery,
    reopenable,
    reopened_detail,
    trace_keys,
    utc,
)
from worker.ledger.schema import EVENT_COLUMNS, migrations, statements, version_table

SQL = statements("sqlite")

#: Primary result codes that mean "the database is busy or unreachable", not "our bug".
_UNAVAILABLE = {
    sqlite3.SQLITE_BUSY,
    sqlite3.SQLITE_LOCKED,
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_PROTOCOL,
    sqlite3.SQLITE_READONLY,
}


def _time(at: datetime) -> str:
    # Fixed width (microseconds, +00:00) so that text comparison is time comparison.
    return utc(at).isoformat(timespec="microseconds")


def _json(value: dict) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _event(row: sqlite3.Row) -> EventRecord:
    return event_from_row(row, json.loads, datetime.fromisoformat)


class _Handle:
    """Holds one thread's connection; weak-referenceable, unlike sqlite3.Connection."""

    __slots__ = ("db", "__weakref__")

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db


@contextmanager
def _converted() -> Iterator[None]:
    try:
        yield
    except sqlite3.OperationalError as exc:
        if (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in _UNAVAILABLE:
            raise LedgerUnavailable(f"SQLite ledger unavailable: {exc}") from exc
        raise  # "no such table" and friends are bugs (forgot migrate()): fail loudly


class SqliteLedger:
    def __init__(self, path: str, *, busy_timeout: float = 5.0) -> None:
        self._path = path
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        # Every thread's handle, so close() can reach them; a finished thread's handle (and
        # its connection) is garbage-collected with its thread-local storage.
        self._handles: weakref.WeakSet[_Handle] = weakref.WeakSet()
        self._lock = threading.Lock()
        # Writers of this process queue here instead of in SQLite's busy handler, which sleeps
        # in growing steps (up to 100 ms) and made 8 handler threads crawl (benchmarks/).
        self._write_lock = threading.Lock()

    # -- connections and transactions -------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        handle: _Handle | None = getattr(self._local, "handle", None)
        if handle is None:
            handle = _Handle(self._connect())
            self._local.handle = handle
            with self._lock:
                self._handles.add(handle)
        return handle.db

    def _connect(self) -> sqlite3.Connection:
        with _converted():
            # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves.
            db = sqlite3.connect(
                self._path,
                timeout=self._busy_timeout,  # the busy handler: wait for the write lock
                isolation_level=None,
                check_same_thread=False,  # only so close() may close it from another thread
            )
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode = WAL")
            # NORMAL in WAL mode: every commit survives a crash of this process (the WAL is in
            # the OS's hands); only power loss can roll back the newest ones. The commit that
            # must survive power loss too, the attempt recorded before sending money, is
            # synced explicitly (`_write(durable=True)`), and that fsync covers all before it.
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA foreign_keys = ON")
        return db

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with _converted():
            yield self._connection()

    @contextmanager
    def _write(self, durable: bool = False) -> Iterator[sqlite3.Connection]:
        with self._write_lock, _converted():
            db = self._connection()
            if durable:
                db.execute("PRAGMA synchronous = FULL")
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            finally:
                if durable:
                    db.execute("PRAGMA synchronous = NORMAL")

    def close(self) -> None:
        with self._lock:
            handles = list(self._handles)
            self._handles = weakref.WeakSet()
        for handle in handles:
            handle.db.close()
        self._local = threading.local()

    # -- schema -----------------------------------------------------------------------

    def migrate(self) -> None:
        with self._write() as db:
            db.execute(version_table("sqlite"))
            current = db.execute("SELECT max(version) FROM huimin_schema_version").fetchone()[0]
            for version, statements in migrations("sqlite"):
                if version > (current or 0):
                    for sql in statements:
                        db.execute(sql)
                    db.execute("INSERT INTO huimin_schema_version (version) VALUES (?)", (version,))

    # -- events -----------------------------------------------------------------------

    @staticmethod
    def _get(db: sqlite3.Connection, event_id: str) -> EventRecord | None:
        row = db.execute(SQL.get_event, (event_id,)).fetchone()
        return None if row is None else _event(row)

    @classmethod
    def _must_get(cls, db: sqlite3.Connection, event_id: str) -> EventRecord:
        record = cls._get(db, event_id)
        if record is None:
            raise UnknownEvent(event_id)
        return record

    @staticmethod
    def _holder(db: sqlite3.Connection, business_key: str | None) -> EventRecord | None:
        if business_key is None:
            return None
        row = db.execute(SQL.holder, (business_key,)).fetchone()
        return None if row is None else _event(row)

    def begin_event(self, event: NewEvent) -> Begin:
        received = _time(event.received_at)
        with self._write() as db:  # the write lock makes look-then-insert race-free
            inserted = db.execute(
                SQL.insert_event,
                (event.event_id, event.event_type, event.trans_code, _json(event.payload),
                 event.payload_hash, event.business_key, received, received),
            ).rowcount  # fmt: skip
            if not inserted:
                db.execute(SQL.redelivered, (event.event_id,))
                record = self._must_get(db, event.event_id)
                return redelivery(record, self._holder(db, record.business_key))
            _insert_keys(db, event.event_id, trace_keys(event.event_id, event.keys))
            key = event.business_key
            if key is not None and not db.execute(SQL.claim_key, (key, event.event_id)).rowcount:
                return duplicate(event.payload_hash, self._holder(db, key))
            return Begin("new", self._must_get(db, event.event_id))

    def get_event(self, event_id: str) -> EventRecord | None:
        with self._read() as db:
            return self._get(db, event_id)

    def try_lease(self, event_id: str, owner: str, until: datetime, at: datetime) -> bool:
        params = (owner, _time(until), event_id, owner, _time(at))
        with self._write() as db:
            return db.execute(SQL.lease, params).rowcount == 1

    def release_lease(self, event_id: str, owner: str) -> None:
        with self._write() as db:
            db.execute(SQL.release, (event_id, owner))

    def set_state(self, event_id: str, state: EventState, at: datetime) -> None:
        if state is EventState.COMPLETED:
            raise ValueError("an event is completed with its result: use complete_event()")
        with self._write() as db:
            if not db.execute(SQL.set_state, (state.value, _time(at), event_id)).rowcount:
                self._must_get(db, event_id)  # completed: left alone; unknown: say so

    def complete_event(
        self, event_id: str, outcome: str, result: dict, at: datetime, *,
        keys: Mapping[str, str] | None = None, release_owner: str | None = None,
    ) -> EventRecord:  # fmt: skip
        with self._write() as db:
            db.execute(SQL.complete, (outcome, _json(result), _time(at), event_id))
            record = self._must_get(db, event_id)
            if keys:
                _insert_keys(db, event_id, [(k, v) for k, v in keys.items() if v])
            if release_owner is not None:
                db.execute(SQL.release, (event_id, release_owner))
            return record

    def mark_result_published(
        self, event_id: str, at: datetime, *, journal: dict | None = None
    ) -> None:
        with self._write() as db:
            if not db.execute(SQL.mark_published, (_time(at), event_id)).rowcount:
                if self._must_get(db, event_id).state is not EventState.COMPLETED:
                    raise ValueError(f"event {event_id} has no result to publish yet")
            if journal is not None:
                db.execute(SQL.insert_journal,
                           (event_id, _time(at), "result_published", _json(journal)))

    # -- attempts ---------------------------------------------------------------------

    def start_attempt(
        self,
        event_id: str,
        trans_code: str,
        platform_seq_id: str,
        purpose: AttemptPurpose,
        at: datetime,
    ) -> int:
        # Committed and fsynced (synchronous=FULL) when this returns: record before sending.
        params = (event_id, trans_code, platform_seq_id, purpose, _time(at))
        state = _attempt_state(purpose)
        with self._write(durable=True) as db:
            self._must_get(db, event_id)
            try:
                cursor = db.execute(SQL.insert_attempt, params)
            except sqlite3.IntegrityError as exc:
                raise DuplicateSeqId(f"platformSeqId {platform_seq_id} already used") from exc
            db.execute(SQL.set_state, (state.value, _time(at), event_id))
            return int(cursor.lastrowid or 0)

    def finish_attempt(
        self,
        attempt_id: int,
        *,
        at: datetime,
        http_status: int | None,
        rt_code: str | None,
        outcome: AttemptOutcome,
        error: str | None,
    ) -> None:
        with self._write() as db:
            row = db.execute(SQL.attempt_started, (attempt_id,)).fetchone()
            if row is None:
                raise UnknownAttempt(attempt_id)
            if row["finished_at"] is not None:
                raise ValueError(f"attempt {attempt_id} is already finished")
            duration_ms = (utc(at) - datetime.fromisoformat(row["started_at"])) / _MS
            db.execute(
                SQL.finish_attempt,
                (_time(at), duration_ms, http_status, rt_code, outcome, error, attempt_id),
            )

    def attempts(self, event_id: str) -> list[AttemptRecord]:
        with self._read() as db:
            rows = db.execute(SQL.attempts, (event_id,)).fetchall()
        return [attempt_from_row(row, datetime.fromisoformat) for row in rows]

    # -- listings ---------------------------------------------------------------------

    def _events(self, where: str, params: tuple[Any, ...]) -> list[EventRecord]:
        with self._read() as db:
            rows = db.execute(f"SELECT {EVENT_COLUMNS} FROM huimin_events {where}", params)
            return [_event(row) for row in rows.fetchall()]

    def unfinished_events(self, updated_before: datetime, limit: int = 100) -> list[EventRecord]:
        return self._events(SQL.unfinished, (_time(updated_before), limit))

    def unpublished_results(self, limit: int = 100) -> list[EventRecord]:
        return self._events(SQL.unpublished, (limit,))

    def find_events(self, key: str, limit: int = 100) -> list[EventRecord]:
        return self._events(SQL.find, (key, limit))

    def events_by_business_key(self, business_key: str) -> list[EventRecord]:
        return self._events(SQL.by_business_key, (business_key,))

    def recent_events(
        self,
        since: datetime | None = None,
        event_type: str | None = None,
        outcome: str | None = None,
        limit: int = 100,
    ) -> list[EventRecord]:
        filters = {
            SQL.recent_since: None if since is None else _time(since),
            SQL.recent_type: event_type,
            SQL.recent_outcome: outcome,
        }
        used = {clause: value for clause, value in filters.items() if value is not None}
        where = " AND ".join(used) or "1 = 1"
        return self._events(f"WHERE {where}{SQL.recent_order}", (*used.values(), limit))

    def stats(self) -> dict[str, int]:
        with self._read() as db:
            counts = {row["state"]: row["n"] for row in db.execute(SQL.stats).fetchall()}
        return {state.value: counts.get(state.value, 0) for state in EventState}

    # -- keys and journal -------------------------------------------------------------

    def add_keys(self, event_id: str, keys: Mapping[str, str]) -> None:
        with self._write() as db:
            self._must_get(db, event_id)
            _insert_keys(db, event_id, [(name, value) for name, value in keys.items() if value])

    def record(self, event_id: str, kind: str, detail: dict, at: datetime) -> None:
        with self._write() as db:
            db.execute(SQL.insert_journal, (event_id, _time(at), kind, _json(detail)))

    def journal(self, event_id: str) -> list[JournalEntry]:
        with self._read() as db:
            rows = db.execute(SQL.journal, (event_id,)).fetchall()
        return [journal_from_row(row, json.loads, datetime.fromisoformat) for row in rows]

    def journal_by_kind(
        self, kind: str, since: datetime | None = None, limit: int = 100
    ) -> list[JournalEntry]:
        params = (kind, _time(since or EPOCH), limit)
        with self._read() as db:
            rows = db.execute(SQL.journal_kind, params).fetchall()
        return [journal_from_row(row, json.loads, datetime.fromisoformat) for row in rows]

    # -- operations -------------------------------------------------------------------

    def reopen_event(self, event_id: str, at: datetime, note: dict) -> bool:
        with self._write() as db:  # BEGIN IMMEDIATE: nobody completes it between read and write
            record = self._must_get(db, event_id)
            if not reopenable(record):
                return False
            db.execute(SQL.reopen, (_time(at), event_id))
            detail = _json(reopened_detail(record, note))
            db.execute(SQL.insert_journal, (event_id, _time(at), "reopened", detail))
            return True


_MS = timedelta(milliseconds=1)


def _attempt_state(purpose: AttemptPurpose) -> EventState:
    """The state an attempt puts its event in: a call in flight, or a reconciliation."""
    return EventState.IN_FLIGHT if purpose == "call" else EventState.RECONCILING


def _insert_keys(db: sqlite3.Connection, event_id: str, pairs: list[tuple[str, str]]) -> None:
    db.executemany(SQL.insert_key, [(value, event_id, name) for name, value in pairs])
