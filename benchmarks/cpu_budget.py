"""Where the CPU of an end-to-end run goes: worker, simulator and RabbitMQ, per event.

    .venv/bin/python benchmarks/cpu_budget.py [--events 3000] [--concurrency 8]
        [--latency-ms 0] [--processes 1] [--window 5]

The set-up of benchmarks/throughput.py part (b): payments published to RabbitMQ (a throw-away
vhost), the worker (`--processes` of them, sharing one SQLite ledger and splitting
`--concurrency`), the simulator answering after `--latency-ms`. While the run is in its
steady state, each process's CPU time is read from /proc/<pid>/stat over `--window` seconds
and divided by the events finished in that window. The shares add up against the machine's
cores, which is what bounds the pipeline when all three run on one machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput as bench  # noqa: E402 - the vhost, simulator and payload plumbing
from idle_cpu import cpu_seconds  # noqa: E402


@contextmanager
def workers(
    url: str, platform_url: str, workdir: Path, concurrency: int, processes: int
) -> Iterator[list[int]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUIMIN_")} | {
        "HUIMIN_BROKER_URL": url,
        "HUIMIN_PLATFORM_URL": platform_url,
        "HUIMIN_LEDGER_URL": f"sqlite:///{workdir / f'ledger-{uuid.uuid4().hex[:6]}.db'}",
        "HUIMIN_CONCURRENCY": str(max(1, concurrency // processes)),
        "HUIMIN_LOG_LEVEL": "WARNING",
        "HUIMIN_METRICS_PORT": "0",
    }
    log = (workdir / "worker.log").open("ab")
    procs = [
        subprocess.Popen([sys.executable, "-m", "worker.cli", "run"], env=env, stderr=log)
        for _ in range(processes)
    ]
    try:
        yield [p.pid for p in procs]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(60)


def pid_of(pattern: str) -> int:
    found = subprocess.run(
        ["pgrep", "-n", "-f", pattern], capture_output=True, text=True, check=True
    )
    return int(found.stdout.split()[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--window", type=float, default=5.0)
    args = parser.parse_args(argv)
    print("command:", " ".join(["python", *sys.argv]))
    with tempfile.TemporaryDirectory() as tmp, bench.vhost() as url:
        with bench.simulator(args.latency_ms, Path(tmp)) as platform:
            with workers(url, platform, Path(tmp), args.concurrency, args.processes) as pids:
                report(run(url, args, pids))
    return 0


def run(url: str, args: argparse.Namespace, worker_pids: list[int]) -> dict[str, float]:
    conn = bench.raw_connection(url)
    channel = conn.channel()
    bench._wait_consumers(channel, "huimin.work.money")
    channel.queue_declare("bench.results", durable=True, auto_delete=False, arguments=bench.QUORUM)
    channel.queue_bind("bench.results", "his.results", "#")
    pids = {
        "worker": worker_pids,
        "simulator": [pid_of("worker.cli simulate")],
        "rabbitmq": [pid_of("beam.smp")],
    }
    publisher = threading.Thread(target=bench.publish_payments, args=(url, args.events))
    publisher.start()
    time.sleep(2.0)  # past the start: connections made, queues busy
    before = _sample(channel, pids)
    time.sleep(args.window)
    after = _sample(channel, pids)
    publisher.join()
    conn.close()
    return _per_event(before, after)


def _sample(channel: object, pids: dict[str, list[int]]) -> dict[str, float]:
    _, done, _ = channel.queue_declare("bench.results", passive=True)  # type: ignore[attr-defined]
    sample = {name: sum(cpu_seconds(pid) for pid in group) for name, group in pids.items()}
    return sample | {"events": float(done), "at": time.monotonic()}


def _per_event(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    seconds = after["at"] - before["at"]
    events = after["events"] - before["events"]
    result = {"rate": events / seconds}
    for name in ("worker", "simulator", "rabbitmq"):
        used = after[name] - before[name]
        result[f"{name}_ms"] = used / events * 1000 if events else float("nan")
        result[f"{name}_cores"] = used / seconds
    return result


def report(result: dict[str, float]) -> None:
    print(f"events finished in the window: {result['rate']:,.0f}/s")
    total = 0.0
    for name in ("worker", "simulator", "rabbitmq"):
        ms = result[f"{name}_ms"]
        total += ms
        print(f"{name:10s} {ms:5.2f} ms CPU per event  {result[f'{name}_cores']:4.2f} cores")
    cores = os.cpu_count() or 1
    print(
        f"together   {total:5.2f} ms CPU per event: at most {cores / total * 1000:,.0f}"
        f" events/s on {cores} cores if nothing else ran"
    )


if __name__ == "__main__":
    raise SystemExit(main())
