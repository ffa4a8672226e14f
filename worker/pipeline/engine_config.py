"""What the engine is given: its configuration, the handler and job types, its observer. Pure.

Apart from worker/pipeline/engine.py so that the engine module keeps to its loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from worker.broker.messages import Delivery, Disposition
from worker.retry import PROBE_DELAYS_S, RECONNECT_DELAYS_S

Handler = Callable[[Delivery], Disposition]
Job = Callable[[], Disposition | None]
JobKind = Literal["handler", "aux", "probe"]


class EngineObserver(Protocol):
    def delivery_done(
        self, delivery: Delivery | None, disposition: Disposition, seconds: float
    ) -> None: ...

    def confirm(self, result: str) -> None: ...  # ack | nack | timeout

    def connection(self, connected: bool, reconnect: bool) -> None: ...

    def consuming_paused(self, paused: bool) -> None: ...  # the ledger is down / back


class NoObserver:
    def delivery_done(
        self, delivery: Delivery | None, disposition: Disposition, seconds: float
    ) -> None:
        pass

    def confirm(self, result: str) -> None:
        pass

    def connection(self, connected: bool, reconnect: bool) -> None:
        pass

    def consuming_paused(self, paused: bool) -> None:
        pass


@dataclass
class EngineConfig:
    queues: list[str]
    concurrency: int
    prefetch: int
    confirm_timeout_s: float
    shutdown_deadline_s: float
    #: the backoffs (to RabbitMQ, to the ledger) and handler retries: the worker passes its
    #: RetryPolicy's (worker/retry.py); the defaults are the policy's constants
    reconnect_delays_s: tuple[float, ...] = RECONNECT_DELAYS_S
    periodic: list[tuple[float, Job]] = field(default_factory=list)  # (interval, job)
    #: raises while the ledger is down (a cheap lookup); None: every probe answers
    probe: Callable[[], None] | None = None
    probe_delays_s: tuple[float, ...] = PROBE_DELAYS_S
    #: retries of a delivery whose handler raised, before it is dead-lettered handler_error
    handler_error_retries: int = 3
    #: after a delivery the engine dead-lettered itself is confirmed: (delivery, reason)
    park: Callable[[Delivery, str], None] | None = None
