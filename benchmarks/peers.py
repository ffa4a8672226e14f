"""The worker side by side with what a hospital would otherwise write (issue 13).

    .venv/bin/python benchmarks/peers.py [--events 1500] [--rounds 5] [--quick]
        [--contenders worker,aio-pika,faststream,dramatiq] [--setups a,b]

Peers: payment consumers on plain aio-pika, FastStream and Dramatiq (benchmarks/peer_*.py,
the `bench` extra), each doing exactly the worker's per-event platform work (peer_work.py:
validate the event with the worker's models, seal with its envelope, post to the simulator,
open and judge the answer, publish the result with a publisher confirm, ack) WITHOUT a
ledger, idempotency or reconciliation. Two set-ups, one simulator each, shared by all:

  (a) platform latency 0 ms, 8 in flight: events/s and CPU ms per event;
  (b) platform latency 200 ms, 64 in flight: events/s as a % of the bound 64 / 0.2 s =
      320/s, and CPU ms per event.

Each run: a throw-away vhost, the contender started as a subprocess (configured like the
worker: HUIMIN_BROKER_URL, HUIMIN_PLATFORM_URL, HUIMIN_CONCURRENCY), `--events` payments
published to his.events once it consumes, timed from the first publish to the last result
on his.results. CPU is the contender's whole process tree (Dramatiq forks), utime + stime
from /proc over the same interval. Within each round the contenders take turns, the order
rotating from round to round; the table gives medians and (min-max) ranges over the rounds.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import throughput as bench  # noqa: E402 - the vhost, simulator, payload and queue plumbing
from peer_work import EVENT_KEY, PEER_QUEUE  # noqa: E402

PY = sys.executable
#: name -> (the queue whose consumer shows it is ready, argv given the concurrency)
CONTENDERS: dict[str, tuple[str, list[str]]] = {
    "worker": ("huimin.work.money", [PY, "-m", "worker.cli", "run"]),
    "aio-pika": (PEER_QUEUE, [PY, str(HERE / "peer_aiopika.py")]),
    "faststream": (PEER_QUEUE, [PY, str(HERE / "peer_faststream.py")]),
    "dramatiq": (
        PEER_QUEUE,
        [PY, "-m", "dramatiq", "peer_dramatiq", "--path", str(HERE), "--processes", "1"],
    ),
}


@dataclass(frozen=True)
class Setup:
    key: str
    latency_ms: int
    concurrency: int

    @property
    def bound(self) -> float | None:
        """Events/s if every slot were always busy waiting on the platform (None at 0 ms)."""
        return self.concurrency / (self.latency_ms / 1000) if self.latency_ms else None


SETUPS = {"a": Setup("a", 0, 8), "b": Setup("b", 200, 64)}


@dataclass(frozen=True)
class Run:
    rate: float  # events/s, nan when the run did not finish
    cpu_ms: float  # CPU of the contender's process tree per event
    succeeded: int  # results with outcome succeeded


def argv_for(name: str, concurrency: int) -> list[str]:
    argv = list(CONTENDERS[name][1])
    return argv + ["--threads", str(concurrency)] if name == "dramatiq" else argv


def environment(url: str, platform_url: str, workdir: Path, concurrency: int) -> dict[str, str]:
    """The worker's benchmark settings (throughput.worker), for every contender alike; the
    worker's daily statement job is off: it is no per-event work, and no peer has one."""
    return {k: v for k, v in os.environ.items() if not k.startswith("HUIMIN_")} | {
        "HUIMIN_BROKER_URL": url,
        "HUIMIN_PLATFORM_URL": platform_url,
        "HUIMIN_LEDGER_URL": f"sqlite:///{workdir / f'ledger-{uuid.uuid4().hex[:6]}.db'}",
        "HUIMIN_CONCURRENCY": str(concurrency),
        "HUIMIN_LOG_LEVEL": "WARNING",
        "HUIMIN_METRICS_PORT": "0",
        "HUIMIN_STATEMENT_ENABLED": "false",
    }


def tree_cpu_seconds(root: int) -> float:
    """utime + stime of `root` and every descendant alive now (Linux /proc)."""
    children: dict[int, list[int]] = defaultdict(list)
    cpu: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended while we looked
            continue
        fields = text.rsplit(")", 1)[1].split()
        pid = int(text.split(" ", 1)[0])
        children[int(fields[1])].append(pid)
        cpu[pid] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += cpu.get(pid, 0.0)
        todo.extend(children.get(pid, ()))
    return total


def run_once(name: str, setup: Setup, platform_url: str, workdir: Path, events: int) -> Run:
    """One contender, one fresh vhost, `events` payments; see the module's docstring."""
    with bench.vhost() as url:
        env = environment(url, platform_url, workdir, setup.concurrency)
        log = (workdir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            argv_for(name, setup.concurrency), env=env, stderr=log, start_new_session=True
        )
        try:
            return measure(url, CONTENDERS[name][0], proc.pid, events)
        except TimeoutError as exc:  # one failed run must not lose the others
            print(f"    {name} did not finish: {exc}; its log ends:", flush=True)
            print(_tail(workdir / f"{name}.log"), flush=True)
            return Run(float("nan"), float("nan"), 0)
        finally:
            stop(proc)
            log.close()


