"""Statement reconciliation: the pure comparison (properties), the re-check rules, and the job
end to end against the simulator with the real worker, the CLI, RabbitMQ and PostgreSQL.

The integration tests pin one day with a FixedClock shared by the simulator, the worker and
the job: payments happen on 2025-09-01 at 10:00 China time, then the clock moves to the next
day after HUIMIN_STATEMENT_AFTER and the job reconciles 2025-09-01. Injected mismatches:
an order the ledger never saw is paid at the simulator directly with the PlatformClient; an
amount difference is made by changing the amount the simulator booked for an order (as if
the platform had charged something else than the HIS asked: the statement and the status
query then agree with each other and disagree with the ledger).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from datetime import time as time_of_day
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.worker_harness import (
    Backend,
    running,
    sqlite_url,
    start_worker,
)
from worker.app import Worker
from worker.broker.memory import MemoryBroker
from worker.broker.memory_transport import MemoryTransport
from worker.broker.topology import build_topology
from worker.cli import build_parser
from worker.cli.statement_cmd import statement_command
from worker.clock import CHINA_TZ, Clock, FixedClock
from worker.contract.results import Outcome, build_result
from worker.ledger.base import EventRecord, EventState
from worker.pipeline.engine import Engine
from worker.platform.client import PlatformClient
from worker.protocol.models.examples import EXAMPLES
from worker.sandbox.his import AmqpHis, HisSide, ReceivedResult
from worker.sandbox.simulator.server import SimulatorHandle, run_in_thread
from worker.settings import Settings
from worker.statement.file import StatementRow
from worker.statement.job import LedgerScanTooLarge, StatementJob, final_at, report_path
from worker.statement.recon import (
    Discrepancy,
    LedgerOrder,
    Recheck,
    ledger_day,
    ledger_order,
    ledger_orders_from,
    recheck,
    reconcile,
    report_csv,
)

ROOT = Path(__file__).resolve().parents[1]
DAY = date(2025, 9, 1)
DAY_TEXT = "20250901"
PAY_TIME = datetime(2025, 9, 1, 10, 0, tzinfo=CHINA_TZ)
RECONCILE_TIME = datetime(2025, 9, 2, 13, 30, tzinfo=CHINA_TZ)
RESULT_KEY = "statement.reconciled.succeeded"
PATIENT_NAME, ID_NO = EXAMPLES["HOS00001"].request["userName"], EXAMPLES["HOS00001"].request["idNo"]


# =========================================================================== the pure core

_ID = st.from_regex(r"[A-Z0-9]{8,24}", fullmatch=True)
_ORDER = st.tuples(st.sampled_from(["01", "02"]), _ID, st.integers(0, 10**10))
_ORDERS = st.lists(_ORDER, min_size=1, max_size=12, unique_by=lambda o: (o[0], o[1]))
_NOT_SUCCEEDED = st.sampled_from(["failed", "unknown", "in_flight", "reconciling", "waiting"])


def row(trade: Any, order_id: str, amount: int) -> StatementRow:
    return StatementRow(
        platform_serial="Q" + order_id,
        order_id=order_id,
        name=PATIENT_NAME,
        id_no="4418**********1234",
        pay_date=DAY_TEXT,
        pay_time="100000",
        trade_type=trade,
        amount=amount,
        card_no="62284*******1234",
        merchant_no="H0000001",
        merchant_name="",
        coupon_info="",
        coupon_amount=0,
        insurance_amount=0,
    )


def order(trade: Any, order_id: str, amount: int, status: str = "succeeded") -> LedgerOrder:
    return LedgerOrder(trade, order_id, "evt-" + order_id, amount, status, DAY_TEXT, "Q" + order_id)


def both_sides(orders: list[tuple[Any, str, int]]) -> tuple[list[StatementRow], list[LedgerOrder]]:
    return [row(*o) for o in orders], [order(*o) for o in orders]


@given(_ORDERS)
def test_identical_sides_have_no_discrepancies(orders: list[tuple[Any, str, int]]) -> None:
    rows, ledger = both_sides(orders)
    assert reconcile(rows, ledger) == []


@given(_ORDERS, st.data())
def test_a_row_missing_from_the_statement_is_exactly_missing_on_platform(
    orders: list[tuple[Any, str, int]], data: st.DataObject
) -> None:
    rows, ledger = both_sides(orders)
    gone = rows.pop(data.draw(st.integers(0, len(rows) - 1)))
    [found] = reconcile(rows, ledger)
    assert (found.kind, found.order_id, found.trade_type) == (
        "missing_on_platform",
        gone.order_id,
        gone.trade_type,
    )
    assert found.ledger_amount == gone.amount and found.platform_amount is None


@given(_ORDERS, st.data())
def test_an_order_the_ledger_lacks_is_exactly_missing_in_ledger(
    orders: list[tuple[Any, str, int]], data: st.DataObject
) -> None:
    rows, ledger = both_sides(orders)
    gone = ledger.pop(data.draw(st.integers(0, len(ledger) - 1)))
    [found] = reconcile(rows, ledger)
    assert (found.kind, found.order_id, found.event_id) == (
        "missing_in_ledger",
        gone.order_id,
        None,
    )
    assert found.platform_amount == gone.amount and found.platform_serial == "Q" + gone.order_id


@given(_ORDERS, st.data(), st.integers(-(10**6), 10**6).filter(bool))
def test_an_altered_amount_is_exactly_an_amount_mismatch(
    orders: list[tuple[Any, str, int]], data: st.DataObject, delta: int
) -> None:
    rows, ledger = both_sides(orders)
    index = data.draw(st.integers(0, len(ledger) - 1))
    altered = ledger[index] = dataclasses.replace(
        ledger[index], amount=ledger[index].amount + delta
    )
    [found] = reconcile(rows, ledger)
    assert (found.kind, found.order_id) == ("amount_mismatch", altered.order_id)
    assert (found.platform_amount, found.ledger_amount) == (altered.amount - delta, altered.amount)


@given(_ORDERS, st.data(), _NOT_SUCCEEDED)
def test_a_listed_order_the_ledger_did_not_see_succeed_is_a_status_mismatch(
    orders: list[tuple[Any, str, int]], data: st.DataObject, status: str
) -> None:
    rows, ledger = both_sides(orders)
    index = data.draw(st.integers(0, len(ledger) - 1))
    ledger[index] = dataclasses.replace(ledger[index], status=status)
    [found] = reconcile(rows, ledger)
    assert (found.kind, found.order_id, found.ledger_status) == (
        "status_mismatch",
        ledger[index].order_id,
        status,
    )
    assert found.platform_status == ("02" if ledger[index].trade_type == "01" else "12")


@given(_ORDERS, _NOT_SUCCEEDED)
def test_orders_that_did_not_succeed_need_not_be_listed(
    orders: list[tuple[Any, str, int]], status: str
) -> None:
    ledger = [order(*o, status=status) for o in orders]
    assert reconcile([], ledger) == []


@given(_ORDERS, st.data())
def test_a_doubled_line_is_an_amount_mismatch(
    orders: list[tuple[Any, str, int]], data: st.DataObject
) -> None:
    rows, ledger = both_sides(orders)
    doubled = rows[data.draw(st.integers(0, len(rows) - 1))]
    [found] = reconcile([*rows, doubled], ledger)
    assert (found.kind, found.platform_amount, found.note) == (
        "amount_mismatch",
        2 * doubled.amount,
        "listed 2 times",
    )


@given(_ORDERS, st.randoms())
def test_the_order_of_the_inputs_does_not_matter(
    orders: list[tuple[Any, str, int]], rng: Any
) -> None:
    rows, ledger = both_sides(orders)
    ledger = [dataclasses.replace(o, amount=o.amount + 1) for o in ledger[::2]]
    expected = reconcile(rows, ledger)
    rng.shuffle(rows)
    rng.shuffle(ledger)
    assert reconcile(rows, ledger) == expected


@given(_ORDERS)
def test_discrepancies_carry_no_personal_data(orders: list[tuple[Any, str, int]]) -> None:
    rows, _ = both_sides(orders)
    for found in reconcile(rows, []):
        shown = json.dumps(found.as_dict(), ensure_ascii=False)
        # the statement's (masked) id and card numbers never travel on; amounts may be anything
        assert PATIENT_NAME not in shown
        assert "**********1234" not in shown and "*******1234" not in shown


# --- the re-check rules ------------------------------------------------------------------------


def _found(kind: Any, ledger_status: str | None = "unknown") -> Discrepancy:
    return Discrepancy(kind, "01", "PAY0000000001", "Q1", "evt-1", 500, 500, "02", ledger_status)


@pytest.mark.parametrize(
    ("found", "answer", "resolved"),
    [
        (
            _found("status_mismatch"),
            Recheck(order_status="02", amount=500, order_date=DAY_TEXT),
            True,
        ),
        (_found("status_mismatch", "in_flight"), Recheck(order_status="02", amount=500), True),
        (_found("status_mismatch", "failed"), Recheck(order_status="02", amount=500), False),
        (_found("status_mismatch"), Recheck(order_status="03", amount=500), False),
        (_found("status_mismatch"), Recheck(order_status="02", amount=400), False),
        (_found("status_mismatch"), Recheck(found=False), False),
        (
            _found("missing_on_platform", "succeeded"),
            Recheck(order_status="02", amount=500, order_date="20250902"),
            True,
        ),
        (
            _found("missing_on_platform", "succeeded"),
            Recheck(order_status="02", amount=500, order_date=DAY_TEXT),
            False,
        ),
        (_found("missing_on_platform", "succeeded"), Recheck(found=False), False),
        (_found("missing_in_ledger", None), Recheck(order_status="02", amount=500), False),
        (_found("amount_mismatch", "succeeded"), Recheck(order_status="02", amount=500), False),
        (_found("status_mismatch"), Recheck(error="PlatformUnavailable: HTTP 503"), False),
    ],
)
def test_what_a_status_query_settles(found: Discrepancy, answer: Recheck, resolved: bool) -> None:
    checked, settled = recheck(found, answer, DAY_TEXT)
    assert settled is resolved
    assert checked.note.startswith("status query") and (("resolved:" in checked.note) is resolved)


def test_a_recheck_records_what_the_platform_said() -> None:
    checked, _ = recheck(_found("missing_on_platform", "succeeded"), Recheck(found=False), DAY_TEXT)
    assert checked.platform_status == "not_found"
    assert "no such order" in checked.note
    failed, _ = recheck(
        _found("status_mismatch", "failed"), Recheck(order_status="02", amount=500), DAY_TEXT
    )
    assert "the HIS was told 'failed'" in failed.note


# --- ledger records -> orders ------------------------------------------------------------------


def record(
    event_id: str,
    trans_code: str | None,
    data: dict[str, Any],
    *,
    outcome: str | None = "succeeded",
    answer: dict[str, Any] | None = None,
    received_at: datetime = PAY_TIME,
) -> EventRecord:
    result = (
        None
        if outcome is None
        else build_result(
            event_id=event_id,
            event_type="payment.requested",
            trans_code=trans_code,
            outcome=Outcome(outcome),
            at=received_at,
            attempts=1,
            data=answer,
        ).model_dump(mode="json")
    )
    state = EventState.COMPLETED if outcome else EventState.IN_FLIGHT
    return EventRecord(
        event_id,
        "payment.requested",
        trans_code,
        {"data": data},
        "h",
        None,
        state,
        outcome,
        result,
        None,
        received_at,
        received_at,
        None,
        None,
        1,
    )


def test_the_day_is_the_platform_order_time_else_when_received_in_china_time() -> None:
    late = datetime(2025, 8, 31, 23, 59, tzinfo=CHINA_TZ)
    paid = record(
        "e1",
        "HOS00003",
        {"orderId": "PAY00000001", "amt": 5},
        answer={"orderTime": "20250901000012", "queryId": "Q1"},
        received_at=late,
    )
    assert ledger_day(paid) == DAY_TEXT
    utc_evening = datetime(2025, 8, 31, 17, 0, tzinfo=UTC)  # 01:00 on Sept 1st in China
    pending = record(
        "e2",
        "HOS00003",
        {"orderId": "PAY00000002", "amt": 5},
        outcome=None,
        received_at=utc_evening,
    )
    assert ledger_day(pending) == DAY_TEXT


def test_ledger_orders_are_pay_and_refund_events_one_per_order() -> None:
    data = {"orderId": "PAY00000001", "amt": 500}
    holder = record("e1", "HOS00003", data, answer={"queryId": "Q1"})
    conflict = record("e0", "HOS00003", {**data, "amt": 1}, outcome="failed")
    refund = record(
        "e2", "HOS00004", {"orderId": "RFD00000001", "amtRefund": 100}, outcome="unknown"
    )
    query = record("e3", "HOS00012", {"orderId": "PAY00000001"})
    orders = {o.key: o for o in ledger_orders_from([conflict, holder, refund, query])}
    assert orders == {
        ("01", "PAY00000001"): LedgerOrder(
            "01", "PAY00000001", "e1", 500, "succeeded", DAY_TEXT, "Q1"
        ),
        ("02", "RFD00000001"): LedgerOrder("02", "RFD00000001", "e2", 100, "unknown", DAY_TEXT),
    }
    assert ledger_order(query) is None


def test_the_report_is_excel_friendly_and_formula_safe() -> None:
    found = dataclasses.replace(_found("amount_mismatch", "succeeded"), note="=HYPERLINK(1)")
    result = build_result(
        event_id="statement:20250901",
        event_type="statement.reconciled",
        trans_code="HOS00013",
        outcome=Outcome.SUCCEEDED,
        at=PAY_TIME,
        attempts=2,
        data={"discrepancies": [found.as_dict()]},
    )
    content = report_csv(result)
    assert content.startswith("\ufeff".encode())
    [line] = list(csv.DictReader(io.StringIO(content.decode("utf-8-sig"))))
    assert line == {
        "kind": "amount_mismatch",
        "orderId": "PAY0000000001",
        "platformSerial": "Q1",
        "ledgerEventId": "evt-1",
        "platformAmount": "500",
        "ledgerAmount": "500",
        "platformStatus": "02",
        "ledgerStatus": "succeeded",
        "note": "'=HYPERLINK(1)",
    }


# =========================================================================== end to end


class Counted:
    """The metrics object's stand-in: counts discrepancy_found(kind)."""

    def __init__(self) -> None:
        self.kinds: Counter[str] = Counter()

    def discrepancy_found(self, kind: str) -> None:
        self.kinds[kind] += 1


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(PAY_TIME)


