"""Only the delivery that owns an event decides its outcome: enforced by the ledger itself.

The contract of `complete_event(owner=...)` (compare-and-set on the lease) and of
`record_refused` (an event refused at intake never touches a known eventId), on SQLite and
PostgreSQL alike, with the fixtures of the ledger contract suite.
"""

from __future__ import annotations

from dataclasses import replace

from tests.test_ledger_contract import at, event, ledger, make_ledger, store  # noqa: F401
from worker.ledger import EventState, Ledger

FAILED = {"resultId": "r-refused", "outcome": "failed"}


def test_the_owner_completes_its_event(ledger: Ledger) -> None:  # noqa: F811
    ledger.begin_event(replace(event("E1"), lease_owner="w1", lease_until=at(60)))
    record = ledger.complete_event("E1", "succeeded", {"resultId": "r1"}, at(5), owner="w1")
    assert record.state is EventState.COMPLETED and record.result == {"resultId": "r1"}


def test_no_one_else_completes_an_event_while_its_lease_is_live(ledger: Ledger) -> None:  # noqa: F811
    ledger.begin_event(replace(event("E1"), lease_owner="w1", lease_until=at(60)))
    record = ledger.complete_event("E1", "failed", {"resultId": "r2"}, at(5), owner="w2")
    assert record.state is EventState.RECEIVED and record.result is None
    assert ledger.get_event("E1").lease_owner == "w1"  # type: ignore[union-attr]


def test_an_expired_lease_no_longer_protects_the_event(ledger: Ledger) -> None:  # noqa: F811
    ledger.begin_event(replace(event("E1"), lease_owner="w1", lease_until=at(60)))
    record = ledger.complete_event("E1", "failed", {"resultId": "r2"}, at(61), owner="w2")
    assert record.state is EventState.COMPLETED and record.outcome == "failed"


def test_a_refused_event_is_recorded_completed_in_one_step(ledger: Ledger) -> None:  # noqa: F811
    begin = ledger.record_refused(event("E1", business_key=None), "failed", FAILED, at(1))
    assert begin.kind == "new"
    assert (begin.record.state, begin.record.outcome) == (EventState.COMPLETED, "failed")
    assert ledger.unfinished_events(at(3600)) == []


def test_a_refused_copy_never_touches_a_known_event(ledger: Ledger) -> None:  # noqa: F811
    ledger.begin_event(replace(event("E1"), lease_owner="w1", lease_until=at(60)))
    begin = ledger.record_refused(event("E1", business_key=None), "failed", FAILED, at(1))
    assert begin.kind == "existing"
    record = ledger.get_event("E1")
    assert record is not None
    assert (record.state, record.result, record.lease_owner) == (EventState.RECEIVED, None, "w1")
