"""Random and mutated platform answers through the client, with a fixed budget.

Whatever the platform (or something in between) answers, the client either returns a verified
reply that matches what was asked, or raises an error of the tree with its reason: never a
foreign exception, never a success about another order.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.platform_fakes import CREDS
from tests.platform_fakes import settings as platform_settings
from worker.clock import FixedClock
from worker.errors import HuiminError
from worker.platform.client import PlatformClient
from worker.protocol import envelope
from worker.protocol.models.examples import EXAMPLES

PAY = EXAMPLES["HOS00003"]
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ENVELOPE_FIELDS = [
    "platformId",
    "platformSeqId",
    "signData",
    "encData",
    "rtCode",
    "rtMsg",
    "transDate",
    "transTime",
    "signType",
    "encType",
]


def _call(status: int, body: bytes) -> None:
    def answer(_: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body)

    client = PlatformClient(
        platform_settings(),
        transport=httpx.MockTransport(answer),
        clock=FixedClock(datetime(2026, 11, 25, 1, 0, tzinfo=UTC)),
        sleep=lambda _: None,
    )
    try:
        reply = client.call("HOS00003", PAY.request)
    except HuiminError as refused:
        assert refused.reason and str(refused)
        return
    assert reply.data.get("orderId") == PAY.request["orderId"]
    assert reply.data.get("amt") in (None, PAY.request["amt"])


def _sealed(rt_code: str, data: dict[str, Any] | None) -> dict[str, Any]:
    return dict(envelope.seal_response(rt_code, "msg", data, credentials=CREDS))


@FUZZ
@given(status=st.sampled_from([200, 200, 200, 404, 429, 500, 503]), body=st.binary(max_size=300))
def test_random_bodies_never_escape_the_error_tree(status: int, body: bytes) -> None:
    _call(status, body)


@FUZZ
@given(
    rt_code=st.sampled_from(
        ["0000", "0001", "1000", "4000", "4008", "4104", "9999", "5501", "7777", ""]
    ),
    field=st.sampled_from(sorted(PAY.response)),
    value=st.none()
    | st.integers()
    | st.text(max_size=24)
    | st.sampled_from(["PAY202509010000000002", 499999, "12", "32", "01"]),
    drop=st.booleans(),
)
def test_mutated_answers_are_believed_only_when_they_match(
    rt_code: str, field: str, value: Any, drop: bool
) -> None:
    data = dict(PAY.response)
    if drop:
        data.pop(field)
    else:
        data[field] = value
    _call(200, json.dumps(_sealed(rt_code, data)).encode())


@FUZZ
@given(
    field=st.sampled_from(ENVELOPE_FIELDS),
    value=st.none() | st.integers() | st.text(max_size=40) | st.just("00" * 16),
    drop=st.booleans(),
)
def test_tampered_envelopes_are_never_believed(field: str, value: Any, drop: bool) -> None:
    sealed = _sealed("0000", dict(PAY.response))
    if drop:
        sealed.pop(field, None)
    else:
        sealed[field] = value
    _call(200, json.dumps(sealed).encode())
