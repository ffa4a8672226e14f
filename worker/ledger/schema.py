"""The ledger's SQL as data, written once for both backends: migrations and statements.

Every table is prefixed `huimin_` so the ledger can share a database. A migration is a
version number and its statements; `migrate()` applies the ones above the highest version
recorded in `huimin_schema_version`, in one transaction. Append new versions; never edit an
applied one.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from worker.ledger.base import EventState

#: Column types that differ between the dialects; everything else is portable SQL.
_TYPES = {
    "sqlite": {
        "time": "TEXT",  # fixed-width ISO-8601 UTC, so text order is time order
        "json": "TEXT",
        "serial": "INTEGER PRIMARY KEY AUTOINCREMENT",  # ids never reused after a delete
        "real": "REAL",
    },
    "postgres": {
        "time": "timestamptz",
        "json": "jsonb",
        "serial": "bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        "real": "double precision",
    },
}

_STATES = ", ".join(f"'{state.value}'" for state in EventState)

SCHEMA_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS huimin_schema_version (
    version integer PRIMARY KEY,
    applied_at {time} NOT NULL DEFAULT CURRENT_TIMESTAMP
)"""

_V1 = (
    f"""
    CREATE TABLE huimin_events (
        event_id text PRIMARY KEY,
        event_type text NOT NULL,
        trans_code text,
        payload {{json}} NOT NULL,
        payload_hash text NOT NULL,
        business_key text,
        state text NOT NULL CHECK (state IN ({_STATES})),
        outcome text,
        result {{json}},
        result_published_at {{time}},
        received_at {{time}} NOT NULL,
        updated_at {{time}} NOT NULL,
        lease_owner text,
        lease_until {{time}},
        delivery_count integer NOT NULL DEFAULT 1
    )""",
    # Not unique: conflicting and duplicate events share the key; the holder table decides.
    """CREATE INDEX huimin_events_business_key ON huimin_events (business_key)
        WHERE business_key IS NOT NULL""",
    # Partial indexes that match the sweeper's queries exactly (literal predicates).
    """CREATE INDEX huimin_events_unfinished ON huimin_events (updated_at)
        WHERE state <> 'completed'""",
    """CREATE INDEX huimin_events_unpublished ON huimin_events (updated_at)
        WHERE state = 'completed' AND result_published_at IS NULL""",
    "CREATE INDEX huimin_events_received ON huimin_events (received_at)",
    # The first event to claim a business key holds it; the primary key is the race-proofing.
    """
    CREATE TABLE huimin_business_keys (
        business_key text PRIMARY KEY,
        event_id text NOT NULL REFERENCES huimin_events (event_id)
    )""",
    # Trace keys (eventId, orderId, treatmentSerialNo, queryId...): find_events is an index
    # lookup on key_value, whatever the size of the ledger.
    """
    CREATE TABLE huimin_event_keys (
        key_value text NOT NULL,
        event_id text NOT NULL REFERENCES huimin_events (event_id),
        key_name text NOT NULL,
        PRIMARY KEY (key_value, event_id, key_name)
    )""",
    "CREATE INDEX huimin_event_keys_event ON huimin_event_keys (event_id)",
    """
    CREATE TABLE huimin_attempts (
        attempt_id {serial},
        event_id text NOT NULL REFERENCES huimin_events (event_id),
        trans_code text NOT NULL,
        platform_seq_id text NOT NULL UNIQUE,
        purpose text NOT NULL CHECK (purpose IN ('call', 'status_query')),
        started_at {time} NOT NULL,
        finished_at {time},
        duration_ms {real},
        http_status integer,
        rt_code text,
        outcome text,
        error text
    )""",
    "CREATE INDEX huimin_attempts_event ON huimin_attempts (event_id, attempt_id)",
    # No foreign key: the journal also records events that never got a row (unparseable
    # messages, purges) and must never refuse an audit line.
    """
    CREATE TABLE huimin_journal (
        entry_id {serial},
        event_id text NOT NULL,
        at {time} NOT NULL,
        kind text NOT NULL,
        detail {json} NOT NULL
    )""",
    "CREATE INDEX huimin_journal_event ON huimin_journal (event_id, entry_id)",
)

# Operations (dlq history): journal entries of one kind (replayed, purged...) by time.
_V2 = ("CREATE INDEX huimin_journal_kind ON huimin_journal (kind, at)",)

