"""The proof under faults: replicas on one PostgreSQL ledger, killed, disconnected and starved.

    .venv/bin/python benchmarks/chaos.py [--short] [--events N] [--workers 2] [--seed 7]
        [--restart-broker | --no-restart-broker] [--logs DIR]

Real processes on loopback only: this machine's RabbitMQ (a throw-away vhost) and PostgreSQL
(a throw-away database), the project's simulator, `--workers` `huimin-worker run` processes
on one ledger and the inbound gateway. A mixed load goes in (payments, refunds of earlier
payments, discharge trials and settlements, fee and document uploads, 3 MB images,
duplicates, invalid events, poison messages) while: a random worker is SIGKILLed every few
seconds and restarted, one is SIGTERMed (it must drain and exit 0), every connection of the
vhost is closed at random moments, RabbitMQ is restarted once (full run, or
`--restart-broker`), the ledger refuses connections for some seconds, and the simulator injects
every fault kind. Then the dead-letter queue is replayed as an operator would, and a table
is printed. Exit 1 on any violation (each is printed), 2 when the run could not be set up.
Everything is bounded: every wait has a deadline and the vhost and database are removed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
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
from throughput import QUORUM, free_port, raw_connection  # noqa: E402

from worker import envelope  # noqa: E402
from worker.clock import system_clock  # noqa: E402
from worker.models.examples import EXAMPLES  # noqa: E402
from worker.settings import Settings  # noqa: E402
from worker.simulator.notify import notify  # noqa: E402

BROKER = os.environ.get("HUIMIN_BENCH_BROKER", "amqp://guest:guest@127.0.0.1:5672")
POSTGRES = os.environ.get("HUIMIN_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
#: a requeue storm: more log lines a second than this while any fault lasts (the hot loop this
#: experiment was built to catch logged ~350 a second), or an event delivered more often
STORM_LINES_PER_S = 60.0
STORM_DELIVERIES = 10
MIN_RETRY_DELAY_S = 1.0  # the first of worker_env's HUIMIN_RETRY_DELAYS_S
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
        return cls(events=events, workers=args.workers, fault_s=60.0 if short else 240.0,
                   kill_every_s=8.0 if short else 10.0, outage_s=6.0 if short else 10.0,
                   disconnects=2 if short else 4, restart_broker=restart,
                   drain_s=120.0 if short else 300.0, seed=args.seed,
                   images=2 if short else 4, notifications=3 if short else 6)


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


def _ctl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True,
                          check=check, timeout=120)  # fmt: skip


@contextmanager
def vhost() -> Iterator[tuple[str, str]]:
    name = f"huimin-chaos-{uuid.uuid4().hex[:8]}"
    _ctl("add_vhost", name)
    try:
        _ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield name, f"{BROKER}/{name}"
    finally:
        _ctl("delete_vhost", name, check=False)


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
        self.lock = threading.Lock()
        self.others: list[subprocess.Popen[bytes]] = []

    def spawn(self, argv: list[str], log: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        out = (self.logs / log).open("ab")
        return subprocess.Popen([sys.executable, "-m", "worker.cli", *argv], env=env,
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip

    def simulator(self, port: int) -> None:
        proc = self.spawn(["simulate", "--port", str(port), "--seed", str(self.plan.seed)],
                          "simulator.log", self.env)  # fmt: skip
        self.others.append(proc)
        _wait_http(f"http://127.0.0.1:{port}/admin/faults")

    def gateway(self, port: int) -> None:
        proc = self.spawn(["gateway", "--host", "127.0.0.1", "--port", str(port)],
                          "gateway.log", self.env)  # fmt: skip
        self.others.append(proc)
        _wait_http(f"http://127.0.0.1:{port}/readyz")

    def start_worker(self, slot: int) -> None:
        with self.lock:
            self.started += 1
            env = self.env | {"HUIMIN_WORKER_NAME": f"chaos-w{slot}-{self.started}"}
            self.workers[slot] = self.spawn(["run"], f"worker-{self.started}.log", env)

    def live(self) -> list[tuple[int, subprocess.Popen[bytes]]]:
        with self.lock:
            return [(i, p) for i, p in enumerate(self.workers) if p and p.poll() is None]

    def stop(self) -> None:
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


def _consumers(url: str, queue: str, index: int = 2) -> int:
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
            if _consumers(url, queue) >= count:
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
                    amqp.Message(body, delivery_mode=2, message_id=message_id[:200],
                                 content_type="application/json"),
                    exchange="his.events", routing_key=routing_key)  # fmt: skip
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


# --- the faults -------------------------------------------------------------------------------


class Chaos(threading.Thread):
    """Runs the fault schedule for plan.fault_s seconds; records each fault's window."""

    def __init__(self, plan: Plan, run: Run, procs: Processes, names: dict[str, str],
                 platform: str, gateway: str) -> None:  # fmt: skip
        super().__init__(daemon=True, name="chaos")
        self.plan, self.run_, self.procs, self.names = plan, run, procs, names
        self.platform, self.gateway = platform, gateway
        self.rng = random.Random(plan.seed)
        self.done = threading.Event()

    def run(self) -> None:
        try:
            self._schedule()
        except Exception as exc:  # a fault that could not be made is a failed experiment
            self.run_.violations.append(f"the fault schedule broke: {exc!r}")
        finally:
            self.done.set()

    def _schedule(self) -> None:
        plan, start = self.plan, time.monotonic()
        simulator = self.run_.fault("simulator: every fault kind", "(until the faults end)")
        httpx.put(f"{self.platform}/admin/faults", json=simulator_faults(plan.seed), timeout=5)
        steps = sorted(self._steps(), key=lambda step: step[0])
        next_kill = start + plan.kill_every_s
        for at, action in [*steps, (plan.fault_s, lambda: None)]:
            while time.monotonic() < start + at:
                if time.monotonic() >= next_kill:
                    self.sigkill()
                    next_kill = time.monotonic() + plan.kill_every_s * self.rng.uniform(0.7, 1.3)
                time.sleep(0.1)
            action()
        httpx.delete(f"{self.platform}/admin/faults", timeout=5)
        simulator.end = time.monotonic()

    def _steps(self) -> list[tuple[float, Any]]:
        length = self.plan.fault_s
        steps: list[tuple[float, Any]] = [(length * 0.35, self.sigterm),
                                          (length * 0.55, self.ledger_outage)]
        steps += [(length * self.rng.uniform(0.1, 0.9), self.disconnect)
                  for _ in range(self.plan.disconnects)]
        steps += [(length * (0.15 + 0.6 * i / max(1, self.plan.notifications)), self.notify)
                  for i in range(self.plan.notifications)]
        if self.plan.restart_broker:
            steps.append((length * 0.75, self.restart_broker))
        return steps

    def sigkill(self) -> None:
        live = self.procs.live()
        if not live:
            return
        slot, proc = self.rng.choice(live)
        fault = self.run_.fault("SIGKILL a worker", f"(pid {proc.pid})")
        proc.kill()
        proc.wait(10)
        time.sleep(1.0)
        self.procs.start_worker(slot)
        fault.end = time.monotonic()

    def sigterm(self) -> None:
        slot, proc = self.rng.choice(self.procs.live())
        fault = self.run_.fault("SIGTERM a worker (drain)", f"(pid {proc.pid})")
        proc.send_signal(signal.SIGTERM)
        try:
            self.run_.term_exit = proc.wait(60)
        except subprocess.TimeoutExpired:
            self.run_.term_exit = -999
            proc.kill()
        fault.end = time.monotonic()
        fault.note += f" exit {self.run_.term_exit} after {fault.end - fault.start:.1f} s"
        self.procs.start_worker(slot)

    def disconnect(self) -> None:
        fault = self.run_.fault("close every connection of the vhost")
        _ctl("close_all_connections", "-p", self.names["vhost"], "chaos", check=False)
        fault.end = time.monotonic()

    def ledger_outage(self) -> None:
        db = self.names["database"]
        fault = self.run_.fault("ledger unreachable", f"({self.plan.outage_s:.0f} s)")
        with admin() as conn:
            conn.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS false')
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = %s AND pid <> pg_backend_pid()", (db,))  # fmt: skip
            time.sleep(self.plan.outage_s)
            conn.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS true')
        fault.end = time.monotonic()

    def restart_broker(self) -> None:
        fault = self.run_.fault("RabbitMQ stop_app / start_app")
        _ctl("stop_app")
        time.sleep(5.0)
        _ctl("start_app")
        _ctl("await_startup", check=False)
        fault.end = time.monotonic()
        with suppress(TimeoutError):
            recovered = wait_consumers(self.names["url"], "huimin.work.money",
                                       len(self.procs.live()), 120)  # fmt: skip
            self.run_.broker_recovery_s = recovered
        fault.note = f"(consumers back {self.run_.broker_recovery_s or -1:.1f} s after start_app)"

    def notify(self) -> None:
        """A HIS00004 claim result through the gateway, sent again on 9999 as the platform does."""
        business = {**EXAMPLES["HIS00004"].request, "claimNode": "4",
                    "treatmentSerialNo": f"ZYC{uuid.uuid4().hex[:12].upper()}"}  # fmt: skip
        credentials = envelope.Credentials.from_settings(Settings())
        with httpx.Client(timeout=15) as client:
            for _ in range(20):
                with suppress(Exception):
                    answer = notify(self.gateway, "HIS00004", business, credentials=credentials,
                                    client=client, clock=system_clock)  # fmt: skip
                    if answer.rt_code == "0000":
                        self.run_.notifications.append(business["treatmentSerialNo"])
                        return
                time.sleep(1.0)
        self.run_.violations.append("a HIS00004 notification was never answered 0000")


