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
* httpx's timeouts (connect / write / read), plus one overall deadline per request (the
  "deadline" extension, a time.monotonic() instant: worker/retry.py): every socket operation
  waits at most its phase's timeout AND what is left before the deadline, so a peer trickling
  one byte a second is cut at the deadline (a per-read timeout alone never fires), without a
  timer thread; nothing is sent once it has passed. httpx's exceptions, with the same meaning
  for the caller: ConnectError / ConnectTimeout: nothing was sent, safe to resend; WriteError /
  WriteTimeout / ReadError / ReadTimeout / RemoteProtocolError: the request may have reached
  the platform (a money call is then reconciled, never resent blindly);
* TLS through an `ssl.SSLContext` (verification, CA bundle and client certificate are the
  caller's: build_transport, from the settings).

Every response is read in full before it is returned (platform answers are small JSON
documents; the 3 MB goes the other way). Thread-safe: a connection is used by one thread at a
time, taken from and returned to the pool under a lock.
"""

from __future__ import annotations

import http.client
import io
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from worker.errors import ConfigurationError
from worker.settings import Settings

Origin = tuple[str, str, int]  # scheme, host, port
Connection = http.client.HTTPConnection
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: platform answers are small JSON documents; anything this large is not one
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
#: a large body (a 3 MB image) is sent in slices, the deadline re-checked before each: an
#: SSL socket's sendall applies its timeout per write, not to the whole body
_SEND_SLICE = 256 * 1024


class StdlibTransport(httpx.BaseTransport):
    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_idle: int = 20,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
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
        deadline = request.extensions.get("deadline")
        conn = self._checkout(origin, _connect_timeout(timeouts["connect"], deadline))
        try:
            if deadline is not None and time.monotonic() >= deadline:
                # connected too late (a slow TLS handshake): nothing sent, nothing to wait for
                raise httpx.ConnectTimeout("the call's deadline passed before sending")
            response = _exchange(conn, request, timeouts, self._max_response_bytes, deadline)
        except BaseException:
            conn.close()
            raise
        self._checkin(origin, conn, response)
        return httpx.Response(
            response.status, headers=response.headers, content=response.data, request=request
        )

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
            conn = http.client.HTTPSConnection(
                host, port, timeout=timeout, context=self._ssl_context
            )
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


def _exchange(
    conn: Connection,
    request: httpx.Request,
    timeouts: dict[str, float | None],
    max_bytes: int,
    deadline: float | None,
) -> _Answer:
    body = request.read()
    target = request.url.raw_path.decode("ascii")
    headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
    real = conn.sock
    guarded = None if deadline is None or real is None else _DeadlineSocket(real, deadline)
    if guarded is not None:
        conn.sock = guarded  # type: ignore[assignment]
    try:
        with _mapped(httpx.WriteTimeout, httpx.WriteError):
            _set_timeout(conn, timeouts["write"])
            conn.request(request.method, target, body=body, headers=headers)
        with _mapped(httpx.ReadTimeout, httpx.ReadError):
            _set_timeout(conn, timeouts["read"])
            return _Answer(conn.getresponse(), max_bytes)
    finally:
        if guarded is not None and conn.sock is guarded:
            conn.sock = real  # back in the pool as a plain socket


class _DeadlineSocket:
    """A connection's socket for one exchange with a deadline (see the module docstring).

    http.client only calls sendall, makefile("rb") (whose reads come back as recv_into),
    settimeout and close on it; everything else is the real socket's. It counts the files
    made from it like socket.socket does, so a response that owns the connection
    (Connection: close) can still be read after http.client closes the connection.
    """

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline
        self._phase_timeout: float | None = sock.gettimeout()
        self._io_refs = 0
        self._closed = False

    def _arm(self) -> None:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the call's deadline has passed")
        phase = self._phase_timeout
        self._sock.settimeout(left if phase is None else min(phase, left))

    def settimeout(self, timeout: float | None) -> None:
        self._phase_timeout = timeout

    def gettimeout(self) -> float | None:
        return self._phase_timeout

    def sendall(self, data: bytes, flags: int = 0) -> None:
        with memoryview(data) as view, view.cast("B") as octets:
            for start in range(0, len(octets), _SEND_SLICE):
                self._arm()
                self._sock.sendall(octets[start : start + _SEND_SLICE], flags)

    def recv_into(self, buffer: Any, *args: Any) -> int:
        self._arm()
        return self._sock.recv_into(buffer, *args)

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        if mode != "rb":
            raise ValueError(f"only binary reads go through the deadline, not {mode!r}")
        self._io_refs += 1
        raw = socket.SocketIO(self, "rb")  # type: ignore[arg-type]
        return io.BufferedReader(raw, io.DEFAULT_BUFFER_SIZE)

    def _decref_socketios(self) -> None:  # called by SocketIO.close()
        self._io_refs -= 1
        if self._closed and self._io_refs <= 0:
            self._sock.close()

    def close(self) -> None:
        self._closed = True
        if self._io_refs <= 0:
            self._sock.close()

    def fileno(self) -> int:
        return self._sock.fileno()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _connect_timeout(timeout: float | None, deadline: float | None) -> float | None:
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise httpx.ConnectTimeout("the call's deadline passed before connecting")
    return left if timeout is None else min(timeout, left)


@contextmanager
def _mapped(
    timeout: type[httpx.TransportError], failure: type[httpx.TransportError]
) -> Iterator[None]:
    """Standard-library failures as httpx's exceptions (the caller's contract)."""
    try:
        yield
    except TimeoutError as exc:  # socket.timeout too
        raise timeout(str(exc) or "timed out") from exc
    except (
        http.client.RemoteDisconnected,
        http.client.IncompleteRead,
        http.client.BadStatusLine,
        http.client.LineTooLong,
    ) as exc:
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


def build_transport(settings: Settings) -> httpx.BaseTransport:
    """Platform calls: TLS verification on unless explicitly disabled, and a keep-alive
    connection for every handler thread (this module's docstring says why not httpcore)."""
    return StdlibTransport(ssl_context=tls_context(settings), max_idle=settings.concurrency + 4)


def build_download_transport(settings: Settings) -> httpx.BaseTransport:
    """Statement files: httpx's own transport, which streams (statement.py enforces a size
    limit while it reads), with the same TLS settings."""
    return httpx.HTTPTransport(verify=tls_context(settings), retries=0)


def tls_context(settings: Settings) -> ssl.SSLContext:
    if not settings.tls_verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    try:
        context = ssl.create_default_context(cafile=settings.tls_ca_bundle)
        if settings.tls_client_cert:
            context.load_cert_chain(settings.tls_client_cert, settings.tls_client_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"TLS files unusable (HUIMIN_TLS_*): {exc}") from exc
    return context
