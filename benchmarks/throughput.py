"""Worker throughput on the real RabbitMQ, as ratios against loops measured in the same run.

    .venv/bin/python benchmarks/throughput.py [--events 1000] [--baseline-messages 2000]

  (a1) a bare kombu loop: consume, publish a result with kombu's synchronous publisher
       confirms, ack — the naive safe loop;
  (a2) the same loop with confirms pipelined: deliveries acked (multiple=True) as their
       results' confirms arrive — the ceiling we chase;
  (b)  the worker end to end: RabbitMQ -> worker (subprocess) -> simulator (subprocess, zero
       latency) -> confirmed result, payments on the money path, in events/s and as ratios;
  (c)  the worker against a simulator answering after 200 ms, concurrency 64, as a fraction
       of the bound concurrency / latency.
Each part runs in its own throw-away vhost. Only loopback traffic; every loop is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import amqp
import kombu

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from worker.protocol.models.examples import EXAMPLES  # noqa: E402

QUORUM = {"x-queue-type": "quorum"}
BROKER = os.environ.get("HUIMIN_BENCH_BROKER", "amqp://guest:guest@127.0.0.1:5672")


# --- plumbing ---------------------------------------------------------------------------------


@contextmanager
def vhost() -> Iterator[str]:
    name = f"huimin-bench-{uuid.uuid4().hex[:8]}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", name], check=True, capture_output=True)
    subprocess.run(
        ["rabbitmqctl", "-q", "set_permissions", "-p", name, "guest", ".*", ".*", ".*"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"{BROKER}/{name}"
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", name], capture_output=True)


def raw_connection(url: str, confirm: bool = False) -> amqp.Connection:
    parts = kombu.Connection(url)
    conn = amqp.Connection(
        f"{parts.hostname}:{parts.port or 5672}",
        userid=parts.userid,
        password=parts.password,
        virtual_host=parts.virtual_host,
        confirm_publish=confirm,
    )
    conn.connect()
    return conn


def preload(url: str, queue: str, count: int, body: bytes = b"{}") -> None:
    conn = raw_connection(url)
    channel = conn.channel()
    channel.queue_declare(queue, durable=True, auto_delete=False, arguments=QUORUM)
    channel.confirm_select()
    for _ in range(count):
        channel._basic_publish(amqp.Message(body, delivery_mode=2), exchange="", routing_key=queue)
    _wait_depth(channel, queue, count, 120)
    conn.close()


def _wait_depth(channel: Any, queue: str, count: int, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, depth, _ = channel.queue_declare(queue, passive=True)
        if depth >= count:
            return time.monotonic()
        time.sleep(0.02)
    raise TimeoutError(f"{queue} reached {depth} of {count} messages")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- (a1) and (a2): the baselines -------------------------------------------------------------


def kombu_loop_sync(url: str, count: int) -> float:
    """(a1) consume -> publish with a synchronous confirm -> ack, one message at a time."""
    preload(url, "bench.in", count)
    with kombu.Connection(url, transport_options={"confirm_publish": True}) as conn:
        out = kombu.Queue("bench.out", routing_key="bench.out", queue_arguments=QUORUM)
        producer = conn.Producer()
        producer.declare = [out]  # type: ignore[assignment]
        out(conn.default_channel).declare()
        done, buffered = 0, []
        consumer = conn.Consumer(
            kombu.Queue("bench.in", queue_arguments=QUORUM, no_declare=True),
            callbacks=[lambda body, msg: buffered.append(msg)],
            accept=None,
            prefetch_count=64,
        )
        start = time.perf_counter()
        with consumer:
            while done < count:
                conn.drain_events(timeout=5)
                for message in buffered:  # publish from the loop, not inside the callback
                    producer.publish(b"{}", routing_key="bench.out", exchange="")
                    message.ack()
                    done += 1
                buffered.clear()
        return count / (time.perf_counter() - start)


def kombu_loop_pipelined(url: str, count: int) -> float:
    """(a2) the same work, confirms pipelined: ack deliveries as results' confirms arrive."""
    preload(url, "bench.in", count)
    conn = raw_connection(url)
    consume, publish = conn.channel(), conn.channel()
    publish.queue_declare("bench.out", durable=True, auto_delete=False, arguments=QUORUM)
    publish.confirm_select()
    pending: dict[int, int] = {}  # publish seq -> delivery tag
    state = {"seq": 0, "acked": 0, "confirmed": 0}
    buffered: list[int] = []

    def confirmed(seq: int, multiple: bool) -> None:
        seqs = [s for s in pending if s <= seq] if multiple else [seq]
        tags = [pending.pop(s) for s in seqs if s in pending]
        if tags:
            consume.basic_ack(max(tags), multiple=True)
            state["acked"] += len(tags)

    publish.events["basic_ack"].add(confirmed)
    consume.basic_qos(0, 256, False)
    consume.basic_consume(
        "bench.in", callback=lambda m: buffered.append(m.delivery_info["delivery_tag"])
    )
    start = time.perf_counter()
    while state["acked"] < count:
        try:
            conn.drain_events(timeout=0.01)
        except TimeoutError:
            pass
        for tag in buffered:
            publish._basic_publish(
                amqp.Message(b"{}", delivery_mode=2), exchange="", routing_key="bench.out"
            )
            state["seq"] += 1
            pending[state["seq"]] = tag
        buffered.clear()
    elapsed = time.perf_counter() - start
    conn.close()
    return count / elapsed


