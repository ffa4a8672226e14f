"""The retry policy: every retry, backoff, lease and deadline number the worker uses. Pure.

Built once from Settings (`RetryPolicy.from_settings`, in app.build_worker) and handed to
whoever needs it: the topology (its retry queues), the processor (when to give up, the lease),
the money calls (when "no such order" allows a resend), the platform client (the call's
deadline, its retry-safe resends), the engine (handler errors, reconnects, ledger probes), the
sweeper (its grace) and the metrics (the retry labels). Nobody else reads these settings.

A failure is retried at three levels:

* inside one platform call: the client resends what never reached the platform (a refused
  connection, 4008, 4000 once) a few times, with short waits, all within the call's deadline;
* across deliveries: a retryable failure is parked in the retry queue of its delay
  (`RetrySchedule`) and comes back to its work queue. Platform calls stop after
  `max_attempts`, status queries after `reconcile_max_queries` (then the outcome is published
  as `unknown`: a person must look);
* a handler that raises: retried `handler_error_retries` times, then dead-lettered; RabbitMQ's
  own `x-delivery-limit` catches a message that keeps killing the worker before it can.

Deadlines and leases. A platform call (client.PlatformClient.call: every attempt, and the
waits between its retry-safe resends) has ONE overall deadline, `HUIMIN_CALL_DEADLINE_S`,
counted from the call's start. The transport sends nothing after it and stops waiting for the
answer at it, whatever the per-phase timeouts say (a peer trickling one byte a second never
resets it). The only overrun: a connection being set up when the deadline falls (TCP connect
and TLS handshake each wait at most the connect timeout, clamped to what is left), after which
nothing is sent. So a call is over by

    start + call_deadline_s + connect_timeout_s        (call_budget)

and its request can have reached the platform only before `start + call_deadline_s`.

The event's lease must outlast the call it covers: `start_attempt` extends it to at least the
attempt's start + `lease()` (call budget + a margin for the ledger writes around the call), in
the same transaction that records the attempt. Another replica can take the event only once
that lease has run out, i.e. once the call is over. A status query's "no such order" (rtCode
1000) allows a resend only when that query was ASKED after the previous call attempt's deadline
plus as long again (`not_found_proves_nothing_sent`): before the deadline the platform may
still be receiving the request, and a request received just before it may still be waiting to
be processed (found by benchmarks/chaos.py: a payment the platform processed after the
deadline was sent again on the strength of an earlier "no such order").
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from worker.settings import Settings

#: ledger writes after the answer (finish_attempt, complete_event) and clock differences
#: between replicas, on top of the call's own budget
LEASE_MARGIN_S = 30.0
#: attempts of one platform call: the first and its retry-safe resends (client.py)
ATTEMPTS_PER_CALL = 3
#: the first wait between retry-safe resends, doubled each time up to the longest: short,
#: because they all share the call's deadline
RESEND_WAIT_S, RESEND_WAIT_MAX_S = 0.1, 1.0
#: waits between attempts to reconnect to RabbitMQ, the last one repeated
RECONNECT_DELAYS_S: tuple[float, ...] = (0.5, 1, 2, 5, 10, 30)
#: waits between probes of a ledger that is down (consuming paused), the last one repeated
PROBE_DELAYS_S: tuple[float, ...] = (0.5, 1, 2, 5, 10, 30)
#: read timeouts allowed, in the sweep grace, for the call an event may be in: a call and its
#: resends each waited up to a read timeout before HUIMIN_CALL_DEADLINE_S bounded the call
#: as a whole; kept so that the grace, and so when an event is swept, does not change
SWEEP_READ_TIMEOUTS = 4


@dataclass(frozen=True)
class RetrySchedule:
    """The retry queues' delays and jitter: all the broker needs to know of the policy.

    One retry queue per distinct delay (so the delays are kept sorted and distinct). A
    message waits in it for its own `expiration`, within +/- jitter of the delay, so that the
    retries of a burst spread out; the queue's TTL is the upper bound of that spread."""

    delays_s: tuple[float, ...]
    jitter: float

    def __post_init__(self) -> None:
        delays = tuple(sorted(set(self.delays_s)))
        if not delays or any(d <= 0 for d in delays):
            raise ValueError("retry delays must be a non-empty list of positive seconds")
        if not 0 <= self.jitter <= 1:
            raise ValueError("the retry jitter must be between 0 and 1")
        object.__setattr__(self, "delays_s", delays)  # frozen: normalised once, here

    @classmethod
    def of(cls, delays_s: Sequence[float], jitter: float) -> RetrySchedule:
        return cls(tuple(delays_s), jitter)

    def delay_for(self, retry: int) -> float:
        """The delay of the `retry`-th retry (1-based): later retries than there are delays
        reuse the longest, so the schedule never runs out (giving up is counted elsewhere)."""
        level = min(max(retry, 1), len(self.delays_s)) - 1
        return self.delays_s[level]

    def expiration_ms(self, delay_s: float, rng: random.Random) -> int:
        """One message's own TTL in the retry queue of `delay_s`: jittered, so a burst of
        failures does not come back all at once; at least 1 ms (0 would mean "no TTL")."""
        spread = rng.uniform(-self.jitter, self.jitter)
        return max(1, round(delay_s * 1000 * (1 + spread)))

    def queue_ttl_ms(self, delay_s: float) -> int:
        """The retry queue's x-message-ttl: the longest jittered expiration, so the queue
        never holds a message longer than its own expiration asks."""
        return round(delay_s * 1000 * (1 + self.jitter))

    def longest_wait_s(self) -> float:
        """The longest an event can wait in a retry queue between two deliveries."""
        return self.delays_s[-1] * (1 + self.jitter)


