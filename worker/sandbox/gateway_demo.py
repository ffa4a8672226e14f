"""The demo's second act: the platform calls the hospital, through an in-process gateway.

The gateway runs on loopback (uvicorn in a thread) over the demo's in-memory broker; an HIS
queue is bound to `platform.events` and an in-process HIS answers HIS00003. The simulator's
`notify` client plays the platform: an authorisation letter, a visit-records request, a claim
result (sent twice: published once), and a forged call (refused, signed, nothing published).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from worker.broker.memory import MemoryBroker
from worker.clock import system_clock
from worker.gateway.events import PLATFORM_EXCHANGE
from worker.gateway.publisher import MemoryPublisher
from worker.gateway.server import build_gateway
from worker.protocol import envelope
from worker.protocol.models.examples import EXAMPLES
from worker.sandbox.simulator.notify import notify
from worker.sandbox.simulator.server import serving_in_thread
from worker.settings import Settings

HIS_QUEUE = "his.platform-events"
Say = Callable[[str, str], None]


def his_visits(request: bytes) -> bytes:
    """The HIS's answer to visits.requested: the shared example's visits."""
    return json.dumps(EXAMPLES["HIS00003"].response, ensure_ascii=False).encode("utf-8")


def run_platform_calls(settings: Settings, broker: MemoryBroker, say: Say) -> bool:
    broker.declare_queue(HIS_QUEUE)
    broker.bind(HIS_QUEUE, PLATFORM_EXCHANGE, "#")
    parts = build_gateway(settings, publisher=MemoryPublisher(broker, responder=his_visits))
    credentials = envelope.Credentials.from_settings(settings)
    try:
        with serving_in_thread(parts.app) as base_url, httpx.Client(timeout=10) as http:
            say("demo", f"the platform now calls the hospital's gateway at {base_url}/")
            return _calls(base_url + "/", http, credentials, broker, say)
    finally:
        parts.close()


def _calls(
    url: str, http: httpx.Client, credentials: envelope.Credentials, broker: MemoryBroker, say: Say
) -> bool:
    ok = True

    def call(
        trans_code: str,
        expected: str,
        published: int,
        business: Any = None,
        as_: envelope.Credentials = credentials,
    ) -> None:
        nonlocal ok
        data = business or EXAMPLES[trans_code].copy().request
        answer = _send(url, trans_code, data, http, as_, credentials)
        got = _drain(broker)
        mark = "ok" if (answer.rt_code, len(got)) == (expected, published) else "UNEXPECTED"
        ok &= mark == "ok"
        handed = ", ".join(got) or "nothing published"
        say(
            "gateway",
            f"{trans_code} -> rtCode {answer.rt_code} {answer.rt_msg!r}; "
            f"HIS got: {handed}  [{mark}]",
        )

    call("HIS00002", "0000", 1)
    call("HIS00003", "0000", 1)  # the in-process HIS answers with its visits
    call("HIS00004", "0000", 1)
    call("HIS00004", "0000", 0)  # the same notification again: answered, not published twice
    forged = envelope.Credentials(credentials.platform_id, envelope.SecretStr("F" * 32))
    call("HIS00004", "4000", 0, as_=forged)  # signed with another key: refused
    return ok


def _send(
    url: str,
    trans_code: str,
    data: dict[str, Any],
    http: httpx.Client,
    sender: envelope.Credentials,
    ours: envelope.Credentials,
) -> envelope.OpenedResponse:
    if sender is ours:
        return notify(url, trans_code, data, credentials=ours, client=http, clock=system_clock)
    sealed = envelope.seal_request(
        trans_code, data, credentials=sender, seq_id=envelope.new_seq_id(), at=system_clock()
    )
    # the gateway answers with the hospital's key, whoever signed the request
    return envelope.open_response(http.post(url, json=sealed).content, credentials=ours)


def _drain(broker: MemoryBroker) -> list[str]:
    found = []
    while (delivery := broker.get(HIS_QUEUE)) is not None:
        found.append(delivery.routing_key)
    return found
