"""The peers of benchmarks/peers.py do the worker's per-event platform work (issue 13).

benchmarks/peer_work.py is the one piece the three peer frameworks share: validate the event
with the worker's models, seal it with the worker's envelope, open and judge the answer, and
build the result the worker would publish. Driven here against the real simulator over HTTP,
without the peer frameworks (they are the optional `bench` extra) and without timing anything.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from worker.contract.results import Outcome, Result
from worker.errors import InvalidEvent
from worker.protocol.models.examples import EXAMPLES
from worker.sandbox.simulator import SimulatorHandle, run_in_thread
from worker.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from peer_work import PeerWork, ResultMessage  # noqa: E402


@pytest.fixture(scope="module")
def simulator() -> Iterator[SimulatorHandle]:
    with run_in_thread() as handle:
        yield handle


@pytest.fixture
def work(simulator: SimulatorHandle) -> PeerWork:
    return PeerWork(Settings(platform_url=f"{simulator.base_url}/api"))


def payment(order_id: str, amt: int) -> bytes:
    data = {**EXAMPLES["HOS00003"].request, "orderId": order_id, "amt": amt}
    event = {
        "eventId": f"peer-{uuid.uuid4().hex}",
        "type": "payment.requested",
        "occurredAt": "2026-11-29T10:00:00+08:00",
        "data": data,
    }
    return json.dumps(event).encode()


def handled(work: PeerWork, body: bytes) -> ResultMessage:
    """What every peer does around its framework: request, POST, answer."""
    call = work.request(body)
    response = httpx.post(call.url, content=call.body, headers={"Content-Type": "application/json"})
    return work.answer(call, response.status_code, response.content)


def test_a_paid_payment_gives_the_worker_s_succeeded_result(work: PeerWork) -> None:
    body = payment(f"PEER{uuid.uuid4().hex[:12]}", 100)
    message = handled(work, body)
    result = Result.model_validate_json(message.body)
    assert message.routing_key == "payment.requested.succeeded"
    assert message.correlation_id == json.loads(body)["eventId"] == result.causationId
    assert (result.outcome, result.rtCode, result.attempts) == (Outcome.SUCCEEDED, "0000", 1)
    assert result.data is not None and result.data["amt"] == 100


def test_a_platform_refusal_gives_a_failed_result(work: PeerWork) -> None:
    order_id = f"PEER{uuid.uuid4().hex[:12]}"
    handled(work, payment(order_id, 100))
    message = handled(work, payment(order_id, 200))  # the same order, another amount: 1000
    result = Result.model_validate_json(message.body)
    assert message.routing_key == "payment.requested.failed"
    assert (result.outcome, result.rtCode) == (Outcome.FAILED, "1000")


def test_an_invalid_event_is_refused_before_any_call(work: PeerWork) -> None:
    body = payment("", 100)
    with pytest.raises(InvalidEvent) as refused:
        work.request(body)
    result = Result.model_validate_json(work.refused(body, refused.value).body)
    assert (result.outcome, result.attempts) == (Outcome.FAILED, 0)
    assert any(error.field == "data.orderId" for error in result.errors)