@dataclass(frozen=True)
class RetryPolicy:
    """Every retry, backoff, lease and deadline number; built from Settings, never global."""

    schedule: RetrySchedule  # HUIMIN_RETRY_DELAYS_S, HUIMIN_RETRY_JITTER
    max_attempts: int  # HUIMIN_MAX_ATTEMPTS: platform calls of one event
    reconcile_max_queries: int  # HUIMIN_RECONCILE_MAX_QUERIES
    handler_error_retries: int  # HUIMIN_HANDLER_ERROR_RETRIES
    delivery_limit: int  # HUIMIN_DELIVERY_LIMIT: the work queues' x-delivery-limit
    call_deadline_s: float  # HUIMIN_CALL_DEADLINE_S
    connect_timeout_s: float  # HUIMIN_CONNECT_TIMEOUT_S: the call's only overrun
    read_timeout_s: float  # HUIMIN_READ_TIMEOUT_S: in the sweep grace
    sweep_grace_s: float  # HUIMIN_SWEEP_GRACE_S: at least this
    # not settings: fixed by the design (each constant above says why)
    lease_margin_s: float = LEASE_MARGIN_S
    attempts_per_call: int = ATTEMPTS_PER_CALL
    resend_wait_s: float = RESEND_WAIT_S
    resend_wait_max_s: float = RESEND_WAIT_MAX_S
    reconnect_delays_s: tuple[float, ...] = RECONNECT_DELAYS_S
    probe_delays_s: tuple[float, ...] = PROBE_DELAYS_S

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            schedule=RetrySchedule.of(settings.retry_delays_s, settings.retry_jitter),
            max_attempts=settings.max_attempts,
            reconcile_max_queries=settings.reconcile_max_queries,
            handler_error_retries=settings.handler_error_retries,
            delivery_limit=settings.delivery_limit,
            call_deadline_s=settings.call_deadline_s,
            connect_timeout_s=settings.connect_timeout_s,
            read_timeout_s=settings.read_timeout_s,
            sweep_grace_s=settings.sweep_grace_s,
        )

    # --- giving up ---------------------------------------------------------------------------

    def calls_exhausted(self, calls: int) -> bool:
        """Whether an event whose calls keep failing retry-safely has had its last one."""
        return calls >= self.max_attempts

    def queries_exhausted(self, queries: int) -> bool:
        """Whether an unknown outcome has been asked about often enough: it is published as
        `unknown` rather than polled forever (a person must look)."""
        return queries >= self.reconcile_max_queries

    # --- one platform call, and the lease that outlasts it (the module docstring) -------------

    def call_deadline(self) -> timedelta:
        """How long after its start a call's request may still reach the platform."""
        return timedelta(seconds=self.call_deadline_s)

    def call_budget(self) -> timedelta:
        """How long after its start a call may still be running: a connection being set up
        when the deadline falls may take one more connect timeout (nothing is sent after)."""
        return timedelta(seconds=self.call_deadline_s + self.connect_timeout_s)

    def lease(self) -> timedelta:
        """The lease a worker takes on an event before calling the platform about it: the
        call's budget, plus the ledger writes after it and clock differences between replicas,
        so that no other replica takes the event while the call may still be running."""
        return self.call_budget() + timedelta(seconds=self.lease_margin_s)

    def not_found_proves_nothing_sent(self, started_at: datetime, asked_at: datetime) -> bool:
        """Whether "no such order", from a status query asked at `asked_at`, proves that the
        call attempt started at `started_at` was never accepted: the request could reach the
        platform only before the call's deadline, and the platform is given as long again to
        process what it received (we give it the deadline to answer; we give it as much to
        act)."""
        return started_at + 2 * self.call_deadline() < asked_at

    # --- the sweeper ---------------------------------------------------------------------------

    def sweep_grace(self) -> timedelta:
        """How long an unfinished event is left alone before the sweeper re-injects it: at
        least HUIMIN_SWEEP_GRACE_S, and never an event that is merely waiting out its longest
        backoff delay (plus the call it may be in when it comes back)."""
        in_flight = self.schedule.longest_wait_s() + SWEEP_READ_TIMEOUTS * self.read_timeout_s
        return timedelta(seconds=max(self.sweep_grace_s, in_flight))
