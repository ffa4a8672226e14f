"""`trace KEY` on a big ledger, as a ratio against a primary-key lookup in the same run.

    .venv/bin/python benchmarks/trace.py [--events 1000000] [--samples 300] [--keep PATH]

Builds a SQLite ledger of N payment events (default one million) with what the worker writes
for each: the event row, its business key, its trace keys (eventId, orderId, and a
treatmentSerialNo shared by 10 events), a platform call, and journal entries; every tenth event
also went through a retry and a status query. It is bulk-loaded with raw SQL in ONE transaction
(rows generated inside SQLite from a sequence table: no Python loop per row), through the
schema `migrate()` created, indexes included.

Then, through the real `SqliteLedger` and `worker.ops.trace`:
  baseline  get_event(eventId)                   one primary-key lookup
  trace     trace(ledger, orderId)               1 event: key lookup + attempts + journal
  trace     trace(ledger, treatmentSerialNo)     10 events: the same, ten times
  render    the 10-event trace rendered as text  what `huimin-worker trace` prints

Each is timed on random keys (warm cache); medians and p99. This machine is noisy: the
ratios against the baseline are the result, the absolute times are for orientation.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from worker.ledger.sqlite import SqliteLedger
from worker.ops.trace import render_text, trace

SHARED = 10  # events per treatmentSerialNo
_T = "strftime('%Y-%m-%dT%H:%M:%S', '2026-01-01', '+' || i || ' seconds') || '.000000+00:00'"
_EID = "'evt-' || printf('%08d', i)"
_OID = "'PAY' || printf('%08d', i)"
_SERIAL = f"'ZY' || printf('%07d', i / {SHARED})"

LOAD = [
    "CREATE TEMP TABLE seq (i INTEGER PRIMARY KEY)",
    "INSERT INTO seq (i) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
    "WHERE i < :events) SELECT i FROM n",
    f"""INSERT INTO huimin_events (event_id, event_type, trans_code, payload, payload_hash,
        business_key, state, outcome, result, result_published_at, received_at, updated_at)
    SELECT {_EID}, 'payment.requested', 'HOS00003',
        json_object('eventId', {_EID}, 'type', 'payment.requested', 'occurredAt', {_T},
                    'data', json_object('orderId', {_OID}, 'amt', 500000,
                                        'treatmentSerialNo', {_SERIAL})),
        printf('%064d', i), 'HOS00003:' || {_OID}, 'completed', 'succeeded',
        json_object('resultId', 'res-' || i, 'type', 'payment.requested',
                    'causationId', {_EID}, 'transCode', 'HOS00003', 'outcome', 'succeeded',
                    'rtCode', '0000', 'rtMsg', '交易成功', 'orderStatus', '02',
                    'data', json_object('orderId', {_OID}, 'queryId', 'Q' || i),
                    'errors', json('[]'), 'attempts', 1, 'occurredAt', {_T}),
        {_T}, {_T}, {_T}
    FROM seq""",
    f"INSERT INTO huimin_business_keys SELECT 'HOS00003:' || {_OID}, {_EID} FROM seq",
    f"""INSERT INTO huimin_event_keys (key_value, event_id, key_name)
        SELECT {_EID}, {_EID}, 'eventId' FROM seq
        UNION ALL SELECT {_OID}, {_EID}, 'orderId' FROM seq
        UNION ALL SELECT 'Q' || i, {_EID}, 'queryId' FROM seq
        UNION ALL SELECT {_SERIAL}, {_EID}, 'treatmentSerialNo' FROM seq""",
    f"""INSERT INTO huimin_attempts (event_id, trans_code, platform_seq_id, purpose, started_at,
        finished_at, duration_ms, http_status, rt_code, outcome, error)
        SELECT {_EID}, 'HOS00003', printf('C%031d', i), 'call', {_T}, {_T}, 85.0, 200, '0000',
               CASE WHEN i % 10 = 0 THEN 'unknown' ELSE 'succeeded' END, NULL FROM seq
        UNION ALL
        SELECT {_EID}, 'HOS00012', printf('Q%031d', i), 'status_query', {_T}, {_T}, 40.0, 200,
               '0000', 'succeeded', NULL FROM seq WHERE i % 10 = 0""",
    f"""INSERT INTO huimin_journal (event_id, at, kind, detail)
        SELECT {_EID}, {_T}, 'retry_scheduled',
               json_object('retry', 1, 'queue', 'huimin.retry.money.1s', 'why', 'unknown')
            FROM seq WHERE i % 10 = 0
        UNION ALL SELECT {_EID}, {_T}, 'reconcile',
               json_object('query', 'HOS00012', 'orderStatus', '02') FROM seq WHERE i % 10 = 0
        UNION ALL SELECT {_EID}, {_T}, 'result_published', json_object('resultId', 'res-' || i)
            FROM seq""",
    "DROP TABLE seq",
]


def build_ledger(path: Path, events: int) -> float:
    """The schema by the ledger itself, then one bulk transaction; returns seconds taken."""
    ledger = SqliteLedger(str(path))
    ledger.migrate()
    ledger.close()
    started = time.perf_counter()
    db = sqlite3.connect(path, isolation_level=None)
    # a one-off load: no rollback journal to write, no fsync until the end, a big page cache
    db.execute("PRAGMA journal_mode = OFF")
    db.execute("PRAGMA synchronous = OFF")
    db.execute("PRAGMA cache_size = -1000000")
    db.execute("BEGIN")
    for statement in LOAD:
        db.execute(statement, {"events": events})
    db.execute("COMMIT")
    db.execute("PRAGMA journal_mode = WAL")  # as the worker runs it
    db.close()
    return time.perf_counter() - started


def timed(operation: Callable[[str], object], keys: list[str]) -> list[float]:
    samples = []
    for key in keys:
        started = time.perf_counter()
        operation(key)
        samples.append(time.perf_counter() - started)
    return samples


def p99(samples: list[float]) -> float:
    return sorted(samples)[min(len(samples) - 1, int(len(samples) * 0.99))]


def run(path: Path, events: int, samples: int) -> None:
    print(f"bulk-loading {events:,} events into {path} ...")
    seconds = build_ledger(path, events)
    print(f"  loaded in {seconds:.1f} s ({path.stat().st_size / 2**20:,.0f} MiB)")
    rng = random.Random(2026)
    numbers = [rng.randint(1, events) for _ in range(samples)]
    ledger = SqliteLedger(str(path))
    try:
        measure(ledger, numbers)
    finally:
        ledger.close()


def measure(ledger: SqliteLedger, numbers: list[int]) -> None:
    by_event = [f"evt-{n:08d}" for n in numbers]
    by_order = [f"PAY{n:08d}" for n in numbers]
    by_serial = [f"ZY{n // SHARED:07d}" for n in numbers]
    assert len(trace(ledger, by_serial[0]).events) >= 1, "the load did not index the keys"
    timed(ledger.get_event, by_event[:50])  # warm up
    results = {
        "baseline get_event(eventId)": timed(ledger.get_event, by_event),
        "trace(orderId), 1 event": timed(lambda k: trace(ledger, k), by_order),
        f"trace(treatmentSerialNo), {SHARED} events": timed(lambda k: trace(ledger, k), by_serial),
        f"trace + render text, {SHARED} events": timed(
            lambda k: render_text(trace(ledger, k)), by_serial
        ),
    }
    report(results)


def report(results: dict[str, list[float]]) -> None:
    baseline = statistics.median(next(iter(results.values())))
    print(f"\n{'operation':<40} {'median':>10} {'p99':>10} {'ratio':>8}")
    for name, samples in results.items():
        median = statistics.median(samples)
        print(
            f"{name:<40} {median * 1e6:>8.0f}µs {p99(samples) * 1e6:>8.0f}µs "
            f"{median / baseline:>7.1f}x"
        )
    worst = max(max(samples) for samples in results.values())
    print(f"\nslowest single trace: {worst * 1e3:.1f} ms (the budget is well under 1 s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=300, help="random keys per operation")
    parser.add_argument("--keep", type=Path, help="build the ledger here and keep it")
    args = parser.parse_args()
    if args.keep:
        run(args.keep, args.events, args.samples)
        return
    with tempfile.TemporaryDirectory(prefix="huimin-trace-bench-") as tmp:
        run(Path(tmp) / "ledger.db", args.events, args.samples)


if __name__ == "__main__":
    main()
