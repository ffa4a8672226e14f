"""`huimin-worker demo`: the whole journey on embedded defaults, nothing to install.

An in-memory broker stands in for RabbitMQ, the project's simulator serves the platform on
loopback, and a temporary SQLite file is the ledger. The HIS publishes one inpatient's events;
one payment's answer is lost on the way back (an injected fault) and the worker reconciles it by
the status query instead of charging twice. A timeline of events, platform calls and results
is printed; the exit code is 0 when every result is the expected one. Then the platform calls
the hospital (HIS00002/3/4) through an in-process inbound gateway on the same broker.
"""

from __future__ import annotations

import copy
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from worker.app import build_worker
from worker.broker.memory import MemoryBroker
from worker.broker.memory_transport import MemoryTransport
from worker.broker.topology import build_topology
from worker.platform.attempts import Attempt
from worker.protocol.models.examples import EXAMPLES
from worker.sandbox.gateway_demo import run_platform_calls
from worker.sandbox.his import MemoryHis, ReceivedResult
from worker.sandbox.simulator.server import SimulatorHandle, run_in_thread
from worker.settings import Settings

DEMO_SETTINGS: dict[str, Any] = {
    "retry_delays_s": [0.5, 1, 2],
    "read_timeout_s": 1.5,
    "connect_timeout_s": 1.0,
    "concurrency": 4,
    "sweep_interval_s": 3600.0,
    "shutdown_deadline_s": 5.0,
    "statement_enabled": False,  # the demo's timeline is the journey, not yesterday's statement
}


class Timeline:
    """Prints one line per thing that happened, with the time since the start."""

    def __init__(self, out: TextIO) -> None:
        self.out, self.start, self.lock = out, time.monotonic(), threading.Lock()

    def say(self, who: str, text: str) -> None:
        with self.lock:
            print(f"  +{time.monotonic() - self.start:6.2f}s  {who:<8} {text}", file=self.out)

    # ClientObserver
    def request_finished(self, attempt: Attempt) -> None:
        answer = attempt.rt_code or (attempt.error or "?").split(":")[0]
        took = f"{attempt.duration_s * 1000:.0f} ms"
        self.say(
            "platform",
            f"{attempt.trans_code}  seq {attempt.platform_seq_id[:8]}…  "
            f"-> {answer}  ({attempt.outcome}, {took})",
        )

    def verification_failed(self, direction: str, reason: str) -> None:
        self.say("platform", f"answer failed verification: {reason}")

    def answer_mismatch(self, trans_code: str, field: str) -> None:
        self.say("platform", f"{trans_code} answer does not match the request ({field})")


def run_demo(out: TextIO) -> int:
    with tempfile.TemporaryDirectory(prefix="huimin-demo-") as tmp, run_in_thread(seed=2026) as sim:
        return _journey(sim, Path(tmp), Timeline(out), out)


def _journey(sim: SimulatorHandle, tmp: Path, timeline: Timeline, out: TextIO) -> int:
    settings = Settings(
        platform_url=sim.base_url + "/api",
        ledger_url=f"sqlite:///{tmp / 'ledger.db'}",
        **DEMO_SETTINGS,
    )
    broker = MemoryBroker()
    his = MemoryHis(broker, build_topology(settings.retry_delays_s, settings.retry_jitter))
    worker = build_worker(settings, transport=MemoryTransport(broker), client_observer=timeline)
    engine = threading.Thread(target=worker.engine.run, daemon=True)
    print(_banner(sim, tmp), file=out)
    engine.start()
    try:
        worker.engine.ready.wait(10)
        ok = Journey(his, sim, timeline).run()
        ok = run_platform_calls(settings, broker, timeline.say) and ok
    finally:
        worker.engine.stop()
        engine.join(10)
        worker.close()
    print(_summary(sim, ok), file=out)
    return 0 if ok else 1


def _banner(sim: SimulatorHandle, tmp: Path) -> str:
    return (
        "huimin-worker demo: one inpatient's journey on embedded defaults\n"
        f"  broker: in-memory | platform: simulator at {sim.base_url} | "
        f"ledger: SQLite in {tmp}\n"
    )


