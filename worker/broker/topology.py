"""Exchanges, queues and bindings as data (pure), and the backoff arithmetic.

    his.events  (topic) --<event type>--> huimin.work.money | .claims | .queries   (quorum)
        └─ alternate-exchange huimin.unroutable (fanout) --> huimin.unroutable      (quorum)
    huimin.retry.<class>.<n>s  (quorum, x-message-ttl, dead-letters back to its work queue)
    huimin.dead-letter          (quorum; reason, last error and attempts in headers)
    his.results (topic) <--<event type>.<outcome>-- the worker

Retries never block a consumer: a message that must wait is published to the retry queue of
its delay and acked; RabbitMQ dead-letters it back to the work queue when its TTL expires.
Jitter: each message carries its own `expiration` within +/- jitter of the queue's delay (the
queue TTL is the upper bound), so retries of a burst spread out while head-of-line blocking in a
retry queue is bounded by 2 x jitter x delay. The arithmetic is the retry policy's
(worker/retry.py `RetrySchedule`); this module turns it into queues.

The queues the worker consumes (work queues and huimin.unroutable) declare their own safety
limits, so no operator policy is needed for safety: `x-delivery-limit` (a message delivered
more often, e.g. one that keeps killing the worker, is dead-lettered by RabbitMQ with reason
`delivery_limit`) and at-least-once dead-lettering to huimin.dead-letter (which needs
`x-overflow: reject-publish` and the `stream_queue` feature flag, RabbitMQ 3.10+). An event
whose routing key matches no binding goes to his.events' alternate exchange instead of
vanishing. RabbitMQ refuses (406) to redeclare a queue or exchange with other arguments: a
deployment declared by an older version is migrated once (docs/deployment.md).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from worker.protocol.registry import EVENT_TYPES, WorkClass
from worker.retry import RetryPolicy, RetrySchedule

EVENTS_EXCHANGE = "his.events"
RESULTS_EXCHANGE = "his.results"
DEAD_LETTER_QUEUE = "huimin.dead-letter"
#: events his.events could not route (its alternate exchange): answered unknown_type
UNROUTABLE_QUEUE = "huimin.unroutable"
UNROUTABLE_EXCHANGE = "huimin.unroutable"  # fanout: every unroutable event, whatever its key
QUORUM = {"x-queue-type": "quorum"}
#: x-delivery-limit of the consumed queues unless told otherwise (HUIMIN_DELIVERY_LIMIT)
DEFAULT_DELIVERY_LIMIT = 20

# headers the worker sets on messages it republishes
H_RETRY = "x-huimin-retry"  # how many retries this event has had
H_ROUTING_KEY = "x-huimin-routing-key"  # the event's original routing key (its type)
H_REASON = "x-huimin-reason"  # dead-letter reason (a GiveUp.reason)
H_ERROR = "x-huimin-error"  # the last error, human-readable
H_ATTEMPTS = "x-huimin-attempts"  # platform attempts made
H_WORK_QUEUE = "x-huimin-work-queue"  # where a replay goes
H_HANDLER_ERRORS = "x-huimin-handler-errors"  # handler exceptions so far (engine retries)


@dataclass(frozen=True)
class Exchange:
    name: str
    type: str = "topic"
    durable: bool = True
    arguments: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Binding:
    exchange: str
    routing_key: str


@dataclass(frozen=True)
class Queue:
    name: str
    arguments: Mapping[str, Any] = field(default_factory=lambda: dict(QUORUM))
    bindings: tuple[Binding, ...] = ()
    durable: bool = True


@dataclass(frozen=True)
class RetryStep:
    queue: str
    expiration_ms: int  # this message's own TTL, jittered


@dataclass(frozen=True)
class Topology:
    exchanges: tuple[Exchange, ...]
    queues: tuple[Queue, ...]
    #: the retry queues' delays; None for a topology without them (an exchange to publish to)
    schedule: RetrySchedule | None = None

    def queue(self, name: str) -> Queue:
        return next(q for q in self.queues if q.name == name)

    def work_queues(self) -> tuple[Queue, ...]:
        return tuple(q for q in self.queues if q.name.startswith("huimin.work."))

    def consumed_queues(self) -> tuple[Queue, ...]:
        """What the worker consumes: its work queues and the alternate exchange's queue."""
        return (*self.work_queues(), *(q for q in self.queues if q.name == UNROUTABLE_QUEUE))

    def retry_step(self, work_class: WorkClass, retry: int, rng: random.Random) -> RetryStep:
        """The queue and jittered TTL for the `retry`-th retry (1-based) of an event."""
        if self.schedule is None:
            raise ValueError("this topology has no retry queues")
        delay_s = self.schedule.delay_for(retry)
        return RetryStep(
            retry_queue_name(work_class, delay_s), self.schedule.expiration_ms(delay_s, rng)
        )


