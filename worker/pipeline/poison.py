"""What the engine does with a delivery that its handler could not finish. Pure.

Two kinds of failure reach the engine instead of a normal Disposition:

* a handler raised something outside the error tree (a bug, a RecursionError on JSON nested
  5,000 deep, a driver's DataError on a NUL character): the delivery is retried through the
  retry queues (backoff, counted in `x-huimin-handler-errors`) up to
  HUIMIN_HANDLER_ERROR_RETRIES times, then dead-lettered `handler_error` with the exception
  text. Never requeued at once: that was an endless redelivery loop;
* a Disposition that AMQP cannot carry (UnpublishableMessage): the delivery is dead-lettered
  `unpublishable` instead.

Both dead letters come from the one builder (worker/pipeline/dead_letter.py). Identifiers are never
taken from the body here: parsing it may be what failed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from worker.broker.messages import (
    Delivery,
    Disposition,
    Outgoing,
    int_header,
    without_broker_headers,
)
from worker.broker.topology import H_HANDLER_ERRORS, H_ROUTING_KEY, Topology, work_queue_name
from worker.contract.identifiers import event_id_or_none, printable
from worker.errors import HandlerFailed, UnpublishableMessage
from worker.pipeline.dead_letter import dead_letter
from worker.pipeline.intake import routed_key
from worker.protocol.registry import WorkClass


@dataclass(frozen=True)
class HandlerFailure:
    """The engine's answer to a handler that raised: publish `disposition`, log `summary`."""

    disposition: Disposition
    failures: int  # this one included
    summary: str  # one line for the log


def handler_failed(
    delivery: Delivery,
    error: BaseException,
    topology: Topology,
    retries: int,
    rng: random.Random,
) -> HandlerFailure:
    failures = int_header(delivery.headers, H_HANDLER_ERRORS) + 1
    text = error_text(error)
    work_class = work_class_of(delivery.queue)
    if failures <= retries and work_class is not None:
        step = topology.retry_step(work_class, failures, rng)
        headers = {
            **without_broker_headers(delivery.headers),
            H_HANDLER_ERRORS: failures,
            H_ROUTING_KEY: routed_key(delivery),
        }
        retry = Outgoing(
            "",
            step.queue,
            delivery.body,
            headers,
            message_id=event_id_or_none(delivery.message_id),
            expiration_ms=step.expiration_ms,
        )
        summary = f"{text}; retry {failures} of {retries} in {step.expiration_ms / 1000:.1f} s"
        return HandlerFailure(Disposition((retry,), label="retry"), failures, summary)
    reason = HandlerFailed.reason
    dead = dead_letter(
        delivery,
        reason=reason,
        error=text,
        routing_key=routed_key(delivery),
        event_id=delivery.message_id,
    )
    summary = f"{text}; dead-lettered {reason} after {failures} failure(s)"
    return HandlerFailure(
        Disposition((dead,), label="dead_lettered", reason=reason), failures, summary
    )


def unpublishable(
    delivery: Delivery, decided: Disposition, error: UnpublishableMessage
) -> Disposition:
    """The delivery dead-lettered `unpublishable`, in place of what its handler decided."""
    reason = UnpublishableMessage.reason
    dead = dead_letter(
        delivery,
        reason=reason,
        error=f"{decided.finished_as} could not be published: {error}",
        routing_key=routed_key(delivery),
        event_id=delivery.message_id,
        event_type=decided.event_type,
    )
    return Disposition(
        (dead,),
        event_id=event_id_or_none(decided.event_id),
        event_type=decided.event_type,
        label="dead_lettered",
        reason=reason,
    )


def error_text(error: BaseException) -> str:
    """`Type: message`, printable and bounded (a RecursionError's text is short, a driver's
    may quote the whole offending value)."""
    return printable(f"{type(error).__name__}: {error}", 300)


def work_class_of(queue: str) -> WorkClass | None:
    """The class whose work queue this is; None for other queues (huimin.unroutable)."""
    return next((wc for wc in WorkClass if work_queue_name(wc) == queue), None)


def describe(delivery: Delivery) -> str:
    """A delivery in a log line: its queue and checked message_id, never body content."""
    return f"{delivery.queue or '?'}/{event_id_or_none(delivery.message_id) or '(no id)'}"
