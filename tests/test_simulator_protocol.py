"""Protocol rejections, checked with raw envelopes: every answer is signed and verifies."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from pydantic import SecretStr

from worker.clock import system_clock
from worker.platform.client import PlatformClient
from worker.protocol import envelope
from worker.sandbox.simulator import SimulatorHandle, run_in_thread
from worker.settings import Settings

from .simulator_helpers import (
    SANDBOX,
    opened,
    pay,
    post_raw,
    request,
    sealed,
    unique,
)


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorHandle]:
    with run_in_thread() as handle:
        yield handle


def test_a_good_request_is_answered_0000_with_encrypted_data(sim: SimulatorHandle) -> None:
    answer = opened(post_raw(sim, sealed("HOS00001", request("HOS00001"))))
    assert answer.rt_code == "0000" and answer.business["signStatus"] == "1"


def test_body_that_is_not_a_json_envelope_is_4000(sim: SimulatorHandle) -> None:
    for body in (b"not json", b"[1, 2]"):
        answer = opened(post_raw(sim, body))
        assert (answer.rt_code, answer.business) == ("4000", None)


def test_unknown_platform_is_4104(sim: SimulatorHandle) -> None:
    stranger = envelope.Credentials("HOSP9999", SecretStr("0123456789ABCDEF0123456789ABCDEF"))
    answer = opened(post_raw(sim, sealed("HOS00001", request("HOS00001"), credentials=stranger)))
    assert answer.rt_code == "4104"


def test_bad_signature_is_4000(sim: SimulatorHandle) -> None:
    message = sealed("HOS00001", request("HOS00001"))
    message["signData"] = "0" * 64
    assert opened(post_raw(sim, message)).rt_code == "4000"


def test_wrong_key_is_4000(sim: SimulatorHandle) -> None:
    wrong = envelope.Credentials(SANDBOX.platform_id, SecretStr("FFFFFFFFFFFFFFFF0000000000000000"))
    assert (
        opened(post_raw(sim, sealed("HOS00001", request("HOS00001"), credentials=wrong))).rt_code
        == "4000"
    )


def test_missing_field_is_4000(sim: SimulatorHandle) -> None:
    message = sealed("HOS00001", request("HOS00001"))
    del message["platformTransTime"]
    answer = opened(post_raw(sim, message))
    assert answer.rt_code == "4000" and "platformTransTime" in answer.rt_msg


def test_clock_skew_over_5_minutes_is_4000(sim: SimulatorHandle) -> None:
    stale = system_clock() - timedelta(minutes=6)
    answer = opened(post_raw(sim, sealed("HOS00001", request("HOS00001"), at=stale)))
    assert answer.rt_code == "4000" and "5" in answer.rt_msg
    fresh_enough = system_clock() - timedelta(minutes=4)
    assert (
        opened(post_raw(sim, sealed("HOS00001", request("HOS00001"), at=fresh_enough))).rt_code
        == "0000"
    )


def test_duplicate_platform_seq_id_is_4008(sim: SimulatorHandle) -> None:
    seq_id = envelope.new_seq_id()
    assert (
        opened(post_raw(sim, sealed("HOS00001", request("HOS00001"), seq_id=seq_id))).rt_code
        == "0000"
    )
    again = opened(post_raw(sim, sealed("HOS00003", pay(unique("PAY"), 10), seq_id=seq_id)))
    assert again.rt_code == "4008"
    assert not any(o["amt"] == 10 for o in sim.orders())  # the duplicate was not processed


def test_the_client_resends_a_duplicate_seq_id_with_a_new_one(sim: SimulatorHandle) -> None:
    seq_ids = iter(["SEQ0000000001", "SEQ0000000001", "SEQ0000000002"])
    sim.reset()
    settings = Settings(platform_url=sim.base_url + "/api")
    with PlatformClient(settings, seq_ids=lambda: next(seq_ids), sleep=lambda _: None) as client:
        client.call("HOS00001", request("HOS00001"))
        reply = client.call("HOS00003", pay(unique("PAY"), 11))  # 4008, then resent
    assert reply.rt_code == "0000"
    assert sim.stats()["HOS00003"] == {"4008": 1, "0000": 1}


@pytest.mark.parametrize("trans_code", ["HOS00015", "HOS99999", "HIS00004"])
def test_unknown_abolished_or_inbound_trans_code_is_1000(
    sim: SimulatorHandle, trans_code: str
) -> None:
    answer = opened(post_raw(sim, sealed(trans_code, {"orderId": "ORD00000001"})))
    assert answer.rt_code == "1000" and trans_code in answer.rt_msg


def test_invalid_business_field_is_1000_naming_the_field(sim: SimulatorHandle) -> None:
    body = pay(unique("PAY"), 10)
    body["amt"] = "10.00"  # amounts are integer fen
    answer = opened(post_raw(sim, sealed("HOS00003", body)))
    assert answer.rt_code == "1000" and answer.rt_msg.startswith("amt")
    assert len(answer.rt_msg) <= 60


def test_long_validation_messages_are_cut_to_60_characters(sim: SimulatorHandle) -> None:
    body = request("HOS00022")
    body["feeList"][0]["detailList"][0]["outOfPocketRatio"] = "lots"
    answer = opened(post_raw(sim, sealed("HOS00022", body)))
    assert answer.rt_code == "1000" and len(answer.rt_msg) <= 60
    assert answer.rt_msg.startswith("feeList.0.detailList.0.outOfPocketRatio")


def test_any_path_serves_the_protocol_and_get_is_not_it(sim: SimulatorHandle) -> None:
    body = envelope.business_text(sealed("HOS00001", request("HOS00001"))).encode()
    answer = httpx.post(sim.base_url + "/gateway/HOS00001", content=body)
    assert opened(answer).rt_code == "0000"
    assert httpx.get(sim.base_url + "/api").status_code == 404
    assert httpx.put(sim.base_url + "/api", content=body).status_code == 405


def test_admin_endpoints_answer_json(sim: SimulatorHandle) -> None:
    opened(post_raw(sim, sealed("HOS00003", pay(unique("PAY"), 77))))
    orders = httpx.get(sim.base_url + "/admin/orders").json()["orders"]
    order_id = next(o["orderId"] for o in orders if o["amt"] == 77)
    assert httpx.get(f"{sim.base_url}/admin/orders/{order_id}").json()["receipts"] == 1
    missing = httpx.get(sim.base_url + "/admin/orders/NOPE00000001")
    assert missing.status_code == 404 and missing.json()["receipts"] == 0
    assert httpx.get(sim.base_url + "/admin/stats").json()["requests"]["HOS00003"]["0000"] >= 1
    assert "cases" in httpx.get(sim.base_url + "/admin/cases").json()
    config = httpx.put(sim.base_url + "/admin/config", json={"pendingQueries": 0})
    assert config.json() == {"pendingQueries": 0}
    assert httpx.post(sim.base_url + "/admin/reset").json() == {"reset": True}
    assert httpx.get(sim.base_url + "/admin/orders").json() == {"orders": []}
    assert httpx.get(sim.base_url + "/admin/nothing").status_code == 404
