"""The ledger contract: one specification, run against SQLite and PostgreSQL alike.

Each test gets a fresh store (a SQLite file under tmp_path, or a uniquely named PostgreSQL
schema dropped afterwards), so tests never collide with each other or with parallel runs.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import psycopg
import pytest

from worker.errors import ConfigurationError, LeaseLost, LedgerUnavailable
from worker.ledger import (
    DuplicateSeqId,
    EventState,
    Ledger,
    NewEvent,
    UnknownAttempt,
    UnknownEvent,
    open_ledger,
)
from worker.ledger.schema import statements

T0 = datetime(2026, 5, 9, 8, 0, tzinfo=UTC)
MakeLedger = Callable[[], Ledger]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def event(
    event_id: str,
    *,
    business_key: str | None = "HOS00003:ORD1",
    data: dict | None = None,
    keys: dict[str, str] | None = None,
    received: float = 0,
    event_type: str = "payment",
) -> NewEvent:
    data = {"orderId": "ORD1", "amount": "12.50"} if data is None else data
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return NewEvent(
        event_id=event_id,
        event_type=event_type,
        trans_code="HOS00003",
        payload={"eventId": event_id, "data": data},
        payload_hash=hashlib.sha256(canonical).hexdigest(),
        business_key=business_key,
        keys={"orderId": "ORD1"} if keys is None else keys,
        received_at=at(received),
    )


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path) -> Iterator[tuple[str, str]]:
    """(backend, url) of a fresh, empty store."""
    if request.param == "sqlite":
        yield "sqlite", f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    base: str = request.getfixturevalue("postgres_url")
    schema = f"huimin_test_{uuid.uuid4().hex[:16]}"
    yield "postgres", f"{base}{'&' if '?' in base else '?'}schema={schema}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture
def make_ledger(store: tuple[str, str]) -> Iterator[MakeLedger]:
    """Opens further, independent ledger instances (own connections) on the same store."""
    opened: list[Ledger] = []

    def make() -> Ledger:
        ledger = open_ledger(store[1])
        opened.append(ledger)
        return ledger

    yield make
    for ledger in opened:
        ledger.close()


@pytest.fixture
def ledger(make_ledger: MakeLedger) -> Ledger:
    ledger = make_ledger()
    ledger.migrate()
    return ledger


# -- begin_event: new / existing / duplicate_key / conflict -------------------------------


def test_first_sight_is_new_and_recorded_as_received(ledger: Ledger) -> None:
    assert isinstance(ledger, Ledger)
    begin = ledger.begin_event(event("E1"))
    assert begin.kind == "new"
    record = begin.record
    assert (record.event_id, record.state, record.delivery_count) == ("E1", EventState.RECEIVED, 1)
    assert record.payload == {"eventId": "E1", "data": {"orderId": "ORD1", "amount": "12.50"}}
    assert record.received_at == record.updated_at == T0
    assert record.outcome is record.result is record.result_published_at is None
    assert ledger.get_event("E1") == record


def test_redelivery_is_existing_and_counts_deliveries(ledger: Ledger) -> None:
    ledger.begin_event(event("E1"))
    again = ledger.begin_event(event("E1", received=5))
    assert again.kind == "existing"
    assert again.record.event_id == "E1"
    assert again.record.delivery_count == 2
    assert ledger.begin_event(event("E1")).record.delivery_count == 3


def test_same_payment_under_a_new_event_id_is_duplicate_key(ledger: Ledger) -> None:
    ledger.begin_event(event("E1"))
    begin = ledger.begin_event(event("E2", received=1))
    assert begin.kind == "duplicate_key"
    assert begin.record.event_id == "E1"  # the event whose result to mirror
    assert ledger.get_event("E2") is not None  # the newcomer is recorded too
    assert [r.event_id for r in ledger.events_by_business_key("HOS00003:ORD1")] == ["E1", "E2"]


def test_business_key_reused_with_another_payload_is_conflict(ledger: Ledger) -> None:
    ledger.begin_event(event("E1"))
    begin = ledger.begin_event(event("E2", data={"orderId": "ORD1", "amount": "99.00"}))
    assert begin.kind == "conflict"
    assert begin.record.event_id == "E1"
    assert ledger.get_event("E2") is not None


def test_redelivered_conflict_stays_a_conflict_until_it_has_a_result(ledger: Ledger) -> None:
    other = event("E2", data={"amount": "99.00"})
    ledger.begin_event(event("E1"))
    ledger.begin_event(other)
    # Crash before its failure was stored: the redelivery must not look like work to send.
    again = ledger.begin_event(other)
    assert (again.kind, again.record.event_id) == ("conflict", "E1")
    assert ledger.get_event("E2").delivery_count == 2  # type: ignore[union-attr]
    ledger.complete_event("E2", "failed", {"reason": "idempotency_conflict"}, at(1))
    final = ledger.begin_event(other)
    assert (final.kind, final.record.event_id) == ("existing", "E2")
    assert final.record.result == {"reason": "idempotency_conflict"}


def test_events_without_business_key_never_collide(ledger: Ledger) -> None:
    assert ledger.begin_event(event("Q1", business_key=None)).kind == "new"
    assert ledger.begin_event(event("Q2", business_key=None)).kind == "new"


# -- results ------------------------------------------------------------------------------


def test_complete_event_first_writer_wins(ledger: Ledger) -> None:
    ledger.begin_event(event("E1"))
    first = ledger.complete_event("E1", "succeeded", {"status": "ok", "名": "张三"}, at(10))
    second = ledger.complete_event("E1", "failed", {"status": "late"}, at(20))
    assert first.state is EventState.COMPLETED
    assert second == first
    assert (second.outcome, second.result, second.updated_at) == (
        "succeeded",
        {"status": "ok", "名": "张三"},
        at(10),
    )


def test_completing_an_unknown_event_is_a_caller_bug(ledger: Ledger) -> None:
    with pytest.raises(UnknownEvent):
        ledger.complete_event("nope", "succeeded", {}, at(1))


def test_set_state_moves_unfinished_events_and_never_reverts_completed(ledger: Ledger) -> None:
    ledger.begin_event(event("E1"))
    ledger.set_state("E1", EventState.IN_FLIGHT, at(5))
    record = ledger.get_event("E1")
    assert record is not None and (record.state, record.updated_at) == (EventState.IN_FLIGHT, at(5))
    ledger.complete_event("E1", "succeeded", {}, at(6))
    ledger.set_state("E1", EventState.RECONCILING, at(7))
    record = ledger.get_event("E1")
    assert record is not None and (record.state, record.updated_at) == (EventState.COMPLETED, at(6))
    with pytest.raises(ValueError):  # completion carries a result: complete_event only
        ledger.set_state("E1", EventState.COMPLETED, at(8))
    with pytest.raises(UnknownEvent):
        ledger.set_state("nope", EventState.WAITING, at(8))


def test_unpublished_results_until_marked_published(ledger: Ledger) -> None:
    for n in range(3):
        ledger.begin_event(event(f"E{n}", business_key=None))
    ledger.complete_event("E2", "succeeded", {}, at(1))
    ledger.complete_event("E0", "failed", {}, at(2))
    assert [r.event_id for r in ledger.unpublished_results()] == ["E2", "E0"]
    assert [r.event_id for r in ledger.unpublished_results(limit=1)] == ["E2"]
    ledger.mark_result_published("E2", at(3))
    ledger.mark_result_published("E2", at(9))  # a republish keeps the first time
    assert ledger.get_event("E2").result_published_at == at(3)  # type: ignore[union-attr]
    assert [r.event_id for r in ledger.unpublished_results()] == ["E0"]
    with pytest.raises(ValueError):
        ledger.mark_result_published("E1", at(4))  # no result yet


def test_unfinished_events_are_the_sweepers_work_list(ledger: Ledger) -> None:
    for n in range(4):
        ledger.begin_event(event(f"E{n}", business_key=None, received=n))
    ledger.set_state("E0", EventState.WAITING, at(30))  # touched recently
    ledger.complete_event("E1", "succeeded", {}, at(2))  # done
    found = ledger.unfinished_events(updated_before=at(10))
    assert [r.event_id for r in found] == ["E2", "E3"]  # oldest first
    assert [r.event_id for r in ledger.unfinished_events(at(10), limit=1)] == ["E2"]
    assert [r.event_id for r in ledger.unfinished_events(at(31))] == ["E2", "E3", "E0"]


# -- attempts -----------------------------------------------------------------------------


def test_attempt_is_durable_before_it_finishes(ledger: Ledger, make_ledger: MakeLedger) -> None:
    ledger.begin_event(event("E1"))
    attempt_id = ledger.start_attempt("E1", "HOS00003", "SEQ-1", "call", at(1))
    # Another instance (its own connections: another process, after a crash) sees it.
    (seen,) = make_ledger().attempts("E1")
    assert (seen.attempt_id, seen.platform_seq_id, seen.purpose) == (attempt_id, "SEQ-1", "call")
    assert (seen.started_at, seen.finished_at, seen.outcome) == (at(1), None, None)


def test_finish_attempt_records_the_answer_and_duration(ledger: Ledger) -> None:
    ledger.begin_event(event("E1"))
    first = ledger.start_attempt("E1", "HOS00003", "SEQ-1", "call", at(1))
    second = ledger.start_attempt("E1", "HOS00004", "SEQ-2", "status_query", at(3))
    ledger.finish_attempt(
        first, at=at(2.25), http_status=None, rt_code=None, outcome="unknown", error="timeout"
    )
    ledger.finish_attempt(
        second, at=at(3.5), http_status=200, rt_code="0000", outcome="succeeded", error=None
    )
    one, two = ledger.attempts("E1")
    assert (one.finished_at, one.duration_ms, one.outcome, one.error) == (
        at(2.25),
        1250.0,
        "unknown",
        "timeout",
    )
    assert (two.purpose, two.http_status, two.rt_code, two.duration_ms) == (
        "status_query",
        200,
        "0000",
        500.0,
    )
    with pytest.raises(ValueError):
        ledger.finish_attempt(
            first, at=at(4), http_status=200, rt_code="0000", outcome="succeeded", error=None
        )
    with pytest.raises(UnknownAttempt):
        ledger.finish_attempt(
            999_999, at=at(4), http_status=None, rt_code=None, outcome="unknown", error=None
        )


def test_platform_seq_id_reuse_is_rejected(ledger: Ledger) -> None:
    ledger.begin_event(event("E1"))
    ledger.begin_event(event("E2", business_key=None))
    ledger.start_attempt("E1", "HOS00003", "SEQ-1", "call", at(1))
    with pytest.raises(DuplicateSeqId):
        ledger.start_attempt("E2", "HOS00003", "SEQ-1", "call", at(2))
    assert ledger.attempts("E2") == []
    with pytest.raises(UnknownEvent):
        ledger.start_attempt("nope", "HOS00003", "SEQ-9", "call", at(2))


# -- leases -------------------------------------------------------------------------------


def test_leases_keep_replicas_off_each_others_events(ledger: Ledger) -> None:
    ledger.begin_event(event("E1"))
    assert ledger.try_lease("E1", "a", until=at(60), at=at(0))  # free
    assert not ledger.try_lease("E1", "b", until=at(90), at=at(30))  # held by a
    assert ledger.try_lease("E1", "a", until=at(120), at=at(30))  # own: extended
    assert not ledger.try_lease("E1", "b", until=at(90), at=at(60))  # still held (to 120)
    assert ledger.try_lease("E1", "b", until=at(200), at=at(120))  # expired
    record = ledger.get_event("E1")
    assert record is not None and (record.lease_owner, record.lease_until) == ("b", at(200))
    ledger.release_lease("E1", "a")  # not a's any more: no effect
    assert not ledger.try_lease("E1", "a", until=at(150), at=at(130))
    ledger.release_lease("E1", "b")
    assert ledger.try_lease("E1", "a", until=at(150), at=at(130))
    assert not ledger.try_lease("nope", "a", until=at(150), at=at(130))


# -- trace keys and journal ---------------------------------------------------------------


def test_find_events_by_event_id_and_trace_keys(ledger: Ledger) -> None:
    ledger.begin_event(event("E1", keys={"orderId": "ORD1", "treatmentSerialNo": "T-7"}))
    ledger.begin_event(event("E2", business_key=None, keys={"treatmentSerialNo": "T-7"}))
    assert [r.event_id for r in ledger.find_events("E1")] == ["E1"]
    assert [r.event_id for r in ledger.find_events("ORD1")] == ["E1"]
    assert [r.event_id for r in ledger.find_events("T-7")] == ["E1", "E2"]
    assert [r.event_id for r in ledger.find_events("T-7", limit=1)] == ["E1"]
    assert ledger.find_events("Q-55") == []
    ledger.add_keys("E2", {"queryId": "Q-55"})  # learnt from the platform's answer
    ledger.add_keys("E2", {"queryId": "Q-55"})  # idempotent
    assert [r.event_id for r in ledger.find_events("Q-55")] == ["E2"]
    with pytest.raises(UnknownEvent):
        ledger.add_keys("nope", {"queryId": "Q-1"})


def test_journal_keeps_entries_in_order(ledger: Ledger) -> None:
    ledger.begin_event(event("E1"))
    ledger.record("E1", "received", {"deliveries": 1}, at(0))
    ledger.record("E1", "attempt_started", {"seq": "SEQ-1", "病人": "李四"}, at(1))
    ledger.record("E1", "result_stored", {"outcome": "succeeded"}, at(1))  # same instant
    ledger.record("X9", "dead_lettered", {"reason": "invalid_event"}, at(2))  # never begun
    entries = ledger.journal("E1")
    assert [e.kind for e in entries] == ["received", "attempt_started", "result_stored"]
    assert entries[1].detail == {"seq": "SEQ-1", "病人": "李四"}
    assert entries[1].at == at(1) and entries[1].at.tzinfo is not None
    assert entries[0].entry_id < entries[1].entry_id < entries[2].entry_id
    assert [e.kind for e in ledger.journal("X9")] == ["dead_lettered"]


# -- listings -----------------------------------------------------------------------------


def test_recent_events_and_stats(ledger: Ledger) -> None:
    ledger.begin_event(event("E1", business_key=None, received=0))
    ledger.begin_event(event("E2", business_key=None, received=10, event_type="refund"))
    ledger.begin_event(event("E3", business_key=None, received=20))
    ledger.complete_event("E3", "succeeded", {}, at(21))
    ledger.set_state("E2", EventState.WAITING, at(11))
    assert [r.event_id for r in ledger.recent_events(limit=10)] == ["E3", "E2", "E1"]
    assert [r.event_id for r in ledger.recent_events(since=at(10), limit=10)] == ["E3", "E2"]
    assert [r.event_id for r in ledger.recent_events(event_type="payment")] == ["E3", "E1"]
    assert [r.event_id for r in ledger.recent_events(outcome="succeeded")] == ["E3"]
    assert [r.event_id for r in ledger.recent_events(limit=1)] == ["E3"]
    assert ledger.stats() == {
        "received": 1,
        "in_flight": 0,
        "reconciling": 0,
        "waiting": 1,
        "completed": 1,
        "parked": 0,
    }


# -- time, schema, concurrency ------------------------------------------------------------


def test_times_come_back_as_utc_and_naive_times_are_refused(ledger: Ledger) -> None:
    china = timezone(timedelta(hours=8))
    ledger.begin_event(event("E1"))
    ledger.set_state("E1", EventState.WAITING, datetime(2026, 5, 9, 16, 0, 1, 5, tzinfo=china))
    record = ledger.get_event("E1")
    assert record is not None and record.updated_at == at(1.000005)
    assert record.updated_at.utcoffset() == timedelta(0)
    with pytest.raises(ValueError):
        ledger.set_state("E1", EventState.WAITING, datetime(2026, 5, 9, 8, 0))


def test_migrate_twice_is_harmless(ledger: Ledger, make_ledger: MakeLedger) -> None:
    ledger.begin_event(event("E1"))
    ledger.migrate()
    make_ledger().migrate()
    assert ledger.begin_event(event("E1")).kind == "existing"


def _race(make_ledger: MakeLedger, events: list[NewEvent]) -> list[str]:
    """Begin every event at once from its own thread, over two ledger instances."""
    instances = [make_ledger(), make_ledger()]
    barrier = threading.Barrier(len(events))
    kinds: list[str] = []

    def run(index: int) -> None:
        barrier.wait()
        kinds.append(instances[index % 2].begin_event(events[index]).kind)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(events))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return sorted(kinds)


def test_concurrent_redeliveries_yield_exactly_one_new(
    ledger: Ledger, make_ledger: MakeLedger
) -> None:
    kinds = _race(make_ledger, [event("E1")] * 8)
    assert kinds == ["existing"] * 7 + ["new"]
    assert ledger.get_event("E1").delivery_count == 8  # type: ignore[union-attr]


def test_concurrent_duplicates_of_one_business_key_yield_exactly_one_new(
    ledger: Ledger, make_ledger: MakeLedger
) -> None:
    kinds = _race(make_ledger, [event(f"E{n}") for n in range(8)])
    assert kinds == ["duplicate_key"] * 7 + ["new"]
    holders = {r.event_id for r in ledger.events_by_business_key("HOS00003:ORD1")}
    assert len(holders) == 8


def test_find_events_is_answered_from_indexes(ledger: Ledger, store: tuple[str, str]) -> None:
    backend, url = store
    if backend == "sqlite":
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            sql = f"EXPLAIN QUERY PLAN SELECT * FROM huimin_events {statements('sqlite').find}"
            plan = " | ".join(row[3] for row in db.execute(sql, ("K", 10)))
        assert "SCAN huimin_event" not in plan, plan  # SEARCH ... USING (PRIMARY KEY|INDEX)
        return
    base, schema = url.rsplit("?schema=", 1)
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"SET search_path TO {schema}")
        conn.execute("SET enable_seqscan = off")  # a seq scan now appears only if no index fits
        sql = f"EXPLAIN SELECT * FROM huimin_events {statements('postgres').find}"
        plan = " | ".join(row[0] for row in conn.execute(sql, ("K", 10)))
    assert "Seq Scan" not in plan, plan


# -- opening ------------------------------------------------------------------------------


def test_unreachable_postgres_is_ledger_unavailable() -> None:
    ledger = open_ledger("postgresql://postgres@127.0.0.1:1/postgres")
    try:
        with pytest.raises(LedgerUnavailable):
            ledger.migrate()
    finally:
        ledger.close()


def test_unopenable_sqlite_file_is_ledger_unavailable(tmp_path) -> None:
    ledger = open_ledger(f"sqlite:///{tmp_path / 'missing-dir' / 'ledger.db'}")
    with pytest.raises(LedgerUnavailable):
        ledger.migrate()


@pytest.mark.parametrize(
    "url",
    [
        "mysql://db/ledger",
        "ledger.db",
        "",
        "sqlite:///:memory:",
        "sqlite://",
        "postgresql://postgres@127.0.0.1/postgres?bogus=1",
        "postgresql://postgres@127.0.0.1/postgres?schema=Robert');DROP",
    ],
)
def test_unusable_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError):
        open_ledger(url)


def test_an_attempt_puts_its_event_in_flight_or_reconciling(ledger: Ledger) -> None:
    ledger.begin_event(event("e-state"))
    ledger.start_attempt("e-state", "HOS00003", "SEQSTATE0001", "call", at(1))
    assert ledger.get_event("e-state").state is EventState.IN_FLIGHT
    ledger.start_attempt("e-state", "HOS00012", "SEQSTATE0002", "status_query", at(2))
    assert ledger.get_event("e-state").state is EventState.RECONCILING


def test_a_new_event_can_arrive_already_leased(ledger: Ledger) -> None:
    leased = replace(event("E-LEASED"), lease_owner="w1", lease_until=at(60))
    assert ledger.begin_event(leased).kind == "new"
    record = ledger.get_event("E-LEASED")
    assert record is not None and (record.lease_owner, record.lease_until) == ("w1", at(60))
    assert not ledger.try_lease("E-LEASED", "w2", until=at(90), at=at(30))  # held by w1
    assert ledger.try_lease("E-LEASED", "w1", until=at(90), at=at(30))  # its own
    # a redelivery's begin_event leaves the holder's lease alone
    again = replace(event("E-LEASED"), lease_owner="w2", lease_until=at(500))
    assert ledger.begin_event(again).kind != "new"
    assert ledger.get_event("E-LEASED").lease_owner == "w1"


def test_completion_adds_keys_and_releases_the_lease_in_one_step(ledger: Ledger) -> None:
    ledger.begin_event(event("e-done"))
    assert ledger.try_lease("e-done", "w1", at(60), at(0))
    ledger.complete_event(
        "e-done", "succeeded", {"ok": True}, at(1), keys={"queryId": "Q-DONE-1"}, release_owner="w1"
    )
    assert [r.event_id for r in ledger.find_events("Q-DONE-1")] == ["e-done"]
    assert ledger.get_event("e-done").lease_owner is None


def test_marking_a_result_published_can_journal_it(ledger: Ledger) -> None:
    ledger.begin_event(event("e-pub"))
    ledger.complete_event("e-pub", "succeeded", {"ok": True}, at(1))
    ledger.mark_result_published("e-pub", at(2), journal={"resultId": "res-1"})
    entries = [(e.kind, e.detail) for e in ledger.journal("e-pub")]
    assert ("result_published", {"resultId": "res-1"}) in entries


# -- operations: reopening a dead-lettered event, the journal by kind ---------------------


def test_reopen_sets_a_failed_result_aside_and_keeps_attempts_and_key(ledger: Ledger) -> None:
    ledger.begin_event(event("e-reopen"))
    ledger.start_attempt("e-reopen", "HOS00003", "SEQREOPEN001", "call", at(1))
    ledger.complete_event("e-reopen", "failed", {"resultId": "res-old"}, at(2))
    ledger.mark_result_published("e-reopen", at(3))
    assert ledger.reopen_event("e-reopen", at(10), {"by": "alice", "why": "replay"})
    record = ledger.get_event("e-reopen")
    assert record is not None
    assert (record.state, record.outcome, record.result) == (EventState.RECEIVED, None, None)
    assert (record.result_published_at, record.updated_at) == (None, at(10))
    assert len(ledger.attempts("e-reopen")) == 1  # a money call reconciles before any send
    (entry,) = [e for e in ledger.journal("e-reopen") if e.kind == "reopened"]
    assert entry.at == at(10)
    assert entry.detail["by"] == "alice"
    assert entry.detail["previous"]["outcome"] == "failed"
    assert entry.detail["previous"]["result"] == {"resultId": "res-old"}
    assert entry.detail["previous"]["resultPublishedAt"] == at(3).isoformat()
    # the business key is still held by it: the same payment under a new id mirrors it
    assert ledger.begin_event(event("e-reopen-dup")).kind == "duplicate_key"
    # and it can be completed again (first writer wins anew)
    again = ledger.complete_event("e-reopen", "succeeded", {"resultId": "res-new"}, at(11))
    assert (again.outcome, again.result) == ("succeeded", {"resultId": "res-new"})


def test_reopen_of_unknown_outcome_works_and_unfinished_is_a_no_op(ledger: Ledger) -> None:
    ledger.begin_event(event("e-unknown", business_key=None))
    ledger.complete_event("e-unknown", "unknown", {}, at(1))
    assert ledger.reopen_event("e-unknown", at(2), {})
    assert not ledger.reopen_event("e-unknown", at(3), {})  # already work again
    ledger.set_state("e-unknown", EventState.RECONCILING, at(4))
    assert not ledger.reopen_event("e-unknown", at(5), {})
    assert ledger.get_event("e-unknown").state is EventState.RECONCILING  # type: ignore[union-attr]
    assert [e.kind for e in ledger.journal("e-unknown")] == ["reopened"]


def test_a_succeeded_event_is_never_reopened(ledger: Ledger) -> None:
    ledger.begin_event(event("e-ok"))
    ledger.complete_event("e-ok", "succeeded", {"resultId": "res-ok"}, at(1))
    with pytest.raises(ValueError):
        ledger.reopen_event("e-ok", at(2), {})
    assert ledger.get_event("e-ok").outcome == "succeeded"  # type: ignore[union-attr]
    assert ledger.journal("e-ok") == []
    with pytest.raises(UnknownEvent):
        ledger.reopen_event("nope", at(2), {})


def test_journal_by_kind_is_newest_first_and_filtered_by_time(ledger: Ledger) -> None:
    ledger.record("E1", "replayed", {"by": "a"}, at(1))
    ledger.record("E2", "purged", {"by": "b"}, at(2))
    ledger.record("E3", "replayed", {"by": "c"}, at(3))
    ledger.record("E4", "replayed", {"by": "d"}, at(3))  # same instant: entry order decides
    replayed = ledger.journal_by_kind("replayed")
    assert [e.event_id for e in replayed] == ["E4", "E3", "E1"]
    assert [e.event_id for e in ledger.journal_by_kind("replayed", since=at(2))] == ["E4", "E3"]
    assert [e.event_id for e in ledger.journal_by_kind("replayed", limit=1)] == ["E4"]
    assert [e.detail for e in ledger.journal_by_kind("purged")] == [{"by": "b"}]
    assert ledger.journal_by_kind("nothing") == []


# -- start_attempt as a compare-and-set on the lease (issue 8: leases that cannot overlap) --------


def _leased(ledger: Ledger, event_id: str, owner: str = "a", until: float = 60) -> None:
    ledger.begin_event(
        replace(event(event_id, business_key=None), lease_owner=owner, lease_until=at(until))
    )


def test_an_attempt_under_a_live_lease_is_recorded_and_extends_the_lease(ledger: Ledger) -> None:
    _leased(ledger, "L1", until=60)
    ledger.start_attempt(
        "L1", "HOS00003", "SEQ-L1-1", "call", at(10), owner="a", lease_until=at(100)
    )
    record = ledger.get_event("L1")
    assert record is not None
    assert (record.lease_owner, record.lease_until, record.state) == (
        "a",
        at(100),
        EventState.IN_FLIGHT,
    )
    assert [a.platform_seq_id for a in ledger.attempts("L1")] == ["SEQ-L1-1"]
    assert not ledger.try_lease("L1", "b", until=at(200), at=at(80))  # the call's lease holds


def test_an_attempt_never_shortens_the_lease(ledger: Ledger) -> None:
    _leased(ledger, "L2", until=100)
    ledger.start_attempt(
        "L2", "HOS00012", "SEQ-L2-1", "status_query", at(10), owner="a", lease_until=at(20)
    )
    record = ledger.get_event("L2")
    assert record is not None and record.lease_until == at(100)
    assert record.state is EventState.RECONCILING


@pytest.mark.parametrize("case", ["other-owner", "expired", "taken-over", "completed", "released"])
def test_without_a_live_lease_nothing_is_recorded(ledger: Ledger, case: str) -> None:
    _leased(ledger, "L3", until=60)
    owner, now = "a", at(10)
    if case == "other-owner":
        owner = "b"
    elif case == "expired":
        now = at(60)  # lease_until is not after now
    elif case == "taken-over":
        assert ledger.try_lease("L3", "b", until=at(200), at=at(61))
        now = at(62)
    elif case == "completed":
        ledger.complete_event("L3", "succeeded", {"resultId": "r"}, at(5))
    else:
        ledger.release_lease("L3", "a")
    before = ledger.get_event("L3")
    with pytest.raises(LeaseLost):
        ledger.start_attempt(
            "L3",
            "HOS00003",
            "SEQ-L3-1",
            "call",
            now,
            owner=owner,
            lease_until=now + timedelta(seconds=100),
        )
    assert ledger.attempts("L3") == []
    after = ledger.get_event("L3")
    assert after is not None and before is not None
    assert (after.lease_owner, after.lease_until, after.state) == (
        before.lease_owner,
        before.lease_until,
        before.state,
    )


def test_a_refused_seq_id_leaves_the_lease_as_it_was(ledger: Ledger) -> None:
    _leased(ledger, "L4", until=60)
    ledger.start_attempt("L4", "HOS00003", "SEQ-L4-1", "call", at(1), owner="a", lease_until=at(70))
    with pytest.raises(DuplicateSeqId):
        ledger.start_attempt(
            "L4", "HOS00003", "SEQ-L4-1", "call", at(2), owner="a", lease_until=at(500)
        )
    record = ledger.get_event("L4")
    assert record is not None and record.lease_until == at(70)


def test_an_owned_attempt_on_an_unknown_event_is_a_caller_bug(ledger: Ledger) -> None:
    with pytest.raises(UnknownEvent):
        ledger.start_attempt(
            "nope", "HOS00003", "SEQ-L5-1", "call", at(1), owner="a", lease_until=at(100)
        )


def test_racing_replicas_never_both_hold_the_event(ledger: Ledger, make_ledger: MakeLedger) -> None:
    """Replica a records an attempt under its lease while replica b, whose clock runs ahead,
    finds that lease expired and takes the event, at the same moment, on its own connections:
    exactly one of them wins, every time, and a loser changes nothing."""
    other = make_ledger()
    for i in range(15):
        event_id = f"R{i}"
        _leased(ledger, event_id, until=0.5)
        barrier, got = threading.Barrier(2), {}

        def replica_a(
            event_id: str = event_id, got: dict = got, barrier: threading.Barrier = barrier
        ) -> None:
            barrier.wait()
            try:
                ledger.start_attempt(
                    event_id,
                    "HOS00003",
                    f"SEQ-{event_id}",
                    "call",
                    at(0),
                    owner="a",
                    lease_until=at(2),
                )
                got["a"] = True
            except LeaseLost:
                got["a"] = False

        thread = threading.Thread(target=replica_a)
        thread.start()
        barrier.wait()
        got["b"] = other.try_lease(event_id, "b", until=at(10), at=at(0.6))
        thread.join()
        assert got["a"] != got["b"], got
        record = ledger.get_event(event_id)
        assert record is not None
        if got["a"]:
            assert (record.lease_owner, record.lease_until) == ("a", at(2))
        else:
            assert (record.lease_owner, ledger.attempts(event_id)) == ("b", [])
    other.close()