@pytest.fixture
def sim(clock: FixedClock) -> Iterator[SimulatorHandle]:
    with run_in_thread(clock=clock, seed=7) as handle:
        yield handle


def memory_backend(tmp_path: Path) -> Backend:
    return Backend("memory-sqlite", None, sqlite_url(tmp_path), MemoryBroker())


def settings_for(backend: Backend, sim: SimulatorHandle, tmp_path: Path, **more: Any) -> Settings:
    return backend.settings(sim.base_url + "/api", report_dir=tmp_path / "reports", **more)


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:20].upper()}"


def pay_data(order_id: str, amt: int) -> dict[str, Any]:
    return {**json.loads(json.dumps(EXAMPLES["HOS00003"].request)), "orderId": order_id, "amt": amt}


def send(his: HisSide, clock: FixedClock, event_type: str, data: dict[str, Any]) -> ReceivedResult:
    event_id = f"evt-{uuid.uuid4().hex}"
    his.publish(
        {"eventId": event_id, "type": event_type, "data": data, "occurredAt": clock().isoformat()}
    )
    result = his.next_result(20)
    assert result.correlation_id == event_id
    return result


def pay(his: HisSide, clock: FixedClock, amt: int) -> tuple[str, ReceivedResult]:
    order_id = new_id("PAY")
    return order_id, send(his, clock, "payment.requested", pay_data(order_id, amt))


