"""`dlq list | show | purge | replay` on the in-memory broker: the ops tools without RabbitMQ.

Every command browses a snapshot held unacked and gives back what it did not act on: after a
listing or a show the dead-letter queue holds the same messages in the same order; purge and
replay remove only what they handled, and the broker is idle again. The ledger is a temporary
SQLite file. tests/test_dlq.py runs the same commands against RabbitMQ and a running worker.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.test_worker import event, example
from worker.broker.memory import MemoryBroker
from worker.broker.messages import Delivery, Outgoing
from worker.broker.topology import DEAD_LETTER_QUEUE, build_topology, work_queue_for
from worker.cli.dlq_cmd import _print_show, _show_json
from worker.clock import FixedClock
from worker.errors import BrokerUnavailable, ConfigurationError
from worker.ledger import Ledger, open_ledger
from worker.ledger.base import EventState
from worker.ops.dead_letters import Group, Selection, read_dead_letter
from worker.ops.dlq import history, list_dead_letters, purge, show
from worker.ops.memory_dlq import MemoryDeadLetterQueue
from worker.ops.replay import Pacer, ReplayLine, ReplayOptions, replay
from worker.pipeline import intake
from worker.pipeline.dead_letter import dead_letter
from worker.settings import Settings

SETTINGS = Settings(platform_url="http://127.0.0.1:9/api", broker_url="memory://")


def letter(event_id: str, event_type: str, reason: str) -> Outgoing:
    """A dead letter as the processor or the engine writes one (pipeline/dead_letter.py)."""
    body = json.dumps({"eventId": event_id, "type": event_type, "data": {}}).encode()
    delivery = Delivery(body, event_type, queue=work_queue_for(event_type) or "")
    return dead_letter(
        delivery,
        reason=reason,
        error=f"{reason} for the test",
        routing_key=event_type,
        event_id=event_id,
        event_type=event_type,
    )


def dead_lettered(
    body: dict[str, Any] | bytes, event_type: str, reason: str, error: str, attempts: int = 0
) -> Outgoing:
    """A real event's body dead-lettered as pipeline/dead_letter.py writes it."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    event_id = body.get("eventId") if isinstance(body, dict) else None
    delivery = Delivery(raw, event_type, queue=work_queue_for(event_type) or "")
    return dead_letter(
        delivery,
        reason=reason,
        error=error,
        routing_key=event_type,
        attempts=attempts,
        event_id=event_id,
        event_type=event_type,
    )


@pytest.fixture
def broker() -> MemoryBroker:
    broker = MemoryBroker()
    broker.declare(build_topology([1.0], 0.0))
    for message in (
        letter("evt-pay-00001", "payment.requested", "invalid_event"),
        letter("evt-sign-0001", "signing.status.requested", "handler_error"),
        letter("evt-pay-00002", "payment.requested", "invalid_event"),
    ):
        broker.publish(message)
    return broker


def queued_ids(broker: MemoryBroker) -> list[str | None]:
    with MemoryDeadLetterQueue(broker) as queue:  # a browse, given back on close
        return [read_dead_letter(m).event_id for m in queue.browse()]


def test_dlq_list_groups_the_dead_letters_and_leaves_the_queue_as_it_was(
    broker: MemoryBroker,
) -> None:
    before = queued_ids(broker)
    with MemoryDeadLetterQueue(broker) as queue:
        listing = list_dead_letters(SETTINGS, Selection(), queue=queue)
    assert listing.total == 3
    assert listing.groups == [
        Group("payment.requested", "invalid_event", 2),
        Group("signing.status.requested", "handler_error", 1),
    ]
    assert queued_ids(broker) == before == ["evt-pay-00001", "evt-sign-0001", "evt-pay-00002"]
    broker.join(timeout=0)  # nothing is left held


