"""`huimin-worker trace KEY [--json]`: the ledger's timeline of every event matching KEY.

KEY: an eventId, orderId, trialId, treatmentSerialNo, queryId... (any key the ledger indexes).
Personal data is masked. Exit codes: 0 found, 1 nothing matches or the ledger is unreachable.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from worker.errors import LedgerUnavailable
from worker.ledger.base import AttemptRecord
from worker.ops.dlq import EventView, opened_ledger
from worker.ops.render import iso, local_time, one_line, shown_json, shown_text
from worker.ops.trace import render_text, trace
from worker.settings import Settings


def register(commands: Any) -> None:
    parser = commands.add_parser("trace", help="an event's timeline from the ledger, by any key")
    parser.add_argument("key", metavar="KEY", help="eventId, orderId, treatmentSerialNo, ...")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--limit", type=int, default=100, help="at most N events (default 100)")
    parser.set_defaults(func=trace_command)


def trace_command(args: argparse.Namespace, settings: Settings) -> int:
    try:
        with opened_ledger(settings) as ledger:
            found = trace(ledger, args.key, args.limit)
    except LedgerUnavailable as exc:
        print(f"huimin-worker: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(found.as_json(), ensure_ascii=False, indent=2))
    else:
        print("\n".join(render_text(found)))
    return 0 if found.events else 1


# --- the ledger's view of one event (also `dlq show`) ---------------------------------------------


def print_ledger_view(view: EventView, reveal: bool = False) -> None:
    record = view.record
    if record is None:
        print("ledger: no such event (the worker never recorded it)")
        return
    print(
        f"ledger: {record.state.value}, outcome {record.outcome or '-'}, "
        f"{record.delivery_count} delivery(ies), received {local_time(record.received_at)}, "
        f"updated {local_time(record.updated_at)}"
    )
    if record.result:
        result = record.result
        print(
            shown_text(
                f"  result: {result.get('outcome')} rtCode {result.get('rtCode')} "
                f"{one_line(result.get('rtMsg'), 120)}",
                reveal,
            )
        )
    print(f"  attempts ({len(view.attempts)}):")
    for attempt in view.attempts:
        print(shown_text(_attempt_line(attempt), reveal))
    replays = [e for e in view.journal if e.kind in ("replayed", "reopened", "purged")]
    for entry in replays:
        who = entry.detail.get("operator", "?")
        print(f"  {entry.kind} by {who} at {local_time(entry.at)}")


def _attempt_line(attempt: AttemptRecord) -> str:
    took = "-" if attempt.duration_ms is None else f"{attempt.duration_ms:.0f} ms"
    answer = attempt.rt_code or (f"HTTP {attempt.http_status}" if attempt.http_status else "-")
    return (
        f"    {local_time(attempt.started_at)}  {attempt.purpose:<12} {attempt.trans_code} "
        f"seq {attempt.platform_seq_id}  {answer}  {attempt.outcome or 'unfinished'}  "
        f"{took}  {one_line(attempt.error, 60)}"
    )


def ledger_view_json(view: EventView, reveal: bool = False) -> dict[str, Any] | None:
    record = view.record
    if record is None:
        return None
    return shown_json(
        {
            "state": record.state.value,
            "outcome": record.outcome,
            "result": record.result,
            "deliveries": record.delivery_count,
            "receivedAt": iso(record.received_at),
            "updatedAt": iso(record.updated_at),
            "attempts": [_attempt_json(a) for a in view.attempts],
            "journal": [
                {"at": iso(e.at), "kind": e.kind, "detail": e.detail} for e in view.journal
            ],
        },
        reveal,
    )


def _attempt_json(attempt: AttemptRecord) -> dict[str, Any]:
    return {
        "transCode": attempt.trans_code,
        "platformSeqId": attempt.platform_seq_id,
        "purpose": attempt.purpose,
        "startedAt": iso(attempt.started_at),
        "rtCode": attempt.rt_code,
        "httpStatus": attempt.http_status,
        "durationMs": attempt.duration_ms,
        "outcome": attempt.outcome,
        "error": attempt.error,
    }
