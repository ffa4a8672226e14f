"""The PostgreSQL ledger (psycopg 3): shared by replicas, race-proofed by unique constraints.

begin_event relies on INSERT ... ON CONFLICT DO NOTHING: under READ COMMITTED a second
inserter of the same event_id or business key waits for the first transaction and then sees
its committed row, so exactly one replica ever gets "new".
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb

from worker.errors import ConfigurationError, LedgerUnavailable
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

Connection = psycopg.Connection[DictRow]
Cursor = psycopg.Cursor[DictRow]

SQL = statements("postgres")

_SCHEMA_NAME = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


def _load_time(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _load_json(value: Any) -> dict:
    return value  # jsonb arrives already parsed


def _event(row: DictRow) -> EventRecord:
    return event_from_row(row, _load_json, _load_time)


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


class PostgresLedger:
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

    # -- events -----------------------------------------------------------------------

    @staticmethod
    def _get(cur: Cursor, event_id: str) -> EventRecord | None:
        row = cur.execute(SQL.get_event, (event_id,)).fetchone()
        return None if row is None else _event(row)

    @classmethod
    def _must_get(cls, cur: Cursor, event_id: str) -> EventRecord:
        record = cls._get(cur, event_id)
        if record is None:
            raise UnknownEvent(event_id)
        return record

    @staticmethod
    def _holder(cur: Cursor, business_key: str | None) -> EventRecord | None:
        if business_key is None:
            return None
        row = cur.execute(SQL.holder, (business_key,)).fetchone()
        return None if row is None else _event(row)

    def begin_event(self, event: NewEvent) -> Begin:
        received = utc(event.received_at)
        with self._tx() as cur:
            inserted = cur.execute(
                SQL.insert_event,
                (event.event_id, event.event_type, event.trans_code, Jsonb(event.payload),
                 event.payload_hash, event.business_key, received, received),
            ).rowcount  # fmt: skip
            if not inserted:  # known (if a racing first insert, it has committed by now)
                cur.execute(SQL.redelivered, (event.event_id,))
                record = self._must_get(cur, event.event_id)
                return redelivery(record, self._holder(cur, record.business_key))
            _insert_keys(cur, event.event_id, trace_keys(event.event_id, event.keys))
            key = event.business_key
            if key is not None and not cur.execute(SQL.claim_key, (key, event.event_id)).rowcount:
                return duplicate(event.payload_hash, self._holder(cur, key))
            return Begin("new", self._must_get(cur, event.event_id))

    def get_event(self, event_id: str) -> EventRecord | None:
        with self._tx() as cur:
            return self._get(cur, event_id)

    def try_lease(self, event_id: str, owner: str, until: datetime, at: datetime) -> bool:
        params = (owner, utc(until), event_id, owner, utc(at))
        with self._tx() as cur:
            return cur.execute(SQL.lease, params).rowcount == 1

    def release_lease(self, event_id: str, owner: str) -> None:
        with self._tx() as cur:
            cur.execute(SQL.release, (event_id, owner))

    def set_state(self, event_id: str, state: EventState, at: datetime) -> None:
        if state is EventState.COMPLETED:
            raise ValueError("an event is completed with its result: use complete_event()")
        with self._tx() as cur:
            if not cur.execute(SQL.set_state, (state.value, utc(at), event_id)).rowcount:
                self._must_get(cur, event_id)  # completed: left alone; unknown: say so

    def complete_event(
        self, event_id: str, outcome: str, result: dict, at: datetime, *,
        keys: Mapping[str, str] | None = None, release_owner: str | None = None,
    ) -> EventRecord:  # fmt: skip
        with self._tx() as cur:
            cur.execute(SQL.complete, (outcome, Jsonb(result), utc(at), event_id))
            record = self._must_get(cur, event_id)
            if keys:
                _insert_keys(cur, event_id, [(k, v) for k, v in keys.items() if v])
            if release_owner is not None:
                cur.execute(SQL.release, (event_id, release_owner))
            return record

    def mark_result_published(
        self, event_id: str, at: datetime, *, journal: dict | None = None
    ) -> None:
        with self._tx() as cur:
            if not cur.execute(SQL.mark_published, (utc(at), event_id)).rowcount:
                if self._must_get(cur, event_id).state is not EventState.COMPLETED:
                    raise ValueError(f"event {event_id} has no result to publish yet")
            if journal is not None:
                cur.execute(SQL.insert_journal,
                            (event_id, utc(at), "result_published", Jsonb(journal)))

    # -- attempts ---------------------------------------------------------------------

    def start_attempt(
        self,
        event_id: str,
        trans_code: str,
        platform_seq_id: str,
        purpose: AttemptPurpose,
        at: datetime,
    ) -> int:
        # Committed when this returns (synchronous_commit=on): record before sending.
        params = (event_id, trans_code, platform_seq_id, purpose, utc(at))
        state = EventState.IN_FLIGHT if purpose == "call" else EventState.RECONCILING
        with self._tx() as cur:
            self._must_get(cur, event_id)
            try:
                cur.execute(SQL.insert_attempt + " RETURNING attempt_id", params)
            except psycopg.errors.UniqueViolation as exc:
                raise DuplicateSeqId(f"platformSeqId {platform_seq_id} already used") from exc
            attempt_id = int(_one(cur)["attempt_id"])
            cur.execute(SQL.set_state, (state.value, utc(at), event_id))
            return attempt_id

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
        with self._tx() as cur:
            row = cur.execute(SQL.attempt_started + " FOR UPDATE", (attempt_id,)).fetchone()
            if row is None:
                raise UnknownAttempt(attempt_id)
            if row["finished_at"] is not None:
                raise ValueError(f"attempt {attempt_id} is already finished")
            duration_ms = (utc(at) - row["started_at"]) / _MS
            cur.execute(
                SQL.finish_attempt,
                (utc(at), duration_ms, http_status, rt_code, outcome, error, attempt_id),
            )

    def attempts(self, event_id: str) -> list[AttemptRecord]:
        with self._tx() as cur:
            rows = cur.execute(SQL.attempts, (event_id,)).fetchall()
        return [attempt_from_row(row, _load_time) for row in rows]

    # -- listings ---------------------------------------------------------------------

    def _events(self, where: str, params: tuple[Any, ...]) -> list[EventRecord]:
        with self._tx() as cur:
            cur.execute(f"SELECT {EVENT_COLUMNS} FROM huimin_events {where}", params)
            return [_event(row) for row in cur.fetchall()]

    def unfinished_events(self, updated_before: datetime, limit: int = 100) -> list[EventRecord]:
        return self._events(SQL.unfinished, (utc(updated_before), limit))

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
            SQL.recent_since: None if since is None else utc(since),
            SQL.recent_type: event_type,
            SQL.recent_outcome: outcome,
        }
        used = {clause: value for clause, value in filters.items() if value is not None}
        where = " AND ".join(used) or "TRUE"
        return self._events(f"WHERE {where}{SQL.recent_order}", (*used.values(), limit))

    def stats(self) -> dict[str, int]:
        with self._tx() as cur:
            counts = {row["state"]: row["n"] for row in cur.execute(SQL.stats).fetchall()}
        return {state.value: counts.get(state.value, 0) for state in EventState}

    # -- keys and journal -------------------------------------------------------------

    def add_keys(self, event_id: str, keys: Mapping[str, str]) -> None:
        with self._tx() as cur:
            self._must_get(cur, event_id)
            _insert_keys(cur, event_id, [(name, value) for name, value in keys.items() if value])

    def record(self, event_id: str, kind: str, detail: dict, at: datetime) -> None:
        with self._tx() as cur:
            cur.execute(SQL.insert_journal, (event_id, utc(at), kind, Jsonb(detail)))

    def journal(self, event_id: str) -> list[JournalEntry]:
        with self._tx() as cur:
            rows = cur.execute(SQL.journal, (event_id,)).fetchall()
        return [journal_from_row(row, _load_json, _load_time) for row in rows]

    def journal_by_kind(
        self, kind: str, since: datetime | None = None, limit: int = 100
    ) -> list[JournalEntry]:
        with self._tx() as cur:
            rows = cur.execute(SQL.journal_kind, (kind, utc(since or EPOCH), limit)).fetchall()
        return [journal_from_row(row, _load_json, _load_time) for row in rows]

    # -- operations -------------------------------------------------------------------

    def reopen_event(self, event_id: str, at: datetime, note: dict) -> bool:
        with self._tx() as cur:
            # FOR UPDATE: a worker completing it concurrently waits, then sees it reopened
            row = cur.execute(SQL.get_event + " FOR UPDATE", (event_id,)).fetchone()
            if row is None:
                raise UnknownEvent(event_id)
            record = _event(row)
            if not reopenable(record):
                return False
            cur.execute(SQL.reopen, (utc(at), event_id))
            detail = Jsonb(reopened_detail(record, note))
            cur.execute(SQL.insert_journal, (event_id, utc(at), "reopened", detail))
            return True


_MS = timedelta(milliseconds=1)


def _one(cur: Cursor) -> DictRow:
    row = cur.fetchone()
    if row is None:  # pragma: no cover - the statements above always return a row
        raise RuntimeError("expected a row")
    return row


def _insert_keys(cur: Cursor, event_id: str, pairs: list[tuple[str, str]]) -> None:
    if pairs:
        cur.executemany(SQL.insert_key, [(value, event_id, name) for name, value in pairs])
