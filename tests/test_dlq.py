"""`huimin-worker dlq`: list, show, replay and purge real dead letters on the real RabbitMQ.

The worker runs against the simulator on a throw-away vhost; what it dead-letters (invalid
events, retries exhausted) and a payment constructed to have charged before its worker stopped
(moved to the dead-letter queue as a delivery-limit policy would) are replayed to success. The
simulator's receipt count is the oracle for "never charged twice".
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import amqp
import pytest

from tests.test_worker import event, example, new_order_id
from tests.worker_harness import (
    Backend,
    running,
    start_worker,
)
from worker.broker.topology import (
    DEAD_LETTER_QUEUE,
    H_ATTEMPTS,
    H_ERROR,
    H_REASON,
    H_ROUTING_KEY,
    H_WORK_QUEUE,
)
from worker.errors import BrokerUnavailable, ConfigurationError
from worker.ledger.base import EventState, Ledger, NewEvent
from worker.ops.broker import DeadLetterQueue
from worker.ops.dlq import opened_ledger
from worker.sandbox.his import AmqpHis, ReceivedResult
from worker.sandbox.simulator.server import SimulatorHandle
from worker.settings import Settings

Cli = Callable[..., tuple[int, str]]
SIMULATOR_SEED = 11  # the simulator fixture (conftest.py)


@pytest.fixture
def settings(backend: Backend, simulator: SimulatorHandle) -> Settings:
    return backend.settings(simulator.base_url + "/api", max_attempts=2)


@pytest.fixture
def ledger(backend: Backend) -> Iterator[Ledger]:
    opened = backend.ledger()
    yield opened
    opened.close()


# --- helpers (test_trace.py uses them too) -------------------------------------------------------


def dead_letter_count(settings: Settings) -> int:
    with DeadLetterQueue(settings.broker_url.get_secret_value()) as queue:
        return queue.ready_count()


def queue_count(settings: Settings, queue: str) -> int:
    with DeadLetterQueue(settings.broker_url.get_secret_value(), queue=queue) as probe:
        return probe.ready_count()


def settles_at(count: Callable[[], int], expected: int, timeout: float = 5.0) -> bool:
    """A queue's ready count, once RabbitMQ has applied returns (they are asynchronous)."""
    deadline = time.monotonic() + timeout
    while (seen := count()) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return seen == expected


def dead_letters_settle_at(settings: Settings, expected: int) -> bool:
    return settles_at(lambda: dead_letter_count(settings), expected)


def money_queue_settles_at(settings: Settings, expected: int) -> bool:
    return settles_at(lambda: queue_count(settings, "huimin.work.money"), expected)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def results(his: AmqpHis, count: int, timeout: float = 20.0) -> dict[str, ReceivedResult]:
    found: dict[str, ReceivedResult] = {}
    while len(found) < count:
        result = his.next_result(timeout)
        found[result.correlation_id or ""] = result
    return found


def listing(cli: Cli, settings: Settings, *filters: str) -> dict[str, Any]:
    code, out = cli(settings, "dlq", "list", "--json", *filters)
    assert code == 0, out
    return json.loads(out)


def exhaust_a_payment(
    backend: Backend, his: AmqpHis, settings: Settings
) -> tuple[dict[str, Any], str]:
    """A payment during a platform outage: refused connections are safe to retry, so after
    max_attempts=2 it is dead-lettered (retries_exhausted) with a failed result. (A money call
    that may have reached the platform is reconciled instead, never dead-lettered.)"""
    outage = settings.model_copy(update={"platform_url": "http://127.0.0.1:1/api"})
    order_id = new_order_id()
    payment = event("payment.requested", example("HOS00003", orderId=order_id))
    with running(start_worker(backend, outage)):
        his.publish(payment)
        assert his.next_result(20).routing_key == "payment.requested.failed"
        wait_until(lambda: dead_letter_count(settings) >= 1, "the payment's dead letter")
    return payment, order_id


# --- list ----------------------------------------------------------------------------------------


