"""A broker outage during a platform call: the platform gets a signed 9999 and nothing is
half-done; after recovery, the call the platform retries is published exactly once.

The gateway reaches RabbitMQ through a TCP proxy the test cuts and restores (the shared
broker of this machine keeps running for everybody else); the HIS reads its queue directly.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from tests.test_gateway import HisInbox, example, gateway_settings, serving
from worker.clock import FixedClock
from worker.protocol import envelope
from worker.sandbox.simulator.notify import notify

pytestmark = pytest.mark.rabbitmq

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


class CuttableProxy:
    """127.0.0.1:<port> -> target. `cut()` drops every connection and refuses new ones (they
    are accepted and closed at once, as a broker that is going down does); `restore()`."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.open: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            if not self.up:
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()

    def cut(self) -> None:
        self.up = False
        with self.lock:
            for sock in self.open:
                _close(sock)
            self.open.clear()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    _close(source)
    _close(sink)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


@pytest.fixture
def proxy(vhost: str) -> Iterator[CuttableProxy]:
    url = urlparse(vhost)
    cuttable = CuttableProxy((url.hostname or "127.0.0.1", url.port or 5672))
    yield cuttable
    cuttable.close()


def test_a_claim_result_during_an_outage_is_9999_and_published_once_after_recovery(
    vhost: str,
    proxy: CuttableProxy,
    tmp_path: Any,
) -> None:
    through_proxy = vhost.replace(f":{urlparse(vhost).port}/", f":{proxy.port}/")
    settings = gateway_settings(
        f"sqlite:///{tmp_path / 'ledger.db'}", through_proxy, connect_timeout_s=1.0
    )
    credentials = envelope.Credentials.from_settings(settings)
    clock = FixedClock(NOW)
    inbox = HisInbox(vhost)
    settled = example("HIS00004")
    relief = {**settled, "claimNode": "11"}
    try:
        with serving(settings, clock) as (url, _), httpx.Client(timeout=10) as http:

            def send(business: dict[str, Any]) -> str:
                return notify(
                    url, "HIS00004", business, credentials=credentials, client=http, clock=clock
                ).rt_code

            assert send(settled) == "0000"  # a pooled connection exists before the outage
            proxy.cut()
            during = send(relief)
            not_ready = http.get(url + "readyz")
            proxy.restore()
            after = [send(relief), send(relief)]  # the platform retries, then once more
            ready = http.get(url + "readyz")

        assert during == "9999"
        assert after == ["0000", "0000"]
        assert (not_ready.status_code, ready.status_code) == (503, 200)
        nodes = [json.loads(m.body)["data"]["claimNode"] for m in inbox.messages()]
        assert nodes == ["4", "11"]  # the relief result exactly once
    finally:
        inbox.close()