def simulator_faults(seed: int) -> dict[str, Any]:
    """Every kind, on the money calls, their status queries and the uploads."""
    money = ["HOS00003", "HOS00004", "HOS00014"]
    rules: list[dict[str, Any]] = [
        {"transCode": "*", "kind": "latency",
         "params": {"distribution": "normal", "meanMs": 15, "sdMs": 10}},
        {"transCode": "*", "kind": "latency", "probability": 0.01,
         "params": {"distribution": "fixed", "ms": 2500}},
    ]  # fmt: skip
    for code in money:
        rules += [
            {"transCode": code, "kind": "lose_response", "probability": 0.03,
             "params": {"seconds": 4}},
            {"transCode": code, "kind": "fail_after_processing", "probability": 0.03},
            {"transCode": code, "kind": "fail_before_processing", "probability": 0.03},
            {"transCode": code, "kind": "reject_503", "probability": 0.03},
            {"transCode": code, "kind": "drop_connection", "probability": 0.02,
             "params": {"processed": True}},
            {"transCode": code, "kind": "drop_connection", "probability": 0.02},
            {"transCode": code, "kind": "corrupt_signature", "probability": 0.02},
            {"transCode": code, "kind": "garbage_body", "probability": 0.02},
            {"transCode": code, "kind": "replay_answer", "probability": 0.02,
             "params": {"field": "orderId"}},
        ]  # fmt: skip
    for code in ["HOS00012", "HOS00016", "HOS00022", "HOS00028", "HOST0014"]:
        rules += [{"transCode": code, "kind": "reject_503", "probability": 0.04},
                  {"transCode": code, "kind": "garbage_body", "probability": 0.02}]
    return {"seed": seed, "rules": rules}