def test_list_groups_and_filters_and_loses_nothing(
    backend: Backend, settings: Settings, simulator: SimulatorHandle, his: AmqpHis, cli: Cli
) -> None:
    simulator.add_fault("reject_503", "HOS00020")
    patient = event("patient.posted", example("HOS00020"))
    bad = [event("payment.requested", example("HOS00003", amt="100")) for _ in range(2)]
    with running(start_worker(backend, settings)):
        for sent in (*bad, patient):
            his.publish(sent)
        his.publish(b"{not json", routing_key="payment.requested")
        results(his, 3)
        wait_until(lambda: dead_letter_count(settings) == 4, "four dead letters")
    everything = listing(cli, settings)
    assert everything["total"] == everything["selected"] == 4
    assert everything["groups"] == [
        {"type": "payment.requested", "reason": "invalid_event", "count": 3},
        {"type": "patient.posted", "reason": "retries_exhausted", "count": 1},
    ]
    assert listing(cli, settings, "--type", "patient.posted")["selected"] == 1
    assert listing(cli, settings, "--reason", "invalid_event")["selected"] == 3
    by_id = listing(cli, settings, "--id", bad[0]["eventId"])
    assert [m["eventId"] for m in by_id["messages"]] == [bad[0]["eventId"]]
    # --since: the ledger dates what the worker dead-lettered; a body without an eventId has no
    # date anywhere and is not selected by a time filter
    assert listing(cli, settings, "--since", "1h")["selected"] == 3
    assert listing(cli, settings, "--since", "2999-01-01T00:00:00+08:00")["selected"] == 0
    code, text = cli(settings, "dlq", "list", "--messages")
    assert code == 0 and "huimin.dead-letter: 4 message(s), 4 selected" in text
    assert "retries_exhausted" in text and "invalid_event" in text
    # every browse gave every message back, and RabbitMQ counted the deliveries (the reason
    # the dead-letter queue must never be under a delivery-limit policy)
    assert dead_letters_settle_at(settings, 4)
    assert min(m["redeliveries"] for m in listing(cli, settings)["messages"]) >= 7


# --- show ----------------------------------------------------------------------------------------


def test_show_masks_personal_data_unless_revealed_and_gives_the_ledgers_view(
    backend: Backend, settings: Settings, simulator: SimulatorHandle, his: AmqpHis, cli: Cli
) -> None:
    simulator.add_fault("reject_503", "HOS00020")
    patient = event("patient.posted", example("HOS00020"))
    with running(start_worker(backend, settings)):
        his.publish(patient)
        assert his.next_result(20).routing_key == "patient.posted.failed"
        wait_until(lambda: dead_letter_count(settings) == 1, "the dead letter")
    code, text = cli(settings, "dlq", "show", patient["eventId"])
    assert code == 0, text
    assert "retries_exhausted" in text and "attempts:       2" in text
    assert "HTTP 503" in text or "503" in text  # the last error and the attempts
    assert "441802199001011234" not in text and "441802********1234" in text
    assert "13800000001" not in text and "张三" not in text
    assert "ledger: completed, outcome failed" in text
    code, revealed = cli(settings, "dlq", "show", patient["eventId"], "--reveal", "--json")
    shown = json.loads(revealed)
    (letter,) = shown["deadLetters"]
    assert letter["event"]["data"]["documentsNo"] == "441802199001011234"
    assert letter["reason"] == "retries_exhausted" and letter["attempts"] == 2
    assert shown["ledger"]["state"] == "completed" and len(shown["ledger"]["attempts"]) == 2
    assert cli(settings, "dlq", "show", "evt-no-such-event-anywhere")[0] == 1
    assert dead_letters_settle_at(settings, 1)


# --- replay --------------------------------------------------------------------------------------


def test_invalid_events_stay_in_the_queue_with_a_clear_message(
    backend: Backend, settings: Settings, simulator: SimulatorHandle, his: AmqpHis, cli: Cli
) -> None:
    bad = event("payment.requested", example("HOS00003", amt="100"))
    with running(start_worker(backend, settings)):
        his.publish(bad)
        his.publish(b"{not json", routing_key="payment.requested")
        his.next_result(20)
        wait_until(lambda: dead_letter_count(settings) == 2, "two dead letters")
        code, text = cli(settings, "dlq", "replay")
    assert code == 1
    assert text.count("still invalid, left in the queue") == 2
    assert "data.amt" in text and "no readable eventId" in text
    assert dead_letters_settle_at(settings, 2)
    assert simulator.stats() == {}


