"""benchmarks/chaos.py's plumbing: the plan, the services it starts, the HIS side.

A throw-away vhost and PostgreSQL database, `huimin-worker` subprocesses (simulator, workers,
gateway), and py-amqp connections that come back after a closed connection or a restart.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import amqp
import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from chaos_load import Load  # noqa: E402
from throughput import QUORUM, raw_connection  # noqa: E402

BROKER = os.environ.get("HUIMIN_BENCH_BROKER", "amqp://guest:guest@127.0.0.1:5672")
POSTGRES = os.environ.get("HUIMIN_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
#: a requeue storm: more log lines a second than this while any fault lasts (the hot loop this
#: experiment was built to catch logged ~350 a second), or an event delivered more often
RESULTS_QUEUE = "chaos.results"
HIS_QUEUE = "chaos.platform-events"


@dataclass(frozen=True)
class Plan:
    events: int
    workers: int
    fault_s: float  # how long the faults last; the load is spread over it
    kill_every_s: float
    outage_s: float
    disconnects: int
    restart_broker: bool
    drain_s: float  # the longest wait for the last results after the last fault
    seed: int
    images: int
    notifications: int

    @classmethod
    def of(cls, args: argparse.Namespace) -> Plan:
        short = args.short
        events = args.events or (300 if short else 2000)
        restart = args.restart_broker if args.restart_broker is not None else not short
        return cls(
            events=events,
            workers=args.workers,
            fault_s=60.0 if short else 240.0,
            kill_every_s=8.0 if short else 10.0,
            outage_s=6.0 if short else 10.0,
            disconnects=2 if short else 4,
            restart_broker=restart,
            drain_s=120.0 if short else 300.0,
            seed=args.seed,
            images=2 if short else 4,
            notifications=3 if short else 6,
        )


@dataclass
class Fault:
    name: str
    start: float
    end: float = 0.0
    note: str = ""


@dataclass
class Run:
    """What the run saw, for the table."""

    faults: list[Fault] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    line_samples: list[tuple[float, int]] = field(default_factory=list)
    peak_kib: int = 0
    term_exit: int | None = None
    broker_recovery_s: float | None = None
    notifications: list[str] = field(default_factory=list)

    def fault(self, name: str, note: str = "") -> Fault:
        made = Fault(name, time.monotonic(), note=note)
        self.faults.append(made)
        print(f"  [{time.strftime('%H:%M:%S')}] fault: {name} {note}", flush=True)
        return made


# --- services: vhost, database, simulator, workers, gateway ------------------------------------


def ctl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, check=check, timeout=120
    )


@contextmanager
def vhost() -> Iterator[tuple[str, str]]:
    name = f"huimin-chaos-{uuid.uuid4().hex[:8]}"
    ctl("add_vhost", name)
    try:
        ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield name, f"{BROKER}/{name}"
    finally:
        ctl("delete_vhost", name, check=False)


@contextmanager
def database() -> Iterator[tuple[str, str]]:
    """A database of its own: ALLOW_CONNECTIONS false may then be set on it (never `postgres`)."""
    name = f"huimin_chaos_{uuid.uuid4().hex[:8]}"
    with admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name, f"{POSTGRES}/{name}"
    finally:
        with admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def admin() -> psycopg.Connection[Any]:
    return psycopg.connect(f"{POSTGRES}/postgres", autocommit=True, connect_timeout=5)


class Processes:
    """The simulator, the workers and the gateway, each a `huimin-worker` subprocess."""

    def __init__(self, plan: Plan, env: dict[str, str], logs: Path) -> None:
        self.plan, self.env, self.logs = plan, env, logs
        self.workers: list[subprocess.Popen[bytes] | None] = [None] * plan.workers
        self.started = 0
        self.stopping = False  # set by stop(): no more restarts, whoever asks
        self.generation = [0] * plan.workers  # the log file number of each slot's process
        self.lock = threading.Lock()
        self.others: list[subprocess.Popen[bytes]] = []

    def spawn(self, argv: list[str], log: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        out = (self.logs / log).open("ab")
        return subprocess.Popen(
            [sys.executable, "-m", "worker.cli", *argv],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def simulator(self, port: int) -> None:
        proc = self.spawn(
            ["simulate", "--port", str(port), "--seed", str(self.plan.seed)],
            "simulator.log",
            self.env,
        )
        self.others.append(proc)
        _wait_http(f"http://127.0.0.1:{port}/admin/faults")

    def gateway(self, port: int) -> None:
        proc = self.spawn(
            ["gateway", "--host", "127.0.0.1", "--port", str(port)], "gateway.log", self.env
        )
        self.others.append(proc)
        _wait_http(f"http://127.0.0.1:{port}/readyz")

    def start_worker(self, slot: int) -> None:
        with self.lock:
            if self.stopping:
                return
            self.started += 1
            env = self.env | {"HUIMIN_WORKER_NAME": f"chaos-w{slot}-{self.started}"}
            self.workers[slot] = self.spawn(["run"], f"worker-{self.started}.log", env)
            self.generation[slot] = self.started

    def live(self) -> list[tuple[int, subprocess.Popen[bytes]]]:
        with self.lock:
            return [(i, p) for i, p in enumerate(self.workers) if p and p.poll() is None]

    def reap(self, run: Run) -> None:
        """A worker that exited without being killed is a violation (a worker must never stop
        by itself): recorded with its last log line, and the worker is started again. Called
        only by the thread that kills (kill and restart happen together)."""
        for slot, proc in enumerate(self.workers):
            if proc is not None and proc.poll() is not None and not self.stopping:
                log = self.logs / f"worker-{self.generation[slot]}.log"
                last = (log.read_text(errors="replace").strip().splitlines() or ["-"])[-1]
                run.violations.append(
                    f"worker {proc.pid} exited {proc.returncode} by itself: {last[:300]}"
                )
                self.start_worker(slot)

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
        for proc in [p for p in self.workers if p] + self.others:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [p for p in self.workers if p] + self.others:
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def consumers(url: str, queue: str, index: int = 2) -> int:
    """The queue's consumers (index 2) or messages (index 1), on a connection of its own."""
    conn = raw_connection(url)
    try:
        return int(conn.channel().queue_declare(queue, passive=True)[index])
    finally:
        conn.close()


