"""Each fault kind, seen from the project's PlatformClient, then reconciled by status query."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from worker.errors import OutcomeUnknown, PlatformRejected, PlatformUnavailable
from worker.protocol import answers
from worker.sandbox.simulator import SimulatorHandle, run_in_thread

from .simulator_helpers import client_for, order_query, pay, request, unique


@pytest.fixture(scope="module")
def server() -> Iterator[SimulatorHandle]:
    with run_in_thread(seed=1) as sim:
        yield sim


@pytest.fixture
def sim(server: SimulatorHandle) -> SimulatorHandle:
    server.reset()
    server.clear_faults()
    return server


def pay_with_unknown_outcome(sim: SimulatorHandle) -> str:
    order_id = unique("PAY")
    with client_for(sim) as client, pytest.raises(OutcomeUnknown):
        client.call("HOS00003", pay(order_id, 1000))
    return order_id


def status_of(sim: SimulatorHandle, order_id: str) -> str:
    """What reconciliation learns: the orderStatus, or "not found" (rtCode 1000)."""
    with client_for(sim) as client:
        try:
            return client.call("HOS00012", order_query(order_id)).data["orderStatus"]
        except PlatformRejected as exc:
            assert exc.rt_code == "1000"
            return "not found"


def test_processed_but_response_lost_then_query_finds_it_paid_once(sim: SimulatorHandle) -> None:
    sim.add_fault("lose_response", "HOS00003", times=1, seconds=1.5)  # client waits 1 s
    order_id = pay_with_unknown_outcome(sim)
    assert status_of(sim, order_id) == "02"
    assert sim.order(order_id)["receipts"] == 1


def test_503_before_processing_then_query_finds_nothing(sim: SimulatorHandle) -> None:
    sim.add_fault("reject_503", "HOS00003", times=1)
    order_id = pay_with_unknown_outcome(sim)
    assert status_of(sim, order_id) == "not found"
    assert sim.receipts(order_id) == 0
    assert sim.stats()["HOS00003"] == {"HTTP503": 1}


def test_9999_without_processing_leaves_no_order(sim: SimulatorHandle) -> None:
    sim.add_fault("fail_before_processing", "HOS00003", times=1)
    order_id = pay_with_unknown_outcome(sim)
    assert status_of(sim, order_id) == "not found"


def test_9999_after_processing_leaves_a_paid_order(sim: SimulatorHandle) -> None:
    sim.add_fault("fail_after_processing", "HOS00003", times=1)
    order_id = pay_with_unknown_outcome(sim)
    assert status_of(sim, order_id) == "02"


def test_corrupt_signature_on_a_money_call_is_outcome_unknown(sim: SimulatorHandle) -> None:
    sim.add_fault("corrupt_signature", "HOS00003", times=1)
    order_id = pay_with_unknown_outcome(sim)
    assert status_of(sim, order_id) == "02"  # it was processed; only the answer was bad


def test_garbage_body_is_outcome_unknown(sim: SimulatorHandle) -> None:
    sim.add_fault("garbage_body", "HOS00003", times=1)
    order_id = pay_with_unknown_outcome(sim)
    assert status_of(sim, order_id) == "02"
    sim.add_fault("garbage_body", "HOS00001", times=1, body="not json")
    assert httpx.post(sim.base_url + "/api", content=b"{}").status_code == 200


@pytest.mark.parametrize("field", ["orderId", "amt", "orderStatus"])
def test_a_replayed_answer_about_another_order_is_outcome_unknown(
    sim: SimulatorHandle, field: str
) -> None:
    sim.add_fault("replay_answer", "HOS00003", times=1, field=field)
    order_id = pay_with_unknown_outcome(sim)
    assert status_of(sim, order_id) == "02"  # processed once; only the answer was not ours
    assert sim.receipts(order_id) == 1


def test_a_replayed_status_answer_is_retry_later(sim: SimulatorHandle) -> None:
    order_id = unique("PAY")
    body = pay(order_id, 1000)
    with client_for(sim) as client:
        client.call("HOS00003", body)
        sim.add_fault("replay_answer", "HOS00012", times=1)
        expect = answers.for_query("HOS00012", "HOS00003", body)
        with pytest.raises(PlatformUnavailable):
            client.call("HOS00012", order_query(order_id), expect=expect)
        assert (
            client.call("HOS00012", order_query(order_id), expect=expect).data["orderId"]
            == order_id
        )


def test_dropped_connection_before_processing(sim: SimulatorHandle) -> None:
    sim.add_fault("drop_connection", "HOS00003", times=1)
    order_id = pay_with_unknown_outcome(sim)
    assert status_of(sim, order_id) == "not found"
    assert sim.stats()["HOS00003"]["DROPPED"] == 1


def test_dropped_connection_on_a_query_is_retry_later(sim: SimulatorHandle) -> None:
    sim.add_fault("drop_connection", "HOS00001", times=1)
    with client_for(sim) as client, pytest.raises(PlatformUnavailable):
        client.call("HOS00001", request("HOS00001"))


def test_latency_delays_but_answers(sim: SimulatorHandle) -> None:
    sim.add_fault("latency", "HOS00001", distribution="uniform", minMs=50, maxMs=100)
    with client_for(sim) as client:
        assert client.call("HOS00001", request("HOS00001")).rt_code == "0000"


def test_times_limits_a_rule_to_the_next_matching_calls(sim: SimulatorHandle) -> None:
    sim.add_fault("fail_before_processing", "HOS00003", times=1)
    with client_for(sim) as client:
        client.call("HOS00001", request("HOS00001"))  # another transCode: not consumed
        with pytest.raises(OutcomeUnknown):
            client.call("HOS00003", pay(unique("PAY"), 10))
        assert client.call("HOS00003", pay(unique("PAY"), 10)).rt_code == "0000"
    assert sim.fault_rules() == []


def outcomes(sim: SimulatorHandle, calls: int) -> list[str]:
    with client_for(sim) as client:
        seen = []
        for _ in range(calls):
            try:
                seen.append(client.call("HOS00001", request("HOS00001")).rt_code)
            except PlatformUnavailable:
                seen.append("503")
        return seen


def test_same_seed_same_decisions() -> None:
    plan = {"seed": 42, "rules": [{"transCode": "*", "kind": "reject_503", "probability": 0.5}]}
    runs = []
    for _ in range(2):
        with run_in_thread() as sim:
            assert httpx.put(sim.base_url + "/admin/faults", json=plan).status_code == 200
            runs.append(outcomes(sim, 12))
    assert runs[0] == runs[1]
    assert set(runs[0]) == {"0000", "503"}  # with this seed both happen


def test_faults_are_scripted_over_the_admin_api(sim: SimulatorHandle) -> None:
    rule = {"transCode": "HOS00003", "kind": "reject_503", "times": 2}
    admin = sim.base_url + "/admin/faults"
    assert httpx.post(admin, json=rule).json()["rules"][0]["times"] == 2
    assert httpx.get(admin).json()["rules"][0]["kind"] == "reject_503"
    assert httpx.delete(admin).json()["rules"] == []
    refused = httpx.put(admin, json=[{"kind": "explode"}])
    assert refused.status_code == 400 and "explode" in refused.json()["error"]
