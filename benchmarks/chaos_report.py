"""benchmarks/chaos.py's verdict: the ledger, the platform and the results compared, the table."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from chaos_faults import lines_per_s  # noqa: E402
from chaos_load import Load  # noqa: E402
from chaos_services import Plan, Results, Run  # noqa: E402

STORM_LINES_PER_S = 60.0
STORM_DELIVERIES = 10
MIN_RETRY_DELAY_S = 1.0  # the first of worker_env's HUIMIN_RETRY_DELAYS_S


def dead_letters_left(env: dict[str, str]) -> Counter[str]:
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", "dlq", "list", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    listing = json.loads(done.stdout)
    left: Counter[str] = Counter()
    for group in listing["groups"]:
        left[group["reason"]] += group["count"]
    return left


def ledger_view(ledger_url: str, database_name: str) -> dict[str, Any]:
    with psycopg.connect(ledger_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT event_id, outcome, result, delivery_count, "
            "EXTRACT(EPOCH FROM updated_at - received_at) FROM huimin_events"
        ).fetchall()
        size = conn.execute("SELECT pg_database_size(%s)", (database_name,)).fetchone()
    return {
        "events": {r[0]: (r[1], r[2] or {}) for r in rows},
        "deliveries": {r[0]: (r[3], float(r[4] or 0)) for r in rows},
        "bytes": size[0] if size else 0,
    }


def storms(deliveries: dict[str, tuple[int, float]]) -> list[str]:
    """Events delivered faster than the backoff allows: more than STORM_DELIVERIES plus one a
    second of the event's life (the shortest retry delay is 1 s; a hot loop is hundreds)."""
    return [
        f"{event_id}: {count} deliveries in {life:.0f} s"
        for event_id, (count, life) in deliveries.items()
        if count > STORM_DELIVERIES + life / MIN_RETRY_DELAY_S
    ]


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


def faults_fired(platform: str) -> str:
    """The simulator's own count of the faults it made (rtCode 9999 included), all transCodes."""
    stats = httpx.get(f"{platform}/admin/stats", timeout=30).json()["requests"]
    fired: Counter[str] = Counter()
    for codes in stats.values():
        fired.update({k: int(v) for k, v in codes.items() if not k.isdigit() or k == "9999"})
    return ", ".join(f"{k} {n}" for k, n in sorted(fired.items())) or "none"


def disagreements(
    load: Load, ledger: dict[str, Any], orders: dict[str, dict[str, Any]], unknown: list[str]
) -> list[str]:
    """A money order the ledger and the platform see differently: succeeded with a status the
    platform does not have, or failed while the platform holds the order."""
    found = []
    for order_id, money in load.money.items():
        outcome, result = ledger["events"].get(money.event_id, (None, {}))
        at_platform = orders.get(order_id)
        if outcome == "unknown":
            unknown.append(
                f"{money.kind} {order_id}: platform says "
                f"{at_platform and at_platform['orderStatus']}"
            )
            continue
        platform_status = at_platform and at_platform["orderStatus"]
        if outcome == "succeeded" and result.get("orderStatus") != platform_status:
            found.append(
                f"{money.kind} {order_id}: ledger succeeded "
                f"{result.get('orderStatus')}, platform {platform_status}"
            )
        elif outcome == "failed" and platform_status is not None:
            found.append(
                f"{money.kind} {order_id}: ledger failed "
                f"({result.get('rtMsg')}), platform {platform_status}"
            )
        elif outcome is None:
            found.append(f"{money.kind} {order_id}: not finished in the ledger")
    return found


# --- the table --------------------------------------------------------------------------------