# --- (b) and (c): the worker ----------------------------------------------------------------


@contextmanager
def simulator(latency_ms: int, workdir: Path) -> Iterator[str]:
    port = free_port()
    faults = workdir / f"faults-{port}.json"
    latency = {"transCode": "*", "kind": "latency", "params": {"ms": latency_ms}}
    rules = [latency] if latency_ms else []
    faults.write_text(json.dumps(rules))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "worker.cli",
            "simulate",
            "--port",
            str(port),
            "--faults",
            str(faults),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(port)
        yield f"http://127.0.0.1:{port}/api"
    finally:
        proc.terminate()
        proc.wait(10)


def _wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError("the simulator did not start")


@contextmanager
def worker(url: str, platform_url: str, workdir: Path, concurrency: int) -> Iterator[None]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUIMIN_")} | {
        "HUIMIN_BROKER_URL": url,
        "HUIMIN_PLATFORM_URL": platform_url,
        "HUIMIN_LEDGER_URL": f"sqlite:///{workdir / f'ledger-{uuid.uuid4().hex[:6]}.db'}",
        "HUIMIN_CONCURRENCY": str(concurrency),
        "HUIMIN_LOG_LEVEL": "WARNING",
        "HUIMIN_METRICS_PORT": "0",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "run"],
        env=env,
        stderr=(workdir / "worker.log").open("ab"),
    )
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(60)


def payments(count: int) -> list[bytes]:
    base = EXAMPLES["HOS00003"].request
    now = datetime.now(UTC).isoformat()
    return [
        json.dumps(
            {
                "eventId": f"bench-{uuid.uuid4().hex}",
                "type": "payment.requested",
                "occurredAt": now,
                "data": {**base, "orderId": f"B{uuid.uuid4().hex}"},
            },
            ensure_ascii=False,
        ).encode()
        for _ in range(count)
    ]


def worker_rate(url: str, platform_url: str, workdir: Path, count: int, concurrency: int) -> float:
    conn = raw_connection(url)
    channel = conn.channel()
    with worker(url, platform_url, workdir, concurrency):
        _wait_consumers(channel, "huimin.work.money")
        channel.queue_declare("bench.results", durable=True, auto_delete=False, arguments=QUORUM)
        channel.queue_bind("bench.results", "his.results", "#")
        bodies = payments(count)
        channel.confirm_select()
        start = time.monotonic()
        publish_bodies(channel, bodies)
        end = _wait_depth(channel, "bench.results", count, 600)
    conn.close()
    return count / (end - start)


def publish_bodies(channel: Any, bodies: list[bytes]) -> None:
    """As the HIS does: to his.events, routing key = the event type (confirms not awaited)."""
    for body in bodies:
        channel._basic_publish(
            amqp.Message(body, delivery_mode=2, message_id="x", content_type="application/json"),
            exchange="his.events",
            routing_key="payment.requested",
        )


def publish_payments(url: str, count: int) -> None:
    """`count` payments on a connection of their own (cpu_budget.py publishes from a thread)."""
    conn = raw_connection(url)
    channel = conn.channel()
    channel.confirm_select()
    publish_bodies(channel, payments(count))
    time.sleep(1.0)  # let the last frames leave before the connection closes
    conn.close()


def _wait_consumers(channel: Any, queue: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, _, consumers = channel.queue_declare(queue, passive=True)
            if consumers:
                return
        except amqp.exceptions.NotFound:
            channel = channel.connection.channel()
        time.sleep(0.1)
    raise TimeoutError("the worker did not start consuming")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--baseline-messages", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--only-c", action="store_true", help="run part (c) alone")
    args = parser.parse_args(argv)
    print("command:", " ".join(["python", *sys.argv]))
    if not args.only_c:
        baselines_and_b(args)
    with tempfile.TemporaryDirectory() as tmp, vhost() as url:
        with simulator(200, Path(tmp)) as platform:
            c = worker_rate(url, platform, Path(tmp), max(args.events, 1500), 64)
    bound = 64 / 0.2
    print(
        f"(c)  worker, 200 ms platform, concurrency 64: {c:8,.0f} events/s"
        f"  = {c / bound:5.1%} of the bound {bound:.0f}/s"
    )
    return 0


def baselines_and_b(args: argparse.Namespace) -> None:
    with vhost() as url:
        a1 = kombu_loop_sync(url, args.baseline_messages)
    with vhost() as url:
        a2 = kombu_loop_pipelined(url, args.baseline_messages)
    print(f"(a1) bare kombu loop, synchronous confirms : {a1:8,.0f} msg/s")
    print(f"(a2) bare loop, pipelined confirms          : {a2:8,.0f} msg/s")
    with tempfile.TemporaryDirectory() as tmp, vhost() as url:
        with simulator(0, Path(tmp)) as platform:
            b = worker_rate(url, platform, Path(tmp), args.events, args.concurrency)
    print(
        f"(b)  worker end to end, concurrency {args.concurrency:<3}    : {b:8,.0f} events/s"
        f"  = {b / a1:4.2f} x (a1), {b / a2:4.2f} x (a2)"
    )


if __name__ == "__main__":
    raise SystemExit(main())
