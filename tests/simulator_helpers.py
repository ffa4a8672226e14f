"""Shared helpers for the simulator tests: examples to send, sealing, raw posting, opening."""

from __future__ import annotations

import copy
import uuid
from datetime import datetime
from typing import Any

import httpx
from pydantic import SecretStr

from worker.clock import Clock, system_clock
from worker.platform.client import PlatformClient
from worker.protocol import envelope
from worker.protocol.models.examples import EXAMPLES
from worker.sandbox.simulator import SimulatorHandle
from worker.settings import SANDBOX_PLATFORM_ID, SANDBOX_SECRET, Settings

SANDBOX = envelope.Credentials(SANDBOX_PLATFORM_ID, SecretStr(SANDBOX_SECRET))
SIGNED_ID_NO: str = EXAMPLES["HOS00001"].request["idNo"]
SIGN_TOKEN: str = EXAMPLES["HOS00003"].request["signToken"]


def client_for(
    sim: SimulatorHandle, *, clock: Clock = system_clock, read_timeout_s: float = 1.0
) -> PlatformClient:
    """The project's own client, pointed at the simulator, with no sleeping between resends."""
    settings = Settings(platform_url=sim.base_url + "/api", read_timeout_s=read_timeout_s)
    return PlatformClient(settings, clock=clock, sleep=lambda _: None)


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:20].upper()}"


def request(trans_code: str, **changes: Any) -> dict[str, Any]:
    """A copy of the transaction's valid example with `changes` applied."""
    return copy.deepcopy(EXAMPLES[trans_code].request) | changes


def pay(order_id: str, amt: int, **changes: Any) -> dict[str, Any]:
    return request("HOS00003", orderId=order_id, amt=amt, **changes)


def refund(order_id: str, orig_query_id: str, amt: int) -> dict[str, Any]:
    return request("HOS00004", orderId=order_id, origOrderId=orig_query_id, amtRefund=amt)


def order_query(order_id: str) -> dict[str, Any]:
    return request("HOS00012", orderId=order_id)


def sealed(
    trans_code: str,
    business: dict[str, Any],
    *,
    credentials: envelope.Credentials = SANDBOX,
    at: datetime | None = None,
    seq_id: str | None = None,
) -> dict[str, str]:
    return envelope.seal_request(
        trans_code,
        business,
        credentials=credentials,
        seq_id=seq_id or envelope.new_seq_id(),
        at=at or system_clock(),
    )


def post_raw(sim: SimulatorHandle, message: dict[str, Any] | bytes) -> httpx.Response:
    url = sim.base_url + "/api"
    if isinstance(message, bytes):
        return httpx.post(url, content=message)
    return httpx.post(url, json=message)


def opened(response: httpx.Response) -> envelope.OpenedResponse:
    """The simulator's answer, verified: every answer it gives must be signed."""
    return envelope.open_response(response.content, credentials=SANDBOX)