def refund(his: HisSide, clock: FixedClock, query_id: str, amt: int) -> ReceivedResult:
    data = {
        **EXAMPLES["HOS00004"].request,
        "orderId": new_id("RFD"),
        "origOrderId": query_id,
        "amtRefund": amt,
    }
    return send(his, clock, "refund.requested", data)


def make_job(worker: Worker, clock: FixedClock, **options: Any) -> StatementJob:
    settings = worker.settings.model_copy(update={"statement_enabled": True})
    return StatementJob(
        settings, worker.ledger, worker.client, clock=clock, http=httpx.Client(timeout=5), **options
    )


def with_job(worker: Worker, job: StatementJob, interval_s: float = 0.05) -> Worker:
    """The worker with the job among its engine's periodic jobs, as app.py will wire it."""
    old = worker.engine
    config = dataclasses.replace(
        old.config, periodic=[*old.config.periodic, (interval_s, job.run_due)]
    )
    engine = Engine(old.transport, worker.topology, worker.processor.handle, config)
    return dataclasses.replace(worker, engine=engine)


def result_data(body: dict[str, Any]) -> dict[str, Any]:
    schema = json.loads((ROOT / "schemas" / "results" / "result.json").read_text("utf-8"))
    jsonschema.validate(body, schema)
    assert body["type"] == "statement.reconciled" and body["causationId"] == "statement:20250901"
    return body["data"]


