"""`huimin-worker` command line: one sub-command module each, settings built once here."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from pydantic import ValidationError
from pydantic_settings import SettingsError

from worker import __version__
from worker.cli import (
    demo_cmd,
    dlq_cmd,
    envelope_cmd,
    gateway_cmd,
    recheck_cmd,
    run_cmd,
    simulate_cmd,
    statement_cmd,
    trace_cmd,
)
from worker.cli.startup import (
    EXIT_CODES_EPILOG,
    EXIT_INTERRUPTED,
    failure,
    quiet_broken_pipe,
    settings_failure,
    warn_unknown_variables,
)
from worker.settings import Settings

#: each module adds its sub-commands; a command is `func(args, settings) -> exit code`
COMMAND_MODULES = [
    demo_cmd,
    dlq_cmd,
    envelope_cmd,
    gateway_cmd,
    recheck_cmd,
    run_cmd,
    simulate_cmd,
    statement_cmd,
    trace_cmd,
]
Command = Callable[[argparse.Namespace, Settings], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="huimin-worker",
        description="HIS <-> Qingyuan medical-insurance benefit platform integration worker.",
        epilog=EXIT_CODES_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Every way out of a command is an exit code and at most one line per problem on stderr
    (docs/operations.md, "Start-up failures and exit codes")."""
    try:
        return _flushed(argv)
    except BrokenPipeError:
        # a command's output, or argparse's --help, into a reader that closed early
        return quiet_broken_pipe()


def _flushed(argv: Sequence[str] | None) -> int:
    try:
        return _main(argv)  # argparse's --help and --version leave by SystemExit
    finally:
        sys.stdout.flush()  # here, not at exit: a closed pipe is then ours to handle


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    warn_unknown_variables(os.environ)
    try:
        settings = Settings()
    except (ValidationError, SettingsError) as exc:
        return settings_failure(exc)
    command: Command = args.func
    try:
        return command(args, settings)
    except BrokenPipeError:
        raise
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the one place that turns errors into exit codes
        return failure(exc, settings)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
