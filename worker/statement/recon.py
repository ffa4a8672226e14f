"""Statement reconciliation, the pure core: the platform's daily statement against the ledger.

No I/O and no clock: `job.py` fetches the statement, reads the ledger and runs the
status queries, then hands plain values to the functions here.

    reconcile(statement rows, ledger orders) -> [Discrepancy]     the three-way comparison
    recheck(discrepancy, what HOS00012 said, date) -> (Discrepancy, resolved?)

Decisions (explained for the finance clerk in docs/statement-reconciliation.md):

* An order is identified by (trade type, orderId): 01 pay = HOS00003, 02 refund = HOS00004.
* The ledger attributes an order to the day of the platform's own `orderTime` in its result
  (China time, the clock that also dates the statement line); without one (failed, unknown,
  still in flight) to the result's `occurredAt`, else to when the event was received.
* `ledger_orders` given to `reconcile` are "the ledger's view of the day": every order it
  attributes to the day plus any order the statement names (wherever the ledger dates it).
  So a successful ledger order absent from the statement is `missing_on_platform`, and
  nothing outside the day is ever reported missing.
* The ledger amount is what the HIS asked for (`data.amt` / `data.amtRefund`).
* A statement line means the trade succeeded: its platform status reads 02 (pay) or 12
  (refund) until a status query says otherwise.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from worker.clock import CHINA_TZ
from worker.contract.results import STATEMENT_RESULT_TYPE as RESULT_TYPE
from worker.contract.results import Outcome, Result, build_result
from worker.ledger.base import EventRecord, EventState
from worker.protocol import registry
from worker.statement.file import (
    TRADE_PAY,
    TRADE_REFUND,
    StatementRow,
    StatementSummary,
    TradeType,
)

DiscrepancyKind = Literal[
    "missing_in_ledger", "missing_on_platform", "amount_mismatch", "status_mismatch"
]
KINDS: tuple[DiscrepancyKind, ...] = (
    "missing_in_ledger",
    "missing_on_platform",
    "amount_mismatch",
    "status_mismatch",
)
OrderKey = tuple[TradeType, str]  # (trade type, orderId)
STATEMENT_CODE = "HOS00013"

#: the money call of each statement trade type (the registry's `statement`), and back
_LISTED = {trade: registry.STATEMENT_TRADES[trade] for trade in (TRADE_PAY, TRADE_REFUND)}
TRANS_CODES: Mapping[TradeType, str] = {trade: t.trans_code for trade, t in _LISTED.items()}
TRADE_TYPES: Mapping[str, TradeType] = {code: trade for trade, code in TRANS_CODES.items()}
#: the orderStatus a listed (= successful) trade has: its call's family, "succeeded"
SUCCESS_STATUS: Mapping[TradeType, str] = {
    trade: t.order_family.succeeded for trade, t in _LISTED.items() if t.order_family
}
#: the request field the HIS gave the amount in, which the statement line's amount equals
_AMOUNT_FIELD: Mapping[TradeType, str] = {
    trade: t.statement.amount_field for trade, t in _LISTED.items() if t.statement
}
#: a ledger status the HIS was given as definitive: a status query cannot overrule it quietly
_DEFINITIVE = frozenset({"succeeded", "failed"})
#: the platformStatus reported for an order HOS00012 does not know (it answered rtCode 1000)
STATUS_NO_SUCH_ORDER = "not_found"

#: the CSV report's columns, and the keys of a discrepancy in the result's data
COLUMNS = (
    "kind",
    "orderId",
    "platformSerial",
    "ledgerEventId",
    "platformAmount",
    "ledgerAmount",
    "platformStatus",
    "ledgerStatus",
    "note",
)


@dataclass(frozen=True)
class LedgerOrder:
    """What the ledger knows about one pay or refund order."""

    trade_type: TradeType
    order_id: str
    event_id: str
    amount: int | None  # fen, as the HIS asked; None if the stored event lacks it
    status: str  # the result's outcome (succeeded/failed/unknown), else the event's state
    day: str  # yyyyMMdd, China time (see the module docstring)
    platform_serial: str | None = None  # the result's queryId, when the platform answered

    @property
    def key(self) -> OrderKey:
        return (self.trade_type, self.order_id)

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"


@dataclass(frozen=True)
class Discrepancy:
    """One difference between the statement and the ledger. Never holds personal data."""

    kind: DiscrepancyKind
    trade_type: TradeType
    order_id: str
    platform_serial: str | None = None
    event_id: str | None = None
    platform_amount: int | None = None
    ledger_amount: int | None = None
    platform_status: str | None = None
    ledger_status: str | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        values = (
            self.kind,
            self.order_id,
            self.platform_serial,
            self.event_id,
            self.platform_amount,
            self.ledger_amount,
            self.platform_status,
            self.ledger_status,
            self.note,
        )
        return {"tradeType": self.trade_type, **dict(zip(COLUMNS, values, strict=True))}

    def noted(self, text: str) -> Discrepancy:
        return replace(self, note=f"{self.note}; {text}" if self.note else text)


@dataclass(frozen=True)
class Recheck:
    """What the status query (HOS00012) said about an order."""

    found: bool = True  # False: rtCode 1000, the platform has no such order
    order_status: str | None = None
    amount: int | None = None
    order_date: str | None = None  # yyyyMMdd of its orderTime
    error: str | None = None  # the query itself failed: nothing learnt


@dataclass(frozen=True)
class Findings:
    """Everything one reconciliation found, ready to become the date's result."""

    settle_date: str  # yyyyMMdd
    statement: StatementSummary
    ledger_orders: int
    remaining: list[Discrepancy]
    resolved: list[Discrepancy]
    rt_code: str  # HOS00013's answer


