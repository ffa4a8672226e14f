"""`huimin-worker dlq list | show ID | replay | purge | history`: the dead-letter queue.

Exit codes: 0 done; 1 something was left for a person (an event still invalid, a replay in
doubt, an id not found) or RabbitMQ/the ledger was unreachable; 2 bad usage (purge without a
filter or without --yes). The on-call guide is docs/dlq-and-trace.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import Any

from worker.cli.trace_cmd import ledger_view_json, print_ledger_view
from worker.clock import system_clock
from worker.errors import RetryLater
from worker.logs import mask
from worker.ops import dlq
from worker.ops.dead_letters import DeadLetter, Selection
from worker.ops.render import body_text, iso, local_time, one_line, shown_json
from worker.ops.replay import ReplayLine, ReplayOptions, replay
from worker.settings import Settings

Command = Callable[[argparse.Namespace, Settings], int]
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_LEFT = ("invalid", "refused", "in_doubt")


def register(commands: Any) -> None:
    parser = commands.add_parser("dlq", help="list, show, replay or purge dead letters")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    _register_list(actions)
    _register_show(actions)
    _register_replay(actions)
    _register_purge(actions)
    _register_history(actions)


def _register_list(actions: Any) -> None:
    sub = actions.add_parser("list", help="dead letters grouped by event type and reason")
    _add_filters(sub)
    sub.add_argument("--messages", action="store_true", help="also one line per message")
    sub.add_argument("--json", action="store_true", help="machine-readable output")
    sub.set_defaults(func=list_command)


def _register_show(actions: Any) -> None:
    sub = actions.add_parser("show", help="one event: the dead letter(s) and the ledger's view")
    sub.add_argument("event_id", metavar="ID", help="the eventId (or a message key from list)")
    sub.add_argument("--reveal", action="store_true", help="do not mask personal data")
    sub.add_argument("--json", action="store_true", help="machine-readable output")
    sub.set_defaults(func=show_command)


def _register_replay(actions: Any) -> None:
    sub = actions.add_parser("replay", help="send dead letters back to their work queues")
    _add_filters(sub)
    sub.add_argument("--limit", type=_positive_int, help="replay at most N messages")
    sub.add_argument(
        "--rate", type=float, help="messages per second (default HUIMIN_REPLAY_RATE_PER_S)"
    )
    sub.add_argument("--dry-run", action="store_true", help="say what would happen, change nothing")
    sub.add_argument("--operator", help="who replays (default: the OS user), for the ledger")
    sub.set_defaults(func=replay_command)


def _register_purge(actions: Any) -> None:
    sub = actions.add_parser("purge", help="remove dead letters (needs a filter and --yes)")
    _add_filters(sub)
    sub.add_argument("--all", action="store_true", help="every dead letter (an explicit filter)")
    sub.add_argument("--yes", action="store_true", help="really remove them")
    sub.add_argument("--operator", help="who purges (default: the OS user), for the ledger")
    sub.set_defaults(func=purge_command)


def _register_history(actions: Any) -> None:
    sub = actions.add_parser("history", help="who replayed or purged what, newest first")
    sub.add_argument("--since", type=_since, help="only after: 2h, 30m, 1d or ISO-8601")
    sub.add_argument("--limit", type=_positive_int, default=50, help="at most N (default 50)")
    sub.set_defaults(func=history_command)


def _add_filters(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--type", action="append", default=[], help="event type (repeatable)")
    sub.add_argument(
        "--reason",
        action="append",
        default=[],
        help="dead-letter reason (repeatable): invalid_event, retries_exhausted, delivery_limit...",
    )
    sub.add_argument(
        "--id", action="append", default=[], help="eventId or message key (repeatable)"
    )
    sub.add_argument("--since", type=_since, help="dead-lettered after: 2h, 30m, 1d or ISO-8601")


def _selection(args: argparse.Namespace) -> Selection:
    return Selection(
        tuple(args.type),
        tuple(args.reason),
        tuple(args.id),
        args.since,
        everything=getattr(args, "all", False),
    )


def _since(text: str) -> datetime:
    return parse_since(text, system_clock())


def parse_since(text: str, now: datetime) -> datetime:
    """ "2h" / "30m" / "1d" / "45s" ago, or an ISO-8601 time (without offset: this machine's)."""
    unit = _UNITS.get(text[-1:].lower())
    if unit is not None and text[:-1].isdigit():
        return now - timedelta(seconds=int(text[:-1]) * unit)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use 2h, 30m, 1d or ISO-8601") from None
    return (parsed if parsed.tzinfo else parsed.astimezone()).astimezone(UTC)


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def _reported(command: Command) -> Command:
    """RabbitMQ or the ledger unreachable: one line on stderr, exit 1, no traceback."""

    @wraps(command)
    def run(args: argparse.Namespace, settings: Settings) -> int:
        try:
            return command(args, settings)
        except RetryLater as exc:
            print(
                f"huimin-worker: {exc} (nothing was lost: messages not handled stay in the queue)",
                file=sys.stderr,
            )
            return 1

    return run


# --- list ----------------------------------------------------------------------------------------


@_reported
def list_command(args: argparse.Namespace, settings: Settings) -> int:
    selection = _selection(args)
    if selection.since is None:
        listing = dlq.list_dead_letters(settings, selection)
    else:  # the ledger dates dead letters the worker made (RabbitMQ's carry x-death)
        with dlq.opened_ledger(settings) as ledger:
            listing = dlq.list_dead_letters(settings, selection, ledger)
    if args.json:
        print(json.dumps(_listing_json(listing), ensure_ascii=False, indent=2))
        return 0
    _print_listing(listing, args.messages)
    return 0


def _print_listing(listing: dlq.Listing, messages: bool) -> None:
    print(f"huimin.dead-letter: {listing.total} message(s), {len(listing.selected)} selected")
    if listing.selected:
        print(f"  {'COUNT':>5}  {'TYPE':<28} REASON")
    for group in listing.groups:
        print(f"  {group.count:>5}  {group.event_type:<28} {group.reason}")
    if messages:
        print()
        for letter in listing.selected:
            print(
                mask(
                    f"  {letter.label}  {letter.event_type}  {letter.reason}  attempts "
                    f"{_n(letter.attempts)}  replays {letter.replays}  redeliveries "
                    f"{letter.redeliveries}  key {letter.key}  {one_line(letter.error, 80)}"
                )
            )


def _n(value: int | None) -> str:
    return "?" if value is None else str(value)


def letter_json(letter: DeadLetter, reveal: bool = False) -> dict[str, Any]:
    return shown_json(
        {
            "eventId": letter.event_id,
            "key": letter.key,
            "type": letter.event_type,
            "reason": letter.reason,
            "error": letter.error,
            "attempts": letter.attempts,
            "routingKey": letter.routing_key,
            "workQueue": letter.work_queue,
            "replays": letter.replays,
            "redeliveries": letter.redeliveries,
            "deadLetteredAt": iso(letter.dead_lettered_at),
            "fingerprint": letter.fingerprint,
        },
        reveal,
    )


def _listing_json(listing: dlq.Listing) -> dict[str, Any]:
    return {
        "queue": "huimin.dead-letter",
        "total": listing.total,
        "selected": len(listing.selected),
        "groups": [
            {"type": g.event_type, "reason": g.reason, "count": g.count} for g in listing.groups
        ],
        "messages": [letter_json(letter) for letter in listing.selected],
    }


# --- show ----------------------------------------------------------------------------------------


@_reported
def show_command(args: argparse.Namespace, settings: Settings) -> int:
    with dlq.opened_ledger(settings) as ledger:
        report = dlq.show(settings, ledger, args.event_id)
    if args.json:
        print(json.dumps(_show_json(report, args.reveal), ensure_ascii=False, indent=2))
    else:
        _print_show(report, args.reveal)
    return 0 if report.letters or report.ledger.record else 1


def _print_show(report: dlq.ShowReport, reveal: bool) -> None:
    shown = report.event_id if reveal else mask(report.event_id)
    if not report.letters:
        print(f"{shown}: not in huimin.dead-letter")
    record = report.ledger.record
    for number, letter in enumerate(report.letters, 1):
        _print_letter(
            letter,
            f"{number} of {len(report.letters)}",
            reveal,
            None if record is None else record.updated_at,
        )
    print_ledger_view(report.ledger, reveal)


def _print_letter(
    letter: DeadLetter, number: str, reveal: bool, ledger_time: datetime | None
) -> None:
    say = (lambda text: text) if reveal else mask
    print(f"dead letter {number} for {say(letter.label)} (key {letter.key})")
    print(f"  type:           {letter.event_type}")
    print(f"  reason:         {letter.reason}")
    print(f"  last error:     {say(letter.error) or '-'}")
    print(f"  attempts:       {_n(letter.attempts)}")
    print(f"  routing key:    {letter.routing_key or '-'} (work queue {letter.work_queue or '-'})")
    print(f"  replays so far: {letter.replays}   redeliveries: {letter.redeliveries}")
    when = (
        f"{local_time(letter.dead_lettered_at)} (RabbitMQ x-death)"
        if letter.dead_lettered_at
        else f"{local_time(ledger_time)} (the ledger's last change of the event)"
    )
    print(f"  dead-lettered:  {when}")
    print("  event:")
    for line in body_text(letter.message.body, reveal).splitlines():
        print(f"    {line}")


def _show_json(report: dlq.ShowReport, reveal: bool) -> dict[str, Any]:
    letters = [{**letter_json(x, reveal), "event": _body_json(x, reveal)} for x in report.letters]
    return {
        "eventId": shown_json(report.event_id, reveal),
        "deadLetters": letters,
        "ledger": ledger_view_json(report.ledger, reveal),
    }


def _body_json(letter: DeadLetter, reveal: bool) -> Any:
    try:
        return shown_json(json.loads(letter.message.body), reveal)
    except (ValueError, UnicodeDecodeError):
        return body_text(letter.message.body, reveal)


# --- replay --------------------------------------------------------------------------------------


@_reported
def replay_command(args: argparse.Namespace, settings: Settings) -> int:
    options = ReplayOptions(
        _selection(args),
        operator=args.operator or dlq.default_operator(),
        rate_per_s=args.rate or settings.replay_rate_per_s,
        limit=args.limit,
        dry_run=args.dry_run,
    )
    with dlq.opened_ledger(settings) as ledger:
        lines = replay(settings, ledger, options, clock=system_clock)
    for line in lines:
        print(_replay_text(line))
    print(_replay_summary(lines, args.dry_run))
    return 1 if any(line.status in _LEFT for line in lines) else 0


def _replay_text(line: ReplayLine) -> str:
    letter = line.letter
    where = f" -> {line.work_queue}" if line.work_queue else ""
    return mask(
        f"{line.status:<17} {letter.label}  {letter.event_type}  ({letter.reason})"
        f"{where}: {line.detail}"
    )


def _replay_summary(lines: list[ReplayLine], dry_run: bool) -> str:
    counts: dict[str, int] = {}
    for line in lines:
        counts[line.status] = counts.get(line.status, 0) + 1
    parts = ", ".join(f"{status} {count}" for status, count in sorted(counts.items()))
    prefix = "dry run, nothing changed: " if dry_run else ""
    return f"{prefix}{len(lines)} message(s) considered" + (f": {parts}" if parts else "")


# --- purge ---------------------------------------------------------------------------------------


@_reported
def purge_command(args: argparse.Namespace, settings: Settings) -> int:
    selection = _selection(args)
    if not selection.explicit:
        print(
            "huimin-worker: purge needs a filter (--type, --reason, --id, --since) or --all",
            file=sys.stderr,
        )
        return 2
    operator = args.operator or dlq.default_operator()
    with dlq.opened_ledger(settings) as ledger:
        purged = dlq.purge(
            settings, ledger, selection, operator=operator, confirmed=args.yes, clock=system_clock
        )
    for item in purged:
        print(_purge_text(item, args.yes))
    if not args.yes:
        print(
            f"{len(purged)} message(s) would be removed; nothing done: add --yes", file=sys.stderr
        )
        return 2
    print(f"{len(purged)} message(s) removed by {operator}")
    return 0


def _purge_text(item: dlq.Purged, done: bool) -> str:
    letter = item.letter
    verb = "purged" if done else "would purge"
    audit = " (ledger journal: purged)" if item.journaled else ""
    return mask(
        f"{verb} {letter.label}  {letter.event_type}  {letter.reason}  attempts "
        f"{_n(letter.attempts)}  key {letter.key}{audit}"
    )


# --- history -------------------------------------------------------------------------------------


@_reported
def history_command(args: argparse.Namespace, settings: Settings) -> int:
    with dlq.opened_ledger(settings) as ledger:
        entries = dlq.history(ledger, args.since, args.limit)
    for entry in entries:
        detail = entry.detail
        print(
            mask(
                f"{local_time(entry.at)}  {entry.kind:<24} {entry.event_id}  by "
                f"{detail.get('operator', '?')}  ({detail.get('reason', '-')})"
            )
        )
    if not entries:
        print("no replays or purges recorded")
    return 0
