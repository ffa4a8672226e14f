"""`huimin-worker reconcile EVENT_ID`: re-check an outcome left `unknown` (ops/recheck.py).

Exit codes: 0 queued for the worker, 1 refused (the message says why) or a service is down.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..clock import system_clock
from ..errors import BrokerUnavailable, LedgerUnavailable
from ..ops.broker import DeadLetterQueue
from ..ops.dlq import default_operator, opened_ledger
from ..ops.recheck import RecheckRefused, recheck
from ..settings import Settings


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "reconcile", help="ask the platform again about an event whose outcome is unknown"
    )
    parser.add_argument("event_id", metavar="EVENT_ID", help="the eventId (see `trace`)")
    parser.add_argument("--operator", default=None, help="who asks (default: the OS user)")
    parser.set_defaults(func=reconcile_command)


def reconcile_command(args: argparse.Namespace, settings: Settings) -> int:
    operator = args.operator or default_operator()
    url = settings.broker_url.get_secret_value()
    try:
        with opened_ledger(settings) as ledger, DeadLetterQueue(
            url, confirm_timeout=settings.confirm_timeout_s
        ) as queue:
            done = recheck(ledger, queue, args.event_id, operator=operator, clock=system_clock)
    except RecheckRefused as exc:
        print(f"huimin-worker: {exc}", file=sys.stderr)
        return 1
    except (BrokerUnavailable, LedgerUnavailable) as exc:
        print(f"huimin-worker: {exc}", file=sys.stderr)
        return 1
    print(f"{done.event_id} ({done.event_type}) reopened and queued on {done.work_queue}: the "
          "worker asks the platform's status query first and publishes a new result")
    return 0