# --- watching: log lines and peak memory ------------------------------------------------------


class Watcher(threading.Thread):
    """Every 0.5 s: the workers' log lines so far, and their peak resident memory (/proc)."""

    def __init__(self, run: Run, procs: Processes, logs: Path) -> None:
        super().__init__(daemon=True, name="watcher")
        self.run_, self.procs, self.logs = run, procs, logs
        self.offsets: dict[Path, tuple[int, int]] = {}  # file -> (bytes read, lines)
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.5):
            self.sample()

    def sample(self) -> None:
        for _, proc in self.procs.live():
            with suppress(OSError):
                status = Path(f"/proc/{proc.pid}/status").read_text()
                peak = next(line for line in status.splitlines() if line.startswith("VmHWM"))
                self.run_.peak_kib = max(self.run_.peak_kib, int(peak.split()[1]))
        self.run_.line_samples.append((time.monotonic(), self.lines()))

    def lines(self) -> int:
        for path in self.logs.glob("worker-*.log"):
            done, lines = self.offsets.get(path, (0, 0))
            with path.open("rb") as log:
                log.seek(done)
                chunk = log.read()
            self.offsets[path] = (done + len(chunk), lines + chunk.count(b"\n"))
        return sum(lines for _, lines in self.offsets.values())


def lines_per_s(run: Run, start: float, end: float) -> float:
    """Log lines a second over [start, end], from the watcher's samples (at least 5 s)."""
    end = max(end, start + 5.0)
    inside = [(t, n) for t, n in run.line_samples if start - 0.5 <= t <= end + 0.5]
    if len(inside) < 2:
        return 0.0
    (t0, n0), (t1, n1) = inside[0], inside[-1]
    return (n1 - n0) / max(t1 - t0, 0.5)


