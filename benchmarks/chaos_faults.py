"""benchmarks/chaos.py's faults and what it watches while they happen.

`Chaos` runs the schedule (SIGKILL/SIGTERM of workers, closed connections, the ledger refused,
RabbitMQ restarted, HIS00004 notifications through the gateway) and the simulator's fault
plan; `Watcher` samples the workers' log lines and peak memory for the table.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from chaos_services import Plan, Processes, Run, admin, ctl, wait_consumers  # noqa: E402

from worker.clock import system_clock  # noqa: E402
from worker.protocol import envelope  # noqa: E402
from worker.protocol.models.examples import EXAMPLES  # noqa: E402
from worker.sandbox.simulator.notify import notify  # noqa: E402
from worker.settings import Settings  # noqa: E402

# --- the faults -------------------------------------------------------------------------------


class Chaos(threading.Thread):
    """Runs the fault schedule for plan.fault_s seconds; records each fault's window."""

    def __init__(
        self,
        plan: Plan,
        run: Run,
        procs: Processes,
        names: dict[str, str],
        platform: str,
        gateway: str,
    ) -> None:
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
                self.procs.reap(self.run_)
                time.sleep(0.1)
            action()
        httpx.delete(f"{self.platform}/admin/faults", timeout=5)
        simulator.end = time.monotonic()

    def _steps(self) -> list[tuple[float, Any]]:
        length = self.plan.fault_s
        steps: list[tuple[float, Any]] = [
            (length * 0.35, self.sigterm),
            (length * 0.55, self.ledger_outage),
        ]
        steps += [
            (length * self.rng.uniform(0.1, 0.9), self.disconnect)
            for _ in range(self.plan.disconnects)
        ]
        steps += [
            (length * (0.15 + 0.6 * i / max(1, self.plan.notifications)), self.notify)
            for i in range(self.plan.notifications)
        ]
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
        ctl("close_all_connections", "-p", self.names["vhost"], "chaos", check=False)
        fault.end = time.monotonic()

    def ledger_outage(self) -> None:
        db = self.names["database"]
        fault = self.run_.fault("ledger unreachable", f"({self.plan.outage_s:.0f} s)")
        with admin() as conn:
            conn.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS false')
            try:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (db,),
                )
                time.sleep(self.plan.outage_s)
            finally:
                conn.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS true')
        fault.end = time.monotonic()

    def restart_broker(self) -> None:
        fault = self.run_.fault("RabbitMQ stop_app / start_app")
        ctl("stop_app")
        try:
            time.sleep(5.0)
        finally:  # whatever happens, the machine's broker comes back
            for _ in range(5):
                if ctl("start_app", check=False).returncode == 0:
                    break
                time.sleep(2.0)
            ctl("await_startup", check=False)
        fault.end = time.monotonic()
        with suppress(TimeoutError):
            recovered = wait_consumers(
                self.names["url"], "huimin.work.money", len(self.procs.live()), 120
            )
            self.run_.broker_recovery_s = recovered
        fault.note = f"(consumers back {self.run_.broker_recovery_s or -1:.1f} s after start_app)"

    def notify(self) -> None:
        """A HIS00004 claim result through the gateway, sent again on 9999 as the platform does."""
        business = {
            **EXAMPLES["HIS00004"].request,
            "claimNode": "4",
            "treatmentSerialNo": f"ZYC{uuid.uuid4().hex[:12].upper()}",
        }
        credentials = envelope.Credentials.from_settings(Settings())
        with httpx.Client(timeout=15) as client:
            for _ in range(20):
                with suppress(Exception):
                    answer = notify(
                        self.gateway,
                        "HIS00004",
                        business,
                        credentials=credentials,
                        client=client,
                        clock=system_clock,
                    )
                    if answer.rt_code == "0000":
                        self.run_.notifications.append(business["treatmentSerialNo"])
                        return
                time.sleep(1.0)
        self.run_.violations.append("a HIS00004 notification was never answered 0000")


def simulator_faults(seed: int) -> dict[str, Any]:
    """Every kind, on the money calls, their status queries and the uploads."""
    money = ["HOS00003", "HOS00004", "HOS00014"]
    rules: list[dict[str, Any]] = [
        {
            "transCode": "*",
            "kind": "latency",
            "params": {"distribution": "normal", "meanMs": 15, "sdMs": 10},
        },
        {
            "transCode": "*",
            "kind": "latency",
            "probability": 0.01,
            "params": {"distribution": "fixed", "ms": 2500},
        },
    ]
    for code in money:
        rules += [
            # processed 8 s after it arrived: past the worker's 5 s call deadline (the first
            # defect this experiment found: such a payment used to be sent again); three
            # times per transCode, early, so that even the short run meets it
            {
                "transCode": code,
                "kind": "latency",
                "probability": 0.05,
                "times": 3,
                "params": {"distribution": "fixed", "ms": 8000},
            },
            {
                "transCode": code,
                "kind": "lose_response",
                "probability": 0.03,
                "params": {"seconds": 4},
            },
            {"transCode": code, "kind": "fail_after_processing", "probability": 0.03},
            {"transCode": code, "kind": "fail_before_processing", "probability": 0.03},
            {"transCode": code, "kind": "reject_503", "probability": 0.03},
            {
                "transCode": code,
                "kind": "drop_connection",
                "probability": 0.02,
                "params": {"processed": True},
            },
            {"transCode": code, "kind": "drop_connection", "probability": 0.02},
            {"transCode": code, "kind": "corrupt_signature", "probability": 0.02},
            {"transCode": code, "kind": "garbage_body", "probability": 0.02},
            {
                "transCode": code,
                "kind": "replay_answer",
                "probability": 0.02,
                "params": {"field": "orderId"},
            },
        ]
    for code in ["HOS00012", "HOS00016", "HOS00022", "HOS00028", "HOST0014"]:
        rules += [
            {"transCode": code, "kind": "reject_503", "probability": 0.04},
            {"transCode": code, "kind": "garbage_body", "probability": 0.02},
        ]
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
                # a process killed but not yet reaped (a zombie) has no VmHWM line
                peak = next((x for x in status.splitlines() if x.startswith("VmHWM")), "- 0")
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