def kinds_and_orders(data: dict[str, Any]) -> set[tuple[str, str]]:
    return {(item["kind"], item["orderId"]) for item in data["discrepancies"]}


def report_lines(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text("utf-8-sig"))))


def wait_until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def published_at(worker: Worker) -> datetime | None:
    found = worker.ledger.get_event("statement:20250901")
    return found.result_published_at if found else None


# --- a day with injected mismatches --------------------------------------------------------------


def test_a_day_with_injected_mismatches_yields_exactly_those(
    sim: SimulatorHandle, clock: FixedClock, tmp_path: Path
) -> None:
    backend = memory_backend(tmp_path)
    settings = settings_for(backend, sim, tmp_path)
    his = backend.his(settings)
    with running(start_worker(backend, settings, clock=clock)) as worker:
        kept, _ = pay(his, clock, 30000)
        altered, _ = pay(his, clock, 50000)
        unseen = new_id("PAY")
        PlatformClient(settings, clock=clock).call("HOS00003", pay_data(unseen, 12345))
        with sim.state.lock:
            sim.state.orders[altered].amt = 49000  # the platform booked 490.00, not 500.00
        observer = Counted()
        job = make_job(worker, clock, observer=observer)
        clock.now = RECONCILE_TIME
        disposition = job.run_due()
        assert disposition is not None and disposition.on_confirmed is not None
        [message] = disposition.messages
        disposition.on_confirmed()
        assert job.run_due() is None
    body = json.loads(message.body)
    assert (message.routing_key, message.correlation_id) == (RESULT_KEY, "statement:20250901")
    data = result_data(body)
    assert kinds_and_orders(data) == {("missing_in_ledger", unseen), ("amount_mismatch", altered)}
    assert (data["clean"], data["discrepancyCount"], data["resolved"]) == (False, 2, [])
    by_kind = {item["kind"]: item for item in data["discrepancies"]}
    assert (
        by_kind["amount_mismatch"]["platformAmount"],
        by_kind["amount_mismatch"]["ledgerAmount"],
    ) == (49000, 50000)
    assert by_kind["missing_in_ledger"]["ledgerEventId"] is None
    assert by_kind["missing_in_ledger"]["platformStatus"] == "02"  # the status query agrees
    assert observer.kinds == Counter({"missing_in_ledger": 1, "amount_mismatch": 1})
    report = report_path(settings.report_dir, DAY)
    assert {(line["kind"], line["orderId"]) for line in report_lines(report)} == kinds_and_orders(
        data
    )
    for text in (report.read_text("utf-8-sig"), message.body.decode()):
        assert PATIENT_NAME not in text and ID_NO not in text and kept not in text


