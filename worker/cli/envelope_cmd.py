"""`huimin-worker envelope seal|open|explain`: the offline conformance kit.

For an integrator chasing a signature mismatch with the live platform: everything runs on this
machine with the secret from HUIMIN_PLATFORM_SECRET (never from an argument, so it stays out of
shell history and process listings). Exit codes: 0 ok, 1 verification failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from worker.clock import system_clock
from worker.errors import EnvelopeError
from worker.protocol import envelope, explain
from worker.settings import Settings


def register(commands: Any) -> None:
    parser = commands.add_parser("envelope", help="seal, open or explain platform envelopes")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    seal = actions.add_parser("seal", help="business JSON on stdin -> signed envelope on stdout")
    seal.add_argument("--trans-code", help="seal a request with this transCode")
    seal.add_argument("--response", action="store_true", help="seal a response instead")
    seal.add_argument("--rt-code", default="0000", help="response rtCode (default 0000)")
    seal.add_argument("--rt-msg", default="交易成功", help="response rtMsg")
    seal.add_argument("--seq-id", help="platformSeqId (default: a fresh one)")
    seal.add_argument("--no-data", action="store_true", help="response without encData")
    seal.set_defaults(func=seal_command)

    for name, func, text in (
        ("open", open_command, "envelope on stdin -> verified business JSON on stdout"),
        ("explain", explain_command, "show the signing string and both signatures"),
    ):
        sub = actions.add_parser(name, help=text)
        sub.add_argument(
            "--direction",
            choices=["auto", "request", "response"],
            default="auto",
            help="request or response envelope (default: detect)",
        )
        sub.set_defaults(func=func)


def seal_command(args: argparse.Namespace, settings: Settings) -> int:
    credentials = envelope.Credentials.from_settings(settings)
    text = "" if args.no_data else sys.stdin.read().strip()
    if not args.no_data and not _is_json_object(text):
        return _fail("stdin must hold the business JSON object", code=2)
    if args.response:
        sealed = envelope.seal_response(
            args.rt_code, args.rt_msg, None if args.no_data else text, credentials=credentials
        )
    elif args.trans_code:
        sealed = envelope.seal_request(
            args.trans_code,
            text,
            credentials=credentials,
            seq_id=args.seq_id or envelope.new_seq_id(),
            at=system_clock(),
        )
    else:
        return _fail("give --trans-code CODE (request) or --response", code=2)
    print(json.dumps(sealed, ensure_ascii=False, indent=2))
    return 0


def open_command(args: argparse.Namespace, settings: Settings) -> int:
    credentials = envelope.Credentials.from_settings(settings)
    raw = sys.stdin.buffer.read()
    try:
        direction = _direction(args.direction, raw)
        if direction == "request":
            text = envelope.open_request(raw, credentials=credentials).business_text
        else:
            text = envelope.open_response(raw, credentials=credentials).business_text
    except EnvelopeError as exc:
        return _fail(f"{type(exc).__name__}: {exc}")
    print("" if text is None else text)
    return 0


def explain_command(args: argparse.Namespace, settings: Settings) -> int:
    credentials = envelope.Credentials.from_settings(settings)
    raw = sys.stdin.buffer.read()
    try:
        _direction(args.direction, raw)
        explanation = explain.explain(raw, credentials=credentials)
    except EnvelopeError as exc:
        return _fail(f"{type(exc).__name__}: {exc}")
    print(f"direction:       {explanation.direction}")
    print(f"signing string:  {explanation.signing_string}")
    print(f"expected sign:   {explanation.expected or '(cannot compute: data undecryptable)'}")
    print(f"received sign:   {explanation.received or '(none)'}")
    print(f"scheme:          {credentials.scheme}")
    print(f"verdict:         {'OK' if explanation.matches else explanation.problem}")
    return 0 if explanation.matches else 1


def _direction(wanted: str, raw: bytes) -> str:
    detected = envelope.detect_direction(raw)
    if wanted not in ("auto", detected):
        raise EnvelopeError(f"this is a {detected} envelope, not a {wanted}")
    return detected


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def _fail(message: str, code: int = 1) -> int:
    print(f"huimin-worker: {message}", file=sys.stderr)
    return code