def _summary(sim: SimulatorHandle, ok: bool) -> str:
    lines = ["", "orders at the platform (receipts = money calls that reached processing):"]
    for order in sim.orders():
        lines.append(
            f"  {order.get('orderId')}: status {order.get('orderStatus')}, "
            f"receipts {order.get('receipts')}"
        )
    lines.append("")
    lines.append(
        "every result as expected; nothing charged twice"
        if ok
        else "SOME RESULTS WERE NOT AS EXPECTED (see above)"
    )
    return "\n".join(lines)


class Journey:
    """The HIS's side of the story, step by step."""

    def __init__(self, his: MemoryHis, sim: SimulatorHandle, timeline: Timeline) -> None:
        self.his, self.sim, self.say = his, sim, timeline.say
        self.ok = True

    def run(self) -> bool:
        tag = uuid.uuid4().hex[:8].upper()
        self.step("signing.status.requested", "HOS00001", "succeeded")
        pay1 = self.step("payment.requested", "HOS00003", "succeeded", orderId=f"DEP1{tag}A001")
        self.say("demo", "next: the platform charges the 2nd deposit but its answer is lost")
        self.sim.add_fault("lose_response", "HOS00003", times=1, seconds=3)
        pay2 = self.step(
            "payment.requested", "HOS00003", "succeeded", orderId=f"DEP2{tag}A002", amt=200000
        )
        for event_type, code in (
            ("patient.posted", "HOS00020"),
            ("fee.posted", "HOS00022"),
            ("medical-record.posted", "HOS00021"),
        ):
            self.step(event_type, code, "succeeded")
        self.step(
            "refund.requested",
            "HOS00004",
            "succeeded",
            orderId=f"REF{tag}0001",
            origOrderId=pay2.body["data"]["queryId"],
            amtRefund=5000,
        )
        self.step(
            "refund.requested",
            "HOS00004",
            "failed",
            orderId=f"REF{tag}0002",
            origOrderId=pay2.body["data"]["queryId"],
            amtRefund=999999999,
        )
        deposits = f"{pay1.body['data']['queryId']},{pay2.body['data']['queryId']}"
        self.step(
            "discharge.trial.requested",
            "HOST0014",
            "succeeded",
            origPayQueryId=deposits,
            trialId=f"TRL{tag}0001",
        )
        self.step(
            "discharge.ready",
            "HOS00014",
            "succeeded",
            origPayQueryId=deposits,
            trialId=f"TRL{tag}0001",
            orderId=f"STL{tag}0001",
        )
        return self.ok and all(o.get("receipts") == 1 for o in self.sim.orders())

    def step(self, event_type: str, code: str, expected: str, **changes: Any) -> ReceivedResult:
        data = copy.deepcopy(EXAMPLES[code].request) | changes
        event = {
            "eventId": f"evt-{uuid.uuid4().hex[:16]}",
            "type": event_type,
            "occurredAt": datetime.now(UTC).isoformat(),
            "data": data,
        }
        self.say("HIS", f"publishes {event_type}  {_key(data)}")
        self.his.publish(event)
        result = self.his.next_result(timeout=30)
        mark = "ok" if result.routing_key.endswith(expected) else "UNEXPECTED"
        self.ok &= mark == "ok"
        why = "" if expected == "succeeded" else f"  ({result.body['rtMsg']})"
        self.say(
            "result",
            f"{result.routing_key}  rtCode {result.body['rtCode']}  "
            f"{_status(result)}attempts {result.body['attempts']}{why}  [{mark}]",
        )
        return result


def _key(data: dict[str, Any]) -> str:
    for name in ("orderId", "trialId", "treatmentSerialNo"):
        if name in data:
            return f"{name}={data[name]}"
    return ""


def _status(result: ReceivedResult) -> str:
    status = result.body.get("orderStatus")
    return f"orderStatus {status}  " if status else ""