def test_an_order_the_platform_lost_is_missing_on_platform(
    sim: SimulatorHandle, clock: FixedClock, tmp_path: Path
) -> None:
    backend = memory_backend(tmp_path)
    settings = settings_for(backend, sim, tmp_path)
    his = backend.his(settings)
    with running(start_worker(backend, settings, clock=clock)) as worker:
        lost, _ = pay(his, clock, 30000)
        with sim.state.lock:
            del sim.state.orders[lost]
        clock.now = RECONCILE_TIME
        run = make_job(worker, clock).run(DAY)
    [item] = run.discrepancies
    assert (item["kind"], item["orderId"], item["platformStatus"]) == (
        "missing_on_platform",
        lost,
        "not_found",
    )
    assert item["ledgerStatus"] == "succeeded" and "no such order" in item["note"]


# --- clean days, the schedule and idempotency --------------------------------------------------


BACKENDS = ["memory-sqlite", "rabbitmq-postgres"]  # what conftest.py runs `backend` on


def test_a_clean_day_through_the_real_worker_is_reconciled_once(
    backend: Backend, sim: SimulatorHandle, clock: FixedClock, tmp_path: Path
) -> None:
    settings = settings_for(backend, sim, tmp_path)
    his = backend.his(settings)
    observer = Counted()
    try:
        worker = start_worker(backend, settings, clock=clock)
        job = make_job(worker, clock, observer=observer)
        with running(with_job(worker, job)) as worker:
            _, paid = pay(his, clock, 30000)
            pay(his, clock, 20000)
            assert (
                refund(his, clock, paid.body["data"]["queryId"], 10000).routing_key
                == "refund.requested.succeeded"
            )
            clock.now = RECONCILE_TIME  # the engine's next periodic call reconciles the day
            result = his.next_result(20)
            wait_until(lambda: published_at(worker) is not None)
            report = report_path(settings.report_dir, DAY)
            written = (report.read_bytes(), report.stat().st_mtime_ns)
            with pytest.raises(TimeoutError):
                his.next_result(1.0)  # ~20 more periodic calls: nothing more
            again = make_job(worker, clock).run(DAY)  # a restarted worker, or the CLI
    finally:
        his.close()
    assert result.routing_key == RESULT_KEY and result.correlation_id == "statement:20250901"
    data = result_data(result.body)
    assert (data["clean"], data["discrepancies"], data["resolved"]) == (True, [], [])
    assert data["statement"] == {
        "payCount": 2,
        "payTotal": 50000,
        "refundCount": 1,
        "refundTotal": 10000,
    }
    assert data["ledgerOrders"] == 3 and observer.kinds == Counter()
    assert (again.fresh, again.published, again.result.resultId) == (
        False,
        True,
        result.body["resultId"],
    )
    assert job.disposition(again) is None
    assert (report.read_bytes(), report.stat().st_mtime_ns) == written
    assert report_lines(report) == []
    assert sim.stats()["HOS00013"]["0000"] == 1


