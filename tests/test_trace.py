"""`huimin-worker trace KEY`: the ledger's timeline of real events, run by the real worker.

The worker runs against the simulator on a throw-away RabbitMQ vhost with SQLite and with
PostgreSQL; the trace is read back by eventId, orderId, queryId and treatmentSerialNo. (The
replay part of a timeline is in tests/test_dlq.py.)
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.test_dlq import Cli
from tests.test_worker import event, example, new_order_id
from tests.worker_harness import (
    Backend,
    running,
    start_worker,
)
from worker.ledger import Ledger, NewEvent, open_ledger
from worker.ops.trace import render_text, trace
from worker.sandbox.his import AmqpHis
from worker.sandbox.simulator.server import SimulatorHandle
from worker.settings import Settings

SIMULATOR_SEED = 5  # the simulator fixture (conftest.py)


@pytest.fixture
def settings(backend: Backend, simulator: SimulatorHandle) -> Settings:
    return backend.settings(simulator.base_url + "/api")


def timeline(cli: Cli, settings: Settings, key: str) -> dict[str, Any]:
    code, out = cli(settings, "trace", key, "--json")
    assert code == 0, out
    return json.loads(out)


def test_a_reconciled_payment_reads_in_time_order_by_any_of_its_keys(
    backend: Backend, settings: Settings, simulator: SimulatorHandle, his: AmqpHis, cli: Cli
) -> None:
    simulator.add_fault("lose_response", "HOS00003", times=1, seconds=1.5)
    order_id = new_order_id()
    payment = event("payment.requested", example("HOS00003", orderId=order_id))
    with running(start_worker(backend, settings)):
        his.publish(payment)
        result = his.next_result(20)
    assert result.routing_key == "payment.requested.succeeded"
    found = timeline(cli, settings, order_id)
    assert [e["eventId"] for e in found["events"]] == [payment["eventId"]]
    items = found["timeline"]
    assert [i["at"] for i in items] == sorted(i["at"] for i in items)
    kinds = [i["kind"] for i in items]
    for earlier, later in [
        ("received", "attempt"),
        ("attempt", "retry_scheduled"),
        ("retry_scheduled", "status_query"),
        ("status_query", "reconcile"),
        ("reconcile", "result_stored"),
        ("result_stored", "result_published"),
    ]:
        assert kinds.index(earlier) < kinds.index(later), kinds
    call = items[kinds.index("attempt")]["detail"]
    assert (call["transCode"], call["outcome"], call["rtCode"]) == ("HOS00003", "unknown", None)
    assert call["platformSeqId"] and call["durationMs"] >= 900  # waited out the read timeout
    query = items[kinds.index("status_query")]["detail"]
    assert (query["transCode"], query["rtCode"], query["outcome"]) == (
        "HOS00012",
        "0000",
        "succeeded",
    )
    assert kinds.count("result_published") == 1
    # the same timeline by eventId and by the queryId the platform answered with
    assert timeline(cli, settings, payment["eventId"])["timeline"] == items
    assert timeline(cli, settings, result.body["data"]["queryId"])["timeline"] == items
    code, text = cli(settings, "trace", order_id)
    assert code == 0
    assert "platform call HOS00003" in text and "status query HOS00012" in text
    assert "reconciliation: HOS00012 says orderStatus 02" in text
    assert "result stored: succeeded rtCode 0000 orderStatus 02" in text


def test_a_treatment_serial_no_finds_every_event_with_personal_data_masked(
    backend: Backend, settings: Settings, his: AmqpHis, cli: Cli
) -> None:
    serial = f"ZY{uuid.uuid4().hex[:14].upper()}"
    mobile_id = f"evt-13812345678-{uuid.uuid4().hex[:8]}"  # an HIS that puts a phone in an id
    patient = event("patient.posted", example("HOS00020", treatmentSerialNo=serial), mobile_id)
    fee = event("fee.posted", example("HOS00022", treatmentSerialNo=serial))
    bad = event("patient.posted", example("HOS00020", treatmentSerialNo=serial, name=7))
    with running(start_worker(backend, settings)):
        for sent in (patient, fee, bad):
            his.publish(sent)
        outcomes = {his.next_result(20).routing_key for _ in range(3)}
    assert outcomes == {"patient.posted.succeeded", "fee.posted.succeeded", "patient.posted.failed"}
    found = timeline(cli, settings, serial)
    assert len(found["events"]) == 2  # the invalid one was recorded without its keys
    assert {e["type"] for e in found["events"]} == {"patient.posted", "fee.posted"}
    code, text = cli(settings, "trace", serial)
    assert "13812345678" not in text and "evt-138****5678" in text
    assert text.count("platform call HOS0002") == 2
    invalid = timeline(cli, settings, bad["eventId"])
    assert "dead_lettered" in [i["kind"] for i in invalid["timeline"]]
    assert cli(settings, "trace", "NO-SUCH-KEY-ANYWHERE")[0] == 1


# --- the timeline's own rules, on a ledger written by hand ---------------------------------------

T0 = datetime(2026, 5, 9, 8, 0, tzinfo=UTC)


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


PERSONAL = "证件 440101199001011234 手机 13912345678"  # free text: numbers are masked


def _result(outcome: str, result_id: str, at: datetime) -> dict[str, Any]:
    return {
        "resultId": result_id,
        "outcome": outcome,
        "rtCode": None,
        "rtMsg": PERSONAL,
        "orderStatus": None,
        "attempts": 1,
        "errors": [],
        "occurredAt": at.isoformat(),
    }


def test_a_reopened_event_keeps_its_set_aside_result_in_the_timeline(tmp_path: Path) -> None:
    ledger: Ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.migrate()
    try:
        ledger.begin_event(
            NewEvent(
                "E-1",
                "patient.posted",
                "HOS00020",
                {},
                "h",
                None,
                {"treatmentSerialNo": "ZY1"},
                _at(0),
            )
        )
        seq = ledger.start_attempt("E-1", "HOS00020", "SEQ1", "call", _at(1))
        ledger.finish_attempt(
            seq, at=_at(1.5), http_status=503, rt_code=None, outcome="retry_safe", error="HTTP 503"
        )
        ledger.complete_event("E-1", "failed", _result("failed", "res-1", _at(2)), _at(2))
        ledger.mark_result_published("E-1", _at(3), journal={"resultId": "res-1"})
        ledger.reopen_event("E-1", _at(4), {"operator": "carol", "by": "dlq replay"})
        ledger.record("E-1", "replayed", {"operator": "carol", "reason": "x"}, _at(4))
        ledger.start_attempt("E-1", "HOS00020", "SEQ2", "call", _at(5))  # never finished
        found = trace(ledger, "ZY1")
    finally:
        ledger.close()
    assert [(i.kind, i.at) for i in found.items] == [
        ("received", _at(0)),
        ("attempt", _at(1)),
        ("result_stored", _at(2)),
        ("result_published", _at(3)),
        ("reopened", _at(4)),
        ("replayed", _at(4)),
        ("attempt", _at(5)),
    ]
    text = "\n".join(render_text(found))
    assert "HTTP 503 (retry_safe, 500 ms)" in text
    assert "no answer recorded" in text  # the unfinished attempt: reconcile, never re-send
    assert "440101199001011234" not in text and "13912345678" not in text
    stored = next(i for i in found.items if i.kind == "result_stored")
    assert stored.detail["rtMsg"] == "证件 440101********1234 手机 139****5678"
