"""The one intake path (worker/pipeline/intake.py): every body is admitted or refused with a reason.

Property tests feed random and mutated bodies through it with a fixed budget: nothing but
InvalidEvent escapes, every refusal names a known reason, and what is read of a refused body
(its identity) is always safe for an AMQP header, a routing key, SQL and a log line.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_worker import event, example
from worker.broker.messages import Delivery
from worker.broker.topology import EVENTS_EXCHANGE, H_ROUTING_KEY, UNROUTABLE_QUEUE, work_queue_for
from worker.contract.identifiers import event_id_or_none, event_type_or_none
from worker.errors import InvalidEvent
from worker.ledger import NewEvent, open_ledger
from worker.pipeline import intake
from worker.pipeline.sweeper import Sweeper
from worker.protocol.models.examples import EXAMPLES
from worker.protocol.registry import EVENT_TYPES

RULES = intake.IntakeRules(max_bytes=64 * 1024, hospital_id="H0000001", city_code="441800")
REASONS = {"invalid_event", "too_large", "unknown_type"}
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _admit(
    body: bytes, routed: str = "payment.requested", queue: str | None = "huimin.work.money"
) -> Any:
    return intake.admit(body, routed, queue, RULES)


def _valid_payment() -> dict[str, Any]:
    return event("payment.requested", example("HOS00003"))


# --- examples ----------------------------------------------------------------------------------


def test_a_valid_event_is_admitted_on_its_own_queue_with_its_own_routing_key() -> None:
    prepared = _admit(json.dumps(_valid_payment()).encode())
    assert prepared.trans_code == "HOS00003"


@pytest.mark.parametrize(
    ("body", "reason", "field"),
    [
        (b"[" * 5000 + b"]" * 5000, "invalid_event", None),
        (b'{"eventId": "x", "data": ' + b'{"a": ' * 40 + b"1" + b"}" * 41, "invalid_event", None),
        (
            json.dumps({**_valid_payment(), "eventId": "evt-\x00-nul-id"}).encode(),
            "invalid_event",
            "eventId",
        ),
        (
            json.dumps({**_valid_payment(), "type": "payment.refunded.maybe"}).encode(),
            "unknown_type",
            "type",
        ),
        (b"x" * (RULES.max_bytes + 1), "too_large", None),
    ],
    ids=["nested-5000", "nested-41", "nul-in-id", "unknown-type", "too-large"],
)
def test_a_refused_body_names_its_reason(body: bytes, reason: str, field: str | None) -> None:
    with pytest.raises(InvalidEvent) as refused:
        _admit(body)
    assert refused.value.reason == reason
    if field is not None:
        assert refused.value.errors[0].field == field


def test_an_event_on_another_types_queue_is_refused() -> None:
    fee = event("fee.posted", example("HOS00022"))
    with pytest.raises(InvalidEvent, match="arrived on huimin.work.money"):
        _admit(json.dumps(fee).encode(), routed="fee.posted", queue="huimin.work.money")


def test_everything_on_the_unroutable_queue_is_an_unknown_type() -> None:
    with pytest.raises(InvalidEvent) as refused:
        _admit(
            json.dumps(_valid_payment()).encode(), routed="payment.requestd", queue=UNROUTABLE_QUEUE
        )
    assert refused.value.reason == "unknown_type"


def test_the_routing_key_header_is_believed_only_off_his_events() -> None:
    forged = {H_ROUTING_KEY: "payment.requested"}
    from_his = Delivery(
        b"{}", "fee.posted", forged, queue="huimin.work.claims", exchange=EVENTS_EXCHANGE
    )
    own_retry = Delivery(b"{}", "huimin.work.money", forged, queue="huimin.work.money")
    assert intake.routed_key(from_his) == "fee.posted"
    assert intake.routed_key(own_retry) == "payment.requested"


def test_a_body_over_the_limit_is_scanned_not_parsed_and_believed_only_when_unambiguous() -> None:
    big = {**_valid_payment(), "data": {"remark": "y" * RULES.max_bytes}}
    assert intake.identity(json.dumps(big).encode(), RULES).readable
    twice = {**big, "data": {"eventId": "evt-other-0001", "remark": "y" * RULES.max_bytes}}
    assert not intake.identity(json.dumps(twice).encode(), RULES).readable


def test_the_ledger_keeps_a_refused_body_truncated_and_nul_free() -> None:
    kept = intake.kept_raw(b"\x00" + b"z" * 10_000)
    assert len(str(kept["raw"])) == intake.RAW_KEPT_CHARS and "\x00" not in str(kept["raw"])
    assert kept["bytes"] == 10_001 and kept["truncated"] is True


def test_the_sweeper_leaves_an_event_with_a_malformed_id_to_an_operator(tmp_path: Path) -> None:
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.migrate()
    long_ago = datetime(2026, 1, 1, tzinfo=UTC)
    for event_id in ("e" * 300, "evt-well-formed-1"):
        ledger.begin_event(
            NewEvent(
                event_id,
                "payment.requested",
                "HOS00003",
                {"eventId": event_id},
                "h",
                None,
                {},
                long_ago,
            )
        )
    swept = Sweeper(ledger, lambda: long_ago + timedelta(days=1), timedelta(minutes=2)).sweep()
    assert swept is not None
    assert [m.message_id for m in swept.messages] == ["evt-well-formed-1"]


# --- properties ----------------------------------------------------------------------------------


def _json_values() -> st.SearchStrategy[Any]:
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=20,
    )


def _check_refusal(body: bytes, refused: InvalidEvent) -> None:
    assert refused.reason in REASONS
    assert str(refused)
    who = intake.identity(body, RULES)
    assert who.event_id is None or event_id_or_none(who.event_id) == who.event_id
    assert who.event_type is None or event_type_or_none(who.event_type) == who.event_type


def _through_intake(body: bytes, routed: str, queue: str | None) -> None:
    try:
        prepared = _admit(body, routed, queue)
    except InvalidEvent as refused:
        _check_refusal(body, refused)
        return
    assert event_id_or_none(prepared.event.eventId) == prepared.event.eventId
    assert prepared.event.type == routed and queue in (None, work_queue_for(routed))


@FUZZ
@given(body=st.binary(max_size=512), routed=st.sampled_from([*EVENT_TYPES, "x" * 300]))
def test_random_bytes_are_admitted_or_refused_with_a_reason(body: bytes, routed: str) -> None:
    _through_intake(body, routed, work_queue_for(routed))


@FUZZ
@given(
    code=st.sampled_from(sorted(EXAMPLES)),
    path=st.sampled_from(["eventId", "type", "occurredAt", "data", "data.*", "extra"]),
    value=_json_values(),
    drop=st.booleans(),
)
def test_mutated_events_are_admitted_or_refused_with_a_reason(
    code: str, path: str, value: Any, drop: bool
) -> None:
    event_type = next((n for n, t in EVENT_TYPES.items() if t.trans_code == code), None)
    if event_type is None:
        return  # a transaction the HIS never sends (inbound calls, abolished codes)
    document = event(event_type, json.loads(json.dumps(EXAMPLES[code].request)))
    _mutate(document, path, value, drop)
    body = json.dumps(document, ensure_ascii=False).encode("utf-8", "surrogatepass")
    _through_intake(body, event_type, work_queue_for(event_type))


def _mutate(document: dict[str, Any], path: str, value: Any, drop: bool) -> None:
    target, key = document, path
    if path == "data.*":
        target = document["data"]
        key = sorted(target)[0] if target else "x"
    if drop:
        target.pop(key, None)
    else:
        target[key] = value
