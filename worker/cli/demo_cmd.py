"""`huimin-worker demo`: the main job on embedded defaults (README's first command)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from worker.sandbox.demo import run_demo
from worker.settings import Settings


def register(commands: Any) -> None:
    parser = commands.add_parser("demo", help="run the whole journey with nothing to install")
    parser.set_defaults(func=demo_command)


def demo_command(args: argparse.Namespace, settings: Settings) -> int:
    # the timeline is the output; library logs would only interleave with it
    logging.basicConfig(level=logging.ERROR)
    return run_demo(sys.stdout)
