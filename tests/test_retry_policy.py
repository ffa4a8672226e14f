"""The retry policy: one object, built from settings, holding every retry and deadline number.

It is what the topology's retry queues, the processor's "give up", the money calls' "may I send
again", the client's deadline, the engine's backoffs and the sweeper's grace are made of; these
tests pin each number to its setting and each derived value to the reason it exists.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.app import build_worker
from worker.broker.amqp import AmqpTransport
from worker.broker.memory import MemoryBroker
from worker.broker.memory_transport import MemoryTransport
from worker.broker.topology import build_topology, retry_queue_name, topology_for
from worker.errors import TopologyConflict
from worker.protocol.registry import WorkClass
from worker.retry import (
    ATTEMPTS_PER_CALL,
    LEASE_MARGIN_S,
    PROBE_DELAYS_S,
    RECONNECT_DELAYS_S,
    RetryPolicy,
    RetrySchedule,
)
from worker.settings import Settings

T0 = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)
DEFAULT = RetryPolicy.from_settings(Settings())

seconds = st.floats(min_value=0.01, max_value=3600, allow_nan=False, allow_infinity=False)
jitters = st.floats(min_value=0, max_value=1, allow_nan=False)
delay_lists = st.lists(seconds, min_size=1, max_size=8)


def policy(**settings: object) -> RetryPolicy:
    return RetryPolicy.from_settings(Settings(**settings))  # type: ignore[arg-type]


# --- built from settings ---------------------------------------------------------------------


def test_every_retry_setting_reaches_the_policy() -> None:
    built = policy(
        retry_delays_s=[2, 20],
        retry_jitter=0.3,
        max_attempts=4,
        reconcile_max_queries=7,
        handler_error_retries=5,
        delivery_limit=9,
        call_deadline_s=12,
        connect_timeout_s=3,
        read_timeout_s=8,
        sweep_grace_s=600,
    )
    assert built == RetryPolicy(
        schedule=RetrySchedule((2.0, 20.0), 0.3),
        max_attempts=4,
        reconcile_max_queries=7,
        handler_error_retries=5,
        delivery_limit=9,
        call_deadline_s=12.0,
        connect_timeout_s=3.0,
        read_timeout_s=8.0,
        sweep_grace_s=600.0,
    )


def test_the_numbers_that_are_not_settings_are_the_designs_constants() -> None:
    assert (DEFAULT.lease_margin_s, DEFAULT.attempts_per_call) == (
        LEASE_MARGIN_S,
        ATTEMPTS_PER_CALL,
    )
    assert (DEFAULT.reconnect_delays_s, DEFAULT.probe_delays_s) == (
        RECONNECT_DELAYS_S,
        PROBE_DELAYS_S,
    )


def test_the_schedule_has_one_sorted_delay_per_retry_queue() -> None:
    assert RetrySchedule.of([30, 1, 5, 5], 0.2).delays_s == (1.0, 5.0, 30.0)


@pytest.mark.parametrize(("delays", "jitter"), [([], 0.2), ([1, 0], 0.2), ([-5], 0.0), ([1], 1.5)])
def test_a_schedule_that_cannot_be_queues_is_refused(delays: list[float], jitter: float) -> None:
    with pytest.raises(ValueError):
        RetrySchedule.of(delays, jitter)


def test_the_worker_builds_one_policy_and_hands_it_to_every_part(tmp_path: Path) -> None:
    settings = Settings(
        retry_delays_s=[1, 7],
        handler_error_retries=6,
        delivery_limit=11,
        ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
        statement_enabled=False,
    )
    worker = build_worker(settings, transport=MemoryTransport(MemoryBroker()))
    try:
        expected = RetryPolicy.from_settings(settings)
        assert worker.processor.policy == expected
        assert worker.client.policy is worker.processor.policy  # one object, not two copies
        assert worker.processor.lease == expected.lease()
        assert worker.topology == topology_for(expected)
        assert worker.sweeper.grace == expected.sweep_grace()
        config = worker.engine.config
        assert (config.handler_error_retries, config.reconnect_delays_s) == (6, RECONNECT_DELAYS_S)
        assert worker.metrics.retry_schedule_length == 2
    finally:
        worker.close()


# --- the retry queues ------------------------------------------------------------------------


def test_retries_walk_the_schedule_then_stay_on_its_longest_delay() -> None:
    schedule = RetrySchedule((1.0, 5.0, 30.0), 0.0)
    assert [schedule.delay_for(n) for n in (0, 1, 2, 3, 4, 50)] == [1, 1, 5, 30, 30, 30]


@given(delay_lists, jitters, st.integers(min_value=1, max_value=20), st.integers())
def test_a_messages_own_expiration_stays_within_its_queues_ttl(
    delays: list[float], jitter: float, retry: int, seed: int
) -> None:
    schedule = RetrySchedule.of(delays, jitter)
    delay = schedule.delay_for(retry)
    expiration = schedule.expiration_ms(delay, random.Random(seed))
    assert 1 <= expiration <= schedule.queue_ttl_ms(delay)
    assert expiration >= round(delay * 1000 * (1 - jitter)) - 1  # jittered, never cut short


def test_the_topology_declares_the_policys_retry_queues_and_delivery_limit() -> None:
    built = policy(retry_delays_s=[2, 20], retry_jitter=0.5, delivery_limit=9)
    topology = topology_for(built)
    queue = topology.queue(retry_queue_name(WorkClass.MONEY, 20))
    assert queue.arguments["x-message-ttl"] == 30_000  # the longest jittered wait
    assert topology.queue("huimin.work.money").arguments["x-delivery-limit"] == 9
    assert topology == build_topology([2, 20], 0.5, delivery_limit=9)
    step = topology.retry_step(WorkClass.MONEY, 2, random.Random(1))
    assert step.queue == retry_queue_name(WorkClass.MONEY, 20)
    assert step.expiration_ms == built.schedule.expiration_ms(20, random.Random(1))


@pytest.mark.rabbitmq
def test_on_rabbitmq_a_new_delay_adds_retry_queues_but_a_new_jitter_conflicts(vhost: str) -> None:
    """What a changed schedule meets where the old one is declared (docs/development.md): a
    retry queue is named after its delay, so a new delay is a new queue; its TTL includes the
    jitter, and RabbitMQ refuses to change a queue's arguments, so a new jitter is a conflict."""

    def declare(built: RetryPolicy) -> None:
        transport = AmqpTransport(vhost)  # a fresh channel each time: a 406 closes it
        transport.connect()
        try:
            transport.declare(topology_for(built))
        finally:
            transport.close()

    declare(policy(retry_delays_s=[1, 5], retry_jitter=0.2))
    declare(policy(retry_delays_s=[1, 5, 30], retry_jitter=0.2))
    declare(policy(retry_delays_s=[5], retry_jitter=0.2))  # the old queues stay, unused
    with pytest.raises(TopologyConflict, match="x-message-ttl"):
        declare(policy(retry_delays_s=[1, 5], retry_jitter=0.3))


