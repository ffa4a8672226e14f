"""The platform's HTTP transport (worker/platform/http.py), against real local sockets.

What the client relies on: httpx's exceptions with httpx's meaning (ConnectError: nothing was
sent; Read*/RemoteProtocolError: the request may have arrived), keep-alive reuse that never
writes to a connection the server has closed, httpx's timeouts, and TLS verification.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from worker.platform.http import StdlibTransport

TIMEOUT = {"connect": 2.0, "write": 2.0, "read": 2.0, "pool": 2.0}


class Echo(BaseHTTPRequestHandler):
    """Answers every POST with what it received, and which client port it came from."""

    protocol_version = "HTTP/1.1"  # keep-alive

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["content-length"]))
        answer = (
            b"port=%d;type=%s;" % (self.client_address[1], self.headers["content-type"].encode())
            + body
        )
        size = int(self.headers.get("x-answer-size", "0"))
        answer += b"x" * size
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def echo_server(tls: ssl.SSLContext | None = None) -> Iterator[tuple[ThreadingHTTPServer, str]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    scheme = "http"
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, f"{scheme}://127.0.0.1:{server.server_address[1]}/api"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def raw_server(behaviour: Callable[[socket.socket], None]) -> Iterator[str]:
    """A listener that does `behaviour` with each accepted connection (misbehaving servers)."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                behaviour(conn)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/api"
    finally:
        stop.set()
        listener.close()


def post(
    transport: StdlibTransport,
    url: str,
    body: bytes = b"{}",
    timeout: dict[str, float] = TIMEOUT,
    **headers: str,
) -> httpx.Response:
    request = httpx.Request(
        "POST",
        url,
        content=body,
        extensions={"timeout": timeout},
        headers={"content-type": "application/json", **headers},
    )
    return transport.handle_request(request)


def client_port(response: httpx.Response) -> bytes:
    return response.content.split(b";", 1)[0]


# --- the happy path -----------------------------------------------------------------------------


def test_a_post_round_trips_its_body_headers_and_status() -> None:
    with echo_server() as (_, url):
        response = post(StdlibTransport(), url, '{"名":1}'.encode())
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain"
    assert response.content.endswith(b";type=application/json;" + '{"名":1}'.encode())


def test_keep_alive_reuses_one_connection_for_sequential_calls() -> None:
    transport = StdlibTransport()
    with echo_server() as (_, url):
        ports = {client_port(post(transport, url)) for _ in range(5)}
    assert len(ports) == 1


