"""The ledger's logic, written once for both SQL backends (sqlite.py, postgres.py).

A backend supplies its transactions (`_write`, `_read`), how it stores JSON and time
(`_json`, `_time`) and reads them back (`_load_json`, `_load_time`), the exception its driver
raises on a unique violation, and the statements of its dialect (`schema.statements`). Both
backends pass the one contract suite, tests/test_ledger_contract.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any

from worker.errors import LeaseLost
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
from worker.ledger.schema import EVENT_COLUMNS

_MS = timedelta(milliseconds=1)
Db = Any  # a sqlite3.Connection or a psycopg Cursor: both execute() and fetch


class SqlLedger:
    SQL: Any  # the dialect's statements
    unique_violation: tuple[type[BaseException], ...] = ()
    row_lock = ""  # " FOR UPDATE" where a transaction does not lock the whole database

    # -- what a backend supplies ----------------------------------------------------------

    def _write(self, durable: bool = False) -> AbstractContextManager[Db]:
        raise NotImplementedError

    def _read(self) -> AbstractContextManager[Db]:
        raise NotImplementedError

    def _json(self, value: dict) -> Any:
        raise NotImplementedError

    def _time(self, at: datetime) -> Any:
        raise NotImplementedError

    def _load_json(self, value: Any) -> dict:
        raise NotImplementedError

    def _load_time(self, value: Any) -> datetime:
        raise NotImplementedError

    # -- events -----------------------------------------------------------------------------

    def _event(self, row: Any) -> EventRecord:
        return event_from_row(row, self._load_json, self._load_time)

    def _get(self, db: Db, event_id: str, lock: bool = False) -> EventRecord | None:
        row = db.execute(
            self.SQL.get_event + (self.row_lock if lock else ""), (event_id,)
        ).fetchone()
        return None if row is None else self._event(row)

    def _must_get(self, db: Db, event_id: str, lock: bool = False) -> EventRecord:
        record = self._get(db, event_id, lock)
        if record is None:
            raise UnknownEvent(event_id)
        return record

    def _must_exist(self, db: Db, event_id: str) -> None:
        """_must_get without reading the record (its payload and result are JSON to parse)."""
        if db.execute(self.SQL.event_exists, (event_id,)).fetchone() is None:
            raise UnknownEvent(event_id)

    def _holder(self, db: Db, business_key: str | None) -> EventRecord | None:
        if business_key is None:
            return None
        row = db.execute(self.SQL.holder, (business_key,)).fetchone()
        return None if row is None else self._event(row)

    def _event_row(self, event: NewEvent) -> tuple[Any, ...]:
        received = self._time(event.received_at)
        until = None if event.lease_until is None else self._time(event.lease_until)
        return (
            event.event_id,
            event.event_type,
            event.trans_code,
            self._json(event.payload),
            event.payload_hash,
            event.business_key,
            received,
            received,
            event.lease_owner,
            until,
        )

    def begin_event(self, event: NewEvent) -> Begin:
        row = self._event_row(event)
        # SQLite: BEGIN IMMEDIATE; PostgreSQL: the unique constraints. Either way exactly one
        # caller inserts, and the others see its committed row.
        with self._write() as db:
            if not db.execute(self.SQL.insert_event, row).rowcount:
                db.execute(self.SQL.redelivered, (event.event_id,))
                record = self._must_get(db, event.event_id)
                return redelivery(record, self._holder(db, record.business_key))
            self._insert_keys(db, event.event_id, trace_keys(event.event_id, event.keys))
            key = event.business_key
            if (
                key is not None
                and not db.execute(self.SQL.claim_key, (key, event.event_id)).rowcount
            ):
                return duplicate(event.payload_hash, self._holder(db, key))
            return Begin("new", self._must_get(db, event.event_id))

    def record_refused(self, event: NewEvent, outcome: str, result: dict, at: datetime) -> Begin:
        # One transaction: the event is never seen half-recorded (unfinished, to be swept).
        with self._write() as db:
            if not db.execute(self.SQL.insert_event, self._event_row(event)).rowcount:
                return Begin("existing", self._must_get(db, event.event_id))
            self._insert_keys(db, event.event_id, trace_keys(event.event_id, event.keys))
            db.execute(
                self.SQL.complete, (outcome, self._json(result), self._time(at), event.event_id)
            )
            return Begin("new", self._must_get(db, event.event_id))

    def get_event(self, event_id: str) -> EventRecord | None:
        with self._read() as db:
            return self._get(db, event_id)

    def try_lease(self, event_id: str, owner: str, until: datetime, at: datetime) -> bool:
        params = (owner, self._time(until), event_id, owner, self._time(at))
        with self._write() as db:
            return bool(db.execute(self.SQL.lease, params).rowcount == 1)

    def release_lease(self, event_id: str, owner: str) -> None:
        with self._write() as db:
            db.execute(self.SQL.release, (event_id, owner))

    def set_state(self, event_id: str, state: EventState, at: datetime) -> None:
        if state is EventState.COMPLETED:
            raise ValueError("an event is completed with its result: use complete_event()")
        with self._write() as db:
            params = (state.value, self._time(at), event_id)
            if not db.execute(self.SQL.set_state, params).rowcount:
                self._must_get(db, event_id)  # completed: left alone; unknown: say so

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
    ) -> EventRecord:
        params: tuple[Any, ...] = (outcome, self._json(result), self._time(at), event_id)
        statement = self.SQL.complete
        if owner is not None:
            statement, params = self.SQL.complete_owned, (*params, owner, self._time(at))
        with self._write() as db:
            db.execute(statement, params)  # first writer wins, owner only (see schema.py)
            record = self._must_get(db, event_id)
            if keys:
                self._insert_keys(db, event_id, [(k, v) for k, v in keys.items() if v])
            if release_owner is not None:
                db.execute(self.SQL.release, (event_id, release_owner))
            return record

    def mark_result_published(
        self, event_id: str, at: datetime, *, journal: dict | None = None
    ) -> None:
        with self._write() as db:
            if not db.execute(self.SQL.mark_published, (self._time(at), event_id)).rowcount:
                if self._must_get(db, event_id).state is not EventState.COMPLETED:
                    raise ValueError(f"event {event_id} has no result to publish yet")
            if journal is not None:
                self._journal_entry(db, event_id, at, "result_published", journal)

    # -- attempts ---------------------------------------------------------------------------

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
    ) -> int:
        # Committed (and on SQLite fsynced) when this returns: recorded before sending.
        params = (event_id, trans_code, platform_seq_id, purpose, self._time(at))
        state = EventState.IN_FLIGHT if purpose == "call" else EventState.RECONCILING
        with self._write(durable=True) as db:
            if owner is None:
                self._must_exist(db, event_id)
            else:  # first: on PostgreSQL it locks the row until the attempt is recorded
                self._hold_lease(db, event_id, state, at, owner, lease_until or at)
            try:
                # fetchall: the statement runs to completion before the next one
                rows = db.execute(
                    self.SQL.insert_attempt + " RETURNING attempt_id", params
                ).fetchall()
            except self.unique_violation as exc:
                raise DuplicateSeqId(f"platformSeqId {platform_seq_id} already used") from exc
            if owner is None:
                db.execute(self.SQL.set_state, (state.value, self._time(at), event_id))
            return int(rows[0]["attempt_id"])

    def _hold_lease(
        self, db: Db, event_id: str, state: EventState, at: datetime, owner: str, until: datetime
    ) -> None:
        now, later = self._time(at), self._time(until)
        params = (state.value, now, later, later, event_id, owner, now)
        if not db.execute(self.SQL.attempt_lease, params).rowcount:
            self._must_exist(db, event_id)
            raise LeaseLost(
                "no live lease on the event (taken over, expired or completed): "
                "the attempt was not recorded and nothing was sent"
            )

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
            row = db.execute(self.SQL.attempt_started + self.row_lock, (attempt_id,)).fetchone()
            if row is None:
                raise UnknownAttempt(attempt_id)
            if row["finished_at"] is not None:
                raise ValueError(f"attempt {attempt_id} is already finished")
            duration_ms = (utc(at) - self._load_time(row["started_at"])) / _MS
            db.execute(
                self.SQL.finish_attempt,
                (self._time(at), duration_ms, http_status, rt_code, outcome, error, attempt_id),
            )

    def attempts(self, event_id: str) -> list[AttemptRecord]:
        with self._read() as db:
            rows = db.execute(self.SQL.attempts, (event_id,)).fetchall()
        return [attempt_from_row(row, self._load_time) for row in rows]

    # -- listings -----------------------------------------------------------------------------

    def _events(self, where: str, params: tuple[Any, ...]) -> list[EventRecord]:
        with self._read() as db:
            rows = db.execute(f"SELECT {EVENT_COLUMNS} FROM huimin_events {where}", params)
            return [self._event(row) for row in rows.fetchall()]

    def unfinished_events(self, updated_before: datetime, limit: int = 100) -> list[EventRecord]:
        return self._events(self.SQL.unfinished, (self._time(updated_before), limit))

    def unpublished_results(self, limit: int = 100) -> list[EventRecord]:
        return self._events(self.SQL.unpublished, (limit,))

    def find_events(self, key: str, limit: int = 100) -> list[EventRecord]:
        return self._events(self.SQL.find, (key, limit))

    def events_by_business_key(self, business_key: str) -> list[EventRecord]:
        return self._events(self.SQL.by_business_key, (business_key,))

    def recent_events(
        self,
        since: datetime | None = None,
        event_type: str | None = None,
        outcome: str | None = None,
        limit: int = 100,
    ) -> list[EventRecord]:
        filters = {
            self.SQL.recent_since: None if since is None else self._time(since),
            self.SQL.recent_type: event_type,
            self.SQL.recent_outcome: outcome,
        }
        used = {clause: value for clause, value in filters.items() if value is not None}
        where = " AND ".join(used) or "1 = 1"
        return self._events(f"WHERE {where}{self.SQL.recent_order}", (*used.values(), limit))

    def stats(self) -> dict[str, int]:
        with self._read() as db:
            counts = {row["state"]: row["n"] for row in db.execute(self.SQL.stats).fetchall()}
        return {state.value: counts.get(state.value, 0) for state in EventState}

    # -- keys and journal -------------------------------------------------------------------

    def _insert_keys(self, db: Db, event_id: str, pairs: list[tuple[str, str]]) -> None:
        if pairs:
            rows = [(value, event_id, name) for name, value in pairs]
            db.executemany(self.SQL.insert_key, rows)

    def _journal_entry(self, db: Db, event_id: str, at: datetime, kind: str, detail: dict) -> None:
        db.execute(self.SQL.insert_journal, (event_id, self._time(at), kind, self._json(detail)))

    def add_keys(self, event_id: str, keys: Mapping[str, str]) -> None:
        with self._write() as db:
            self._must_get(db, event_id)
            self._insert_keys(db, event_id, [(k, v) for k, v in keys.items() if v])

    def record(self, event_id: str, kind: str, detail: dict, at: datetime) -> None:
        with self._write() as db:
            self._journal_entry(db, event_id, at, kind, detail)

    def journal(self, event_id: str) -> list[JournalEntry]:
        with self._read() as db:
            rows = db.execute(self.SQL.journal, (event_id,)).fetchall()
        return [journal_from_row(row, self._load_json, self._load_time) for row in rows]

    def journal_by_kind(
        self, kind: str, since: datetime | None = None, limit: int = 100
    ) -> list[JournalEntry]:
        params = (kind, self._time(since or EPOCH), limit)
        with self._read() as db:
            rows = db.execute(self.SQL.journal_kind, params).fetchall()
        return [journal_from_row(row, self._load_json, self._load_time) for row in rows]

    # -- the inbound gateway ------------------------------------------------------------------

    def remember_inbound_seq_id(self, platform_seq_id: str, trans_code: str, at: datetime) -> bool:
        return self._remember_inbound("seq_id", platform_seq_id, trans_code, at)

    def remember_inbound_event(self, event_id: str, trans_code: str, at: datetime) -> bool:
        return self._remember_inbound("event_id", event_id, trans_code, at)

    def inbound_event_known(self, event_id: str) -> bool:
        with self._read() as db:
            return db.execute(self.SQL.inbound_known, ("event_id", event_id)).fetchone() is not None

    def _remember_inbound(self, kind: str, key: str, trans_code: str, at: datetime) -> bool:
        with self._write() as db:
            params = (kind, key, trans_code, self._time(at))
            return bool(db.execute(self.SQL.remember_inbound, params).rowcount == 1)

    # -- operations -------------------------------------------------------------------------

    def reopen_event(self, event_id: str, at: datetime, note: dict) -> bool:
        with self._write() as db:
            # locked: a worker completing it concurrently waits, then sees it reopened
            record = self._must_get(db, event_id, lock=True)
            if not reopenable(record):
                return False
            db.execute(self.SQL.reopen, (self._time(at), event_id))
            self._journal_entry(db, event_id, at, "reopened", reopened_detail(record, note))
            return True
