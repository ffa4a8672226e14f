"""How fast is the platform simulator? Loopback only.

Starts `huimin-worker simulate` in a subprocess (one uvicorn process, one worker: the state is
in memory), then drives HOS00003 payments with fresh orderIds from N threads, twice:

  1. through the project's PlatformClient (validate, seal, post, verify, judge), and
  2. as raw posts of envelopes sealed before the clock starts (the simulator's own cost).

Prints requests/s for each, their ratio, and the simulator's CPU use (share of one core): a
simulator near 100 % of a core in phase 2 is the ceiling any later throughput number must be
read against; phase 1 below phase 2 means the client side costs the difference.

    .venv/bin/python benchmarks/simulator.py [--threads 8] [--count 3000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import itertools
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from worker.clock import system_clock
from worker.platform.client import PlatformClient
from worker.protocol import envelope
from worker.protocol.models.examples import EXAMPLES
from worker.settings import Settings

_order_numbers = itertools.count(1)
_lock = threading.Lock()


@dataclass
class Phase:
    name: str
    requests: int
    errors: int
    seconds: float
    cpu_seconds: float | None

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        cpu = "n/a" if self.cpu_seconds is None else f"{self.cpu_seconds / self.seconds:.0%}"
        return (
            f"{self.name:<34} {self.requests:>6} req in {self.seconds:5.2f} s = "
            f"{self.rate:8.1f} req/s  errors {self.errors}  simulator CPU {cpu} of a core"
        )


def fresh_payment() -> dict:
    with _lock:
        number = next(_order_numbers)
    return {
        **EXAMPLES["HOS00003"].copy().request,
        "orderId": f"BENCH{os.getpid()}{number:010d}",
        "amt": 100,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_simulator(port: int) -> tuple[subprocess.Popen[bytes], list[str]]:
    command = [str(Path(sys.executable).parent / "huimin-worker"), "simulate", "--port", str(port)]
    env = {**os.environ, "HUIMIN_LOG_LEVEL": "WARNING"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/admin/stats", timeout=0.5)
            return process, command
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("the simulator did not start")


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (Linux /proc), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_phase(
    name: str,
    pid: int,
    threads: int,
    count: int,
    seconds: float,
    make_worker: Callable[[], Callable[[], bool | None]],
) -> Phase:
    """Run `threads` workers until `count` requests or `seconds`; a worker returning None
    has nothing left to send."""
    workers = [make_worker() for _ in range(threads)]  # setup cost stays off the clock
    started, done, errors = [0], [0], [0]
    deadline = time.monotonic() + seconds

    def loop(work: Callable[[], bool | None]) -> None:
        while time.monotonic() < deadline:
            with _lock:
                if started[0] >= count:
                    return
                started[0] += 1  # reserve the slot, so exactly `count` are sent
            ok = work()
            if ok is None:
                return
            with _lock:
                done[0] += ok
                errors[0] += not ok

    cpu_before, clock_start = cpu_seconds(pid), time.perf_counter()
    pool = [threading.Thread(target=loop, args=(work,)) for work in workers]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    elapsed, cpu_after = time.perf_counter() - clock_start, cpu_seconds(pid)
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return Phase(name, done[0], errors[0], elapsed, cpu)


def client_worker(settings: Settings) -> Callable[[], bool | None]:
    client = PlatformClient(settings)

    def work() -> bool | None:
        return client.call("HOS00003", fresh_payment()).data["orderStatus"] == "02"

    return work


def presealed(count: int, credentials: envelope.Credentials) -> Callable[[], bytes | None]:
    """`count` sealed HOS00003 bodies (fresh orderIds and seq ids), handed out once each."""
    bodies = iter(
        [
            envelope.business_text(
                envelope.seal_request(
                    "HOS00003",
                    fresh_payment(),
                    credentials=credentials,
                    seq_id=envelope.new_seq_id(),
                    at=system_clock(),
                )
            ).encode()
            for _ in range(count)
        ]
    )

    def take() -> bytes | None:
        with _lock:
            return next(bodies, None)

    return take


def raw_worker(url: str, take: Callable[[], bytes | None]) -> Callable[[], bool | None]:
    http = httpx.Client(timeout=10)

    def work() -> bool | None:
        body = take()
        if body is None:
            return None
        return b'"rtCode": "0000"' in http.post(url, content=body).content

    return work


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--count", type=int, default=3000, help="requests per phase, at most")
    parser.add_argument("--seconds", type=float, default=10.0, help="time per phase, at most")
    args = parser.parse_args()
    port = free_port()
    process, command = start_simulator(port)
    print("simulator:", shlex.join(command))
    print(
        f"load: {args.threads} threads, HOS00003 with fresh orderIds, "
        f"at most {args.count} requests or {args.seconds:.0f} s per phase, "
        f"{os.cpu_count()} CPUs shared by the client threads and the simulator"
    )
    try:
        settings = Settings(platform_url=f"http://127.0.0.1:{port}/api")
        credentials = envelope.Credentials.from_settings(settings)
        client_phase = run_phase(
            "PlatformClient.call",
            process.pid,
            args.threads,
            args.count,
            args.seconds,
            lambda: client_worker(settings),
        )
        take = presealed(args.count, credentials)
        raw_phase = run_phase(
            "raw post of pre-sealed envelopes",
            process.pid,
            args.threads,
            args.count,
            args.seconds,
            lambda: raw_worker(settings.platform_url, take),
        )
    finally:
        process.terminate()
        process.wait(timeout=10)
    for phase in (client_phase, raw_phase):
        print(phase.line())
    ratio = client_phase.rate / raw_phase.rate if raw_phase.rate else float("nan")
    print(
        f"PlatformClient / raw = {ratio:.2f} (1.00: the simulator is the bottleneck; "
        "lower: the client side is)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
