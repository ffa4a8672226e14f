"""The gateway's ASGI app: one POST endpoint at `/`, plus /healthz, /readyz and /metrics.

    POST /     the platform's envelope in, the signed response envelope out (always HTTP 200
               once a body was read: refusals are signed answers, not HTTP errors)
    413        a body over HUIMIN_GATEWAY_MAX_BODY_BYTES: read in chunks, never buffered
               past the limit (a Content-Length over it is refused before reading)
    408        the body did not arrive within HUIMIN_GATEWAY_READ_TIMEOUT_S
    /healthz   200 while the process serves
    /readyz    200 while the broker and the ledger answer (503 naming the failing ones)
    /metrics   the gateway's own CollectorRegistry

Blocking work (verification, the ledger, the broker) runs on worker threads through one
CapacityLimiter of HUIMIN_GATEWAY_CONCURRENCY: at most that many calls are handled at once,
the others wait on the limiter (uvicorn's limit_concurrency bounds how many may wait).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from worker.gateway.metrics import GatewayMetrics
from worker.gateway.service import Gateway

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
#: names of the readiness checks that fail; [] = ready (blocking: run on a thread)
ReadinessCheck = Callable[[], list[str]]

_JSON = b"application/json; charset=utf-8"


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int
    read_timeout_s: float
    concurrency: int


class _TooLarge(Exception):
    pass


class _Gone(Exception):
    """The client went away before its body arrived: nobody is left to answer."""


class GatewayApp:
    def __init__(
        self,
        gateway: Gateway,
        *,
        limits: Limits,
        metrics: GatewayMetrics,
        readiness: ReadinessCheck,
    ) -> None:
        self.gateway = gateway
        self.limits = limits
        self.metrics = metrics
        self.readiness = readiness
        self.stopping = False
        # made on first use: a CapacityLimiter belongs to the running event loop
        self._limiter: anyio.CapacityLimiter | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if path == "/":
            if method != "POST":
                self.metrics.rejected("method_not_allowed")
                await _respond(send, 405, b'{"error":"POST only"}')
                return
            await self._platform_call(scope, receive, send)
        elif path in ("/healthz", "/readyz", "/metrics") and method in ("GET", "HEAD"):
            await self._operations(path, send)
        else:
            self.metrics.rejected("not_found")
            await _respond(send, 404, b'{"error":"not found"}')

    async def _platform_call(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body = await self._body(scope, receive)
        except _TooLarge:
            self.metrics.rejected("too_large")
            await _respond(send, 413, b'{"error":"request body too large"}')
            return
        except TimeoutError:
            self.metrics.rejected("read_timeout")
            await _respond(send, 408, b'{"error":"request body not received in time"}')
            return
        except _Gone:
            return  # a partial body is never judged: it could only be refused as malformed
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.limits.concurrency)
        answer = await anyio.to_thread.run_sync(self.gateway.handle, body, limiter=self._limiter)
        await _respond(send, 200, json.dumps(answer, ensure_ascii=False).encode("utf-8"))

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.limits.max_body_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            raise _TooLarge
        chunks: list[bytes] = []
        size = 0
        with anyio.fail_after(self.limits.read_timeout_s):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _Gone
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise _TooLarge  # stop reading: what was read is dropped with the request
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
        return b"".join(chunks)

    async def _operations(self, path: str, send: Send) -> None:
        if path == "/healthz":
            await _respond(send, 200, b'{"status":"ok"}')
        elif path == "/metrics":
            payload = generate_latest(self.metrics.registry)
            await _respond(send, 200, payload, CONTENT_TYPE_LATEST.encode())
        else:
            failing = (
                ["stopping"] if self.stopping else await anyio.to_thread.run_sync(self.readiness)
            )
            status = 503 if failing else 200
            body = {"status": "not ready" if failing else "ready", "failing": failing}
            await _respond(send, status, json.dumps(body).encode())

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.stopping = True  # /readyz says so while uvicorn drains
                await send({"type": "lifespan.shutdown.complete"})
                return


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _respond(send: Send, status: int, body: bytes, content_type: bytes = _JSON) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