# --- the run ----------------------------------------------------------------------------------


def publish_all(plan: Plan, load: Load, broker: Broker, results: Results,
                chaos: Chaos) -> tuple[set[str], float]:  # fmt: skip
    """The first events spread over 80% of the fault phase, follow-ups as they come; then
    wait for the last expected result. Returns the eventIds published and when it drained."""
    published: set[str] = set()
    spacing = plan.fault_s * 0.8 / max(1, len(load.first))
    start, last_fault = time.monotonic(), None
    pending = list(load.first)
    while True:
        now = time.monotonic()
        while pending and now >= start + spacing * (len(load.first) - len(pending)):
            _send(broker, pending.pop(0), published)
        while (followup := load.next_followup()) is not None:
            _send(broker, followup, published)
        if chaos.done.is_set():
            last_fault = last_fault or max(f.end or f.start for f in chaos.run_.faults)
            if not pending and load.waiting() == 0 and _all_answered(load, results):
                return published, time.monotonic() - last_fault
            if now - last_fault > plan.drain_s:
                return published, float("nan")
        time.sleep(0.05)


def _send(broker: Broker, planned: Any, published: set[str]) -> None:
    broker.publish(planned.body, planned.routing_key, planned.event_id or "unreadable")
    if planned.event_id:
        published.add(planned.event_id)


def _all_answered(load: Load, results: Results) -> bool:
    answered = results.snapshot()
    return all(event_id in answered for event_id in load.expected)


