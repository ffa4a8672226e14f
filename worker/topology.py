"""Exchanges, queues and bindings as data (pure), and the backoff arithmetic.

    his.events  (topic) --<event type>--> huimin.work.money | .claims | .queries   (quorum)
    huimin.retry.<class>.<n>s  (quorum, x-message-ttl, dead-letters back to its work queue)
    huimin.dead-letter          (quorum; reason, last error and attempts in headers)
    his.results (topic) <--<event type>.<outcome>-- the worker

Retries never block a consumer: a message that must wait is published to the retry queue of
its delay and acked; RabbitMQ dead-letters it back to the work queue when its TTL expires.
Jitter: each message carries its own `expiration` within +/- jitter of the queue's delay (the
queue TTL is the upper bound), so retries of a burst spread out while head-of-line blocking in a
retry queue is bounded by 2 x jitter x delay.

Declared arguments are kept minimal (queue type, TTL and dead-letter target where the design
needs them); delivery-limit and dead-letter strategy are left to operator policies
(docs/operations.md), so they can change without redeclaring queues.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .events import EVENT_TYPES, WorkClass

EVENTS_EXCHANGE = "his.events"
RESULTS_EXCHANGE = "his.results"
DEAD_LETTER_QUEUE = "huimin.dead-letter"
QUORUM = {"x-queue-type": "quorum"}

# headers the worker sets on messages it republishes
H_RETRY = "x-huimin-retry"  # how many retries this event has had
H_ROUTING_KEY = "x-huimin-routing-key"  # the event's original routing key (its type)
H_REASON = "x-huimin-reason"  # dead-letter reason (a GiveUp.reason)
H_ERROR = "x-huimin-error"  # the last error, human-readable
H_ATTEMPTS = "x-huimin-attempts"  # platform attempts made
H_WORK_QUEUE = "x-huimin-work-queue"  # where a replay goes


@dataclass(frozen=True)
class Exchange:
    name: str
    type: str = "topic"
    durable: bool = True


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
    retry_delays_s: tuple[float, ...]
    jitter: float

    def queue(self, name: str) -> Queue:
        return next(q for q in self.queues if q.name == name)

    def work_queues(self) -> tuple[Queue, ...]:
        return tuple(q for q in self.queues if q.name.startswith("huimin.work."))

    def retry_step(self, work_class: WorkClass, retry: int, rng: random.Random) -> RetryStep:
        """The queue and jittered TTL for the `retry`-th retry (1-based) of an event."""
        level = min(max(retry, 1), len(self.retry_delays_s)) - 1
        delay_ms = self.retry_delays_s[level] * 1000
        spread = rng.uniform(-self.jitter, self.jitter)
        return RetryStep(retry_queue_name(work_class, self.retry_delays_s[level]),
                         max(1, round(delay_ms * (1 + spread))))  # fmt: skip


def work_queue_name(work_class: WorkClass) -> str:
    return f"huimin.work.{work_class.value}"


def retry_queue_name(work_class: WorkClass, delay_s: float) -> str:
    return f"huimin.retry.{work_class.value}.{delay_s:g}s"


def work_queue_for(event_type: str) -> str | None:
    known = EVENT_TYPES.get(event_type)
    return work_queue_name(known.work_class) if known else None


def build_topology(retry_delays_s: Sequence[float], jitter: float) -> Topology:
    if not retry_delays_s or any(d <= 0 for d in retry_delays_s):
        raise ValueError("retry delays must be a non-empty list of positive seconds")
    delays = tuple(sorted(set(retry_delays_s)))
    queues = [*_work_queues(), *_retry_queues(delays, jitter), Queue(DEAD_LETTER_QUEUE)]
    exchanges = (Exchange(EVENTS_EXCHANGE), Exchange(RESULTS_EXCHANGE))
    return Topology(exchanges, tuple(queues), delays, jitter)


def _work_queues() -> list[Queue]:
    return [
        Queue(work_queue_name(work_class), bindings=_bindings_for(work_class))
        for work_class in WorkClass
    ]


def _bindings_for(work_class: WorkClass) -> tuple[Binding, ...]:
    return tuple(
        Binding(EVENTS_EXCHANGE, name)
        for name, event_type in EVENT_TYPES.items()
        if event_type.work_class is work_class
    )


def _retry_queues(delays: Sequence[float], jitter: float) -> list[Queue]:
    return [
        Queue(
            retry_queue_name(work_class, delay),
            arguments={
                **QUORUM,
                # the queue TTL caps the jittered per-message expiration
                "x-message-ttl": round(delay * 1000 * (1 + jitter)),
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": work_queue_name(work_class),
            },
        )
        for work_class in WorkClass
        for delay in delays
    ]
