"""`huimin-worker envelope seal|open|explain`: the offline kit round-trips in all directions."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from worker.settings import SANDBOX_SECRET

BUSINESS = {"orderId": "ORD20261125000001", "amt": 12345, "userName": "测试"}


def kit(
    *args: str, stdin: str | bytes, secret: str = SANDBOX_SECRET
) -> subprocess.CompletedProcess:
    env = {**os.environ, "HUIMIN_PLATFORM_SECRET": secret, "HUIMIN_PLATFORM_ID": "HOSP0001"}
    data = stdin.encode() if isinstance(stdin, str) else stdin
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", "envelope", *args],
        input=data,
        capture_output=True,
        env=env,
        timeout=60,
    )


# hospital->platform request, platform->hospital request, and the two kinds of answer
DIRECTIONS = [
    ("seal", "--trans-code", "HOS00003"),
    ("seal", "--trans-code", "HIS00004"),
    ("seal", "--response", "--rt-code", "0000"),
    ("seal", "--response", "--rt-code", "1000", "--rt-msg", "业务失败"),
]


@pytest.mark.parametrize(
    "seal_args", DIRECTIONS, ids=["HOS-request", "HIS-request", "response", "rejection"]
)
def test_seal_then_open_round_trips(seal_args: tuple[str, ...]) -> None:
    text = json.dumps(BUSINESS, ensure_ascii=False)
    sealed = kit(*seal_args, stdin=text)
    assert sealed.returncode == 0, sealed.stderr
    opened = kit("open", stdin=sealed.stdout)
    assert opened.returncode == 0, opened.stderr
    assert json.loads(opened.stdout) == BUSINESS
    explained = kit("explain", stdin=sealed.stdout)
    assert explained.returncode == 0 and b"verdict:         OK" in explained.stdout
    assert SANDBOX_SECRET.encode() not in explained.stdout


def test_open_rejects_a_tampered_envelope_with_a_non_zero_exit() -> None:
    sealed = json.loads(kit("seal", "--trans-code", "HOS00003", stdin=json.dumps(BUSINESS)).stdout)
    sealed["platformSeqId"] = "TAMPERED000000000001"
    opened = kit("open", stdin=json.dumps(sealed))
    assert opened.returncode == 1
    assert b"SignatureMismatch" in opened.stderr and opened.stdout == b""
    explained = kit("explain", stdin=json.dumps(sealed))
    assert explained.returncode == 1 and b"signature mismatch" in explained.stdout


def test_open_with_the_wrong_secret_fails_clearly() -> None:
    sealed = kit("seal", "--trans-code", "HOS00003", stdin=json.dumps(BUSINESS)).stdout
    opened = kit("open", stdin=sealed, secret="FFFFFFFFFFFFFFFF" + SANDBOX_SECRET[16:])
    assert opened.returncode == 1 and b"BadPadding" in opened.stderr


def test_direction_is_checked_when_given() -> None:
    sealed = kit("seal", "--response", stdin=json.dumps(BUSINESS)).stdout
    assert kit("open", "--direction", "request", stdin=sealed).returncode == 1
    assert kit("open", "--direction", "response", stdin=sealed).returncode == 0


def test_seal_refuses_input_that_is_not_a_json_object() -> None:
    result = kit("seal", "--trans-code", "HOS00003", stdin="not json")
    assert result.returncode == 2 and b"JSON object" in result.stderr
