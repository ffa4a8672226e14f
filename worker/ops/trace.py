"""`huimin-worker trace KEY`: every matching event's timeline, from the ledger alone.

KEY is anything the ledger indexes (eventId, orderId, trialId, treatmentSerialNo, queryId,
origOrderId, settleDate): one index lookup finds the events, then each event's attempts and
journal are read by their (event_id, id) indexes, so a trace costs the same on a ledger of a
thousand events or of millions (benchmarks/trace.py).

The timeline merges, in time order: the event received; each platform attempt (transCode,
platformSeqId, rtCode, duration, outcome); the journal (reconciliation, retries scheduled,
redeliveries, sweeps, dead-lettering, replays, purges, results published); and the results
stored, including results a replay set aside. Personal data is masked (worker.logs.mask).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from worker.ledger.base import AttemptRecord, EventRecord, JournalEntry, Ledger
from worker.logs import mask
from worker.ops.render import iso, local_time, masked_json, one_line

#: ties at one instant: received, then attempts, then the journal, then the result it stored
_RANK = {"received": 0, "attempt": 1, "status_query": 1, "result_stored": 3}
_JOURNAL_RANK = 2
_PUBLISHED_RANK = 4


@dataclass(frozen=True)
class TraceItem:
    at: datetime
    event_id: str
    kind: str
    summary: str  # masked
    detail: dict[str, Any]  # masked
    rank: int = _JOURNAL_RANK
    seq: int = 0  # order among items of one kind at one instant (journal entry id, ...)

    def as_json(self) -> dict[str, Any]:
        return {
            "at": iso(self.at),
            "eventId": mask(self.event_id),
            "kind": self.kind,
            "summary": self.summary,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Trace:
    key: str
    events: list[EventRecord]
    items: list[TraceItem]  # time order

    def as_json(self) -> dict[str, Any]:
        return {
            "key": mask(self.key),
            "events": [_event_json(r) for r in self.events],
            "timeline": [item.as_json() for item in self.items],
        }


def trace(ledger: Ledger, key: str, limit: int = 100) -> Trace:
    records = ledger.find_events(key, limit)
    items = [
        item
        for record in records
        for item in event_items(
            record, ledger.attempts(record.event_id), ledger.journal(record.event_id)
        )
    ]
    items.sort(key=lambda item: (item.at, item.rank, item.seq))
    return Trace(key, records, items)


def event_items(
    record: EventRecord, attempts: list[AttemptRecord], journal: list[JournalEntry]
) -> list[TraceItem]:
    """One event's items, unsorted: the record, its attempts, its journal, its results."""
    published = {e.detail.get("resultId") for e in journal if e.kind == "result_published"}
    items = [_received(record), *(_attempt(a) for a in attempts)]
    items += [
        item for entry in journal for item in _journal_items(record.event_id, entry, published)
    ]
    items += _result_items(record.event_id, record.result, published, record.result_published_at)
    return items


def _item(
    at: datetime,
    event_id: str,
    kind: str,
    summary: str,
    detail: dict[str, Any],
    rank: int = _JOURNAL_RANK,
    seq: int = 0,
) -> TraceItem:
    return TraceItem(at, event_id, kind, mask(summary), masked_json(detail), rank, seq)


def _received(record: EventRecord) -> TraceItem:
    code = f" ({record.trans_code})" if record.trans_code else ""
    text = f"received {record.event_type}{code}, {record.delivery_count} delivery(ies) so far"
    detail = {
        "type": record.event_type,
        "transCode": record.trans_code,
        "deliveries": record.delivery_count,
        "state": record.state.value,
    }
    return _item(record.received_at, record.event_id, "received", text, detail, 0)


def _attempt(attempt: AttemptRecord) -> TraceItem:
    word = "platform call" if attempt.purpose == "call" else "status query"
    text = f"{word} {attempt.trans_code} seq {attempt.platform_seq_id} -> {_answer(attempt)}"
    detail = {
        "transCode": attempt.trans_code,
        "platformSeqId": attempt.platform_seq_id,
        "purpose": attempt.purpose,
        "rtCode": attempt.rt_code,
        "httpStatus": attempt.http_status,
        "durationMs": attempt.duration_ms,
        "outcome": attempt.outcome,
        "error": attempt.error,
        "finishedAt": iso(attempt.finished_at),
    }
    kind = "attempt" if attempt.purpose == "call" else "status_query"
    return _item(attempt.started_at, attempt.event_id, kind, text, detail, 1, attempt.attempt_id)


def _answer(attempt: AttemptRecord) -> str:
    if attempt.finished_at is None:
        return "no answer recorded (the worker stopped mid-call: reconcile, never re-send)"
    answer = (
        f"rtCode {attempt.rt_code}"
        if attempt.rt_code
        else f"HTTP {attempt.http_status}"
        if attempt.http_status
        else one_line(attempt.error, 90) or "no answer"
    )
    took = "" if attempt.duration_ms is None else f", {attempt.duration_ms:.0f} ms"
    return f"{answer} ({attempt.outcome}{took})"