# The inbound gateway (worker/gateway/): the platform's platformSeqIds it has accepted (a
# replay is refused with 4008, across restarts and replicas) and the eventIds it has published
# (a HIS00004 notification re-sent under a new platformSeqId is not published twice). The
# primary key is the race-proofing: INSERT ... ON CONFLICT DO NOTHING, one winner.
_V3 = (
    """
    CREATE TABLE huimin_inbound_keys (
        kind text NOT NULL CHECK (kind IN ('seq_id', 'event_id')),
        key_value text NOT NULL,
        trans_code text NOT NULL,
        seen_at {time} NOT NULL,
        PRIMARY KEY (kind, key_value)
    )""",
)

_MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = ((1, _V1), (2, _V2), (3, _V3))


def migrations(dialect: str) -> list[tuple[int, list[str]]]:
    """The migrations, versions ascending, rendered for `dialect` ("sqlite" or "postgres")."""
    types = _TYPES[dialect]
    return [(version, [sql.format(**types) for sql in stmts]) for version, stmts in _MIGRATIONS]


def version_table(dialect: str) -> str:
    return SCHEMA_VERSION_TABLE.format(**_TYPES[dialect])


EVENT_COLUMNS = (
    "event_id, event_type, trans_code, payload, payload_hash, business_key, state, outcome, "
    "result, result_published_at, received_at, updated_at, lease_owner, lease_until, "
    "delivery_count"
)
ATTEMPT_COLUMNS = (
    "attempt_id, event_id, trans_code, platform_seq_id, purpose, started_at, finished_at, "
    "duration_ms, http_status, rt_code, outcome, error"
)
JOURNAL_COLUMNS = "entry_id, event_id, at, kind, detail"


