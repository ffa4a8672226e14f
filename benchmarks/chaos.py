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
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from chaos_faults import Chaos, Watcher  # noqa: E402
from chaos_load import Load  # noqa: E402
from chaos_report import (  # noqa: E402
    check,
    dead_letters_left,
    faults_fired,
    ledger_view,
    print_table,
    simulator_orders,
)
from chaos_services import (  # noqa: E402
    HIS_QUEUE,
    Broker,
    Plan,
    Processes,
    Results,
    Run,
    consumers,
    database,
    vhost,
    wait_consumers,
)
from throughput import QUORUM, free_port  # noqa: E402

# --- the run ----------------------------------------------------------------------------------


def publish_all(
    plan: Plan, load: Load, broker: Broker, results: Results, chaos: Chaos
) -> tuple[set[str], float]:
    """The first events spread over 95% of the fault phase, follow-ups as they come; then
    wait for the last expected result. Returns the eventIds published and when it drained."""
    published: set[str] = set()
    spacing = plan.fault_s * 0.95 / max(1, len(load.first))
    start, last_fault = time.monotonic(), None
    pending = list(load.first)
    while True:
        now = time.monotonic()
        while pending and now >= start + spacing * (len(load.first) - len(pending)):
            _send(broker, pending.pop(0), published)
        while (followup := load.next_followup()) is not None:
            _send(broker, followup, published)
        if chaos.done.is_set():
            chaos.procs.reap(chaos.run_)
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
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "worker.cli",
            "dlq",
            "replay",
            "--rate",
            "200",
            "--operator",
            "chaos",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    (logs / "dlq-replay.txt").write_text(done.stdout + done.stderr)
    summary = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
    return done.returncode, summary


def evidence(env: dict[str, str], logs: Path, orders: dict[str, dict[str, Any]]) -> None:
    """For each order the platform saw more than once: its ledger timeline (`trace`) and the
    platform's view, in the logs directory, before the ledger is dropped."""
    for order_id in [o for o, seen in orders.items() if seen.get("receipts", 0) > 1][:10]:
        done = subprocess.run(
            [sys.executable, "-m", "worker.cli", "trace", order_id],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        text = json.dumps(orders[order_id], indent=1) + "\n" + done.stdout + done.stderr
        (logs / f"evidence-{order_id}.txt").write_text(text)
        print(f"evidence for {order_id}: {logs / f'evidence-{order_id}.txt'}", flush=True)


def worker_env(plan: Plan, broker_url: str, ledger_url: str, platform: str) -> dict[str, str]:
    """Short timeouts and retry delays: the faults resolve within the run's few minutes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUIMIN_")}
    return env | {
        "HUIMIN_BROKER_URL": broker_url,
        "HUIMIN_LEDGER_URL": ledger_url,
        "HUIMIN_PLATFORM_URL": platform + "/api",
        "HUIMIN_CONCURRENCY": "8",
        "HUIMIN_CONNECT_TIMEOUT_S": "1",
        "HUIMIN_READ_TIMEOUT_S": "2",
        "HUIMIN_WRITE_TIMEOUT_S": "3",
        "HUIMIN_CALL_DEADLINE_S": "5",
        "HUIMIN_RETRY_DELAYS_S": "[1, 2, 4]",
        "HUIMIN_MAX_ATTEMPTS": "8",
        "HUIMIN_RECONCILE_MAX_QUERIES": "20",
        "HUIMIN_SWEEP_INTERVAL_S": "10",
        "HUIMIN_SWEEP_GRACE_S": "20",
        "HUIMIN_SHUTDOWN_DEADLINE_S": "15",
        "HUIMIN_METRICS_PORT": "0",
        "HUIMIN_STATEMENT_ENABLED": "false",
        "HUIMIN_LOG_FORMAT": "json",
        "HUIMIN_LOG_LEVEL": "INFO",
        "HUIMIN_REPLAY_RATE_PER_S": "200",
    }


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
            his.channel().queue_declare(
                HIS_QUEUE, durable=True, auto_delete=False, arguments=QUORUM
            )
            his.channel().queue_bind(HIS_QUEUE, "platform.events", "#")
            load = Load(plan.events, plan.images, plan.seed)
            results = Results(broker_url, load)
            results.declare()
            results.start()
            names = {"vhost": vhost_name, "database": db_name, "url": broker_url}
            chaos = Chaos(plan, run, procs, names, platform, f"http://127.0.0.1:{gw_port}/")
            watcher = Watcher(run, procs, logs)
            watcher.start()
            print(
                f"load: {len(load.first)} first events, {len(load.expected)} results due so "
                f"far; faults for {plan.fault_s:.0f} s",
                flush=True,
            )
            chaos.start()
            published, drain_s = publish_all(
                plan, load, Broker(broker_url, confirm=True), results, chaos
            )
            print(
                f"drained {drain_s:.1f} s after the last fault; replaying dead letters", flush=True
            )
            replay = replay_dead_letters(env, logs)
            time.sleep(5.0)  # the replayed events' results
            watcher.stopping.set()
            results.stopping.set()
            left = dead_letters_left(env)
            his_messages = consumers(broker_url, HIS_QUEUE, index=1)
            ledger = ledger_view(ledger_url, db_name)
            orders = simulator_orders(platform)
            fired = faults_fired(platform)
            evidence(env, logs, orders)
        finally:
            procs.stop()
        rows = check(
            plan,
            run,
            load,
            published,
            drain_s,
            results,
            ledger,
            orders,
            left,
            replay,
            his_messages,
            logs,
        )
    rows.insert(1, ("simulator: faults it made (answers by kind)", fired))
    print_table(rows, run.violations)
    return 1 if run.violations else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    parser.add_argument(
        "--short", action="store_true", help="a few hundred events, about a minute of faults (CI)"
    )
    parser.add_argument("--events", type=int, help="events to publish (default 300 / 2000)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--seed", type=int, default=7, help="load, faults and schedule seed")
    parser.add_argument(
        "--restart-broker",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="restart RabbitMQ once (default: only in the full run)",
    )
    parser.add_argument("--logs", type=Path, help="keep the processes' logs in this directory")
    args = parser.parse_args(argv)
    if args.workers < 2:
        parser.error("--workers: at least 2 (the point is several replicas on one ledger)")
    plan = Plan.of(args)
    print("command:", " ".join(["python", *sys.argv]), flush=True)
    try:
        if args.logs:
            args.logs.mkdir(parents=True, exist_ok=True)
            return experiment(plan, args.logs)
        with tempfile.TemporaryDirectory(prefix="huimin-chaos-") as tmp:
            return experiment(plan, Path(tmp))
    except (OSError, TimeoutError, subprocess.SubprocessError, psycopg.Error) as exc:
        # a service missing or a process that never came up: no verdict, say why
        print(f"chaos: the experiment could not run: {exc!r}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
