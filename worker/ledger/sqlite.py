"""The SQLite ledger: one file in WAL mode, one connection per thread (the logic: sql.py).

Commits are synchronous=NORMAL (they survive a crash of the process), except the attempt
recorded before money is sent, which is synced (FULL). Writes of this process queue on one
lock; write transactions start with BEGIN IMMEDIATE: the write lock is taken up front, so a
read-modify-write (begin_event, complete_event) cannot interleave with another thread or
process, and a busy database waits `busy_timeout` instead of failing mid-transaction.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from worker.errors import LedgerUnavailable
from worker.ledger.base import utc
from worker.ledger.schema import migrations, statements, version_table
from worker.ledger.sql import SqlLedger

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


class SqliteLedger(SqlLedger):
    SQL = SQL
    unique_violation = (sqlite3.IntegrityError,)
    # BEGIN IMMEDIATE locks the whole database: no row locks needed
    row_lock = ""

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

    # -- the dialect's hooks ---------------------------------------------------------------

    def _json(self, value: dict) -> str:
        return _json(value)

    def _time(self, at: datetime) -> str:
        return _time(at)

    def _load_json(self, value: Any) -> dict:
        return json.loads(value)

    def _load_time(self, value: Any) -> datetime:
        return datetime.fromisoformat(value)
