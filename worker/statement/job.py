"""Statement reconciliation, the I/O: HOS00013, download, ledger reads, re-checks, result, report.

    HOS00013 (settleDate) -> settleFileUrl -> download -> unzip -> parse       the platform's day
    ledger: pay/refund events of the day + every order the statement names    the ledger's day
    reconcile() -> discrepancies -> HOS00012 re-check each -> drop what it settles
    store ONE result under the synthetic event `statement:YYYYMMDD` -> CSV report -> publish

Idempotent per date: the run is an event of the ledger (`begin_event` + `complete_event`,
first writer wins), so a second run for the same date finds the stored result instead of
reconciling again: it publishes nothing unless the first publish was never confirmed (then
the same resultId again), and renders the report from the stored result (same bytes). The
run is only written to the ledger once everything was computed: a failed attempt leaves no
half-done event behind for the sweeper to trip over, just a `statement_failed` journal line.

Result: type `statement.reconciled`, outcome `succeeded` whenever the reconciliation ran
(routing key `statement.reconciled.succeeded`); `data.clean` says whether anything remains
and `data.discrepancies` lists it. A statement that cannot be had or read is retried later
and never produces a result. See docs/statement-reconciliation.md.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as time_of_day
from pathlib import Path
from typing import Any, Protocol

import httpx

from worker.broker.messages import Disposition
from worker.broker.result_message import result_message
from worker.clock import CHINA_TZ, Clock
from worker.contract.events import payload_hash
from worker.contract.results import Result
from worker.errors import CallerError, GiveUp, HuiminError, PlatformRejected, StatementError
from worker.ledger.base import EventRecord, EventState, Ledger, NewEvent
from worker.platform.client import PlatformClient, PlatformReply
from worker.protocol.registry import EVENT_TYPES
from worker.protocol.verdicts import RT_NO_SUCH_ORDER
from worker.settings import Settings
from worker.statement import recon
from worker.statement.download import download_statement
from worker.statement.file import StatementRow, iter_zip_rows, summarise
from worker.statement.recon import (
    RESULT_TYPE,
    STATEMENT_CODE,
    TRADE_TYPES,
    TRANS_CODES,
    Discrepancy,
    Findings,
    LedgerOrder,
    OrderKey,
    Recheck,
    ledger_orders_from,
    recheck,
    reconcile,
    report_csv,
    statement_result,
)

log = logging.getLogger(__name__)

STATUS_QUERY_CODE = "HOS00012"
#: the most pay (or refund) events one run reads; more means the date is too far back
LEDGER_SCAN_LIMIT = 100_000
_MONEY_EVENT_TYPES = tuple(t.name for t in EVENT_TYPES.values() if t.trans_code in TRADE_TYPES)


class StatementObserver(Protocol):
    def discrepancy_found(self, kind: str) -> None: ...


class _NoObserver:
    def discrepancy_found(self, kind: str) -> None:
        pass


class LedgerScanTooLarge(GiveUp):
    """More ledger events since the date than one run reads: nothing may be left unread."""

    reason = "statement_ledger_scan_limit"


def run_event_id(settle_date: date) -> str:
    return recon.run_event_id(f"{settle_date:%Y%m%d}")


def final_at(settle_date: date, after: time_of_day) -> datetime:
    """When the platform's statement of `settle_date` is final: the next day at
    HUIMIN_STATEMENT_AFTER, China time. Reconciled earlier, a partial day would be stored as
    that date's one result (first writer wins) and never looked at again."""
    return datetime.combine(settle_date + timedelta(days=1), after, tzinfo=CHINA_TZ)


def report_path(report_dir: Path, settle_date: date) -> Path:
    return report_dir / f"statement-{settle_date:%Y%m%d}.csv"


@dataclass(frozen=True)
class StatementRun:
    """The (stored) reconciliation of one date."""

    settle_date: date
    result: Result
    fresh: bool  # reconciled by this call; False: an earlier run's stored result
    published: bool  # its publish was already confirmed (or deliberately withheld)
    report: Path

    @property
    def discrepancies(self) -> list[dict[str, Any]]:
        return list((self.result.data or {}).get("discrepancies", []))


