"""`huimin-worker simulate`: the platform sandbox; `simulate notify`: the platform calling us.

    huimin-worker simulate --port 8600 [--host 127.0.0.1] [--faults FILE] [--patients FILE]
                           [--seed N] [--pending-queries N] [--access-log]
    huimin-worker simulate notify --url URL --trans-code HIS00004 [--data FILE|-]

The simulator signs with HUIMIN_PLATFORM_ID / HUIMIN_PLATFORM_SECRET (the sandbox pair by
default), so a worker with the same settings talks to it unchanged. Exit codes: 0 ok,
1 the call failed or was refused, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
from pathlib import Path
from typing import Any

import httpx

from worker.clock import system_clock
from worker.errors import EnvelopeError, ValidationFailed
from worker.logs import configure_logging
from worker.protocol import envelope
from worker.settings import SANDBOX_SECRET, Settings

SIMULATE_HELP = "run the platform simulator (sandbox), or send it a platform => hospital call"


def register(commands: Any) -> None:
    parser = commands.add_parser("simulate", help=SIMULATE_HELP, description=SIMULATE_HELP)
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default loopback)")
    parser.add_argument("--port", type=int, default=8600, help="port (default 8600)")
    parser.add_argument("--faults", type=Path, help="fault plan JSON (docs/simulator.md)")
    parser.add_argument("--patients", type=Path, help="patients JSON (docs/simulator.md)")
    parser.add_argument("--seed", type=int, help="seed of the fault decisions")
    parser.add_argument(
        "--pending-queries",
        type=int,
        default=0,
        metavar="N",
        help="orders report 01/11/31 for N status queries (default 0)",
    )
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.set_defaults(func=simulate_command)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    _register_notify(actions)


def _register_notify(actions: Any) -> None:
    notify = actions.add_parser("notify", help="send a signed HIS* call to a hospital URL")
    notify.add_argument("--url", required=True, help="the hospital's endpoint")
    notify.add_argument("--trans-code", required=True, choices=["HIS00002", "HIS00003", "HIS00004"])
    notify.add_argument(
        "--data", help="business JSON file, or - for stdin (default: the shared example)"
    )
    notify.add_argument(
        "--no-validate",
        action="store_true",
        help="send the data even if it breaks the spec (test the hospital)",
    )
    notify.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    notify.set_defaults(func=notify_command)


def simulate_command(args: argparse.Namespace, settings: Settings) -> int:
    from worker.sandbox.simulator import faults, records, server

    try:
        rules, seed = faults.parse_plan(_read_json(args.faults)) if args.faults else ([], None)
        patients, default = (
            records.parse_patients(_read_json(args.patients))
            if args.patients
            else (None, "unsigned")
        )
    except (OSError, ValueError) as exc:
        return _fail(f"cannot load the simulator configuration: {exc}", code=2)
    configure_logging(settings)
    if args.host not in ("127.0.0.1", "localhost", "::1") and _is_sandbox(settings):
        print(
            "huimin-worker: warning: serving the public sandbox key on a non-loopback address",
            file=sys.stderr,
        )
    handle = server.build(
        settings=settings,
        patients=patients,
        default_status=default,
        faults=rules,
        seed=args.seed if args.seed is not None else seed,
        pending_queries=args.pending_queries,
    )
    server.serve(
        handle,
        host=args.host,
        port=args.port,
        log_level=settings.log_level.lower(),
        access_log=args.access_log,
        own_logging=False,
    )
    return 0


def notify_command(args: argparse.Namespace, settings: Settings) -> int:
    from worker.sandbox.simulator.notify import HospitalUnavailable, check_business, notify

    try:
        business = _business(args)
        if not args.no_validate:
            check_business(args.trans_code, business)
    except (OSError, ValueError) as exc:  # ValidationFailed is not a ValueError
        return _fail(f"bad --data: {exc}", code=2)
    except ValidationFailed as exc:
        return _fail(f"{exc} (--no-validate sends it anyway)", code=2)
    credentials = envelope.Credentials.from_settings(settings)
    with httpx.Client(timeout=args.timeout, verify=_verify(settings)) as client:
        try:
            answer = notify(
                args.url,
                args.trans_code,
                business,
                credentials=credentials,
                client=client,
                clock=system_clock,
            )
        except EnvelopeError as exc:
            return _fail(f"the hospital's answer does not verify: {type(exc).__name__}: {exc}")
        except HospitalUnavailable as exc:
            return _fail(str(exc))
    print(f"rtCode={answer.rt_code} rtMsg={answer.rt_msg}", file=sys.stderr)
    print(answer.business_text or "")
    return 0 if answer.rt_code == "0000" else 1


def _business(args: argparse.Namespace) -> dict[str, Any]:
    if args.data is None:
        from worker.protocol.models.examples import EXAMPLES

        return EXAMPLES[args.trans_code].copy().request
    text = sys.stdin.read() if args.data == "-" else Path(args.data).read_text("utf-8")
    business = json.loads(text)
    if not isinstance(business, dict):
        raise ValueError("the business data must be a JSON object")
    return business


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text("utf-8"))


def _is_sandbox(settings: Settings) -> bool:
    return settings.platform_secret.get_secret_value() == SANDBOX_SECRET


def _verify(settings: Settings) -> bool | ssl.SSLContext:
    if settings.tls_verify and settings.tls_ca_bundle:
        return ssl.create_default_context(cafile=settings.tls_ca_bundle)
    return settings.tls_verify


def _fail(message: str, code: int = 1) -> int:
    print(f"huimin-worker: {message}", file=sys.stderr)
    return code