def replay_dead_letters(env: dict[str, str], logs: Path) -> tuple[int, str]:
    """`huimin-worker dlq replay`, as the on-call engineer would after the incident."""
    done = subprocess.run([sys.executable, "-m", "worker.cli", "dlq", "replay", "--rate", "200",
                           "--operator", "chaos"], env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    (logs / "dlq-replay.txt").write_text(done.stdout + done.stderr)
    summary = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
    return done.returncode, summary


def dead_letters_left(env: dict[str, str]) -> Counter[str]:
    done = subprocess.run([sys.executable, "-m", "worker.cli", "dlq", "list", "--json"],
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    listing = json.loads(done.stdout)
    left: Counter[str] = Counter()
    for group in listing["groups"]:
        left[group["reason"]] += group["count"]
    return left


def ledger_view(ledger_url: str, database_name: str) -> dict[str, Any]:
    with psycopg.connect(ledger_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT event_id, outcome, result, delivery_count, "
            "EXTRACT(EPOCH FROM updated_at - received_at) FROM huimin_events").fetchall()
        size = conn.execute("SELECT pg_database_size(%s)", (database_name,)).fetchone()
    return {"events": {r[0]: (r[1], r[2] or {}) for r in rows},
            "deliveries": {r[0]: (r[3], float(r[4] or 0)) for r in rows},
            "bytes": size[0] if size else 0}


def storms(deliveries: dict[str, tuple[int, float]]) -> list[str]:
    """Events delivered faster than the backoff allows: more than STORM_DELIVERIES plus one a
    second of the event's life (the shortest retry delay is 1 s; a hot loop is hundreds)."""
    return [f"{event_id}: {count} deliveries in {life:.0f} s"
            for event_id, (count, life) in deliveries.items()
            if count > STORM_DELIVERIES + life / MIN_RETRY_DELAY_S]  # fmt: skip


def pauses(logs: Path) -> tuple[int, list[float]]:
    """From the workers' logs: ledger outages noticed, and how long each pause lasted."""
    noticed, lasted = 0, []
    for path in logs.glob("worker-*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if '"ledger unavailable' in line:
                noticed += 1
            elif "the ledger answers again after" in line:
                lasted.append(float(line.split("again after ")[1].split(" s")[0]))
    return noticed, lasted


def simulator_orders(platform: str) -> dict[str, dict[str, Any]]:
    orders = httpx.get(f"{platform}/admin/orders", timeout=30).json()["orders"]
    return {order["orderId"]: order for order in orders}


def disagreements(load: Load, ledger: dict[str, Any], orders: dict[str, dict[str, Any]],
                  unknown: list[str]) -> list[str]:  # fmt: skip
    """A money order the ledger and the platform see differently: succeeded with a status the
    platform does not have, or failed while the platform holds the order."""
    found = []
    for order_id, money in load.money.items():
        outcome, result = ledger["events"].get(money.event_id, (None, {}))
        at_platform = orders.get(order_id)
        if outcome == "unknown":
            unknown.append(f"{money.kind} {order_id}: platform says "
                           f"{at_platform and at_platform['orderStatus']}")  # fmt: skip
            continue
        platform_status = at_platform and at_platform["orderStatus"]
        if outcome == "succeeded" and result.get("orderStatus") != platform_status:
            found.append(f"{money.kind} {order_id}: ledger succeeded "
                         f"{result.get('orderStatus')}, platform {platform_status}")  # fmt: skip
        elif outcome == "failed" and platform_status is not None:
            found.append(f"{money.kind} {order_id}: ledger failed "
                         f"({result.get('rtMsg')}), platform {platform_status}")  # fmt: skip
        elif outcome is None:
            found.append(f"{money.kind} {order_id}: not finished in the ledger")
    return found


# --- the table --------------------------------------------------------------------------------


def check(plan: Plan, run: Run, load: Load, published: set[str], drain_s: float,
          results: Results, ledger: dict[str, Any], orders: dict[str, dict[str, Any]],
          left: Counter[str], replay: tuple[int, str], his_messages: int,
          logs: Path) -> list[tuple[str, str]]:  # fmt: skip
    """The table's rows; every violation is added to run.violations."""
    bad = run.violations
    answered = results.snapshot()
    one = [e for e in load.expected if len(answered.get(e, ())) == 1]
    missing = [e for e in load.expected if e not in answered]
    several = [e for e in load.expected if len(answered.get(e, ())) > 1]
    strangers = [e for e in answered if e not in load.expected]
    if missing or several or strangers:
        bad.append(f"results: {len(missing)} event(s) without one, {len(several)} with several "
                   f"resultIds, {len(strangers)} unexpected: {(missing + several + strangers)[:5]}")
    outcomes = Counter(results.last[e]["outcome"] for e in load.expected if e in results.last)
    why = Counter(f"{results.last[e]['type']}: {results.last[e].get('rtMsg')}"[:90]
                  for e in load.expected if results.last.get(e, {}).get("outcome") == "unknown")
    twice = sorted(o for o, seen in orders.items() if seen.get("receipts", 0) > 1)
    if twice:
        bad.append(f"charged more than once at the platform: {twice[:5]}")
    unknown: list[str] = []
    disagree = disagreements(load, ledger, orders, unknown)
    if disagree:
        bad.append(f"ledger and platform disagree: {disagree[:5]}")
    if drain_s != drain_s:  # NaN: not drained
        bad.append(f"not drained within {plan.drain_s:.0f} s after the last fault")
    if run.term_exit != 0:
        bad.append(f"the SIGTERMed worker exited {run.term_exit}, not 0")
    bugs = {r: n for r, n in left.items() if r in ("handler_error", "unpublishable",
                                                   "delivery_limit")}  # fmt: skip
    if bugs:
        bad.append(f"dead letters that mean a bug or a loop: {bugs}")
    if len(run.notifications) != plan.notifications or his_messages != plan.notifications:
        bad.append(f"gateway: {len(run.notifications)} of {plan.notifications} notifications "
                   f"answered 0000, {his_messages} message(s) reached the HIS")
    counts = [count for count, _ in ledger["deliveries"].values()]
    worst, mean = max(counts, default=0), sum(counts) / max(1, len(counts))
    stormy = storms(ledger["deliveries"])
    if stormy:
        bad.append(f"requeue storm: {len(stormy)} event(s) delivered faster than the backoff "
                   f"allows: {stormy[:3]}")
    noticed, lasted = pauses(logs)
    fault_rows = []
    for fault in run.faults:
        rate = lines_per_s(run, fault.start, fault.end)
        fault_rows.append((f"  {fault.name} {fault.note}".rstrip(), f"{rate:.1f} log lines/s"))
        if rate > STORM_LINES_PER_S:
            bad.append(f"requeue storm: {rate:.0f} log lines/s during '{fault.name}' "
                       f"(limit {STORM_LINES_PER_S:.0f})")
    kinds = Counter(load.expected.values())
    rows = [
        ("events published (distinct eventIds)", f"{len(published)}"
         f" + {sum(1 for p in load.first if not p.event_id)} without a readable id"),
        ("  by kind (with a result due)", ", ".join(f"{k} {n}" for k, n in kinds.most_common())),
        ("events with exactly one distinct resultId", f"{len(one)} of {len(load.expected)}"),
        ("result copies received (republished included)", f"{results.copies}"),
        ("outcomes", ", ".join(f"{k} {n}" for k, n in sorted(outcomes.items()))),
        ("results unknown, and why", "; ".join(f"{n} x {w}" for w, n in why.items()) or "0"),
        ("money orders at the platform", f"{len(orders)}"),
        ("money orders charged more than once", f"{len(twice)}"),
        ("orders whose ledger and platform disagree", f"{len(disagree)}"),
        ("  unknown in the ledger (a person looks)", "; ".join(unknown) or "0"),
        ("dead-letter replay (dlq replay)", f"exit {replay[0]}: {replay[1]}"),
        ("dead letters left, by reason", ", ".join(f"{r} {n}" for r, n in sorted(left.items()))),
        ("gateway HIS00004 notifications -> HIS messages",
         f"{len(run.notifications)} -> {his_messages}"),
        ("time to drain after the last fault", f"{drain_s:.1f} s"),
        ("RabbitMQ restart: consumers back after", _seconds(run.broker_recovery_s)
         if plan.restart_broker else "not restarted"),
        ("ledger outage: pauses (WARNING lines) / resumed after",
         f"{noticed} / " + (", ".join(f"{x:.1f} s" for x in lasted) or "-")),
        ("SIGTERMed worker exit code", f"{run.term_exit}"),
        ("workers' peak memory (VmHWM, largest process)", f"{run.peak_kib / 1024:.0f} MiB"),
        ("ledger size (pg_database_size)", f"{ledger['bytes'] / 1024 / 1024:.1f} MiB"),
        ("deliveries per event (ledger delivery_count)", f"mean {mean:.2f}, max {worst}; storm: "
         f"over {STORM_DELIVERIES} + 1 per second of the event's life"),
        (f"log lines/s per fault (storm above {STORM_LINES_PER_S:.0f})", ""),
        *fault_rows,
    ]  # fmt: skip
    return rows


def _seconds(value: float | None) -> str:
    return "did not recover" if value is None else f"{value:.1f} s"


def print_table(rows: list[tuple[str, str]], violations: list[str]) -> None:
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"| {name:<{width}} | {value}")
    print()
    for violation in violations:
        print(f"VIOLATION: {violation}")
    print("PASS: nothing lost, nothing charged twice" if not violations else
          f"FAIL: {len(violations)} violation(s)")  # fmt: skip


def worker_env(plan: Plan, broker_url: str, ledger_url: str, platform: str) -> dict[str, str]:
    """Short timeouts and retry delays: the faults resolve within the run's few minutes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUIMIN_")}
    return env | {
        "HUIMIN_BROKER_URL": broker_url, "HUIMIN_LEDGER_URL": ledger_url,
        "HUIMIN_PLATFORM_URL": platform + "/api", "HUIMIN_CONCURRENCY": "8",
        "HUIMIN_CONNECT_TIMEOUT_S": "1", "HUIMIN_READ_TIMEOUT_S": "2",
        "HUIMIN_WRITE_TIMEOUT_S": "3", "HUIMIN_CALL_DEADLINE_S": "5",
        "HUIMIN_RETRY_DELAYS_S": "[1, 2, 4]", "HUIMIN_MAX_ATTEMPTS": "8",
        "HUIMIN_RECONCILE_MAX_QUERIES": "20", "HUIMIN_SWEEP_INTERVAL_S": "10",
        "HUIMIN_SWEEP_GRACE_S": "20", "HUIMIN_SHUTDOWN_DEADLINE_S": "15",
        "HUIMIN_METRICS_PORT": "0", "HUIMIN_STATEMENT_ENABLED": "false",
        "HUIMIN_LOG_FORMAT": "json", "HUIMIN_LOG_LEVEL": "INFO",
        "HUIMIN_REPLAY_RATE_PER_S": "200",
    }  # fmt: skip


def experiment(plan: Plan, logs: Path) -> int:
    run = Run()
    with vhost() as (vhost_name, broker_url), database() as (db_name, ledger_url):
        sim_port, gw_port = free_port(), free_port()
        platform = f"http://127.0.0.1:{sim_port}"
        env = worker_env(plan, broker_url, ledger_url, platform)
        procs = Processes(plan, env, logs)
        try:
            procs.simulator(sim_port)
            for slot in range(plan.workers):
                procs.start_worker(slot)
            wait_consumers(broker_url, "huimin.work.money", plan.workers, 60)
            procs.gateway(gw_port)
            his = Broker(broker_url)
            his.channel().queue_declare(HIS_QUEUE, durable=True, auto_delete=False,
                                        arguments=QUORUM)  # fmt: skip
            his.channel().queue_bind(HIS_QUEUE, "platform.events", "#")
            load = Load(plan.events, plan.images, plan.seed)
            results = Results(broker_url, load)
            results.declare()
            results.start()
            names = {"vhost": vhost_name, "database": db_name, "url": broker_url}
            chaos = Chaos(plan, run, procs, names, platform, f"http://127.0.0.1:{gw_port}/")
            watcher = Watcher(run, procs, logs)
            watcher.start()
            print(f"load: {len(load.first)} first events, {len(load.expected)} results due so "
                  f"far; faults for {plan.fault_s:.0f} s", flush=True)  # fmt: skip
            chaos.start()
            published, drain_s = publish_all(plan, load, Broker(broker_url, confirm=True),
                                             results, chaos)  # fmt: skip
            print(f"drained {drain_s:.1f} s after the last fault; replaying dead letters",
                  flush=True)  # fmt: skip
            replay = replay_dead_letters(env, logs)
            time.sleep(5.0)  # the replayed events' results
            watcher.stopping.set()
            results.stopping.set()
            left = dead_letters_left(env)
            his_messages = _consumers(broker_url, HIS_QUEUE, index=1)
            ledger = ledger_view(ledger_url, db_name)
            orders = simulator_orders(platform)
        finally:
            procs.stop()
        rows = check(plan, run, load, published, drain_s, results, ledger, orders, left,
                     replay, his_messages, logs)  # fmt: skip
    print_table(rows, run.violations)
    return 1 if run.violations else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 2)[2])  # fmt: skip
    parser.add_argument("--short", action="store_true",
                        help="a few hundred events, about a minute of faults (CI)")
    parser.add_argument("--events", type=int, help="events to publish (default 300 / 2000)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--seed", type=int, default=7, help="load, faults and schedule seed")
    parser.add_argument("--restart-broker", action=argparse.BooleanOptionalAction, default=None,
                        help="restart RabbitMQ once (default: only in the full run)")
    parser.add_argument("--logs", type=Path, help="keep the processes' logs in this directory")
    args = parser.parse_args(argv)
    if args.workers < 2:
        parser.error("--workers: at least 2 (the point is several replicas on one ledger)")
    plan = Plan.of(args)
    print("command:", " ".join(["python", *sys.argv]), flush=True)
    if args.logs:
        args.logs.mkdir(parents=True, exist_ok=True)
        return experiment(plan, args.logs)
    with tempfile.TemporaryDirectory(prefix="huimin-chaos-") as tmp:
        return experiment(plan, Path(tmp))


if __name__ == "__main__":
    raise SystemExit(main())
