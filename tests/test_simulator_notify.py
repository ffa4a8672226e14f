"""The platform calling the hospital: `notify` and `huimin-worker simulate notify`."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from worker.cli import main
from worker.clock import system_clock
from worker.errors import SignatureMismatch
from worker.protocol import envelope
from worker.protocol.models.examples import EXAMPLES
from worker.sandbox.simulator.notify import HospitalUnavailable, notify
from worker.sandbox.simulator.server import serving_in_thread

from .simulator_helpers import SANDBOX

# Same SM4 key (first 16 characters), different secret: the answer decrypts, and only the
# signature gives the forgery away.
IMPOSTOR = envelope.Credentials(
    SANDBOX.platform_id, SecretStr(SANDBOX.secret.get_secret_value()[:16] + "F" * 16)
)


class TinyHospital:
    """An HIS endpoint: verifies the platform's request, answers signed (or forged)."""

    def __init__(self, answer_with: envelope.Credentials) -> None:
        self.answer_with = answer_with
        self.received: list[envelope.OpenedRequest] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return  # uvicorn then runs without lifespan events
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = envelope.open_request(body, credentials=SANDBOX, now=system_clock())
        self.received.append(request)
        sealed = envelope.seal_response(
            "0000", "成功", self.answer(request), credentials=self.answer_with
        )
        payload = json.dumps(sealed, ensure_ascii=False).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    @staticmethod
    def answer(request: envelope.OpenedRequest) -> dict[str, Any]:
        if request.trans_code == "HIS00003":
            return {"treatmentList": []}
        if request.trans_code == "HIS00002":
            return {"status": "0000", "msg": "received"}
        return {"treatmentSerialNo": request.business["treatmentSerialNo"]}


@pytest.fixture(scope="module")
def hospital() -> Iterator[tuple[str, TinyHospital]]:
    app = TinyHospital(SANDBOX)
    with serving_in_thread(app) as base_url:
        yield base_url + "/his", app


@pytest.fixture(scope="module")
def forger() -> Iterator[str]:
    with serving_in_thread(TinyHospital(IMPOSTOR)) as base_url:
        yield base_url + "/his"


def send(url: str, trans_code: str) -> envelope.OpenedResponse:
    with httpx.Client(timeout=5) as client:
        return notify(
            url,
            trans_code,
            EXAMPLES[trans_code].copy().request,
            credentials=SANDBOX,
            client=client,
            clock=system_clock,
        )


@pytest.mark.parametrize("trans_code", ["HIS00002", "HIS00003", "HIS00004"])
def test_notify_round_trip(hospital: tuple[str, TinyHospital], trans_code: str) -> None:
    url, app = hospital
    answer = send(url, trans_code)
    assert answer.rt_code == "0000" and answer.business is not None
    assert app.received[-1].trans_code == trans_code


def test_a_forged_answer_is_rejected(forger: str) -> None:
    with pytest.raises(SignatureMismatch):
        send(forger, "HIS00004")


def test_an_unreachable_hospital_is_hospital_unavailable() -> None:
    with pytest.raises(HospitalUnavailable):
        send("http://127.0.0.1:9/his", "HIS00004")


def test_cli_prints_the_decrypted_answer(
    hospital: tuple[str, TinyHospital], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = hospital
    code = main(["simulate", "notify", "--url", url, "--trans-code", "HIS00004"])
    out = capsys.readouterr()
    assert code == 0 and "rtCode=0000" in out.err
    serial = EXAMPLES["HIS00004"].request["treatmentSerialNo"]
    assert json.loads(out.out) == {"treatmentSerialNo": serial}


def test_cli_reads_data_from_stdin(
    hospital: tuple[str, TinyHospital], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, app = hospital
    business = {**EXAMPLES["HIS00004"].copy().request, "treatmentSerialNo": "ZY-FROM-STDIN"}
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(business)))
    assert (
        main(["simulate", "notify", "--url", url, "--trans-code", "HIS00004", "--data", "-"]) == 0
    )
    assert app.received[-1].business["treatmentSerialNo"] == "ZY-FROM-STDIN"


def test_cli_fails_clearly_on_a_forged_answer(
    forger: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "notify", "--url", forger, "--trans-code", "HIS00004"]) == 1
    assert "does not verify" in capsys.readouterr().err


def test_cli_refuses_off_spec_data(
    hospital: tuple[str, TinyHospital],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, _ = hospital
    monkeypatch.setattr("sys.stdin", io.StringIO('{"idNo": "1"}'))
    assert (
        main(["simulate", "notify", "--url", url, "--trans-code", "HIS00004", "--data", "-"]) == 2
    )
    assert "treatmentSerialNo" in capsys.readouterr().err