def _tail(path: Path, lines: int = 5) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def measure(url: str, ready_queue: str, pid: int, events: int) -> Run:
    conn = bench.raw_connection(url)
    try:
        return _timed(conn.channel(), ready_queue, pid, events)
    finally:
        conn.close()


def _timed(channel: Any, ready_queue: str, pid: int, events: int) -> Run:
    bench._wait_consumers(channel, ready_queue, timeout=60)
    channel.exchange_declare("his.results", "topic", durable=True, auto_delete=False)
    # payments' results only: the worker publishes others (its daily statement job's, if on)
    for queue, key in (("bench.results", "*"), ("bench.succeeded", "succeeded")):
        channel.queue_declare(queue, durable=True, auto_delete=False, arguments=bench.QUORUM)
        channel.queue_bind(queue, "his.results", f"{EVENT_KEY}.{key}")
    bodies = bench.payments(events)  # built before the clock starts
    time.sleep(1.0)  # startup work (connections, the worker's first sweep) is over
    cpu_before, start = tree_cpu_seconds(pid), time.monotonic()
    bench.publish_bodies(channel, bodies)
    end = bench._wait_depth(channel, "bench.results", events, 120 + events / 10)
    cpu = tree_cpu_seconds(pid) - cpu_before
    _, succeeded, _ = channel.queue_declare("bench.succeeded", passive=True)
    return Run(events / (end - start), cpu / events * 1000, succeeded)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (Dramatiq's parent passes it on), then the process group if it lingers."""
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def session(
    setup: Setup, names: list[str], events: int, rounds: int, workdir: Path
) -> dict[str, list[Run]]:
    """`rounds` rounds against one simulator; the order of the contenders rotates."""
    runs: dict[str, list[Run]] = {name: [] for name in names}
    with bench.simulator(setup.latency_ms, workdir) as platform_url:
        for number in range(rounds):
            shift = number % len(names)
            for name in names[shift:] + names[:shift]:
                run = run_once(name, setup, platform_url, workdir, events)
                print(
                    f"  ({setup.key}) round {number + 1} {name:<10} {run.rate:7.1f} events/s"
                    f"  {run.cpu_ms:5.2f} ms CPU/event  {run.succeeded}/{events} succeeded",
                    flush=True,
                )
                runs[name].append(run)
    return runs


def spread(values: list[float]) -> tuple[float, float, float]:
    """Median, min and max of the finished runs (nan if none finished)."""
    done = [v for v in values if v == v]
    if not done:
        return float("nan"), float("nan"), float("nan")
    return statistics.median(done), min(done), max(done)


def table(setup: Setup, runs: dict[str, list[Run]], events: int, rounds: int) -> str:
    rates = {name: spread([r.rate for r in rs]) for name, rs in runs.items()}
    cpus = {name: spread([r.cpu_ms for r in rs]) for name, rs in runs.items()}
    peers = [name for name in runs if name != "worker"]
    best = max((rates[n][0] for n in peers if rates[n][0] == rates[n][0]), default=float("nan"))
    leanest = min((cpus[n][0] for n in peers if cpus[n][0] == cpus[n][0]), default=float("nan"))
    title = (
        f"({setup.key}) platform latency {setup.latency_ms} ms, {setup.concurrency} in flight,"
        f" {events} events x {rounds} round{'s' if rounds > 1 else ''}: median (min-max)"
    )
    bound = setup.bound
    head = f"{'contender':<11}{'events/s':>22}"
    head += f"{f'% of {bound:.0f}/s':>22}" if bound else ""
    head += f"{'CPU ms/event':>22}{'rate/best peer':>16}{'CPU/leanest peer':>18}"
    lines = [title, head]
    for name in runs:
        rate, cpu = rates[name], cpus[name]
        line = f"{name:<11}{_cell(rate, '{:,.0f}'):>22}"
        if bound:
            line += f"{_cell(tuple(v / bound * 100 for v in rate), '{:.0f}%'):>22}"
        line += f"{_cell(cpu, '{:.2f}'):>22}{rate[0] / best:>15.2f}x{cpu[0] / leanest:>17.2f}x"
        lines.append(line)
    return "\n".join(lines)


def _cell(values: tuple[float, float, float], fmt: str) -> str:
    median, low, high = (fmt.format(v) for v in values)
    return f"{median} ({low}-{high})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="a smoke check: 300 events, 1 round")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--setups", default="a,b")
    args = parser.parse_args(argv)
    events, rounds = (300, 1) if args.quick else (args.events, args.rounds)
    names = [n for n in args.contenders.split(",") if n]
    unknown = set(names) - set(CONTENDERS)
    if unknown:
        parser.error(f"unknown contenders: {', '.join(sorted(unknown))}")
    print("command:", " ".join(["python", *sys.argv]), flush=True)
    tables = []
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.setups.split(","):
            runs = session(SETUPS[key], names, events, rounds, Path(tmp))
            tables.append(table(SETUPS[key], runs, events, rounds))
    print("\n" + "\n\n".join(tables))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