def test_concurrent_calls_each_get_a_connection_and_the_idle_ones_are_capped() -> None:
    transport = StdlibTransport(max_idle=2)
    barrier = threading.Barrier(4)

    def call() -> None:
        barrier.wait()
        assert post(transport, url).status_code == 200

    with echo_server() as (_, url):
        threads = [threading.Thread(target=call) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sum(len(stack) for stack in transport._idle.values()) <= 2


def test_a_connection_the_server_closed_while_idle_is_never_written_to() -> None:
    accepted: list[int] = []

    def answer_once_then_close(conn: socket.socket) -> None:
        accepted.append(1)
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        # ...and hang up, as a server whose keep-alive timeout expired does

    transport = StdlibTransport()
    with raw_server(answer_once_then_close) as url:
        assert post(transport, url).content == b"ok"
        threading.Event().wait(0.2)  # the server's FIN arrives at the idle connection
        assert post(transport, url).content == b"ok"  # not RemoteProtocolError
    assert len(accepted) == 2


# --- failures keep httpx's meaning ----------------------------------------------------------------


def test_a_refused_connection_is_a_connect_error_nothing_was_sent() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: refused
        with pytest.raises(httpx.ConnectError):
            post(StdlibTransport(), f"http://127.0.0.1:{port}/api")


def test_a_server_that_never_answers_is_a_read_timeout() -> None:
    def silent(conn: socket.socket) -> None:
        conn.recv(65536)
        threading.Event().wait(1.0)

    with raw_server(silent) as url:
        with pytest.raises(httpx.ReadTimeout):
            post(StdlibTransport(), url, timeout={**TIMEOUT, "read": 0.2})


def test_a_server_that_hangs_up_after_reading_is_a_protocol_error() -> None:
    with raw_server(lambda conn: conn.recv(65536)) as url:
        with pytest.raises(httpx.RemoteProtocolError):
            post(StdlibTransport(), url)


def test_garbage_instead_of_http_is_a_protocol_error() -> None:
    def garbage(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(b"<html>not http</html>\r\n\r\n")

    with raw_server(garbage) as url:
        with pytest.raises(httpx.RemoteProtocolError):
            post(StdlibTransport(), url)


def test_an_oversized_answer_is_refused_and_its_connection_dropped() -> None:
    transport = StdlibTransport(max_response_bytes=1000)
    with echo_server() as (_, url):
        with pytest.raises(httpx.RemoteProtocolError, match="larger than 1000"):
            post(transport, url, **{"x-answer-size": "5000"})
        assert not any(transport._idle.values())
        assert post(transport, url).status_code == 200


def test_only_http_and_https_are_spoken() -> None:
    with pytest.raises(httpx.UnsupportedProtocol):
        post(StdlibTransport(), "ftp://127.0.0.1/api")


def test_close_closes_the_idle_connections_and_keeps_none_afterwards() -> None:
    transport = StdlibTransport()
    with echo_server() as (_, url):
        post(transport, url)
        transport.close()
        assert not transport._idle
        post(transport, url)  # still usable, one connection at a time, nothing pooled
    assert not any(transport._idle.values())


# --- TLS ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: (cert.pem, key.pem)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "huimin test platform")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


def test_https_to_a_trusted_certificate_works(certificate: tuple[Path, Path]) -> None:
    trusted = ssl.create_default_context(cafile=str(certificate[0]))
    with echo_server(_server_context(certificate)) as (_, url):
        assert post(StdlibTransport(ssl_context=trusted), url).status_code == 200


def test_https_to_an_untrusted_certificate_is_refused_before_sending(
    certificate: tuple[Path, Path],
) -> None:
    with echo_server(_server_context(certificate)) as (_, url):
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            post(StdlibTransport(ssl_context=ssl.create_default_context()), url)


# --- one overall deadline (retry.py) ------------------------------------------------------------


def post_by(
    transport: StdlibTransport,
    url: str,
    deadline_in: float,
    body: bytes = b"{}",
    timeout: dict[str, float] = TIMEOUT,
) -> httpx.Response:
    extensions = {"timeout": timeout, "deadline": time.monotonic() + deadline_in}
    request = httpx.Request(
        "POST",
        url,
        content=body,
        extensions=extensions,
        headers={"content-type": "application/json"},
    )
    return transport.handle_request(request)


def trickle(
    at_once: bytes, trickled: bytes, every: float = 0.05, tls: ssl.SSLContext | None = None
) -> Callable[[socket.socket], None]:
    """A peer that reads the request, sends `at_once`, then `trickled` one byte at a time: each
    read finishes well inside any per-read timeout, so only an overall deadline ends it."""

    def behaviour(conn: socket.socket) -> None:
        peer = tls.wrap_socket(conn, server_side=True) if tls else conn
        try:
            peer.recv(65536)
            peer.sendall(at_once)
            for i in range(len(trickled)):
                peer.sendall(trickled[i : i + 1])
                time.sleep(every)
        except OSError:
            pass  # the client gave up: what the test wants

    return behaviour


ANSWER_HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n"


@pytest.mark.parametrize(
    ("at_once", "trickled"),
    [(b"", ANSWER_HEAD), (ANSWER_HEAD, b"x" * 1000)],
    ids=["trickled-headers", "trickled-body"],
)
def test_a_peer_trickling_its_answer_is_cut_at_the_deadline(
    at_once: bytes, trickled: bytes
) -> None:
    with raw_server(trickle(at_once, trickled)) as url:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            post_by(StdlibTransport(), url, 0.5, timeout={**TIMEOUT, "read": 5.0})
        assert 0.4 < time.monotonic() - started < 1.5


def test_a_peer_trickling_over_tls_is_cut_at_the_deadline(certificate: tuple[Path, Path]) -> None:
    trusted = ssl.create_default_context(cafile=str(certificate[0]))
    with raw_server(trickle(ANSWER_HEAD, b"x" * 1000, tls=_server_context(certificate))) as url:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            post_by(
                StdlibTransport(ssl_context=trusted),
                url.replace("http:", "https:"),
                0.7,
                timeout={**TIMEOUT, "read": 5.0},
            )
        assert time.monotonic() - started < 2.0


def test_a_peer_that_stops_reading_a_large_body_is_cut_at_the_deadline() -> None:
    def deaf(conn: socket.socket) -> None:
        threading.Event().wait(3.0)  # never reads: the send buffers fill up

    with raw_server(deaf) as url:
        started = time.monotonic()
        with pytest.raises(httpx.WriteTimeout):
            post_by(
                StdlibTransport(),
                url,
                0.5,
                body=b"x" * (32 * 1024 * 1024),
                timeout={**TIMEOUT, "write": 5.0},
            )
        assert time.monotonic() - started < 2.0


def test_nothing_is_sent_once_the_deadline_has_passed() -> None:
    with echo_server() as (_, url):
        transport = StdlibTransport()
        assert post_by(transport, url, 5.0).status_code == 200  # an idle connection to reuse
        with pytest.raises(httpx.ConnectTimeout):  # ConnectTimeout: nothing sent, retry-safe
            post_by(transport, url, -1.0)


def test_with_a_deadline_keep_alive_still_reuses_the_plain_socket() -> None:
    transport = StdlibTransport()
    with echo_server() as (_, url):
        first, second = post_by(transport, url, 5.0), post_by(transport, url, 5.0)
        assert client_port(first) == client_port(second)
        idle = [conn for conns in transport._idle.values() for conn in conns]
        assert idle and all(isinstance(conn.sock, socket.socket) for conn in idle)


def test_with_a_deadline_an_answer_that_closes_the_connection_is_read_in_full() -> None:
    def closing(conn: socket.socket) -> None:
        conn.recv(65536)
        body = b"y" * 100_000
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: %d\r\n\r\n" % len(body) + body
        )

    with raw_server(closing) as url:
        assert post_by(StdlibTransport(), url, 5.0).content == b"y" * 100_000
