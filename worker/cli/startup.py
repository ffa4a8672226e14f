"""What a person sees when a command cannot start: one line on stderr and an exit code per class.

A 30-line traceback buries the one fact an operator needs (which setting, which service); it is
printed as well only at HUIMIN_LOG_LEVEL=DEBUG. Settings errors never print a traceback at all:
pydantic's text quotes every input, and an input may be the platform secret.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Mapping
from typing import TextIO

from pydantic import ValidationError
from pydantic_settings import SettingsError

from worker.errors import BrokerUnavailable, ConfigurationError, LedgerClaimed, LedgerUnavailable
from worker.logs import MaskingFilter, secrets_of
from worker.settings import Settings, error_lines, parse_error_line, unknown_variables

PROG = "huimin-worker"

# The classes of failure, each with its own exit code (docs/operations.md, `--help`).
EXIT_OK = 0
EXIT_FAILED = 1  # anything else; the line says what
EXIT_SETTINGS = 2  # a setting that does not parse or validate; argparse's usage errors too
EXIT_LEDGER = 3  # the ledger (HUIMIN_LEDGER_URL) cannot be reached
EXIT_BROKER = 4  # RabbitMQ (HUIMIN_BROKER_URL) cannot be reached by a one-shot command
EXIT_LOCAL = 5  # the OS refused a local resource: the metrics port taken, a file not writable
#: a second worker on a SQLite ledger in the same vhost: not a settings error nor an outage,
#: so a supervisor or a person can tell it apart
EXIT_LEDGER_CLAIMED = 6
EXIT_INTERRUPTED = 130  # SIGINT outside the worker (128 + 2, as a shell reports it)
EXIT_BROKEN_PIPE = 141  # the reader of stdout went away (128 + SIGPIPE, as `head` makes C tools)

EXIT_CODES_EPILOG = f"""exit codes:
  {EXIT_OK}    done
  {EXIT_FAILED}    failed, or something is left for a person (the command's own help says what)
  {EXIT_SETTINGS}    invalid settings or configuration (the line names the HUIMIN_* variable)
  {EXIT_LEDGER}    the ledger is unreachable (HUIMIN_LEDGER_URL)
  {EXIT_BROKER}    RabbitMQ is unreachable (HUIMIN_BROKER_URL); `run` keeps retrying instead
  {EXIT_LOCAL}    a local resource is unavailable: the metrics port is taken, a file is not writable
  {EXIT_LEDGER_CLAIMED}    `run`: another worker on this vhost holds the SQLite ledger claim; use
       PostgreSQL for several replicas
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)
  {EXIT_BROKEN_PIPE}  the output's reader closed the pipe early (e.g. `| head`)
"""


def complain(message: str, stream: TextIO | None = None) -> None:
    print(f"{PROG}: {message}", file=stream or sys.stderr)


def warn_unknown_variables(environ: Mapping[str, str]) -> None:
    """A misspelt HUIMIN_LEDGER_ULR is ignored by pydantic-settings, and the default ledger is
    used instead: say so, with the nearest known name. A warning, not an error: a variable of
    a newer version must not stop an older worker during a rolling deploy."""
    for name, nearest in unknown_variables(environ):
        hint = f" (did you mean {nearest}?)" if nearest else ""
        complain(f"warning: {name} is not a setting and is ignored{hint}")


def settings_failure(exc: ValidationError | SettingsError) -> int:
    """One line per invalid setting, never its value."""
    lines = error_lines(exc) if isinstance(exc, ValidationError) else [parse_error_line(str(exc))]
    for line in lines:
        complain(f"invalid setting {line}")
    return EXIT_SETTINGS


def failure(exc: Exception, settings: Settings) -> int:
    """A command's escaped error: one line naming what to fix, and its class's exit code.
    Both go through the log's masking: an error may quote a URL or a patient's data."""
    code, line = _classify(exc)
    clean = MaskingFilter(secrets_of(settings)).clean
    if settings.log_level.upper() == "DEBUG":
        print(clean("".join(traceback.format_exception(exc))), file=sys.stderr, end="")
    complain(clean(line))
    return code


def _classify(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, LedgerClaimed):  # its message is the whole line
        return EXIT_LEDGER_CLAIMED, str(exc)
    if isinstance(exc, ConfigurationError):
        return EXIT_SETTINGS, f"configuration error: {exc}"
    if isinstance(exc, LedgerUnavailable):
        return EXIT_LEDGER, (
            f"the ledger is unreachable: {_first_line(exc)}; check "
            "HUIMIN_LEDGER_URL and that the database is up"
        )
    if isinstance(exc, BrokerUnavailable):
        return EXIT_BROKER, (
            f"RabbitMQ is unreachable: {_first_line(exc)}; check "
            "HUIMIN_BROKER_URL and that RabbitMQ is up"
        )
    if isinstance(exc, OSError):
        return EXIT_LOCAL, f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    return EXIT_FAILED, (
        f"failed: {type(exc).__name__}: {_first_line(exc)} "
        "(HUIMIN_LOG_LEVEL=DEBUG prints the traceback)"
    )


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def quiet_broken_pipe() -> int:
    """The reader of stdout is gone (`trace X | head -1`): stop writing, quietly. stdout is
    pointed at /dev/null so that the interpreter's own flush at exit cannot raise again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_BROKEN_PIPE