@dataclass(frozen=True)
class Statements:
    """Every statement both backends run, written once in qmark style so that their
    semantics (lease expiry, first writer wins, ...) cannot drift apart."""

    get_event: str = f"SELECT {EVENT_COLUMNS} FROM huimin_events WHERE event_id = ?"
    event_exists: str = "SELECT 1 FROM huimin_events WHERE event_id = ?"
    # ON CONFLICT DO NOTHING + rowcount: on PostgreSQL a concurrent inserter waits for the
    # first transaction and then does nothing, which is what makes begin_event race-free.
    insert_event: str = (
        "INSERT INTO huimin_events (event_id, event_type, trans_code, payload, payload_hash,"
        " business_key, state, received_at, updated_at, lease_owner, lease_until)"
        " VALUES (?, ?, ?, ?, ?, ?, 'received', ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING"
    )
    redelivered: str = (
        "UPDATE huimin_events SET delivery_count = delivery_count + 1 WHERE event_id = ?"
    )
    claim_key: str = (
        "INSERT INTO huimin_business_keys (business_key, event_id) VALUES (?, ?)"
        " ON CONFLICT (business_key) DO NOTHING"
    )
    holder: str = (
        f"SELECT {EVENT_COLUMNS} FROM huimin_events WHERE event_id ="
        " (SELECT event_id FROM huimin_business_keys WHERE business_key = ?)"
    )
    insert_key: str = (
        "INSERT INTO huimin_event_keys (key_value, event_id, key_name) VALUES (?, ?, ?)"
        " ON CONFLICT DO NOTHING"
    )
    lease: str = (
        "UPDATE huimin_events SET lease_owner = ?, lease_until = ? WHERE event_id = ?"
        " AND (lease_owner IS NULL OR lease_owner = ? OR lease_until IS NULL"
        " OR lease_until <= ?)"
    )
    release: str = (
        "UPDATE huimin_events SET lease_owner = NULL, lease_until = NULL"
        " WHERE event_id = ? AND lease_owner = ?"
    )
    set_state: str = (
        "UPDATE huimin_events SET state = ?, updated_at = ?"
        " WHERE event_id = ? AND state <> 'completed'"
    )
    # First writer wins: a completed event keeps its result (on PostgreSQL a concurrent
    # second UPDATE waits for the row lock, then re-checks the state and does nothing).
    complete: str = (
        "UPDATE huimin_events SET state = 'completed', outcome = ?, result = ?, updated_at = ?"
        " WHERE event_id = ? AND state <> 'completed'"
    )
    # ... and only by the delivery that owns the event: no other live lease on it (an invalid
    # copy or a worker whose lease was taken over never decides the event's outcome).
    complete_owned: str = (
        "UPDATE huimin_events SET state = 'completed', outcome = ?, result = ?, updated_at = ?"
        " WHERE event_id = ? AND state <> 'completed' AND (lease_owner IS NULL"
        " OR lease_owner = ? OR lease_until IS NULL OR lease_until <= ?)"
    )
    # The first publication time is kept; republishes belong in the journal.
    mark_published: str = (
        "UPDATE huimin_events SET result_published_at = ?"
        " WHERE event_id = ? AND state = 'completed' AND result_published_at IS NULL"
    )
    insert_attempt: str = (
        "INSERT INTO huimin_attempts (event_id, trans_code, platform_seq_id, purpose,"
        " started_at) VALUES (?, ?, ?, ?, ?)"
    )
    # start_attempt's compare-and-set: only the owner of a live lease records an attempt, and
    # the lease is extended (never shortened) to outlast the call. On PostgreSQL the UPDATE
    # locks the row, so a replica's try_lease waits and then sees the extended lease.
    attempt_lease: str = (
        "UPDATE huimin_events SET state = ?, updated_at = ?,"
        " lease_until = CASE WHEN lease_until < ? THEN ? ELSE lease_until END"
        " WHERE event_id = ? AND state <> 'completed' AND lease_owner = ? AND lease_until > ?"
    )
    attempt_started: str = (
        "SELECT started_at, finished_at FROM huimin_attempts WHERE attempt_id = ?"
    )
    finish_attempt: str = (
        "UPDATE huimin_attempts SET finished_at = ?, duration_ms = ?, http_status = ?,"
        " rt_code = ?, outcome = ?, error = ? WHERE attempt_id = ?"
    )
    attempts: str = (
        f"SELECT {ATTEMPT_COLUMNS} FROM huimin_attempts WHERE event_id = ? ORDER BY attempt_id"
    )
    insert_journal: str = (
        "INSERT INTO huimin_journal (event_id, at, kind, detail) VALUES (?, ?, ?, ?)"
    )
    journal: str = (
        f"SELECT {JOURNAL_COLUMNS} FROM huimin_journal WHERE event_id = ? ORDER BY entry_id"
    )
    stats: str = "SELECT state, count(*) AS n FROM huimin_events GROUP BY state"
    # Listings: the WHERE/ORDER part after "SELECT <event columns> FROM huimin_events".
    # The literal state predicates match the partial indexes above.
    unfinished: str = (
        "WHERE state NOT IN ('completed', 'parked') AND updated_at < ? ORDER BY updated_at LIMIT ?"
    )
    unpublished: str = (
        "WHERE state = 'completed' AND result_published_at IS NULL ORDER BY updated_at LIMIT ?"
    )
    # An index lookup on the trace keys (the event id is one of them), whatever the size.
    find: str = (
        "WHERE event_id IN (SELECT event_id FROM huimin_event_keys WHERE key_value = ?)"
        " ORDER BY received_at, event_id LIMIT ?"
    )
    by_business_key: str = "WHERE business_key = ? ORDER BY received_at, event_id"
    recent_since: str = "received_at >= ?"
    recent_type: str = "event_type = ?"
    recent_outcome: str = "outcome = ?"
    recent_order: str = " ORDER BY received_at DESC, event_id DESC LIMIT ?"
    # Replaying a dead letter: a failed/unknown result is set aside (kept in the journal) and
    # the event is work again. The business key stays held by this event, its attempts stay, so
    # a money call is reconciled by its status query before anything is sent.
    reopen: str = (
        "UPDATE huimin_events SET state = 'received', outcome = NULL, result = NULL,"
        " result_published_at = NULL, lease_owner = NULL, lease_until = NULL, updated_at = ?"
        " WHERE event_id = ? AND state = 'completed'"
    )
    # the inbound gateway's memory (huimin_inbound_keys): rowcount 1 = first sight
    remember_inbound: str = (
        "INSERT INTO huimin_inbound_keys (kind, key_value, trans_code, seen_at)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (kind, key_value) DO NOTHING"
    )
    inbound_known: str = "SELECT 1 FROM huimin_inbound_keys WHERE kind = ? AND key_value = ?"
    journal_kind: str = (
        f"SELECT {JOURNAL_COLUMNS} FROM huimin_journal WHERE kind = ? AND at >= ?"
        " ORDER BY at DESC, entry_id DESC LIMIT ?"
    )


def statements(dialect: str) -> Statements:
    """The statements with the placeholders `dialect` wants (psycopg: %s, sqlite3: ?)."""
    qmark = Statements()
    if dialect == "sqlite":
        return qmark
    # Safe only while no statement holds a literal "?" or "%": checked, not assumed.
    texts = {f.name: getattr(qmark, f.name) for f in fields(Statements)}
    if any("%" in text for text in texts.values()):
        raise RuntimeError("a ledger statement contains a literal '%'")
    return replace(qmark, **{name: text.replace("?", "%s") for name, text in texts.items()})
