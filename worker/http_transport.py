"""The platform's HTTP transport: httpx's one-method transport interface over `http.client`.

Why not httpx.HTTPTransport (httpcore + h11): at 64 handler threads its connection pool scans
every pooled connection, with a `select` on each socket, on every request and again on every
response close, and its pure-Python HTTP parser costs about three times the CPU of the
standard library's C-accelerated one. The worker process is bound by its GIL (docs/
performance.md), so the client's CPU is throughput. This transport keeps what the worker needs:

* HTTP/1.1 keep-alive: idle connections in a LIFO stack per origin (the most recently used is
  the most likely to still be open), at most `max_idle` of them;
* a reused connection is checked once, with one `select`, before it is trusted: readable while
  idle means the server closed it (or sent garbage), so it is dropped, never written to;
* httpx's timeouts (connect / write / read) and httpx's exceptions, with the same meaning for
  the caller: ConnectError / ConnectTimeout: nothing was sent, safe to resend; WriteError /
  WriteTimeout / ReadError / ReadTimeout / RemoteProtocolError: the request may have reached
  the platform (a money call is then reconciled, never resent blindly);
* TLS through an `ssl.SSLContext` (verification, CA bundle and client certificate are the
  caller's: client.build_transport).

Every response is read in full before it is returned (platform answers are small JSON
documents; the 3 MB goes the other way). Thread-safe: a connection is used by one thread at a
time, taken from and returned to the pool under a lock.
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

Origin = tuple[str, str, int]  # scheme, host, port
Connection = http.client.HTTPConnection
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: platform answers are small JSON documents; anything this large is not one
MAX_RESPONSE_BYTES = 16 * 1024 * 1024


class StdlibTransport(httpx.BaseTransport):
    def __init__(self, *, ssl_context: ssl.SSLContext | None = None, max_idle: int = 20,
                 max_response_bytes: int = MAX_RESPONSE_BYTES) -> None:  # fmt: skip
        self._ssl_context = ssl_context
        self._max_idle = max_idle
        self._max_response_bytes = max_response_bytes
        self._idle: dict[Origin, list[Connection]] = {}
        self._lock = threading.Lock()
        self._closed = False

    # --- httpx.BaseTransport -------------------------------------------------------------------

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        origin = _origin(request.url)
        timeouts = _timeouts(request)
        conn = self._checkout(origin, timeouts["connect"])
        try:
            response = _exchange(conn, request, timeouts, self._max_response_bytes)
        except BaseException:
            conn.close()
            raise
        self._checkin(origin, conn, response)
        return httpx.Response(response.status, headers=response.headers,
                              content=response.data, request=request)  # fmt: skip

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    # --- the pool --------------------------------------------------------------------------------

    def _checkout(self, origin: Origin, connect_timeout: float | None) -> Connection:
        while (conn := self._pop_idle(origin)) is not None:
            if _still_open(conn):
                return conn
            conn.close()  # closed by the server while idle: never write to it
        return self._connect(origin, connect_timeout)

    def _pop_idle(self, origin: Origin) -> Connection | None:
        with self._lock:
            stack = self._idle.get(origin)
            return stack.pop() if stack else None

    def _checkin(self, origin: Origin, conn: Connection, response: _Answer) -> None:
        if response.will_close:
            conn.close()
            return
        with self._lock:
            stack = self._idle.setdefault(origin, [])
            if not self._closed and len(stack) < self._max_idle:
                stack.append(conn)
                return
        conn.close()

    def _connect(self, origin: Origin, timeout: float | None) -> Connection:
        scheme, host, port = origin
        conn: Connection
        if scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=timeout,
                                               context=self._ssl_context)  # fmt: skip
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        with _mapped(httpx.ConnectTimeout, httpx.ConnectError):
            conn.connect()
        _no_delay(conn)
        return conn


class _Answer:
    """What is kept of an http.client response once it has been read in full."""

    __slots__ = ("status", "headers", "data", "will_close")

    def __init__(self, response: http.client.HTTPResponse, max_bytes: int) -> None:
        self.status = response.status
        self.headers = response.getheaders()
        self.data = response.read(max_bytes + 1)
        if len(self.data) > max_bytes:
            raise httpx.RemoteProtocolError(f"response larger than {max_bytes} bytes")
        self.will_close = response.will_close


def _exchange(conn: Connection, request: httpx.Request,
              timeouts: dict[str, float | None], max_bytes: int) -> _Answer:  # fmt: skip
    body = request.read()
    target = request.url.raw_path.decode("ascii")
    headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
    with _mapped(httpx.WriteTimeout, httpx.WriteError):
        _set_timeout(conn, timeouts["write"])
        conn.request(request.method, target, body=body, headers=headers)
    with _mapped(httpx.ReadTimeout, httpx.ReadError):
        _set_timeout(conn, timeouts["read"])
        return _Answer(conn.getresponse(), max_bytes)


@contextmanager
def _mapped(timeout: type[httpx.TransportError],
            failure: type[httpx.TransportError]) -> Iterator[None]:  # fmt: skip
    """Standard-library failures as httpx's exceptions (the caller's contract)."""
    try:
        yield
    except TimeoutError as exc:  # socket.timeout too
        raise timeout(str(exc) or "timed out") from exc
    except (http.client.RemoteDisconnected, http.client.IncompleteRead,
            http.client.BadStatusLine, http.client.LineTooLong) as exc:  # fmt: skip
        raise httpx.RemoteProtocolError(f"{type(exc).__name__}: {exc}") from exc
    except http.client.HTTPException as exc:
        raise httpx.RemoteProtocolError(f"{type(exc).__name__}: {exc}") from exc
    except OSError as exc:  # refused, reset, unreachable, TLS failures (ssl.SSLError)
        raise failure(f"{type(exc).__name__}: {exc}") from exc


def _still_open(conn: Connection) -> bool:
    """An idle keep-alive connection has nothing to read; readable means EOF (or junk)."""
    sock = conn.sock
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):  # closed or a bad descriptor
        return False
    return not readable


def _set_timeout(conn: Connection, timeout: float | None) -> None:
    conn.timeout = timeout
    if conn.sock is not None:
        conn.sock.settimeout(timeout)


def _no_delay(conn: Connection) -> None:
    # the request goes out as headers + body in two writes: without TCP_NODELAY, Nagle and
    # delayed ACKs can hold the body back for 40 ms
    if conn.sock is not None:
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _origin(url: httpx.URL) -> Origin:
    scheme = url.scheme
    if scheme not in _DEFAULT_PORTS:
        raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}: {url}")
    return scheme, url.host, url.port or _DEFAULT_PORTS[scheme]


def _timeouts(request: httpx.Request) -> dict[str, float | None]:
    given: dict[str, Any] = request.extensions.get("timeout", {})
    return {phase: given.get(phase) for phase in ("connect", "write", "read")}