def _journal_items(event_id: str, entry: JournalEntry, published: set[Any]) -> list[TraceItem]:
    summary = _JOURNAL_TEXT.get(entry.kind, _generic)(entry.detail)
    items = [_item(entry.at, event_id, entry.kind, summary, entry.detail, seq=entry.entry_id)]
    if entry.kind == "reopened":  # the result it set aside was stored (and published) before
        previous = entry.detail.get("previous") or {}
        items += _result_items(
            event_id, previous.get("result"), published, _time(previous.get("resultPublishedAt"))
        )
    return items


def _result_items(
    event_id: str, result: dict | None, published: set[Any], published_at: datetime | None
) -> list[TraceItem]:
    if not result:
        return []
    at = _time(result.get("occurredAt"))
    items = [] if at is None else [_result_stored(event_id, result, at)]
    if published_at is not None and result.get("resultId") not in published:
        text = f"result {result.get('resultId')} published"
        items.append(
            _item(
                published_at,
                event_id,
                "result_published",
                text,
                {"resultId": result.get("resultId")},
                _PUBLISHED_RANK,
            )
        )
    return items


def _result_stored(event_id: str, result: dict, at: datetime) -> TraceItem:
    status = f" orderStatus {result['orderStatus']}" if result.get("orderStatus") else ""
    text = (
        f"result stored: {result.get('outcome')} rtCode {result.get('rtCode')}{status}, "
        f"{result.get('attempts')} attempt(s): {one_line(result.get('rtMsg'), 120)}"
    )
    detail = {
        k: result.get(k)
        for k in ("resultId", "outcome", "rtCode", "rtMsg", "orderStatus", "attempts", "errors")
    }
    return _item(at, event_id, "result_stored", text, detail, _RANK["result_stored"])


def _time(value: Any) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return parsed if parsed is not None and parsed.tzinfo is not None else None


# --- the journal's kinds in words ------------------------------------------------------------


def _generic(detail: dict[str, Any]) -> str:
    return one_line(json.dumps(detail, ensure_ascii=False, default=str), 160)


def _g(detail: dict[str, Any], name: str) -> str:
    return one_line(str(detail.get(name, "?")), 160)


_JOURNAL_TEXT = {
    "retry_scheduled": lambda d: (
        f"retry {_g(d, 'retry')} scheduled on {_g(d, 'queue')}: {_g(d, 'why')}"
    ),
    "reconcile": lambda d: (
        f"reconciliation: {_g(d, 'query')} says "
        + (f"orderStatus {d['orderStatus']}" if "orderStatus" in d else f"rtCode {_g(d, 'rtCode')}")
    ),
    "duplicate": lambda d: "redelivered: the stored result republished, platform not called",
    "swept": lambda d: f"sweeper re-injected it (it was {_g(d, 'state')})",
    "result_published": lambda d: f"result {_g(d, 'resultId')} published",
    "dead_lettered": lambda d: f"dead-lettered: {_g(d, 'reason')}",
    "reopened": lambda d: (
        f"reopened by {_g(d, 'operator')} ({_g(d, 'by')}): previous result "
        f"{_g(d.get('previous') or {}, 'outcome')} set aside"
    ),
    "replayed": lambda d: (
        f"replayed from the dead-letter queue by {_g(d, 'operator')} to "
        f"{_g(d, 'workQueue')} (dead-lettered as {_g(d, 'reason')}, "
        f"replay #{_g(d, 'generation')}, ledger: {_g(d, 'ledger')})"
    ),
    "replay_published": lambda d: "replay published to its work queue (confirmed)",
    "replay_duplicate_removed": lambda d: (
        f"duplicate dead letter of a confirmed replay removed by {_g(d, 'operator')}"
    ),
    "purged": lambda d: (
        f"purged from the dead-letter queue by {_g(d, 'operator')} "
        f"(dead-lettered as {_g(d, 'reason')})"
    ),
}


# --- output ------------------------------------------------------------------------------------


def _event_json(record: EventRecord) -> dict[str, Any]:
    return masked_json(
        {
            "eventId": record.event_id,
            "type": record.event_type,
            "transCode": record.trans_code,
            "state": record.state.value,
            "outcome": record.outcome,
            "receivedAt": iso(record.received_at),
            "deliveries": record.delivery_count,
        }
    )


def render_text(found: Trace) -> list[str]:
    lines = [mask(f"trace {found.key}: {len(found.events)} event(s)")]
    for record in found.events:
        lines.append(
            mask(
                f"  {record.event_id}  {record.event_type}  {record.trans_code or '-'}"
                f"  {record.state.value}/{record.outcome or '-'}"
            )
        )
    width = max((len(mask(r.event_id)) for r in found.events), default=0)
    lines.append("")
    for item in found.items:
        lines.append(
            f"{local_time(item.at)}  {mask(item.event_id):<{width}}  {item.kind:<16} {item.summary}"
        )
    return lines
