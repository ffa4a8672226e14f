"""`huimin-worker` command line: one sub-command module each, settings built once here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from pydantic import ValidationError

from ..errors import ConfigurationError
from ..settings import Settings
from . import (
    demo_cmd,
    dlq_cmd,
    envelope_cmd,
    reconcile_cmd,
    run_cmd,
    simulate_cmd,
    statement_cmd,
    trace_cmd,
)

#: each module adds its sub-commands; a command is `func(args, settings) -> exit code`
COMMAND_MODULES = [demo_cmd, dlq_cmd, envelope_cmd, reconcile_cmd, run_cmd, simulate_cmd,
                   statement_cmd, trace_cmd]
Command = Callable[[argparse.Namespace, Settings], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="huimin-worker",
        description="HIS <-> Qingyuan medical-insurance benefit platform integration worker.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"huimin-worker: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    command: Command = args.func
    try:
        return command(args, settings)
    except ConfigurationError as exc:
        print(f"huimin-worker: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
