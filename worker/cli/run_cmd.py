"""`huimin-worker run`: consume HIS events until SIGTERM."""

from __future__ import annotations

import argparse
from typing import Any

from worker.app import run_worker
from worker.logs import configure_logging
from worker.settings import Settings


def register(commands: Any) -> None:
    parser = commands.add_parser("run", help="consume HIS events from RabbitMQ (the worker)")
    parser.set_defaults(func=run_command)


def run_command(args: argparse.Namespace, settings: Settings) -> int:
    configure_logging(settings)
    return run_worker(settings)