# --------------------------------------------------------------------------- the comparison


def reconcile(
    statement_rows: Iterable[StatementRow], ledger_orders: Iterable[LedgerOrder]
) -> list[Discrepancy]:
    """Every difference between the day's statement and the ledger's view of the day."""
    listed = _group(statement_rows)
    known = {order.key: order for order in ledger_orders}
    found = [d for key, rows in listed.items() if (d := _compare(rows, known.get(key)))]
    found += [
        _missing_on_platform(order)
        for key, order in known.items()
        if order.succeeded and key not in listed
    ]
    return sorted(found, key=lambda d: (KINDS.index(d.kind), d.order_id, d.trade_type))


def _group(rows: Iterable[StatementRow]) -> dict[OrderKey, list[StatementRow]]:
    grouped: dict[OrderKey, list[StatementRow]] = {}
    for row in rows:
        grouped.setdefault((row.trade_type, row.order_id), []).append(row)
    return grouped


def _compare(rows: list[StatementRow], order: LedgerOrder | None) -> Discrepancy | None:
    if order is None:
        return _listed("missing_in_ledger", rows, None)
    if not order.succeeded:
        return _listed("status_mismatch", rows, order)
    if len(rows) > 1:  # a doubled line doubles what the hospital is settled for
        return _listed("amount_mismatch", rows, order, f"listed {len(rows)} times")
    if rows[0].amount != order.amount:
        return _listed("amount_mismatch", rows, order)
    return None


def _listed(
    kind: DiscrepancyKind, rows: list[StatementRow], order: LedgerOrder | None, note: str = ""
) -> Discrepancy:
    first = rows[0]
    serials = dict.fromkeys(row.platform_serial for row in rows)  # unique, in file order
    return Discrepancy(
        kind=kind,
        trade_type=first.trade_type,
        order_id=first.order_id,
        platform_serial=",".join(serials),
        event_id=order.event_id if order else None,
        platform_amount=sum(row.amount for row in rows),
        ledger_amount=order.amount if order else None,
        platform_status=SUCCESS_STATUS[first.trade_type],
        ledger_status=order.status if order else None,
        note=note,
    )


def _missing_on_platform(order: LedgerOrder) -> Discrepancy:
    return Discrepancy(
        kind="missing_on_platform",
        trade_type=order.trade_type,
        order_id=order.order_id,
        platform_serial=order.platform_serial,
        event_id=order.event_id,
        ledger_amount=order.amount,
        ledger_status=order.status,
    )


# --------------------------------------------------------------------------- the re-check


def recheck(found: Discrepancy, answer: Recheck, settle_date: str) -> tuple[Discrepancy, bool]:
    """The discrepancy with what the status query said, and whether that settles it.

    Only two situations are settled by the platform's live answer:
    * status_mismatch, when the ledger's status was not definitive (unknown, still in
      flight) and the platform reports the trade succeeded for the listed amount;
    * missing_on_platform, when the platform reports the trade succeeded on ANOTHER day:
      it is on that day's statement.
    Everything else stays reported, the query's answer added to the note.
    """
    if answer.error is not None:
        return found.noted(f"status query failed, not re-checked: {answer.error}"), False
    checked = replace(
        found, platform_status=answer.order_status if answer.found else STATUS_NO_SUCH_ORDER
    )
    checked = checked.noted(_said(answer))
    if found.kind == "status_mismatch":
        return _status_settled(checked, answer)
    if found.kind == "missing_on_platform":
        return _elsewhere(checked, answer, settle_date)
    return checked, False


def _said(answer: Recheck) -> str:
    if not answer.found:
        return "status query: the platform has no such order"
    dated = f" on {answer.order_date}" if answer.order_date else ""
    return f"status query: orderStatus {answer.order_status}{dated}, amount {answer.amount}"


def _succeeded(found: Discrepancy, answer: Recheck) -> bool:
    return answer.found and answer.order_status == SUCCESS_STATUS[found.trade_type]


def _status_settled(found: Discrepancy, answer: Recheck) -> tuple[Discrepancy, bool]:
    if not _succeeded(found, answer) or answer.amount != found.platform_amount:
        return found, False
    if found.ledger_status in _DEFINITIVE:  # the HIS was told "failed": a person must act
        return found.noted(f"the HIS was told {found.ledger_status!r}"), False
    return found.noted(f"resolved: the ledger's {found.ledger_status!r} was a success"), True


