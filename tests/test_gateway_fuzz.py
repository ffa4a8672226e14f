"""Fuzzing the gateway's verification: random bodies and mutated envelopes (hypothesis).

Whatever arrives, `Gateway.handle` returns (no exception escapes), its answer is signed with
the shared key, and a refusal publishes nothing: only a 0000 ever has a message behind it.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from worker.clock import FixedClock
from worker.gateway.events import Handoff
from worker.gateway.metrics import GatewayMetrics
from worker.gateway.service import Gateway, GatewayOptions
from worker.gateway.verify import Accepted, Refusal, verify
from worker.ledger import Ledger, open_ledger
from worker.protocol import envelope
from worker.protocol.models.examples import EXAMPLES
from worker.settings import SANDBOX_PLATFORM_ID, SANDBOX_SECRET

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
CREDENTIALS = envelope.Credentials(SANDBOX_PLATFORM_ID, envelope.SecretStr(SANDBOX_SECRET))
SKEW = timedelta(minutes=5)
CODES = ("HIS00002", "HIS00003", "HIS00004")
BUDGET = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


class RecordingPublisher:
    """Publishes into a list; HIS00003 is answered with the shared example."""

    def __init__(self) -> None:
        self.published: list[Handoff] = []

    def declare(self) -> None:
        pass

    def publish(self, message: Handoff) -> None:
        self.published.append(message)

    def request(self, message: Handoff, timeout_s: float) -> bytes | None:
        self.published.append(message)
        return json.dumps(EXAMPLES["HIS00003"].response).encode()

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def ledger() -> Iterator[Ledger]:
    with tempfile.TemporaryDirectory() as directory:
        opened = open_ledger(f"sqlite:///{Path(directory) / 'ledger.db'}")
        opened.migrate()
        yield opened
        opened.close()


def gateway(ledger: Ledger, publisher: RecordingPublisher) -> Gateway:
    options = GatewayOptions(CREDENTIALS, SKEW, his_timeout_s=1.0)
    return Gateway(
        options,
        ledger=ledger,
        publisher=publisher,
        metrics=GatewayMetrics(CollectorRegistry()),
        clock=FixedClock(NOW),
    )


def valid_envelope(trans_code: str) -> dict[str, str]:
    return envelope.seal_request(
        trans_code,
        EXAMPLES[trans_code].copy().request,
        credentials=CREDENTIALS,
        seq_id=envelope.new_seq_id(),
        at=NOW,
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


@st.composite
def mutated_envelopes(draw: st.DrawFn) -> bytes:
    fields: dict[str, Any] = valid_envelope(draw(st.sampled_from(CODES)))
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(sorted(fields) + ["extra"]))
        action = draw(st.sampled_from(["drop", "replace", "flip", "truncate", "retime"]))
        if action == "retime":  # a well-formed time: inside the window (bad signature) or not
            fields["platformTransTime"] = draw(
                st.from_regex(r"[01]\d[0-5]\d[0-5]\d", fullmatch=True)
            )
        elif action == "drop":
            fields.pop(name, None)
        elif action == "replace":
            fields[name] = draw(json_values)
        elif isinstance(fields.get(name), str) and fields[name]:
            value = fields[name]
            at = draw(st.integers(0, len(value) - 1))
            if action == "flip":
                fields[name] = value[:at] + draw(st.characters()) + value[at + 1 :]
            else:
                fields[name] = value[:at]
    return json.dumps(fields).encode()


bodies = (
    st.binary(max_size=512)
    | json_values.map(lambda v: json.dumps(v).encode())
    | mutated_envelopes()
)


def check_answer(answer: dict[str, str], publisher: RecordingPublisher, before: int) -> None:
    opened = envelope.open_response(json.dumps(answer), credentials=CREDENTIALS)  # signed
    published = len(publisher.published) - before
    # a 0000 publishes at most once (a HIS00004 already handed over is not published again)
    assert published <= (1 if opened.rt_code == "0000" else 0), opened


@BUDGET
@given(body=bodies)
def test_any_body_gets_a_signed_answer_and_only_a_0000_publishes(
    ledger: Ledger, body: bytes
) -> None:
    publisher = RecordingPublisher()
    answer = gateway(ledger, publisher).handle(body)
    check_answer(answer, publisher, 0)


@BUDGET
@given(body=bodies)
def test_verification_never_raises_and_refusals_carry_a_known_code(body: bytes) -> None:
    checked = verify(body, credentials=CREDENTIALS, now=NOW, max_skew=SKEW)
    assert isinstance(checked, Accepted | Refusal)
    if isinstance(checked, Refusal):
        assert checked.rt_code in ("4000", "4104")
        assert 0 < len(checked.rt_msg) <= 200


@pytest.mark.parametrize("trans_code", CODES)
def test_an_untouched_envelope_is_accepted(tmp_path: Path, trans_code: str) -> None:
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.migrate()
    publisher = RecordingPublisher()
    answer = gateway(ledger, publisher).handle(json.dumps(valid_envelope(trans_code)).encode())
    assert envelope.open_response(json.dumps(answer), credentials=CREDENTIALS).rt_code == "0000"
    assert len(publisher.published) == 1


@pytest.mark.parametrize(
    ("offset", "accepted"), [(300, True), (301, False), (-300, True), (-301, False)]
)
def test_the_time_window_is_inclusive_of_max_clock_skew(offset: int, accepted: bool) -> None:
    body = envelope.seal_request(
        "HIS00004",
        EXAMPLES["HIS00004"].copy().request,
        credentials=CREDENTIALS,
        seq_id=envelope.new_seq_id(),
        at=NOW + timedelta(seconds=offset),
    )
    checked = verify(json.dumps(body).encode(), credentials=CREDENTIALS, now=NOW, max_skew=SKEW)
    assert isinstance(checked, Accepted) is accepted
    if not accepted:
        assert isinstance(checked, Refusal) and checked.cause == "skew"


def test_the_gateway_logs_json_lines_without_id_numbers_or_secrets(tmp_path: Path) -> None:
    from worker.logs import configure_logging
    from worker.protocol.models.examples import ID_NO
    from worker.settings import Settings

    stream = io.StringIO()
    handler = configure_logging(Settings(log_format="json", log_level="INFO"), stream=stream)
    try:
        ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
        ledger.migrate()
        handle = gateway(ledger, RecordingPublisher()).handle
        handle(json.dumps(valid_envelope("HIS00004")).encode())
        bad = EXAMPLES["HIS00004"].copy().request | {"idNo": ID_NO + "9" * 20}  # too long
        handle(
            json.dumps(
                envelope.seal_request(
                    "HIS00004", bad, credentials=CREDENTIALS, seq_id=envelope.new_seq_id(), at=NOW
                )
            ).encode()
        )
        handle(b'{"platformId": "' + ID_NO.encode() + b'"}')  # an id number where none belongs
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["level"] for line in lines] == ["INFO", "WARNING", "WARNING"]
    assert "idNo" in lines[1]["message"]  # the field is named ...
    text = stream.getvalue()
    assert ID_NO not in text and SANDBOX_SECRET not in text  # ... never its value