def test_replaying_an_exhausted_payment_succeeds_once_and_is_traced(
    backend: Backend,
    settings: Settings,
    simulator: SimulatorHandle,
    his: AmqpHis,
    cli: Cli,
    ledger: Ledger,
) -> None:
    payment, order_id = exhaust_a_payment(backend, his, settings)
    event_id = payment["eventId"]
    with running(start_worker(backend, settings)):  # the platform is back
        code, dry = cli(settings, "dlq", "replay", "--dry-run", "--operator", "alice")
        assert code == 0 and "would_replay" in dry and "result reopened" in dry
        assert dead_letters_settle_at(settings, 1)
        assert ledger.get_event(event_id).outcome == "failed"  # type: ignore[union-attr]
        code, text = cli(settings, "dlq", "replay", "--id", event_id, "--operator", "alice")
        assert code == 0, text
        assert "replayed" in text and "huimin.work.money" in text
        result = his.next_result(20)
    assert (result.correlation_id, result.routing_key) == (event_id, "payment.requested.succeeded")
    outcomes = [a.outcome for a in ledger.attempts(event_id)]
    assert outcomes[-1] == "succeeded" and set(outcomes[:-1]) == {"retry_safe"}
    assert result.body["attempts"] == len(outcomes)  # the refused ones before, one now
    assert simulator.receipts(order_id) == 1
    assert dead_letters_settle_at(settings, 0)
    record = ledger.get_event(event_id)
    assert record is not None and (record.state, record.outcome) == (
        EventState.COMPLETED,
        "succeeded",
    )
    replayed = [e for e in ledger.journal(event_id) if e.kind == "replayed"]
    assert [(e.detail["operator"], e.detail["reason"]) for e in replayed] == [
        ("alice", "retries_exhausted")
    ]
    _, trace_text = cli(settings, "trace", order_id)
    _, trace_json = cli(settings, "trace", order_id, "--json")
    kinds = [item["kind"] for item in json.loads(trace_json)["timeline"]]
    assert kinds.index("reopened") < kinds.index("replayed") < kinds.index("replay_published")
    assert kinds.count("result_stored") == 2  # the failed one set aside, then the success
    assert "replayed from the dead-letter queue by alice" in trace_text
    _, history = cli(settings, "dlq", "history")
    assert "replayed" in history and "alice" in history
    assert cli(settings, "dlq", "replay")[1].startswith("0 message(s) considered")


def test_replaying_a_payment_that_did_charge_reconciles_and_never_charges_again(
    backend: Backend, simulator: SimulatorHandle, cli: Cli, ledger: Ledger
) -> None:
    # the answer to the payment is lost (the platform charged it); the worker's read timeout
    # is short, and the retry that would reconcile waits 60 s: long enough to take it away
    settings = backend.settings(
        simulator.base_url + "/api", read_timeout_s=0.5, retry_delays_s=[60]
    )
    his = backend.his(settings)
    assert isinstance(his, AmqpHis)
    simulator.add_fault("lose_response", "HOS00003", times=1, seconds=2)
    order_id = new_order_id()
    payment = event("payment.requested", example("HOS00003", orderId=order_id))
    try:
        with running(start_worker(backend, settings)):
            his.publish(payment)
            wait_until(lambda: _reconciling(ledger, payment["eventId"]), "an unknown outcome")
        # the worker is gone before any status query: as if it had died; RabbitMQ's
        # delivery-limit policy then moves the event to the dead-letter queue
        _move_to_dead_letter_queue(his, "huimin.retry.money.60s", "huimin.work.money")
        assert simulator.receipts(order_id) == 1  # it did charge
        assert "HOS00012" not in simulator.stats()
        code, listed = cli(settings, "dlq", "list", "--reason", "delivery_limit", "--json")
        assert json.loads(listed)["selected"] == 1
        with running(start_worker(backend, settings)):
            code, text = cli(settings, "dlq", "replay", "--reason", "delivery_limit")
            assert code == 0 and "unfinished in the ledger" in text, text
            result = his.next_result(20)
    finally:
        his.close()
    assert result.routing_key == "payment.requested.succeeded"
    assert result.body["orderStatus"] == "02"
    assert simulator.receipts(order_id) == 1  # never charged twice
    assert simulator.stats()["HOS00012"]["0000"] >= 1  # settled by the status query
    assert [a.purpose for a in ledger.attempts(payment["eventId"])][:2] == ["call", "status_query"]


def _reconciling(ledger: Ledger, event_id: str) -> bool:
    record = ledger.get_event(event_id)
    attempts = ledger.attempts(event_id)
    return (
        record is not None
        and record.state is EventState.RECONCILING
        and len(attempts) == 1
        and attempts[0].outcome == "unknown"
    )