def test_dlq_list_selects_by_reason(broker: MemoryBroker) -> None:
    with MemoryDeadLetterQueue(broker) as queue:
        listing = list_dead_letters(SETTINGS, Selection(reasons=("handler_error",)), queue=queue)
    assert listing.total == 3
    assert [x.event_id for x in listing.selected] == ["evt-sign-0001"]


def test_an_acked_letter_is_gone_and_the_rest_go_back_in_order(broker: MemoryBroker) -> None:
    with MemoryDeadLetterQueue(broker) as queue:
        first, second, third = queue.browse()
        queue.ack(second)
        queue.release([first, third])  # as a Session gives back what it did not ack
    assert queued_ids(broker) == ["evt-pay-00001", "evt-pay-00002"]
    assert broker.depth(DEAD_LETTER_QUEUE) == 2


def test_publishing_where_no_queue_is_bound_is_refused(broker: MemoryBroker) -> None:
    with MemoryDeadLetterQueue(broker) as queue, pytest.raises(ConfigurationError):
        queue.publish(Outgoing("", "huimin.work.nowhere", b"{}"))


def test_a_queue_that_is_not_declared_is_a_configuration_error() -> None:
    with MemoryDeadLetterQueue(MemoryBroker()) as queue, pytest.raises(ConfigurationError):
        queue.browse()


def test_closing_gives_back_what_is_still_held(broker: MemoryBroker) -> None:
    with MemoryDeadLetterQueue(broker) as queue:
        queue.browse(limit=2)
        assert broker.depth(DEAD_LETTER_QUEUE) == 1
    assert queued_ids(broker) == ["evt-pay-00001", "evt-sign-0001", "evt-pay-00002"]


# --- the ledger and a fresh broker for show / purge / replay ------------------------------------

NOW = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
MONEY_QUEUE = "huimin.work.money"
EVERY_LETTER = Selection()  # no filter: what `dlq replay` alone selects


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    opened = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    opened.migrate()
    yield opened
    opened.close()


@pytest.fixture
def empty_broker() -> MemoryBroker:
    broker = MemoryBroker()
    broker.declare(build_topology([1.0], 0.0))
    return broker


def no_wait() -> Pacer:
    """The replay's pacing without sleeping: no timing in these tests."""
    return Pacer(1000.0, sleep=lambda _: None, monotonic=lambda: 0.0)


def replayed(
    broker: MemoryBroker, ledger: Ledger, selection: Selection = EVERY_LETTER, **options: Any
) -> list[ReplayLine]:
    """`dlq replay` by alice; `options`: ReplayOptions' limit and dry_run."""
    chosen = ReplayOptions(selection, operator="alice", rate_per_s=1000.0, **options)
    with MemoryDeadLetterQueue(broker) as queue:
        return replay(SETTINGS, ledger, chosen, clock=FixedClock(NOW), pacer=no_wait(), queue=queue)


def queued_reasons(broker: MemoryBroker) -> list[tuple[str | None, str]]:
    with MemoryDeadLetterQueue(broker) as queue:
        letters = [read_dead_letter(m) for m in queue.browse()]
    return [(x.event_id, x.reason) for x in letters]


# --- show ----------------------------------------------------------------------------------------


