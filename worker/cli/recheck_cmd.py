"""`huimin-worker recheck EVENT_ID`: re-check an outcome left `unknown` (ops/recheck.py).

`reconcile` is its old name, still accepted: "reconcile" also names the worker's own status
queries and the statement reconciliation, and this command is neither.

Exit codes: 0 queued for the worker, 1 refused (the message says why) or a service is down.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from worker.clock import system_clock
from worker.errors import BrokerUnavailable, LedgerUnavailable
from worker.ops.broker import DeadLetterQueue
from worker.ops.dlq import default_operator, opened_ledger
from worker.ops.recheck import RecheckRefused, recheck
from worker.settings import Settings


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "recheck",
        aliases=["reconcile"],
        help="ask the platform again about an event whose outcome is unknown",
    )
    parser.add_argument("event_id", metavar="EVENT_ID", help="the eventId (see `trace`)")
    parser.add_argument("--operator", default=None, help="who asks (default: the OS user)")
    parser.set_defaults(func=recheck_command)


def recheck_command(args: argparse.Namespace, settings: Settings) -> int:
    operator = args.operator or default_operator()
    url = settings.broker_url.get_secret_value()
    try:
        with (
            opened_ledger(settings) as ledger,
            DeadLetterQueue(url, confirm_timeout=settings.confirm_timeout_s) as queue,
        ):
            done = recheck(ledger, queue, args.event_id, operator=operator, clock=system_clock)
    except RecheckRefused as exc:
        print(f"huimin-worker: {exc}", file=sys.stderr)
        return 1
    except (BrokerUnavailable, LedgerUnavailable) as exc:
        print(f"huimin-worker: {exc}", file=sys.stderr)
        return 1
    print(
        f"{done.event_id} ({done.event_type}) reopened and queued on {done.work_queue}: the "
        "worker asks the platform's status query first and publishes a new result"
    )
    return 0
