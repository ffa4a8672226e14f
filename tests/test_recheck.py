"""`huimin-worker recheck EVENT_ID`: an outcome left `unknown` is asked again, never re-sent."""

from __future__ import annotations

import pytest

from tests.test_worker import event, example, new_order_id
from tests.worker_harness import Backend, running, start_worker
from worker.cli import main
from worker.sandbox.simulator.server import SimulatorHandle

SIMULATOR_SEED = 21  # the simulator fixture (conftest.py)


def _cli_env(monkeypatch: pytest.MonkeyPatch, backend: Backend, platform_url: str) -> None:
    assert backend.broker_url is not None
    monkeypatch.setenv("HUIMIN_BROKER_URL", backend.broker_url)
    monkeypatch.setenv("HUIMIN_LEDGER_URL", backend.ledger_url)
    monkeypatch.setenv("HUIMIN_PLATFORM_URL", platform_url)


def test_an_unknown_payment_is_rechecked_and_settled_without_a_second_charge(
    backend: Backend,
    simulator: SimulatorHandle,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # charged, answer lost; then every status query fails: the worker gives up as `unknown`
    simulator.add_fault("lose_response", "HOS00003", times=1, seconds=1.5)
    simulator.add_fault("reject_503", "HOS00012")
    settings = backend.settings(simulator.base_url + "/api", reconcile_max_queries=2)
    order_id = new_order_id()
    payment = event("payment.requested", example("HOS00003", orderId=order_id))
    _cli_env(monkeypatch, backend, simulator.base_url + "/api")
    with running(start_worker(backend, settings)):
        his = backend.his(settings)
        his.publish(payment)
        first = his.next_result(30)
        assert first.routing_key == "payment.requested.unknown"
        simulator.clear_faults()  # the platform answers again
        assert main(["recheck", payment["eventId"], "--operator", "oncall"]) == 0
        second = his.next_result(30)
        his.close()
    assert second.routing_key == "payment.requested.succeeded"
    assert second.body["orderStatus"] == "02" and second.correlation_id == payment["eventId"]
    assert simulator.receipts(order_id) == 1  # asked, never re-sent
    assert "reopened and queued" in capsys.readouterr().out


def test_only_an_unknown_outcome_is_rechecked(
    backend: Backend,
    simulator: SimulatorHandle,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = backend.settings(simulator.base_url + "/api")
    payment = event("payment.requested", example("HOS00003", orderId=new_order_id()))
    _cli_env(monkeypatch, backend, simulator.base_url + "/api")
    with running(start_worker(backend, settings)):
        his = backend.his(settings)
        his.publish(payment)
        assert his.next_result(30).routing_key == "payment.requested.succeeded"
        his.close()
    # `reconcile` is the old name of `recheck`, still accepted
    assert main(["reconcile", payment["eventId"]]) == 1
    assert "is succeeded" in capsys.readouterr().err
    assert main(["recheck", "evt-never-seen-0001"]) == 1
    assert "no event" in capsys.readouterr().err
