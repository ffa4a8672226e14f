"""One platform call's deadline, and the lease that must outlast it. Pure arithmetic on settings.

A platform call (client.PlatformClient.call: every attempt, and the waits between its
retry-safe resends) has ONE overall deadline, `HUIMIN_CALL_DEADLINE_S`, counted from the call's
start. The transport sends nothing after it and stops waiting for the answer at it, whatever
the per-phase timeouts say (a peer trickling one byte a second never resets it). The only
overrun: a connection being set up when the deadline falls (TCP connect and TLS handshake
each wait at most the connect timeout, clamped to what is left), after which nothing is sent.
So a call is over by

    start + call_deadline_s + connect_timeout_s        (call_budget)

and its request can have reached the platform only before `start + call_deadline_s`.

The event's lease must outlast the call it covers: `start_attempt` extends it to at least the
attempt's start + `lease_for(settings)` (call budget + a margin for the ledger writes around
the call), in the same transaction that records the attempt. Another replica can take the
event only once that lease has run out, i.e. once the call is over. A status query's "no such
order" (rtCode 1000) allows a resend only when that query was ASKED after the previous call
attempt's deadline plus as long again (`not_found_proves_nothing_sent`): before the deadline
the platform may still be receiving the request, and a request received just before it may
still be waiting to be processed (found by benchmarks/chaos.py: a payment the platform
processed after the deadline was sent again on the strength of an earlier "no such order").
"""

from __future__ import annotations

from datetime import datetime, timedelta

from .settings import Settings

#: ledger writes after the answer (finish_attempt, complete_event) and clock differences
#: between replicas, on top of the call's own budget
LEASE_MARGIN_S = 30.0


def call_deadline(settings: Settings) -> timedelta:
    """How long after its start a call's request may still reach the platform."""
    return timedelta(seconds=settings.call_deadline_s)


def call_budget(settings: Settings) -> timedelta:
    """How long after its start a call may still be running (see the module docstring)."""
    return timedelta(seconds=settings.call_deadline_s + settings.connect_timeout_s)


def lease_for(settings: Settings) -> timedelta:
    """The lease a worker takes on an event before calling the platform about it."""
    return call_budget(settings) + timedelta(seconds=LEASE_MARGIN_S)


def not_found_proves_nothing_sent(started_at: datetime, settings: Settings,
                                  asked_at: datetime) -> bool:  # fmt: skip
    """Whether "no such order", from a status query asked at `asked_at`, proves that the call
    attempt started at `started_at` was never accepted: the request could reach the platform
    only before the call's deadline, and the platform is given as long again to process what
    it received (we give it the deadline to answer; we give it as much to act)."""
    return started_at + 2 * call_deadline(settings) < asked_at
