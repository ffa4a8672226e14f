"""A request the platform received before the call's deadline but processes after it.

Found by benchmarks/chaos.py (docs/reliability.md, "Found by the chaos run"): a payment's
request reached the platform, which processed it only after the worker's deadline had passed
(the platform was slow, not the wire). Meanwhile a status query, asked before that deadline
and answered after it, said "no such order"; the worker took that as "never accepted" and
sent the payment again: two money calls for one order reached the platform. "No such order"
proves nothing about a request until the platform has had as long to process it as it had
to answer it: the query must be *asked* after the call's deadline plus as long again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.test_worker import event, example, new_order_id, one_result
from tests.worker_harness import Backend, running, start_worker
from worker.sandbox.his import HisSide
from worker.sandbox.simulator.server import SimulatorHandle

DEADLINE_S = 1.0


@pytest.fixture
def memory_his(memory_backend: Backend, simulator: SimulatorHandle) -> Iterator[HisSide]:
    side = memory_backend.his(memory_backend.settings(simulator.base_url + "/api"))
    yield side
    side.close()


def test_a_payment_processed_after_its_deadline_is_never_sent_again(
    memory_backend: Backend, simulator: SimulatorHandle, memory_his: HisSide
) -> None:
    backend, his = memory_backend, memory_his
    # the platform holds the first request 1.6 s, then charges it: past the 1 s deadline,
    # and after the status queries asked at ~0.5 s and ~1.1 s have said "no such order"
    simulator.add_fault("latency", "HOS00003", times=1, distribution="fixed", ms=1600)
    settings = backend.settings(
        simulator.base_url + "/api",
        call_deadline_s=DEADLINE_S,
        read_timeout_s=0.4,
        connect_timeout_s=0.2,
        retry_delays_s=[0.5, 0.5, 0.5],
        retry_jitter=0.0,
    )
    order_id = new_order_id()
    with running(start_worker(backend, settings)):
        his.publish(event("payment.requested", example("HOS00003", orderId=order_id)))
        result = one_result(his, timeout=30)
        time.sleep(2.0)  # past the first request's processing, had the worker sent again
    assert result.routing_key == "payment.requested.succeeded"
    assert simulator.receipts(order_id) == 1, "one money call reached the platform"