def _move_to_dead_letter_queue(his: AmqpHis, from_queue: str, work_queue: str) -> None:
    """Take the event's message and dead-letter it the way RabbitMQ does (x-death...)."""
    deadline = time.monotonic() + 20
    while (message := his.channel.basic_get(from_queue, no_ack=False)) is None:
        assert time.monotonic() < deadline, f"no message in {from_queue}"
        time.sleep(0.05)
    props = message.properties
    headers = dict(props.get("application_headers") or {})
    headers |= {
        "x-first-death-reason": "delivery_limit",
        "x-first-death-queue": work_queue,
        "x-first-death-exchange": "his.events",
        "x-death": [
            {
                "count": 1,
                "reason": "delivery_limit",
                "queue": work_queue,
                "time": datetime.now(UTC).replace(microsecond=0),
                "exchange": "his.events",
                "routing-keys": [headers.get(H_ROUTING_KEY, "payment.requested")],
            }
        ],
    }
    body = message.body if isinstance(message.body, bytes) else message.body.encode()
    his.channel.basic_publish(
        amqp.Message(
            body,
            application_headers=headers,
            delivery_mode=2,
            content_type="application/json",
            message_id=props.get("message_id"),
        ),
        exchange="",
        routing_key=DEAD_LETTER_QUEUE,
    )
    his.channel.basic_ack(message.delivery_tag)


# --- at most once --------------------------------------------------------------------------------


def _plant_dead_letter(his: AmqpHis, order_id: str) -> dict[str, Any]:
    """A valid payment dead-lettered by some worker; the ledger has never seen it."""
    payment = event("payment.requested", example("HOS00003", orderId=order_id))
    headers = {
        H_REASON: "retries_exhausted",
        H_ERROR: "platform unavailable: HTTP 503",
        H_ATTEMPTS: 2,
        H_ROUTING_KEY: "payment.requested",
        H_WORK_QUEUE: "huimin.work.money",
    }
    his.channel.basic_publish(
        amqp.Message(
            json.dumps(payment).encode(),
            application_headers=headers,
            delivery_mode=2,
            message_id=payment["eventId"],
        ),
        exchange="",
        routing_key=DEAD_LETTER_QUEUE,
    )
    return payment


