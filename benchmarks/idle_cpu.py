"""What a worker costs while it waits: CPU with nothing to do, then with one slow call in flight.

    .venv/bin/python benchmarks/idle_cpu.py [--seconds 5] [--latency-ms 20000]

A worker (subprocess, concurrency 8) runs against the real RabbitMQ (a throw-away vhost) and
a simulator answering after `--latency-ms`. Its CPU time is read from /proc/<pid>/stat over
`--seconds` with nothing to do (the baseline), then again while one payment waits on the
platform. A worker that polls while it waits shows a large ratio; one that sleeps until a
frame or a finished handler wakes it stays near 1.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import amqp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput as bench  # noqa: E402 - the vhost, simulator and worker plumbing


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_share(pid: int, seconds: float) -> float:
    """The fraction of one core `pid` used over the next `seconds`."""
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / seconds


def worker_pid() -> int:
    found = subprocess.run(
        ["pgrep", "-n", "-f", "worker.cli run"], capture_output=True, text=True, check=True
    )
    return int(found.stdout.split()[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--latency-ms", type=int, default=20_000)
    args = parser.parse_args(argv)
    print("command:", " ".join(["python", *sys.argv]))
    with tempfile.TemporaryDirectory() as tmp, bench.vhost() as url:
        with bench.simulator(args.latency_ms, Path(tmp)) as platform:
            with bench.worker(url, platform, Path(tmp), 8):
                idle, waiting = measure(url, args.seconds)
    print(f"worker CPU, nothing to do           : {idle:6.1%} of a core (baseline)")
    print(
        f"worker CPU, one slow call in flight : {waiting:6.1%} of a core"
        f"  = {waiting / max(idle, 1e-3):.1f} x the baseline"
    )
    return 0


def measure(url: str, seconds: float) -> tuple[float, float]:
    conn = bench.raw_connection(url)
    channel = conn.channel()
    bench._wait_consumers(channel, "huimin.work.money")
    pid = worker_pid()
    time.sleep(1)  # startup work (migrations, the first sweep) is over
    idle = cpu_share(pid, seconds)
    channel.basic_publish(
        amqp.Message(bench.payments(1)[0], delivery_mode=2, content_type="application/json"),
        exchange="his.events",
        routing_key="payment.requested",
    )
    time.sleep(1)  # the call has left for the platform
    waiting = cpu_share(pid, seconds)
    conn.close()
    return idle, waiting


if __name__ == "__main__":
    raise SystemExit(main())
