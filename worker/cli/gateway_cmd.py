"""`huimin-worker gateway`: serve the platform's calls to the hospital (HIS00002-HIS00004)."""

from __future__ import annotations

import argparse
from typing import Any

from worker.gateway.server import build_gateway, serve
from worker.logs import configure_logging
from worker.settings import Settings

GATEWAY_HELP = "serve the platform's calls to the hospital (HIS00002/3/4) on POST /"


def register(commands: Any) -> None:
    parser = commands.add_parser("gateway", help=GATEWAY_HELP, description=GATEWAY_HELP)
    parser.add_argument("--host", help="bind address (default HUIMIN_GATEWAY_HOST, 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port (default HUIMIN_GATEWAY_PORT, 8700)")
    parser.set_defaults(func=gateway_command)


def gateway_command(args: argparse.Namespace, settings: Settings) -> int:
    configure_logging(settings)
    parts = build_gateway(settings)
    host = args.host or settings.gateway_host
    port = args.port or settings.gateway_port
    serve(parts, settings, host=host, port=port)
    return 0