def _elsewhere(found: Discrepancy, answer: Recheck, settle_date: str) -> tuple[Discrepancy, bool]:
    if _succeeded(found, answer) and answer.order_date and answer.order_date != settle_date:
        return found.noted(f"resolved: on the statement of {answer.order_date}"), True
    return found, False


# --------------------------------------------------------------------------- ledger records


def ledger_orders_from(records: Iterable[EventRecord]) -> list[LedgerOrder]:
    """The pay and refund orders among `records`, one per order.

    The same orderId can have several events: a re-sent payment under a new eventId mirrors
    the first one's result, a changed one is an idempotency conflict (failed). The one that
    speaks for the order is a succeeded one if any, else a completed one, else the earliest.
    """
    best: dict[OrderKey, tuple[tuple[bool, bool, datetime, str], LedgerOrder]] = {}
    for record in records:
        order = ledger_order(record)
        if order is None:
            continue
        rank = (
            not order.succeeded,
            record.state is not EventState.COMPLETED,
            record.received_at,
            record.event_id,
        )
        if order.key not in best or rank < best[order.key][0]:
            best[order.key] = (rank, order)
    return [order for _, order in best.values()]


def ledger_order(record: EventRecord) -> LedgerOrder | None:
    """The order a HOS00003/HOS00004 event is about; None for any other event."""
    trade = TRADE_TYPES.get(record.trans_code or "")
    data = record.payload.get("data") if isinstance(record.payload, dict) else None
    if trade is None or not isinstance(data, dict) or not isinstance(data.get("orderId"), str):
        return None
    answer = _answer(record)
    amount = data.get(_AMOUNT_FIELD[trade])
    serial = answer.get("queryId")
    return LedgerOrder(
        trade_type=trade,
        order_id=data["orderId"],
        event_id=record.event_id,
        amount=amount if isinstance(amount, int) else None,
        status=record.outcome or record.state.value,
        day=ledger_day(record),
        platform_serial=serial if isinstance(serial, str) else None,
    )


def ledger_day(record: EventRecord) -> str:
    """yyyyMMdd (China time) the ledger attributes the order of `record` to."""
    order_time = _answer(record).get("orderTime")
    if isinstance(order_time, str) and len(order_time) == 14 and order_time.isdigit():
        return order_time[:8]  # the platform's clock, already China time
    decided = (record.result or {}).get("occurredAt")
    moment = _parse_time(decided) or record.received_at
    return moment.astimezone(CHINA_TZ).strftime("%Y%m%d")


def _answer(record: EventRecord) -> dict[str, Any]:
    data = (record.result or {}).get("data")
    return data if isinstance(data, dict) else {}


def _parse_time(value: Any) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return parsed if parsed is not None and parsed.tzinfo is not None else None


# --------------------------------------------------------------------------- result and report


def run_event_id(settle_date: str) -> str:
    """The synthetic ledger event (and result causationId) of one date's reconciliation."""
    return f"statement:{settle_date}"


def statement_result(findings: Findings, *, at: datetime) -> Result:
    """The date's one result: `succeeded` whenever the reconciliation ran; `data.clean` and
    `data.discrepancies` say what it found."""
    summary = findings.statement
    data = {
        "settleDate": findings.settle_date,
        "clean": not findings.remaining,
        "statement": {
            "payCount": summary.pay_count,
            "payTotal": summary.pay_total,
            "refundCount": summary.refund_count,
            "refundTotal": summary.refund_total,
        },
        "ledgerOrders": findings.ledger_orders,
        "discrepancyCount": len(findings.remaining),
        "discrepancies": [d.as_dict() for d in findings.remaining],
        "resolved": [d.as_dict() for d in findings.resolved],
    }
    return build_result(
        event_id=run_event_id(findings.settle_date),
        event_type=RESULT_TYPE,
        trans_code=STATEMENT_CODE,
        outcome=Outcome.SUCCEEDED,
        at=at,
        attempts=1 + len(findings.remaining) + len(findings.resolved),  # HOS00013 + re-checks
        rt_code=findings.rt_code,
        rt_msg=headline(findings),
        data=data,
    )


def headline(findings: Findings) -> str:
    day, resolved = findings.settle_date, len(findings.resolved)
    settled = f", {resolved} resolved by status query" if resolved else ""
    if not findings.remaining:
        return f"statement {day}: clean, {findings.statement.count} order(s) listed{settled}"
    kinds = Counter(d.kind for d in findings.remaining)
    shown = ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items()))
    return f"statement {day}: {len(findings.remaining)} discrepancy(ies): {shown}{settled}"


def report_csv(result: Result) -> bytes:
    """The CSV report of a stored result: UTF-8 with a BOM (Excel then reads Chinese text),
    one line per remaining discrepancy, amounts in fen. No personal data: none is stored."""
    out = io.StringIO()
    writer = csv.DictWriter(out, COLUMNS, extrasaction="ignore", lineterminator="\r\n")
    writer.writeheader()
    for item in (result.data or {}).get("discrepancies", []):
        writer.writerow({key: _cell(item.get(key)) for key in COLUMNS})
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    # A note starting with = + - @ would run as a formula in the clerk's spreadsheet.
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text