def test_dlq_show_masks_personal_data_unless_revealed_and_gives_the_ledgers_view(
    empty_broker: MemoryBroker, ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    patient = event("patient.posted", example("HOS00020"))
    empty_broker.publish(
        dead_lettered(patient, "patient.posted", "retries_exhausted", "HTTP 503", attempts=2)
    )
    rules = intake.IntakeRules.from_settings(SETTINGS)
    prepared = intake.admit(json.dumps(patient).encode(), "patient.posted", None, rules)
    ledger.begin_event(intake.new_event(prepared, NOW))
    with MemoryDeadLetterQueue(empty_broker) as queue:
        report = show(SETTINGS, ledger, patient["eventId"], queue=queue)
    assert report.event_id == patient["eventId"]
    (letter,) = report.letters
    assert (letter.reason, letter.attempts, letter.error) == ("retries_exhausted", 2, "HTTP 503")
    assert report.ledger.record is not None
    assert report.ledger.record.state is EventState.RECEIVED
    _print_show(report, reveal=False)
    text = capsys.readouterr().out
    assert "retries_exhausted" in text and "attempts:       2" in text and "HTTP 503" in text
    assert "441802199001011234" not in text and "441802********1234" in text
    assert "13800000001" not in text and "张三" not in text
    assert "ledger: received" in text
    revealed = _show_json(report, reveal=True)
    assert revealed["deadLetters"][0]["event"]["data"]["documentsNo"] == "441802199001011234"
    assert "441802199001011234" not in json.dumps(_show_json(report, reveal=False))
    assert empty_broker.depth(DEAD_LETTER_QUEUE) == 1  # shown, not taken
    empty_broker.join(timeout=0)


def test_dlq_show_of_an_unknown_id_finds_nothing_and_takes_nothing(
    broker: MemoryBroker, ledger: Ledger
) -> None:
    with MemoryDeadLetterQueue(broker) as queue:
        report = show(SETTINGS, ledger, "evt-no-such-event-anywhere", queue=queue)
    assert report.letters == [] and report.ledger.record is None
    assert queued_ids(broker) == ["evt-pay-00001", "evt-sign-0001", "evt-pay-00002"]


# --- purge ---------------------------------------------------------------------------------------


def test_dlq_purge_needs_a_filter_and_removes_only_the_selection_on_the_record(
    broker: MemoryBroker, ledger: Ledger
) -> None:
    invalid = Selection(reasons=("invalid_event",))

    def purged(selection: Selection, confirmed: bool) -> list[str | None]:
        with MemoryDeadLetterQueue(broker) as queue:
            items = purge(
                SETTINGS,
                ledger,
                selection,
                operator="bob",
                confirmed=confirmed,
                clock=FixedClock(NOW),
                queue=queue,
            )
        return [item.letter.event_id for item in items if item.journaled == confirmed]

    with pytest.raises(ValueError, match="needs a filter"):
        purged(Selection(), confirmed=True)
    assert purged(invalid, confirmed=False) == ["evt-pay-00001", "evt-pay-00002"]  # a preview
    assert queued_ids(broker) == ["evt-pay-00001", "evt-sign-0001", "evt-pay-00002"]
    assert ledger.journal_by_kind("purged") == []
    assert purged(invalid, confirmed=True) == ["evt-pay-00001", "evt-pay-00002"]
    assert queued_ids(broker) == ["evt-sign-0001"]
    for event_id in ("evt-pay-00001", "evt-pay-00002"):
        (entry,) = [e for e in ledger.journal(event_id) if e.kind == "purged"]
        assert (entry.detail["operator"], entry.detail["reason"]) == ("bob", "invalid_event")
        assert entry.at == NOW
    assert [e.kind for e in history(ledger, None, 10)] == ["purged", "purged"]
    broker.join(timeout=0)


def test_purging_an_unreadable_letter_is_journaled_under_its_key(
    empty_broker: MemoryBroker, ledger: Ledger
) -> None:
    empty_broker.publish(dead_lettered(b"{not json", "payment.requested", "invalid_event", "?"))
    with MemoryDeadLetterQueue(empty_broker) as queue:
        (key,) = [x.key for x in list_dead_letters(SETTINGS, Selection(), queue=queue).selected]
        (item,) = purge(
            SETTINGS,
            ledger,
            Selection(ids=(key,)),
            operator="carol",
            confirmed=True,
            clock=FixedClock(NOW),
            queue=queue,
        )
    assert item.letter.event_id is None and item.journaled
    (entry,) = ledger.journal_by_kind("purged")
    assert entry.event_id == f"#{key}"
    assert (entry.detail["operator"], entry.detail["message"]) == ("carol", item.letter.fingerprint)
    assert empty_broker.depth(DEAD_LETTER_QUEUE) == 0


# --- replay --------------------------------------------------------------------------------------


def test_dlq_replay_revalidates_and_leaves_invalid_events_with_their_reason(
    empty_broker: MemoryBroker, ledger: Ledger
) -> None:
    bad = event("payment.requested", example("HOS00003", amt="100"))
    empty_broker.publish(dead_lettered(bad, "payment.requested", "invalid_event", "data.amt"))
    empty_broker.publish(dead_lettered(b"{not json", "payment.requested", "invalid_event", "?"))
    lines = replayed(empty_broker, ledger)
    assert [line.status for line in lines] == ["invalid", "invalid"]
    assert all("still invalid, left in the queue" in line.detail for line in lines)
    assert "data.amt" in lines[0].detail and "no readable eventId" in lines[1].detail
    assert queued_reasons(empty_broker) == [
        (bad["eventId"], "invalid_event"),
        (None, "invalid_event"),
    ]
    assert empty_broker.depth(MONEY_QUEUE) == 0
    assert ledger.get_event(bad["eventId"]) is None  # nothing recorded for an invalid event
    empty_broker.join(timeout=0)


def test_dlq_replay_sends_a_valid_dead_letter_to_its_work_queue_once(
    empty_broker: MemoryBroker, ledger: Ledger
) -> None:
    payment = event("payment.requested", example("HOS00003"))
    event_id = payment["eventId"]
    empty_broker.publish(
        dead_lettered(payment, "payment.requested", "retries_exhausted", "HTTP 503", attempts=2)
    )
    (line,) = replayed(empty_broker, ledger, Selection(ids=(event_id,)))
    assert (line.status, line.work_queue) == ("replayed", MONEY_QUEUE)
    assert "new to the ledger" in line.detail
    assert empty_broker.depth(DEAD_LETTER_QUEUE) == 0
    copy = empty_broker.get(MONEY_QUEUE)
    assert copy is not None and json.loads(copy.body) == payment  # the body unchanged
    assert copy.headers["x-huimin-routing-key"] == "payment.requested"
    assert copy.headers["x-huimin-replays"] == 1 and copy.headers["x-huimin-replayed-by"] == "alice"
    assert "x-huimin-reason" not in copy.headers  # the dead-lettering's headers stay behind
    record = ledger.get_event(event_id)
    assert record is not None and record.state is EventState.RECEIVED  # the sweeper's net
    (marker,) = [e for e in ledger.journal(event_id) if e.kind == "replayed"]
    assert (marker.detail["operator"], marker.detail["reason"]) == ("alice", "retries_exhausted")
    assert [e.kind for e in ledger.journal(event_id)][-2:] == ["replayed", "replay_published"]
    assert replayed(empty_broker, ledger) == []  # a second replay publishes nothing
    assert empty_broker.depth(MONEY_QUEUE) == 0
    empty_broker.join(timeout=0)


def test_a_crash_after_the_publish_never_replays_the_message_twice(
    empty_broker: MemoryBroker, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    payment = event("payment.requested", example("HOS00003"))
    empty_broker.publish(dead_lettered(payment, "payment.requested", "retries_exhausted", "503"))

    def crash(self: MemoryDeadLetterQueue, message: object) -> None:
        raise BrokerUnavailable("connection lost (simulated crash before the ack)")

    with monkeypatch.context() as patch:
        patch.setattr(MemoryDeadLetterQueue, "ack", crash)
        with pytest.raises(BrokerUnavailable):
            replayed(empty_broker, ledger)
    assert empty_broker.depth(MONEY_QUEUE) == 1  # published
    assert empty_broker.depth(DEAD_LETTER_QUEUE) == 1  # but the dead letter came back
    (line,) = replayed(empty_broker, ledger)
    assert line.status == "duplicate_removed"
    assert empty_broker.depth(MONEY_QUEUE) == 1  # not published a second time
    assert empty_broker.depth(DEAD_LETTER_QUEUE) == 0
    kinds = [e.kind for e in ledger.journal(payment["eventId"])]
    assert kinds[-3:] == ["replayed", "replay_published", "replay_duplicate_removed"]


def test_a_crash_before_the_publish_leaves_the_replay_in_doubt_not_repeated(
    empty_broker: MemoryBroker, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    payment = event("payment.requested", example("HOS00003"))
    empty_broker.publish(dead_lettered(payment, "payment.requested", "retries_exhausted", "503"))

    def lost(self: MemoryDeadLetterQueue, message: object) -> None:
        raise BrokerUnavailable("connection lost (simulated) while waiting for the confirm")

    with monkeypatch.context() as patch:
        patch.setattr(MemoryDeadLetterQueue, "publish", lost)
        with pytest.raises(BrokerUnavailable):
            replayed(empty_broker, ledger)
    (line,) = replayed(empty_broker, ledger)
    assert line.status == "in_doubt" and "never confirmed" in line.detail
    assert empty_broker.depth(MONEY_QUEUE) == 0
    assert empty_broker.depth(DEAD_LETTER_QUEUE) == 1
    record = ledger.get_event(payment["eventId"])
    assert record is not None and record.state is EventState.RECEIVED


def test_a_dry_run_says_what_would_happen_and_changes_nothing(
    empty_broker: MemoryBroker, ledger: Ledger
) -> None:
    payment = event("payment.requested", example("HOS00003"))
    empty_broker.publish(dead_lettered(payment, "payment.requested", "retries_exhausted", "503"))
    (line,) = replayed(empty_broker, ledger, dry_run=True)
    assert (line.status, line.work_queue) == ("would_replay", MONEY_QUEUE)
    assert empty_broker.depth(DEAD_LETTER_QUEUE) == 1 and empty_broker.depth(MONEY_QUEUE) == 0
    assert ledger.get_event(payment["eventId"]) is None and ledger.journal(payment["eventId"]) == []


def test_replay_honours_its_limit_and_leaves_the_rest_untouched(
    empty_broker: MemoryBroker, ledger: Ledger
) -> None:
    payments = [event("payment.requested", example("HOS00003")) for _ in range(3)]
    for payment in payments:
        empty_broker.publish(dead_lettered(payment, "payment.requested", "retries_exhausted", "-"))
    lines = replayed(empty_broker, ledger, limit=2)
    assert [line.status for line in lines] == ["replayed", "replayed"]
    assert empty_broker.depth(MONEY_QUEUE) == 2
    assert queued_reasons(empty_broker) == [(payments[2]["eventId"], "retries_exhausted")]


def test_an_event_the_ledger_holds_otherwise_is_refused_and_stays(
    empty_broker: MemoryBroker, ledger: Ledger
) -> None:
    recorded_invalid, other_payload = (
        event("payment.requested", example("HOS00003")) for _ in range(2)
    )
    rules = intake.IntakeRules.from_settings(SETTINGS)
    for sent, payload_hash in ((recorded_invalid, "invalid"), (other_payload, "0" * 64)):
        empty_broker.publish(dead_lettered(sent, "payment.requested", "retries_exhausted", "-"))
        prepared = intake.admit(json.dumps(sent).encode(), "payment.requested", None, rules)
        ledger.begin_event(replace(intake.new_event(prepared, NOW), payload_hash=payload_hash))
    lines = replayed(empty_broker, ledger)
    assert [line.status for line in lines] == ["refused", "refused"]
    assert "recorded this eventId as invalid" in lines[0].detail
    assert "with a different payload" in lines[1].detail
    assert empty_broker.depth(DEAD_LETTER_QUEUE) == 2 and empty_broker.depth(MONEY_QUEUE) == 0