def test_a_discrepancy_the_status_query_resolves_is_not_reported(
    sim: SimulatorHandle, clock: FixedClock, tmp_path: Path
) -> None:
    backend = memory_backend(tmp_path)
    settings = settings_for(backend, sim, tmp_path, reconcile_max_queries=1)
    his = backend.his(settings)
    with running(start_worker(backend, settings, clock=clock)) as worker:
        sim.add_fault("fail_after_processing", "HOS00003", times=1)  # charged, answer lost
        sim.add_fault("reject_503", "HOS00012", times=1)  # the worker's one query fails too
        order_id, paid = pay(his, clock, 30000)
        assert paid.routing_key == "payment.requested.unknown"
        observer = Counted()
        clock.now = RECONCILE_TIME
        run = make_job(worker, clock, observer=observer).run(DAY)
        journal = worker.ledger.journal(paid.correlation_id or "")
    data = run.result.data or {}
    assert (data["clean"], data["discrepancies"]) == (True, [])
    [resolved] = data["resolved"]
    assert (resolved["kind"], resolved["orderId"], resolved["ledgerStatus"]) == (
        "status_mismatch",
        order_id,
        "unknown",
    )
    assert "resolved" in resolved["note"] and observer.kinds == Counter()
    assert report_lines(run.report) == []
    [entry] = [e for e in journal if e.kind == "statement_resolved"]
    assert entry.detail["settleDate"] == DAY_TEXT and entry.detail["orderId"] == order_id


