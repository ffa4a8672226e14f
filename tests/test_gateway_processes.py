"""Two `huimin-worker gateway` processes on one PostgreSQL ledger: a platformSeqId sent to
both at once is accepted by exactly one, and the HIS gets exactly one message.

The command as an operator starts it (settings from HUIMIN_* variables), so this also proves
the CLI entry point serves, answers signed envelopes and stops cleanly on SIGTERM.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.test_gateway import HisInbox, example
from tests.worker_harness import postgres_schema
from worker.protocol import envelope
from worker.settings import Settings


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def gateway_process(env: dict[str, str], log: Path) -> Iterator[str]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "gateway", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process, log)
        yield url + "/"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0, log.read_text()


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("the gateway did not become ready:\n" + log.read_text())


@pytest.mark.postgres
def test_two_gateway_processes_on_one_ledger_accept_a_seq_id_once(
    vhost: str, postgres_url: str, tmp_path: Path
) -> None:
    inbox = HisInbox(vhost)
    try:
        with postgres_schema(postgres_url) as ledger_url:
            env = {k: v for k, v in os.environ.items() if not k.startswith("HUIMIN_")}
            env |= {
                "HUIMIN_BROKER_URL": vhost,
                "HUIMIN_LEDGER_URL": ledger_url,
                "HUIMIN_STATEMENT_ENABLED": "false",
                "HUIMIN_LOG_FORMAT": "text",
            }
            credentials = envelope.Credentials.from_settings(Settings())
            body = envelope.seal_request(
                "HIS00004",
                example("HIS00004"),
                credentials=credentials,
                seq_id=envelope.new_seq_id(),
                at=datetime.now(UTC),
            )
            log = tmp_path / "gateways.log"
            with gateway_process(env, log) as first, gateway_process(env, log) as second:
                with ThreadPoolExecutor(4) as pool:
                    answers = list(
                        pool.map(
                            lambda url: httpx.post(url, json=body, timeout=20),
                            [first, second, first, second],
                        )
                    )
            codes = sorted(
                envelope.open_response(a.content, credentials=credentials).rt_code for a in answers
            )
        assert codes == ["0000", "4008", "4008", "4008"], log.read_text()
        assert len(inbox.messages()) == 1
    finally:
        inbox.close()
