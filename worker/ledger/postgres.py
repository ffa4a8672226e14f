"""The PostgreSQL ledger (psycopg 3): shared by replicas, race-proofed by unique constraints.

begin_event relies on INSERT ... ON CONFLICT DO NOTHING: under READ COMMITTED a second
inserter of the same event_id or business key waits for the first transaction and then sees
its committed row, so exactly one replica ever gets "new".
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb

from worker.errors import ConfigurationError, LedgerUnavailable
from worker.ledger.base import utc
from worker.ledger.schema import migrations, statements, version_table
from worker.ledger.sql import SqlLedger

Connection = psycopg.Connection[DictRow]
Cursor = psycopg.Cursor[DictRow]

SQL = statements("postgres")

_SCHEMA_NAME = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


class _Pool:
    """A small thread-safe pool: at most `size` connections, handed out one per transaction."""

    def __init__(self, conninfo: str, *, size: int, timeout: float, schema: str | None) -> None:
        self._conninfo = conninfo
        self._timeout = timeout
        self._schema = schema
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        try:
            params = conninfo_to_dict(conninfo)
        except psycopg.ProgrammingError as exc:  # its text may quote the URL (password)
            raise ConfigurationError("the PostgreSQL ledger URL cannot be parsed") from exc
        # An unreachable server must fail fast into LedgerUnavailable, not hang a handler.
        has_timeout = "connect_timeout" in params
        self._connect_kwargs: dict[str, Any] = {} if has_timeout else {"connect_timeout": 5}

    def _connect(self) -> Connection:
        conn = psycopg.connect(
            self._conninfo, autocommit=True, row_factory=dict_row, **self._connect_kwargs
        )
        try:
            conn.execute("SET TIME ZONE 'UTC'")
            if self._schema is not None:
                path = sql.SQL("SET search_path TO {}").format(sql.Identifier(self._schema))
                conn.execute(path)
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        if self._closed:
            raise LedgerUnavailable("PostgreSQL ledger is closed")
        if not self._slots.acquire(timeout=self._timeout):
            raise LedgerUnavailable(f"no PostgreSQL ledger connection free in {self._timeout}s")
        conn: Connection | None = None
        try:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            conn = conn or self._connect()
            yield conn
        finally:
            if conn is not None:
                self._give_back(conn)
            self._slots.release()

    def _give_back(self, conn: Connection) -> None:
        healthy = not (conn.closed or conn.broken)
        if healthy and conn.info.transaction_status == TransactionStatus.IDLE:
            with self._lock:
                if not self._closed:
                    self._idle.append(conn)
                    return
        conn.close()  # broken, mid-transaction, or the pool is closed

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class PostgresLedger(SqlLedger):
    SQL = SQL
    unique_violation = (psycopg.errors.UniqueViolation,)
    row_lock = " FOR UPDATE"  # READ COMMITTED: lock the row a read-modify-write changes

    def __init__(
        self,
        conninfo: str,
        *,
        schema: str | None = None,
        pool_size: int = 8,
        pool_timeout: float = 10.0,
    ) -> None:
        if schema is not None and not (schema and set(schema) <= _SCHEMA_NAME):
            raise ConfigurationError(f"ledger schema {schema!r}: use [a-z0-9_] only")
        self._schema = schema
        self._pool = _Pool(conninfo, size=pool_size, timeout=pool_timeout, schema=schema)

    @contextmanager
    def _tx(self) -> Iterator[Cursor]:
        """One transaction, committed on leaving; connection trouble -> LedgerUnavailable."""
        try:
            with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                yield cur
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise LedgerUnavailable(f"PostgreSQL ledger unavailable: {exc}") from exc

    def close(self) -> None:
        self._pool.close()

    # -- schema -----------------------------------------------------------------------

    def migrate(self) -> None:
        with self._tx() as cur:
            # Replicas starting together must not race CREATE TABLE IF NOT EXISTS.
            lock_key = f"huimin_ledger:{self._schema or '(search_path)'}"
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (lock_key,))
            if self._schema is not None:
                create = sql.SQL("CREATE SCHEMA IF NOT EXISTS {}")
                cur.execute(create.format(sql.Identifier(self._schema)))
            cur.execute(version_table("postgres"))
            cur.execute("SELECT coalesce(max(version), 0) AS v FROM huimin_schema_version")
            current = _one(cur)["v"]
            for version, statements in migrations("postgres"):
                if version > current:
                    for statement in statements:
                        cur.execute(statement)
                    cur.execute(
                        "INSERT INTO huimin_schema_version (version) VALUES (%s)", (version,)
                    )

    # -- the dialect's hooks ---------------------------------------------------------------

    def _write(self, durable: bool = False) -> AbstractContextManager[Cursor]:
        return self._tx()  # every commit is durable (synchronous_commit=on)

    def _read(self) -> AbstractContextManager[Cursor]:
        return self._tx()

    def _json(self, value: dict) -> Jsonb:
        return Jsonb(value)

    def _time(self, at: datetime) -> datetime:
        return utc(at)

    def _load_json(self, value: Any) -> dict:
        return value  # jsonb arrives already parsed

    def _load_time(self, value: Any) -> datetime:
        return value.astimezone(UTC)


def _one(cur: Cursor) -> DictRow:
    row = cur.fetchone()
    if row is None:  # pragma: no cover - the statements above always return a row
        raise RuntimeError("expected a row")
    return row