def test_a_crash_after_the_confirm_never_replays_the_message_twice(
    settings: Settings, his: AmqpHis, cli: Cli, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    payment = _plant_dead_letter(his, new_order_id())

    def crash(self: DeadLetterQueue, message: object) -> None:
        raise BrokerUnavailable("connection lost (simulated crash before the ack)")

    with monkeypatch.context() as patch:
        patch.setattr(DeadLetterQueue, "ack", crash)
        code, _ = cli(settings, "dlq", "replay")
    assert code == 1
    assert money_queue_settles_at(settings, 1)  # published and confirmed
    assert dead_letters_settle_at(settings, 1)  # but the dead letter came back
    code, text = cli(settings, "dlq", "replay")
    assert code == 0 and "duplicate_removed" in text, text
    assert money_queue_settles_at(settings, 1)  # not published a second time
    assert dead_letters_settle_at(settings, 0)
    kinds = [e.kind for e in ledger.journal(payment["eventId"])]
    assert kinds == ["replayed", "replay_published", "replay_duplicate_removed"]


def test_a_crash_before_the_confirm_leaves_the_replay_in_doubt_not_repeated(
    settings: Settings, his: AmqpHis, cli: Cli, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    payment = _plant_dead_letter(his, new_order_id())

    def lost(self: DeadLetterQueue, message: object) -> None:
        raise BrokerUnavailable("connection lost (simulated) while waiting for the confirm")

    with monkeypatch.context() as patch:
        patch.setattr(DeadLetterQueue, "publish", lost)
        assert cli(settings, "dlq", "replay")[0] == 1
    code, text = cli(settings, "dlq", "replay")
    assert code == 1 and "in_doubt" in text and "never confirmed" in text, text
    assert money_queue_settles_at(settings, 0)
    assert dead_letters_settle_at(settings, 1)
    # the ledger recorded the event before the marker: the sweeper's net holds it
    record = ledger.get_event(payment["eventId"])
    assert record is not None and record.state is EventState.RECEIVED
    code, text = cli(settings, "dlq", "purge", "--id", payment["eventId"], "--yes")
    assert code == 0 and dead_letter_count(settings) == 0


def test_replay_honours_limit_and_rate(
    settings: Settings, his: AmqpHis, cli: Cli, ledger: Ledger
) -> None:
    for _ in range(3):
        _plant_dead_letter(his, new_order_id())
    started = time.monotonic()
    code, text = cli(settings, "dlq", "replay", "--limit", "2", "--rate", "4")
    elapsed = time.monotonic() - started
    assert code == 0 and text.startswith("replayed ") and "replayed 2" in text, text
    assert money_queue_settles_at(settings, 2)
    assert dead_letters_settle_at(settings, 1)
    assert elapsed >= 0.25  # two publishes at 4/s are a quarter second apart (a floor only)


def test_an_event_the_ledger_holds_otherwise_is_refused_and_stays(
    settings: Settings, his: AmqpHis, cli: Cli, ledger: Ledger
) -> None:
    recorded_invalid = _plant_dead_letter(his, new_order_id())
    other_payload = _plant_dead_letter(his, new_order_id())
    for sent, payload_hash in ((recorded_invalid, "invalid"), (other_payload, "0" * 64)):
        ledger.begin_event(
            NewEvent(
                sent["eventId"],
                "payment.requested",
                "HOS00003",
                {"raw": "..."},
                payload_hash,
                None,
                {},
                datetime.now(UTC),
            )
        )
    code, text = cli(settings, "dlq", "replay")
    assert code == 1 and [ln.split()[0] for ln in text.splitlines()[:2]] == ["refused"] * 2, text
    assert "recorded this eventId as invalid" in text and "with a different payload" in text
    assert dead_letters_settle_at(settings, 2)
    assert money_queue_settles_at(settings, 0)


# --- purge ---------------------------------------------------------------------------------------


def test_purge_needs_a_filter_and_yes_and_records_what_it_removed(
    backend: Backend,
    settings: Settings,
    simulator: SimulatorHandle,
    his: AmqpHis,
    cli: Cli,
    ledger: Ledger,
) -> None:
    bad = event("payment.requested", example("HOS00003", amt="100"))
    exhaust_a_payment(backend, his, settings)
    with running(start_worker(backend, settings)):
        his.publish(bad)
        his.next_result(20)
        wait_until(lambda: dead_letter_count(settings) == 2, "two dead letters")
    assert cli(settings, "dlq", "purge", "--yes")[0] == 2  # no filter
    code, preview = cli(settings, "dlq", "purge", "--reason", "invalid_event")
    assert code == 2 and f"would purge {bad['eventId']}" in preview
    assert dead_letters_settle_at(settings, 2)
    code, text = cli(
        settings, "dlq", "purge", "--reason", "invalid_event", "--yes", "--operator", "bob"
    )
    assert code == 0 and f"purged {bad['eventId']}" in text and "removed by bob" in text
    assert dead_letters_settle_at(settings, 1)
    (entry,) = [e for e in ledger.journal(bad["eventId"]) if e.kind == "purged"]
    assert (entry.detail["operator"], entry.detail["reason"]) == ("bob", "invalid_event")
    assert listing(cli, settings)["groups"] == [
        {"type": "payment.requested", "reason": "retries_exhausted", "count": 1}
    ]
    _, history = cli(settings, "dlq", "history")
    assert "purged" in history and "bob" in history


def test_a_ledger_file_that_does_not_exist_is_a_configuration_error(tmp_path: Path) -> None:
    settings = Settings(ledger_url=f"sqlite:///{tmp_path / 'nope.db'}")
    with pytest.raises(ConfigurationError), opened_ledger(settings):
        pass
    assert not (tmp_path / "nope.db").exists()  # not silently created empty


def test_list_json_shows_each_message_key_and_purging_an_unreadable_letter_is_journaled(
    backend: Backend, settings: Settings, his: AmqpHis, cli: Cli, ledger: Ledger
) -> None:
    with running(start_worker(backend, settings)):
        his.publish(b"{not json", routing_key="payment.requested")  # no eventId to name it by
        wait_until(lambda: dead_letter_count(settings) == 1, "the dead letter")
    (message,) = listing(cli, settings)["messages"]
    assert message["eventId"] is None
    assert message["key"] == message["fingerprint"][:12]  # the handle --id takes, not "***"
    code, text = cli(
        settings, "dlq", "purge", "--id", message["key"], "--yes", "--operator", "carol"
    )
    assert code == 0 and f"#{message['key']}" in text and "ledger journal: purged" in text
    assert dead_letters_settle_at(settings, 0)
    (entry,) = ledger.journal_by_kind("purged")
    assert entry.event_id == f"#{message['key']}"
    assert (entry.detail["operator"], entry.detail["message"]) == ("carol", message["fingerprint"])
    _, history = cli(settings, "dlq", "history")
    assert f"#{message['key']}" in history and "carol" in history
