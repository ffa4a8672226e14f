"""`open_ledger(url)`: the one place that knows both backends.

It lives apart from base.py because it imports the backends, and the backends import base.py:
kept there, it made the ledger's only import cycle. Backends are imported lazily, so SQLite
users need no psycopg.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from worker.errors import ConfigurationError, LedgerUnavailable
from worker.ledger.base import Ledger
from worker.retry import PROBE_DELAYS_S

log = logging.getLogger(__name__)


def open_ledger(url: str) -> Ledger:
    """Open the ledger a URL names.

    sqlite:///relative/path.db, sqlite:////absolute/path.db  (SQLAlchemy's convention)
    postgresql://user@host:5432/db[?schema=name]  (postgres:// too; `schema` is ours, the rest
    is passed to libpq; tables are prefixed `huimin_` so the database can be shared)
    """
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "sqlite":
        from worker.ledger.sqlite import SqliteLedger

        return SqliteLedger(_sqlite_path(url))
    if scheme in ("postgresql", "postgres"):
        from worker.ledger.postgres import PostgresLedger

        conninfo, schema = _split_schema(url)
        return PostgresLedger(conninfo, schema=schema)
    raise ConfigurationError(
        f"unsupported ledger URL scheme {scheme or '(none)'!r}: "
        "use sqlite:///path/to/ledger.db or postgresql://user@host/db"
    )


def open_migrated_ledger(
    url: str,
    wait_s: float,
    *,
    delays_s: Sequence[float] = PROBE_DELAYS_S,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> Ledger:
    """The ledger, open and migrated; one that is unreachable is waited for up to `wait_s`.

    A running worker pauses while the ledger is down (pipeline/pause.py); a worker starting at
    that moment (a pod rescheduled during a database failover, found by benchmarks/chaos.py)
    must not exit for the same few seconds and crash-loop. Only LedgerUnavailable is waited
    out: a wrong URL or scheme fails at once. Unreachable after `wait_s`: LedgerUnavailable,
    which the CLI turns into exit 3."""
    deadline, attempt = monotonic() + wait_s, 0
    while True:
        try:
            return _migrated(open_ledger(url))
        except LedgerUnavailable as exc:
            delay = delays_s[min(attempt, len(delays_s) - 1)]  # the last one repeats
            if monotonic() + delay > deadline:
                raise
            log.warning("the ledger is unreachable, retrying in %.1f s: %s", delay, exc)
            sleep(delay)
            attempt += 1


def _migrated(ledger: Ledger) -> Ledger:
    try:
        ledger.migrate()
    except BaseException:
        ledger.close()
        raise
    return ledger


def _sqlite_path(url: str) -> str:
    prefix = "sqlite:///"
    path = url[len(prefix) :] if url.lower().startswith(prefix) else ""
    if not path or path == ":memory:" or path.startswith("file:"):
        # An in-memory database would be private to each thread's connection: a ledger
        # that forgets across threads would re-send payments.
        raise ConfigurationError(
            f"ledger URL {url!r} must name a database file: sqlite:///path/to/ledger.db"
        )
    return path


def _split_schema(url: str) -> tuple[str, str | None]:
    """Take our own `schema` query parameter out; libpq would reject it."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for name, value in query if name == "schema"]
    rest = urlencode([(name, value) for name, value in query if name != "schema"])
    return urlunsplit(parts._replace(query=rest)), (schemas[-1] if schemas else None)