def test_the_schedule_waits_for_the_time_retries_failures_and_honours_the_switch(
    sim: SimulatorHandle, clock: FixedClock, tmp_path: Path
) -> None:
    backend = memory_backend(tmp_path)
    settings = settings_for(backend, sim, tmp_path)
    with running(start_worker(backend, settings, clock=clock)) as worker:
        off = StatementJob(
            settings.model_copy(update={"statement_enabled": False}),
            worker.ledger,
            worker.client,
            clock=clock,
            http=httpx.Client(),
        )
        job = make_job(worker, clock, retry_after_s=600)
        clock.now = RECONCILE_TIME.replace(hour=12, minute=59)
        assert job.run_due() is None and "HOS00013" not in sim.stats()
        clock.now = RECONCILE_TIME
        assert off.run_due() is None and "HOS00013" not in sim.stats()
        sim.add_fault("reject_503", "HOS00013", times=1)
        assert job.run_due() is None  # platform unavailable: nothing stored
        assert worker.ledger.get_event("statement:20250901") is None
        [failed] = worker.ledger.journal("statement:20250901")
        assert failed.kind == "statement_failed" and "503" in failed.detail["error"]
        clock.advance(300)
        assert job.run_due() is None and sim.stats()["HOS00013"] == {"HTTP503": 1}
        clock.advance(301)
        disposition = job.run_due()
    assert disposition is not None and disposition.messages[0].routing_key == RESULT_KEY


def test_a_ledger_scan_over_the_limit_refuses_to_guess(
    sim: SimulatorHandle, clock: FixedClock, tmp_path: Path
) -> None:
    backend = memory_backend(tmp_path)
    settings = settings_for(backend, sim, tmp_path)
    his = backend.his(settings)
    with running(start_worker(backend, settings, clock=clock)) as worker:
        pay(his, clock, 100)
        clock.now = RECONCILE_TIME
        with pytest.raises(LedgerScanTooLarge):
            make_job(worker, clock, scan_limit=1).run(DAY)
        assert worker.ledger.get_event("statement:20250901") is None


# --- the CLI: its own confirmed publish ---------------------------------------------------------


def test_publish_confirmed_waits_for_the_confirm(tmp_path: Path) -> None:
    from worker.broker.messages import Outgoing
    from worker.cli.statement_cmd import publish_confirmed

    broker = MemoryBroker()
    broker.declare_queue("seen")
    broker.bind("seen", "his.results", "#")
    publish_confirmed(
        MemoryTransport(broker), [Outgoing("his.results", RESULT_KEY, b"{}")], timeout_s=1
    )
    assert broker.get("seen") is not None