def wait_consumers(url: str, queue: str, count: int, timeout: float) -> float:
    """Seconds until `queue` has `count` consumers; raises TimeoutError."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        with suppress(Exception):
            if consumers(url, queue) >= count:
                return time.monotonic() - start
        time.sleep(0.2)
    raise TimeoutError(f"{queue} did not get {count} consumer(s) within {timeout:.0f} s")


# --- the HIS side: a reconnecting publisher and the results collector ---------------------------


class Broker:
    """One py-amqp connection that comes back after a closed connection or a broker restart."""

    def __init__(self, url: str, confirm: bool = False) -> None:
        self.url, self.confirm = url, confirm
        self.conn: amqp.Connection | None = None

    def channel(self) -> Any:
        deadline = time.monotonic() + 120
        while True:
            try:
                if self.conn is None:
                    self.conn = raw_connection(self.url, confirm=self.confirm)
                    self._channel = self.conn.channel()
                return self._channel
            except Exception:
                self.drop()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def drop(self) -> None:
        if self.conn is not None:
            with suppress(Exception):
                self.conn.collect()
        self.conn = None

    def publish(self, body: bytes, routing_key: str, message_id: str) -> None:
        """Until RabbitMQ confirms it: a copy published twice is a duplicate, which is fine."""
        for _ in range(200):
            try:
                self.channel().basic_publish(
                    amqp.Message(
                        body,
                        delivery_mode=2,
                        message_id=message_id[:200],
                        content_type="application/json",
                    ),
                    exchange="his.events",
                    routing_key=routing_key,
                )
                return
            except Exception:
                self.drop()
                time.sleep(0.5)
        raise RuntimeError("could not publish for 100 s")


class Results(threading.Thread):
    """Every result on his.results (a queue bound with `#`): resultIds per eventId."""

    def __init__(self, url: str, load: Load) -> None:
        super().__init__(daemon=True, name="results")
        self.broker, self.load = Broker(url), load
        self.ids: dict[str, set[str]] = defaultdict(set)
        self.last: dict[str, dict[str, Any]] = {}
        self.copies = 0
        self.stopping = threading.Event()
        self.lock = threading.Lock()

    def declare(self) -> None:
        channel = self.broker.channel()
        channel.queue_declare(RESULTS_QUEUE, durable=True, auto_delete=False, arguments=QUORUM)
        channel.queue_bind(RESULTS_QUEUE, "his.results", "#")

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                channel = self.broker.channel()
                channel.basic_qos(0, 500, False)
                channel.basic_consume(RESULTS_QUEUE, callback=self._on_message)
                while not self.stopping.is_set():
                    with suppress(TimeoutError):
                        self.broker.conn.drain_events(timeout=0.5)  # type: ignore[union-attr]
            except Exception:
                self.broker.drop()
                time.sleep(0.5)

    def _on_message(self, message: amqp.Message) -> None:
        result = json.loads(message.body)
        event_id = message.properties.get("correlation_id") or result.get("causationId")
        with self.lock:
            self.copies += 1
            self.ids[event_id].add(result["resultId"])
            self.last[event_id] = result
        self.load.answered(event_id, result)
        message.channel.basic_ack(message.delivery_tag)

    def snapshot(self) -> dict[str, set[str]]:
        with self.lock:
            return {k: set(v) for k, v in self.ids.items()}
