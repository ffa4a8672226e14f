"""`huimin-worker statement --date YYYYMMDD`: reconcile one day's statement with the ledger.

The same StatementJob as the worker's daily run, so the same date is never reconciled twice:
a second run (from here or the worker) finds the stored result, publishes nothing new and
leaves the report as it was. Only a final statement is reconciled: a date is refused until
the next day's HUIMIN_STATEMENT_AFTER, China time (today, the future, and yesterday before
that time), since its stored result would be the date's one result for good.

Exit codes: 0 clean, 1 discrepancies remain, 2 the date's statement is not final yet (nothing
done), 3 could not reconcile or publish (see the message; the date was not recorded unless it
says so).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from datetime import time as time_of_day
from pathlib import Path
from typing import Any

import httpx

from worker.broker.amqp import AmqpTransport
from worker.broker.base import Transport
from worker.broker.messages import Outgoing
from worker.broker.topology import RESULTS_EXCHANGE, Exchange, Topology
from worker.clock import Clock, system_clock
from worker.errors import BrokerUnavailable, HuiminError
from worker.ledger import open_ledger
from worker.platform.client import PlatformClient
from worker.platform.http import build_download_transport
from worker.settings import Settings
from worker.statement.job import StatementJob, StatementRun, final_at

EXIT_CLEAN, EXIT_DISCREPANCIES, EXIT_NOT_FINAL, EXIT_FAILED = 0, 1, 2, 3
_RESULTS_ONLY = Topology((Exchange(RESULTS_EXCHANGE),), ())


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "statement",
        help="reconcile one day's platform statement (HOS00013) with the ledger",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--date",
        required=True,
        type=_settle_date,
        metavar="YYYYMMDD",
        help="the settlement day (China time)",
    )
    parser.add_argument(
        "--no-publish",
        action="store_true",
        help="record the run and write the report, but never publish the "
        "statement.reconciled result",
    )
    parser.add_argument(
        "--report-dir",
        type=Path,
        default=None,
        help="where statement-YYYYMMDD.csv goes (default HUIMIN_REPORT_DIR)",
    )
    parser.set_defaults(func=statement_command)


def _settle_date(text: str) -> date:
    try:
        return datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date as YYYYMMDD") from None


def statement_command(
    args: argparse.Namespace, settings: Settings, clock: Clock = system_clock
) -> int:
    if args.report_dir is not None:
        settings = settings.model_copy(update={"report_dir": args.report_dir})
    day = f"{args.date:%Y%m%d}"
    final = final_at(args.date, time_of_day.fromisoformat(settings.statement_after))
    if clock() < final:
        _complain(
            f"{day}'s statement is not final until {final:%Y-%m-%d %H:%M} China time "
            "(the next day after HUIMIN_STATEMENT_AFTER); nothing done: reconciling it "
            "now would store a partial day as its result"
        )
        return EXIT_NOT_FINAL
    with _statement_job(settings, clock) as job:
        try:
            run = job.run(args.date)
        except HuiminError as exc:
            _complain(f"{day} not reconciled (nothing recorded): {exc}")
            return EXIT_FAILED
        _print(run)
        try:
            _deliver(job, run, settings, publish=not args.no_publish)
        except BrokerUnavailable as exc:
            _complain(
                f"{day} reconciled and stored, but its result was not published: {exc}; "
                "a running worker's sweeper publishes it"
            )
            return EXIT_FAILED
    return EXIT_DISCREPANCIES if run.discrepancies else EXIT_CLEAN


def _complain(message: str) -> None:
    print(f"huimin-worker statement: {message}", file=sys.stderr)


@contextmanager
def _statement_job(settings: Settings, clock: Clock) -> Iterator[StatementJob]:
    ledger = open_ledger(settings.ledger_url.get_secret_value())
    try:
        ledger.migrate()
        with PlatformClient(settings) as client, _download_client(settings) as http:
            yield StatementJob(settings, ledger, client, clock=clock, http=http)
    finally:
        ledger.close()


def _download_client(settings: Settings) -> httpx.Client:
    timeout = httpx.Timeout(
        connect=settings.connect_timeout_s,
        read=settings.read_timeout_s,
        write=settings.write_timeout_s,
        pool=settings.connect_timeout_s,
    )
    return httpx.Client(transport=build_download_transport(settings), timeout=timeout)


def _deliver(job: StatementJob, run: StatementRun, settings: Settings, publish: bool) -> None:
    if run.published:
        print("result: already published earlier; nothing published now")
    elif not publish:
        job.withhold(run, "huimin-worker statement --no-publish")
        print("result: not published (--no-publish); it never will be")
    else:
        _publish(job, run, settings)


def _publish(job: StatementJob, run: StatementRun, settings: Settings) -> None:
    disposition = job.disposition(run)
    assert disposition is not None and disposition.on_confirmed is not None
    transport = AmqpTransport(settings.broker_url.get_secret_value())
    publish_confirmed(transport, disposition.messages, timeout_s=settings.confirm_timeout_s)
    disposition.on_confirmed()
    print(f"result: published {run.result.routing_key} (resultId {run.result.resultId})")


def _print(run: StatementRun) -> None:
    state = "reconciled now" if run.fresh else "already reconciled"
    print(f"{run.result.rtMsg} ({state})")
    for item in run.discrepancies:
        print(f"  {item['kind']:<20} {item['orderId']}  {item['note']}")
    print(f"report: {run.report}")


class _Confirms:
    """Publisher confirms still awaited; a nack marks the whole batch failed."""

    def __init__(self) -> None:
        self.waiting: set[int] = set()
        self.nacked = False

    def __call__(self, seq: int, multiple: bool, ok: bool) -> None:
        self.waiting -= {s for s in self.waiting if s <= seq} if multiple else {seq}
        self.nacked |= not ok


def publish_confirmed(
    transport: Transport, messages: Sequence[Outgoing], *, timeout_s: float
) -> None:
    """Publish on a short-lived connection and wait for every confirm (outside the engine).
    Raises BrokerUnavailable when RabbitMQ is down, nacks, or stays silent."""
    confirms = _Confirms()
    transport.connect()
    try:
        transport.on_confirm(confirms)
        transport.declare(_RESULTS_ONLY)  # only the exchange: queues are the worker's to shape
        confirms.waiting |= {transport.publish(message) for message in messages}
        deadline = time.monotonic() + timeout_s
        while confirms.waiting and time.monotonic() < deadline:
            transport.poll(0.05)
    finally:
        transport.close()
    if confirms.waiting or confirms.nacked:
        outcome = "nacked" if confirms.nacked else f"no confirm within {timeout_s:g} s"
        raise BrokerUnavailable(f"RabbitMQ did not take the statement result ({outcome})")