def work_queue_name(work_class: WorkClass) -> str:
    return f"huimin.work.{work_class.value}"


def retry_queue_name(work_class: WorkClass, delay_s: float) -> str:
    return f"huimin.retry.{work_class.value}.{delay_s:g}s"


def work_queue_for(event_type: str) -> str | None:
    known = EVENT_TYPES.get(event_type)
    return work_queue_name(known.work_class) if known else None


def topology_for(policy: RetryPolicy) -> Topology:
    """The worker's topology: retry queues from the policy's schedule, and its delivery limit
    on the queues it consumes."""
    return _build(policy.schedule, policy.delivery_limit)


def build_topology(
    retry_delays_s: Sequence[float],
    jitter: float,
    *,
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
) -> Topology:
    """The topology for these delays (the HIS side, the schema generator, tests)."""
    return _build(RetrySchedule.of(retry_delays_s, jitter), delivery_limit)


def _build(schedule: RetrySchedule, delivery_limit: int) -> Topology:
    if delivery_limit < 1:
        raise ValueError("the delivery limit must be a positive number of deliveries")
    consumed = consumed_queue_arguments(delivery_limit)
    queues = [
        *_work_queues(consumed),
        Queue(UNROUTABLE_QUEUE, arguments=consumed, bindings=(Binding(UNROUTABLE_EXCHANGE, ""),)),
        *_retry_queues(schedule),
        # no delivery limit here: it has no dead-letter target, so a limit would drop dead
        # letters (browsing with `dlq list` is a delivery each time)
        Queue(DEAD_LETTER_QUEUE),
    ]
    exchanges = (
        Exchange(UNROUTABLE_EXCHANGE, "fanout"),  # first: his.events names it
        Exchange(EVENTS_EXCHANGE, arguments={"alternate-exchange": UNROUTABLE_EXCHANGE}),
        Exchange(RESULTS_EXCHANGE),
    )
    return Topology(exchanges, tuple(queues), schedule)


def consumed_queue_arguments(delivery_limit: int) -> dict[str, Any]:
    """The safety limits of a queue the worker consumes. RabbitMQ counts every delivery
    that is returned (nack, reject, a connection lost with it unacked); past the limit it
    dead-letters the message itself, with reason `delivery_limit`, even when the worker
    dies on it each time and never gets to dead-letter it."""
    return {
        **QUORUM,
        "x-delivery-limit": delivery_limit,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": DEAD_LETTER_QUEUE,
        # at-least-once: the dead letter is kept until huimin.dead-letter confirms it (the
        # default, at-most-once, may drop it); RabbitMQ requires reject-publish with it
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


def _work_queues(arguments: Mapping[str, Any]) -> list[Queue]:
    return [
        Queue(
            work_queue_name(work_class),
            arguments=dict(arguments),
            bindings=_bindings_for(work_class),
        )
        for work_class in WorkClass
    ]


def _bindings_for(work_class: WorkClass) -> tuple[Binding, ...]:
    return tuple(
        Binding(EVENTS_EXCHANGE, name)
        for name, event_type in EVENT_TYPES.items()
        if event_type.work_class is work_class
    )


def _retry_queues(schedule: RetrySchedule) -> list[Queue]:
    return [
        Queue(
            retry_queue_name(work_class, delay),
            arguments={
                **QUORUM,
                # the queue TTL caps the jittered per-message expiration
                "x-message-ttl": schedule.queue_ttl_ms(delay),
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": work_queue_name(work_class),
            },
        )
        for work_class in WorkClass
        for delay in schedule.delays_s
    ]