class StatementJob:
    """Reconciles yesterday's statement once a day (`run_due`), or any date (`run`)."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        client: PlatformClient,
        *,
        clock: Clock,
        http: httpx.Client,
        observer: StatementObserver | None = None,
        retry_after_s: float = 600.0,
        scan_limit: int = LEDGER_SCAN_LIMIT,
    ) -> None:
        self._settings, self._ledger, self._client = settings, ledger, client
        self._clock, self._http = clock, http
        self._observer: StatementObserver = observer or _NoObserver()
        self._retry_after = timedelta(seconds=retry_after_s)
        self._scan_limit = scan_limit
        self._after = time_of_day.fromisoformat(settings.statement_after)
        self._lock = threading.Lock()
        self._done: date | None = None  # the last date known reconciled (saves a ledger read)
        self._retry_at: datetime | None = None

    # --- the schedule ------------------------------------------------------------------------

    def run_due(self) -> Disposition | None:
        """Yesterday's reconciliation once the configured time has passed, else None.

        Called periodically by the engine, possibly while a run is still going (the engine
        does not wait): an overlapping call returns None at once.
        """
        target = self._due()
        if target is None or not self._lock.acquire(blocking=False):
            return None
        try:
            return self._scheduled(target)
        finally:
            self._lock.release()

    def _due(self) -> date | None:
        if not self._settings.statement_enabled:
            return None
        now = self._clock().astimezone(CHINA_TZ)
        target = now.date() - timedelta(days=1)
        if now < final_at(target, self._after) or target == self._done:
            return None
        if self._retry_at is not None and now < self._retry_at:
            return None
        return target

    def _scheduled(self, target: date) -> Disposition | None:
        try:
            run = self.run(target)
        except Exception as exc:  # noqa: BLE001 - whatever it was, try again later, not now
            self._failed(target, exc)
            return None
        self._done, self._retry_at = target, None
        return self.disposition(run)

    def _failed(self, target: date, exc: Exception) -> None:
        self._retry_at = self._clock() + self._retry_after
        # a condition is a warning; a bug (outside the tree, or a CallerError) gets its traceback
        bug = not isinstance(exc, HuiminError) or isinstance(exc, CallerError)
        log.log(
            logging.ERROR if bug else logging.WARNING,
            "statement %s not reconciled, retrying after %s: %s",
            f"{target:%Y%m%d}",
            self._retry_at.isoformat(),
            exc,
            exc_info=bug,
        )
        detail = {"error": f"{type(exc).__name__}: {exc}"[:1000]}
        try:
            self._ledger.record(run_event_id(target), "statement_failed", detail, self._clock())
        except HuiminError:
            pass  # the ledger may be what failed; the log line has it

    # --- one date ----------------------------------------------------------------------------

    def run(self, settle_date: date) -> StatementRun:
        """Reconcile `settle_date`, or find it already reconciled; writes the CSV report.

        Raises HuiminError (RetryLater: platform or ledger unavailable, statement not ready;
        GiveUp: an unreadable statement, a scan over the limit) with nothing stored.
        """
        stored, fresh = self._ledger.get_event(run_event_id(settle_date)), False
        if stored is None or stored.state is not EventState.COMPLETED:
            stored, fresh = self._store(settle_date, self._reconcile(settle_date))
        result = Result.model_validate(stored.result)
        if fresh:  # before the report: a report that fails to write is re-rendered next time
            self._account(result)
        report = write_report(report_path(self._settings.report_dir, settle_date), result)
        return StatementRun(
            settle_date, result, fresh, stored.result_published_at is not None, report
        )

    def disposition(self, run: StatementRun) -> Disposition | None:
        """The result's message for the engine (None if already published); the ledger notes
        the publish once it is confirmed, so the sweeper republishes it if that never comes."""
        if run.published:
            return None
        event_id = run.result.causationId

        def published() -> None:
            self._ledger.mark_result_published(
                event_id, self._clock(), journal={"resultId": run.result.resultId}
            )

        return Disposition(
            (result_message(run.result, run.result.causationId),),
            on_confirmed=published,
            event_id=event_id,
            event_type=RESULT_TYPE,
            label="statement",
        )

    def withhold(self, run: StatementRun, why: str) -> None:
        """Never publish this run's result (`--no-publish`): marked as if published, so the
        sweeper leaves it alone, with a `result_withheld` journal line saying so."""
        if run.published:
            return
        event_id, now = run.result.causationId, self._clock()
        self._ledger.record(
            event_id, "result_withheld", {"resultId": run.result.resultId, "why": why}, now
        )
        self._ledger.mark_result_published(event_id, now)

    # --- reconciling -------------------------------------------------------------------------

    def _reconcile(self, settle_date: date) -> Result:
        rows, reply = self._statement(settle_date)
        orders = self._ledger_view(settle_date, rows)
        remaining, resolved = self._recheck_all(reconcile(rows, orders), settle_date)
        findings = Findings(
            f"{settle_date:%Y%m%d}",
            summarise(rows),
            len(orders),
            remaining,
            resolved,
            reply.rt_code,
        )
        return statement_result(findings, at=self._clock())

    def _statement(self, settle_date: date) -> tuple[list[StatementRow], PlatformReply]:
        day = f"{settle_date:%Y%m%d}"
        reply = self._client.call(
            STATEMENT_CODE,
            {
                "settleDate": day,
                "hospitalId": self._settings.hospital_id,
                "cityCode": self._settings.city_code,
            },
        )
        if reply.data.get("settleDate", day) != day:
            raise StatementError(
                f"asked for the statement of {day}, "
                f"the platform answered {reply.data['settleDate']}"
            )
        with tempfile.TemporaryDirectory(prefix="huimin-statement-") as tmp:
            path = download_statement(
                reply.data["settleFileUrl"], Path(tmp) / f"{day}.zip", client=self._http
            )
            return list(iter_zip_rows(path)), reply

    def _ledger_view(self, settle_date: date, rows: list[StatementRow]) -> list[LedgerOrder]:
        """The ledger's orders of the day, plus those the statement names from other days."""
        day = f"{settle_date:%Y%m%d}"
        orders = [o for o in ledger_orders_from(self._day_records(settle_date)) if o.day == day]
        unseen = {(row.trade_type, row.order_id) for row in rows} - {o.key for o in orders}
        return orders + [o for key in sorted(unseen) if (o := self._named(key)) is not None]

    def _day_records(self, settle_date: date) -> list[EventRecord]:
        # From the day before: an event received late in the evening may be charged after
        # midnight (retries). The listing has no upper bound, so later days come too.
        since = datetime.combine(settle_date - timedelta(days=1), time_of_day(), CHINA_TZ)
        records: list[EventRecord] = []
        for event_type in _MONEY_EVENT_TYPES:
            found = self._ledger.recent_events(
                since=since, event_type=event_type, limit=self._scan_limit
            )
            if len(found) >= self._scan_limit:
                raise LedgerScanTooLarge(
                    f"over {self._scan_limit} {event_type} events since "
                    f"{since.date()}: cannot read them all in one run"
                )
            records += found
        return records

    def _named(self, key: OrderKey) -> LedgerOrder | None:
        trade, order_id = key
        found = ledger_orders_from(
            self._ledger.events_by_business_key(f"{TRANS_CODES[trade]}:{order_id}")
        )
        return found[0] if found else None

    def _recheck_all(
        self, found: list[Discrepancy], settle_date: date
    ) -> tuple[list[Discrepancy], list[Discrepancy]]:
        remaining: list[Discrepancy] = []
        resolved: list[Discrepancy] = []
        for discrepancy in found:
            answer = self._query(discrepancy.order_id)
            checked, settled = recheck(discrepancy, answer, f"{settle_date:%Y%m%d}")
            (resolved if settled else remaining).append(checked)
        return remaining, resolved

    def _query(self, order_id: str) -> Recheck:
        business = {
            "orderId": order_id,
            "hospitalId": self._settings.hospital_id,
            "cityCode": self._settings.city_code,
        }
        try:
            reply = self._client.call(STATUS_QUERY_CODE, business)
        except PlatformRejected as exc:
            if exc.rt_code == RT_NO_SUCH_ORDER:
                return Recheck(found=False)
            return Recheck(error=f"rtCode {exc.rt_code}: {exc.rt_msg}")
        except HuiminError as exc:
            return Recheck(error=f"{type(exc).__name__}: {exc}"[:300])
        return _recheck_of(reply.data)

    # --- storing -----------------------------------------------------------------------------

    def _store(self, settle_date: date, result: Result) -> tuple[EventRecord, bool]:
        """Begin and complete the run's event; first writer wins (two replicas, or the CLI
        racing the worker, both reconciling the same date). True if ours was stored."""
        now, event_id = self._clock(), result.causationId
        data = {"settleDate": f"{settle_date:%Y%m%d}"}
        payload = {
            "eventId": event_id,
            "type": RESULT_TYPE,
            "occurredAt": now.isoformat(),
            "data": data,
        }
        self._ledger.begin_event(
            NewEvent(
                event_id, RESULT_TYPE, STATEMENT_CODE, payload, payload_hash(data), None, data, now
            )
        )
        stored = self._ledger.complete_event(
            event_id, result.outcome.value, result.model_dump(mode="json"), now
        )
        return stored, (stored.result or {}).get("resultId") == result.resultId

    def _account(self, result: Result) -> None:
        """Metrics, journal and log, once per date (only by the run whose result was stored)."""
        data, now = result.data or {}, self._clock()
        for item in data.get("discrepancies", []):
            self._observer.discrepancy_found(item["kind"])
        for item in data.get("resolved", []):
            self._ledger.record(
                item["ledgerEventId"] or result.causationId,
                "statement_resolved",
                {"settleDate": data["settleDate"], **item},
                now,
            )
        self._ledger.record(
            result.causationId,
            "statement_reconciled",
            {"resultId": result.resultId, "rtMsg": result.rtMsg},
            now,
        )
        log.info("%s", result.rtMsg)


# --- the result, the report and publishing ---------------------------------------------------


def _recheck_of(data: dict[str, Any]) -> Recheck:
    order_time, amount = data.get("orderTime"), data.get("amt")
    status = data.get("orderStatus")
    return Recheck(
        order_status=status if isinstance(status, str) else None,
        amount=amount if isinstance(amount, int) else None,
        order_date=order_time[:8] if isinstance(order_time, str) else None,
    )


def write_report(path: Path, result: Result) -> Path:
    """Write the report atomically; an identical file already there is left untouched."""
    content = report_csv(result)
    if path.exists() and path.read_bytes() == content:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(content)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path
