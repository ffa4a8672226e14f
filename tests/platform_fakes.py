"""A scripted fake platform for client and processor unit tests (httpx.MockTransport).

The real stateful counterpart is the simulator (worker.sandbox.simulator); this one answers whatever
a test scripts, to pin the client's judgement of each answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import SecretStr

from worker.protocol import envelope
from worker.protocol.envelope import Credentials, OpenedRequest
from worker.settings import SANDBOX_PLATFORM_ID, SANDBOX_SECRET, Settings

CREDS = Credentials(SANDBOX_PLATFORM_ID, SecretStr(SANDBOX_SECRET))
Answer = Callable[[OpenedRequest], httpx.Response]


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"platform_url": "http://127.0.0.1:8600/api"}
    values.update(overrides)
    return Settings(**values)


def signed(rt_code: str, rt_msg: str = "", data: dict | None = None) -> httpx.Response:
    return httpx.Response(
        200, json=envelope.seal_response(rt_code, rt_msg, data, credentials=CREDS)
    )


@dataclass
class FakePlatform:
    """Answers each request with the next scripted answer; records what it received."""

    answers: list[Answer | httpx.Response | Exception] = field(default_factory=list)
    received: list[OpenedRequest] = field(default_factory=list)
    on_request: Callable[[OpenedRequest], None] | None = None

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        opened = envelope.open_request(json.loads(request.content), credentials=CREDS)
        self.received.append(opened)
        if self.on_request:
            self.on_request(opened)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):
            return answer
        return answer(opened)