# --- giving up -------------------------------------------------------------------------------


def test_calls_and_status_queries_stop_at_their_settings() -> None:
    built = policy(max_attempts=3, reconcile_max_queries=2)
    assert [built.calls_exhausted(n) for n in (0, 2, 3, 4)] == [False, False, True, True]
    assert [built.queries_exhausted(n) for n in (0, 1, 2)] == [False, False, True]


# --- one call's deadline, and the lease that outlasts it -------------------------------------


def test_the_default_deadline_budget_and_lease() -> None:
    # 45 s deadline, + 5 s connect timeout (the one overrun), + 30 s of ledger writes
    assert (DEFAULT.call_deadline(), DEFAULT.call_budget(), DEFAULT.lease()) == (
        timedelta(seconds=45),
        timedelta(seconds=50),
        timedelta(seconds=80),
    )


def test_no_such_order_proves_nothing_until_twice_the_deadline_has_passed() -> None:
    twice = 2 * DEFAULT.call_deadline()
    assert not DEFAULT.not_found_proves_nothing_sent(T0, T0 + twice)
    assert DEFAULT.not_found_proves_nothing_sent(T0, T0 + twice + timedelta(milliseconds=1))


@given(
    seconds,
    seconds,
    st.lists(st.floats(min_value=0, max_value=7200, allow_nan=False), min_size=1, max_size=12),
)
def test_the_lease_outlasts_every_call_and_status_query_it_covers(
    deadline_s: float, connect_s: float, offsets: list[float]
) -> None:
    """The first offset is the call, the others its status queries: each attempt extends the
    lease to at least its start + lease() as it is recorded (ledger start_attempt). At every
    moment one of them may still be running, the lease holds, so no other replica may begin."""
    built = policy(call_deadline_s=deadline_s, connect_timeout_s=connect_s)
    assert built.call_deadline() < built.call_budget() < built.lease()
    lease_until = T0
    for offset in sorted(offsets):
        start = T0 + timedelta(seconds=offset)
        lease_until = max(lease_until, start + built.lease())
        assert start + built.call_budget() < lease_until  # over before the lease runs out


@given(seconds, st.floats(min_value=0, max_value=7200, allow_nan=False))
def test_no_such_order_never_proves_anything_while_the_request_may_be_arriving(
    deadline_s: float, asked_after_s: float
) -> None:
    """Before the deadline the request may still be arriving; for as long again after it, it
    may still be waiting to be processed. Only a query asked later proves it was never taken."""
    built = policy(call_deadline_s=deadline_s)
    proves = built.not_found_proves_nothing_sent(T0, T0 + timedelta(seconds=asked_after_s))
    if asked_after_s <= 2 * deadline_s - 0.001:  # (a millisecond either side: float seconds)
        assert not proves
    if asked_after_s >= 2 * deadline_s + 0.001:
        assert proves


# --- the sweeper -----------------------------------------------------------------------------


def test_the_sweep_grace_never_sweeps_an_event_waiting_out_its_longest_delay() -> None:
    # 600 s x 1.2 (jitter) + 4 read timeouts of 30 s, over HUIMIN_SWEEP_GRACE_S's 120 s
    assert DEFAULT.sweep_grace() == timedelta(seconds=840)
    assert policy(sweep_grace_s=3600).sweep_grace() == timedelta(seconds=3600)


@given(delay_lists, jitters, seconds, seconds)
def test_the_sweep_grace_outlasts_the_longest_retry_wait(
    delays: list[float], jitter: float, grace_s: float, read_s: float
) -> None:
    built = policy(
        retry_delays_s=delays, retry_jitter=jitter, sweep_grace_s=grace_s, read_timeout_s=read_s
    )
    assert built.sweep_grace() >= timedelta(seconds=grace_s)
    assert built.sweep_grace() > timedelta(seconds=built.schedule.longest_wait_s())
