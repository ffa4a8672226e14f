"""The bare ASGI plumbing under the simulator's app: reading a body, sending an answer.

Apart from app.py because it is about HTTP over ASGI, not about the platform: the app decides
*what* to answer (the protocol checks, faults, files), this module only moves the bytes, the
way uvicorn expects them. There is no web framework: the simulator is one plain ASGI callable.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

#: Returned from the ASGI callable to make uvicorn close the socket without writing a byte:
#: uvicorn treats a non-None return as a broken app and calls transport.close() (h11 and
#: httptools alike). The client sees "server disconnected without sending a response".
DROP = "huimin-simulator: drop connection"
MAX_BODY_BYTES = 16 * 1024 * 1024  # a 3 MB image, base64 then hex, fits with room to spare


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str = "application/json; charset=utf-8"


def json_answer(data: Any, status: int = 200) -> Answer:
    return Answer(status, json.dumps(data, ensure_ascii=False).encode("utf-8"))


async def lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None once it passes MAX_BODY_BYTES (answered with 413)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def send_answer(send: Send, answer: Answer) -> None:
    headers = [
        (b"content-type", answer.content_type.encode()),
        (b"content-length", str(len(answer.body)).encode()),
    ]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})


def base_url(scope: Scope) -> str:
    """The URL the client reached us by (for links in answers: the H5 page, statement files)."""
    headers = dict(scope.get("headers") or [])
    host = headers.get(b"host", b"").decode("latin-1")
    if not host:
        server = scope.get("server") or ("127.0.0.1", 80)
        host = f"{server[0]}:{server[1]}"
    return f"{scope.get('scheme', 'http')}://{host}"