def check(
    plan: Plan,
    run: Run,
    load: Load,
    published: set[str],
    drain_s: float,
    results: Results,
    ledger: dict[str, Any],
    orders: dict[str, dict[str, Any]],
    left: Counter[str],
    replay: tuple[int, str],
    his_messages: int,
    logs: Path,
) -> list[tuple[str, str]]:
    """The table's rows; every violation is added to run.violations."""
    bad = run.violations
    answered = results.snapshot()
    one = [e for e in load.expected if len(answered.get(e, ())) == 1]
    missing = [e for e in load.expected if e not in answered]
    several = [e for e in load.expected if len(answered.get(e, ())) > 1]
    strangers = [e for e in answered if e not in load.expected]
    if missing or several or strangers:
        bad.append(
            f"results: {len(missing)} event(s) without one, {len(several)} with several "
            f"resultIds, {len(strangers)} unexpected: {(missing + several + strangers)[:5]}"
        )
    outcomes = Counter(results.last[e]["outcome"] for e in load.expected if e in results.last)
    why = Counter(
        f"{results.last[e]['type']}: {results.last[e].get('rtMsg')}"[:90]
        for e in load.expected
        if results.last.get(e, {}).get("outcome") == "unknown"
    )
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
    bugs = {
        r: n for r, n in left.items() if r in ("handler_error", "unpublishable", "delivery_limit")
    }
    if bugs:
        bad.append(f"dead letters that mean a bug or a loop: {bugs}")
    if len(run.notifications) != plan.notifications or his_messages != plan.notifications:
        bad.append(
            f"gateway: {len(run.notifications)} of {plan.notifications} notifications "
            f"answered 0000, {his_messages} message(s) reached the HIS"
        )
    counts = [count for count, _ in ledger["deliveries"].values()]
    worst, mean = max(counts, default=0), sum(counts) / max(1, len(counts))
    stormy = storms(ledger["deliveries"])
    if stormy:
        bad.append(
            f"requeue storm: {len(stormy)} event(s) delivered faster than the backoff "
            f"allows: {stormy[:3]}"
        )
    noticed, lasted = pauses(logs)
    fault_rows = []
    for fault in run.faults:
        rate = lines_per_s(run, fault.start, fault.end)
        fault_rows.append((f"  {fault.name} {fault.note}".rstrip(), f"{rate:.1f} log lines/s"))
        if rate > STORM_LINES_PER_S:
            bad.append(
                f"requeue storm: {rate:.0f} log lines/s during '{fault.name}' "
                f"(limit {STORM_LINES_PER_S:.0f})"
            )
    kinds = Counter(load.expected.values())
    rows = [
        (
            "events published (distinct eventIds)",
            f"{len(published)}"
            f" + {sum(1 for p in load.first if not p.event_id)} without a readable id",
        ),
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
        (
            "gateway HIS00004 notifications -> HIS messages",
            f"{len(run.notifications)} -> {his_messages}",
        ),
        ("time to drain after the last fault", f"{drain_s:.1f} s"),
        (
            "RabbitMQ restart: consumers back after",
            _seconds(run.broker_recovery_s) if plan.restart_broker else "not restarted",
        ),
        (
            "ledger outage: pauses (WARNING lines) / resumed after",
            f"{noticed} / " + (", ".join(f"{x:.1f} s" for x in lasted) or "-"),
        ),
        ("SIGTERMed worker exit code", f"{run.term_exit}"),
        ("workers' peak memory (VmHWM, largest process)", f"{run.peak_kib / 1024:.0f} MiB"),
        ("ledger size (pg_database_size)", f"{ledger['bytes'] / 1024 / 1024:.1f} MiB"),
        (
            "deliveries per event (ledger delivery_count)",
            f"mean {mean:.2f}, max {worst}; storm: "
            f"over {STORM_DELIVERIES} + 1 per second of the event's life",
        ),
        (f"log lines/s per fault (storm above {STORM_LINES_PER_S:.0f})", ""),
        *fault_rows,
    ]
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
    print(
        "PASS: nothing lost, nothing charged twice"
        if not violations
        else f"FAIL: {len(violations)} violation(s)"
    )
