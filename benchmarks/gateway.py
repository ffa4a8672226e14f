"""HIS00004 notifications per second through the inbound gateway, beside a bare uvicorn app.

    .venv/bin/python benchmarks/gateway.py [--count 1000] [--concurrency 8] [--timeout 180]

Two servers, each in its own process on loopback, driven by the same client in the same run:

  (bare)     a bare ASGI app on uvicorn that answers every POST with one fixed, pre-signed
             response envelope: HTTP + uvicorn + the client, the floor of any Python server;
  (gateway)  `huimin-worker gateway`: verify (SM3, SM4), remember the platformSeqId in the
             ledger (SQLite), publish to `platform.events` with a publisher confirm (RabbitMQ,
             a throw-away vhost), sign the answer.

The client posts `--count` distinct HIS00004 notifications (sealed beforehand, so both servers
see the same client cost) from `--concurrency` threads and opens every answer. The figure is
gateway/bare. Afterwards the HIS queue must hold exactly `--count` messages with `--count`
distinct eventIds: no notification lost, none duplicated. Every loop is bounded by `--count`
and `--timeout`.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput as bench  # noqa: E402 - the vhost and port plumbing

from worker.gateway.events import PLATFORM_EXCHANGE  # noqa: E402
from worker.protocol import envelope  # noqa: E402
from worker.protocol.models.examples import EXAMPLES  # noqa: E402
from worker.settings import SANDBOX_PLATFORM_ID, SANDBOX_SECRET  # noqa: E402

CREDENTIALS = envelope.Credentials(SANDBOX_PLATFORM_ID, envelope.SecretStr(SANDBOX_SECRET))
HIS_QUEUE = "bench.his"


# --- the bare app (run with --serve-bare PORT, in its own process) -------------------------------


def bare_app() -> Any:
    fixed = json.dumps(
        envelope.seal_response(
            "0000",
            "success",
            {"treatmentSerialNo": "ZY2025090100001"},
            credentials=CREDENTIALS,
        )
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(fixed))]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": fixed})

    return app


def serve_bare(port: int) -> None:
    import uvicorn

    uvicorn.run(bare_app(), host="127.0.0.1", port=port, log_level="warning", access_log=False)


@contextmanager
def process(argv: list[str], port: int, env: dict[str, str], log: Path) -> Iterator[str]:
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=log.open("ab"))
    try:
        bench._wait_port(port)
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        proc.wait(30)


def gateway_env(broker_url: str, workdir: Path, port: int, concurrency: int) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("HUIMIN_")} | {
        "HUIMIN_BROKER_URL": broker_url,
        "HUIMIN_LEDGER_URL": f"sqlite:///{workdir / 'l.db'}",
        "HUIMIN_GATEWAY_HOST": "127.0.0.1",
        "HUIMIN_GATEWAY_PORT": str(port),
        "HUIMIN_GATEWAY_CONCURRENCY": str(concurrency),
        "HUIMIN_LOG_LEVEL": "WARNING",
    }


# --- the client ---------------------------------------------------------------------------------


def notifications(count: int, tag: str) -> list[bytes]:
    """Distinct notifications (one treatmentSerialNo each), sealed now."""
    base = EXAMPLES["HIS00004"].copy().request
    at = datetime.now(UTC)
    return [
        json.dumps(
            envelope.seal_request(
                "HIS00004",
                {**base, "treatmentSerialNo": f"ZY{tag}{n:08d}"},
                credentials=CREDENTIALS,
                seq_id=envelope.new_seq_id(),
                at=at,
            )
        ).encode()
        for n in range(count)
    ]


def drive(
    url: str, bodies: list[bytes], threads: int, deadline: float
) -> tuple[float, dict[str, int]]:
    """Post every body from `threads` threads; (seconds, {rtCode: count})."""
    work: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    for body in bodies:
        work.put(body)
    codes: dict[str, int] = {}
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(timeout=30) as http:
            while time.monotonic() < deadline:
                try:
                    body = work.get_nowait()
                except queue.Empty:
                    return
                answer = http.post(url, content=body, headers={"content-type": "application/json"})
                code = envelope.open_response(answer.content, credentials=CREDENTIALS).rt_code
                with lock:
                    codes[code] = codes.get(code, 0) + 1

    started = time.monotonic()
    pool = [threading.Thread(target=client) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return time.monotonic() - started, codes


def his_queue(url: str) -> tuple[Any, Any]:
    conn = bench.raw_connection(url)
    channel = conn.channel()
    channel.exchange_declare(PLATFORM_EXCHANGE, "topic", durable=True, auto_delete=False)
    channel.queue_declare(
        HIS_QUEUE, durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"}
    )
    channel.queue_bind(HIS_QUEUE, PLATFORM_EXCHANGE, "claim-result.notified")
    return conn, channel


def event_ids(channel: Any, limit: int) -> list[str]:
    found = []
    while len(found) < limit and (message := channel.basic_get(HIS_QUEUE, no_ack=True)):
        found.append(json.loads(message.body)["eventId"])
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=1000, help="notifications (default 1000)")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads (default 8)")
    parser.add_argument("--timeout", type=float, default=180, help="seconds for the whole run")
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return 0
    if not 1 <= args.count <= 100_000:
        parser.error("--count must be 1..100000")
    deadline = time.monotonic() + args.timeout
    warm = 20
    with tempfile.TemporaryDirectory() as tmp, bench.vhost() as url:
        workdir = Path(tmp)
        conn, channel = his_queue(url)
        bare_port, gw_port = bench.free_port(), bench.free_port()
        env = gateway_env(url, workdir, gw_port, args.concurrency)
        bare_argv = [sys.executable, __file__, "--serve-bare", str(bare_port)]
        gw_argv = [sys.executable, "-m", "worker.cli", "gateway"]
        with (
            process(bare_argv, bare_port, env, workdir / "bare.log") as bare_url,
            process(gw_argv, gw_port, env, workdir / "gateway.log") as gw_url,
        ):
            drive(bare_url, notifications(warm, "W0"), args.concurrency, deadline)
            drive(gw_url, notifications(warm, "W1"), args.concurrency, deadline)
            bare_s, bare_codes = drive(
                bare_url, notifications(args.count, "B0"), args.concurrency, deadline
            )
            gw_s, gw_codes = drive(
                gw_url, notifications(args.count, "G0"), args.concurrency, deadline
            )
        ids = event_ids(channel, warm + args.count + 10)
        conn.close()
    bare_rate, gw_rate = args.count / bare_s, args.count / gw_s
    print(f"bare uvicorn, fixed signed answer: {bare_rate:8.0f} requests/s  {bare_codes}")
    print(f"gateway, confirmed publish:        {gw_rate:8.0f} notifications/s  {gw_codes}")
    print(
        f"ratio gateway/bare: {gw_rate / bare_rate:.2f}  "
        f"(count {args.count}, {args.concurrency} client threads)"
    )
    expected = warm + args.count
    lost_or_dup = len(ids) != expected or len(set(ids)) != expected
    print(
        f"HIS queue: {len(ids)} messages, {len(set(ids))} distinct eventIds, expected "
        f"{expected}: {'LOST OR DUPLICATED' if lost_or_dup else 'none lost, none duplicated'}"
    )
    all_ok = gw_codes == {"0000": args.count} and not lost_or_dup
    return 0 if all_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