def cli(*args: str, clock: Clock | None = None) -> int:
    """`huimin-worker statement ARGS` with the environment's settings, at `clock` (default:
    the day after today at 14:00 China time, when today's statement is final)."""
    tomorrow = datetime.now(CHINA_TZ).date() + timedelta(days=1)
    at = clock or FixedClock(datetime.combine(tomorrow, time_of_day(14, 0), tzinfo=CHINA_TZ))
    return statement_command(build_parser().parse_args(["statement", *args]), Settings(), at)


def test_the_cli_publishes_once_and_no_publish_withholds(
    vhost: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with run_in_thread(seed=7) as sim:  # the simulator dates today's payment: the CLI runs tomorrow
        for name, value in {
            "PLATFORM_URL": sim.base_url + "/api",
            "BROKER_URL": vhost,
            "LEDGER_URL": sqlite_url(tmp_path),
            "READ_TIMEOUT_S": "2",
        }.items():
            monkeypatch.setenv(f"HUIMIN_{name}", value)
        settings = Settings()
        his = AmqpHis(vhost, build_topology(settings.retry_delays_s, settings.retry_jitter))
        his.purge_all(build_topology(settings.retry_delays_s, settings.retry_jitter))
        try:
            unseen = new_id("PAY")
            reply = PlatformClient(settings).call("HOS00003", pay_data(unseen, 777))
            day = reply.data["orderTime"][:8]
            reports = tmp_path / "reports"
            assert cli("--date", day, "--report-dir", str(reports)) == 1
            first = his.next_result(10)
            assert cli("--date", day, "--report-dir", str(reports)) == 1
            with pytest.raises(TimeoutError):
                his.next_result(1.0)
            yesterday = f"{datetime.strptime(day, '%Y%m%d') - timedelta(days=1):%Y%m%d}"
            assert cli("--date", yesterday, "--no-publish", "--report-dir", str(reports)) == 0
            assert cli("--date", yesterday, "--report-dir", str(reports)) == 0
            with pytest.raises(TimeoutError):
                his.next_result(1.0)
        finally:
            his.close()
    out = capsys.readouterr().out
    assert first.routing_key == RESULT_KEY and first.correlation_id == f"statement:{day}"
    assert [i["orderId"] for i in first.body["data"]["discrepancies"]] == [unseen]
    assert "already reconciled" in out and "not published (--no-publish)" in out
    assert (reports / f"statement-{day}.csv").exists()


def test_the_cli_refuses_a_malformed_date(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli("--date", "2025-09-01")
    assert exited.value.code == 2 and "YYYYMMDD" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("now", "settle_date"),
    [
        ("2026-11-29T10:00:00+08:00", "20261129"),  # today
        ("2026-11-29T10:00:00+08:00", "20261205"),  # the future
        ("2026-11-29T12:59:59+08:00", "20261128"),  # yesterday, before HUIMIN_STATEMENT_AFTER
        ("2026-11-29T04:59:59+00:00", "20261128"),  # the same moment in UTC
    ],
)
def test_the_cli_refuses_a_date_whose_statement_is_not_final(
    now: str,
    settle_date: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HUIMIN_LEDGER_URL", sqlite_url(tmp_path))
    clock = FixedClock(datetime.fromisoformat(now))
    assert cli("--date", settle_date, "--report-dir", str(tmp_path), clock=clock) == 2
    err = capsys.readouterr().err
    assert f"{settle_date}'s statement is not final until" in err and "nothing done" in err
    assert not (tmp_path / "ledger.db").exists()  # refused before the ledger was even opened


def test_a_statement_is_final_from_the_next_day_after_statement_after() -> None:
    final = final_at(date(2026, 11, 28), time_of_day(13, 0))
    assert final == datetime(2026, 11, 29, 5, 0, tzinfo=UTC)
