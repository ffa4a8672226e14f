"""The engine's pure parts: the ledger pause, the confirm groups, the poison arithmetic."""

from __future__ import annotations

import random

import pytest

from worker.broker.messages import Delivery, Disposition
from worker.broker.topology import (
    DEAD_LETTER_QUEUE,
    EVENTS_EXCHANGE,
    H_ERROR,
    H_HANDLER_ERRORS,
    H_REASON,
    H_ROUTING_KEY,
    UNROUTABLE_QUEUE,
    build_topology,
    retry_queue_name,
    work_queue_name,
)
from worker.errors import UnpublishableMessage
from worker.pipeline.confirms import Confirms, Group
from worker.pipeline.pause import HOLD_LIMIT, LedgerPause
from worker.pipeline.poison import handler_failed, unpublishable, work_class_of
from worker.protocol.registry import WorkClass

TOPOLOGY = build_topology([1, 5, 30], 0.0)
MONEY = work_queue_name(WorkClass.MONEY)


# --- the pause ------------------------------------------------------------------------------


def test_a_pause_probes_with_backoff_and_reports_how_long_it_lasted() -> None:
    pause = LedgerPause([1, 2, 5])
    assert pause.start(100.0) and not pause.start(100.5), "one pause at a time"
    assert not pause.probe_due(100.9)
    assert pause.probe_due(101.0) and not pause.probe_due(101.0), "one probe at a time"
    assert pause.probed(False, 101.2) is None
    assert not pause.probe_due(103.1) and pause.probe_due(103.2)  # +2 s
    assert pause.probed(False, 103.3) is None
    assert pause.probe_due(108.3)  # +5 s
    assert pause.probed(False, 108.4) is None
    assert not pause.probe_due(113.3) and pause.probe_due(113.4)  # the last delay repeats
    assert pause.probed(True, 113.5) == pytest.approx(13.5)
    assert not pause.paused.is_set() and not pause.probe_due(200.0)


def test_a_delivery_may_be_held_hold_limit_times_in_a_row() -> None:
    pause = LedgerPause([1])
    for _ in range(HOLD_LIMIT):
        assert pause.may_hold("tag")
        pause.held("tag")
    assert not pause.may_hold("tag")
    pause.settled("tag")
    assert pause.may_hold("tag")


# --- confirms -------------------------------------------------------------------------------


def test_a_group_completes_when_all_its_confirms_arrive_and_fails_on_one_nack() -> None:
    confirms = Confirms()
    good, bad = Group(None, Disposition(), 10.0), Group(None, Disposition(), 10.0)
    for seq, group in [(1, good), (2, good), (3, bad), (4, bad)]:
        confirms.track(seq, group)
    confirms.arrived(2, True, True)  # `multiple`: 1 and 2
    confirms.arrived(3, False, False)
    confirms.arrived(4, False, True)
    settled = confirms.settle()
    assert [ok for ok, _ in settled] == [True, True, False, True]
    completed = [group for _, group in settled if group is not None]
    assert completed == [good, bad] and not good.failed and bad.failed
    assert not confirms.pending()


def test_a_group_past_its_deadline_expires_failed_and_late_confirms_are_ignored() -> None:
    confirms = Confirms()
    group = Group(None, Disposition(), 10.0)
    confirms.track(1, group)
    assert confirms.expired(9.0) == []
    assert confirms.expired(10.5) == [group] and group.failed
    confirms.arrived(1, False, True)
    assert confirms.settle() == []


# --- poison ---------------------------------------------------------------------------------


def _delivery(**changes: object) -> Delivery:
    values: dict = {
        "body": b'{"deep": [[[[]]]]}',
        "routing_key": "payment.requested",
        "message_id": "evt-poison-0001",
        "queue": MONEY,
        "tag": 7,
        "exchange": EVENTS_EXCHANGE,
        "headers": {"x-delivery-count": 2},
    }
    values.update(changes)
    return Delivery(**values)


def test_a_handler_error_is_retried_through_the_retry_queues_with_a_counter() -> None:
    failure = handler_failed(_delivery(), RecursionError("too deep"), TOPOLOGY, 3, random.Random(1))
    [retry] = failure.disposition.messages
    assert failure.failures == 1 and failure.disposition.label == "retry"
    assert (retry.exchange, retry.routing_key) == ("", retry_queue_name(WorkClass.MONEY, 1))
    assert retry.headers[H_HANDLER_ERRORS] == 1
    assert retry.headers[H_ROUTING_KEY] == "payment.requested"  # the type, for the way back
    assert "x-delivery-count" not in retry.headers, "the broker's bookkeeping is not copied"
    assert retry.message_id == "evt-poison-0001" and retry.body == _delivery().body
    assert "RecursionError: too deep" in failure.summary


def test_the_last_handler_error_is_dead_lettered_handler_error_with_the_exception_text() -> None:
    delivery = _delivery(headers={H_HANDLER_ERRORS: 3})
    failure = handler_failed(delivery, KeyError("x"), TOPOLOGY, 3, random.Random(1))
    [dead] = failure.disposition.messages
    assert failure.failures == 4 and failure.disposition.reason == "handler_error"
    assert dead.routing_key == DEAD_LETTER_QUEUE
    assert dead.headers[H_REASON] == "handler_error"
    assert dead.headers[H_ERROR] == "KeyError: 'x'"


def test_no_retry_queue_leads_back_to_the_unroutable_queue_so_it_dead_letters_at_once() -> None:
    delivery = _delivery(queue=UNROUTABLE_QUEUE, routing_key="no.such.type")
    failure = handler_failed(delivery, ValueError("bug"), TOPOLOGY, 3, random.Random(1))
    assert failure.disposition.reason == "handler_error"
    assert work_class_of(UNROUTABLE_QUEUE) is None


def test_an_unsafe_message_id_is_never_copied_onto_what_the_engine_publishes() -> None:
    delivery = _delivery(message_id="e" * 300)
    retry = handler_failed(delivery, ValueError("bug"), TOPOLOGY, 3, random.Random(1))
    dead = unpublishable(
        delivery,
        Disposition(event_id="e" * 300, label="succeeded"),
        UnpublishableMessage("too long"),
    )
    assert retry.disposition.messages[0].message_id is None
    assert dead.messages[0].message_id is None and dead.event_id is None
    assert dead.messages[0].headers[H_REASON] == "unpublishable"
    assert "succeeded could not be published: too long" in dead.messages[0].headers[H_ERROR]
