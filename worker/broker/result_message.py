"""A result as the message the HIS receives on his.results: built here and nowhere else. Pure.

The processor (a decided or republished result), the sweeper (a result whose publish was never
confirmed) and the daily statement job publish results; the same Result must become the same
message whichever of them sends it, since the HIS de-duplicates on it.
"""

from __future__ import annotations

from worker.broker.messages import Outgoing
from worker.broker.topology import RESULTS_EXCHANGE
from worker.contract.results import Result, result_body


def result_message(result: Result, event_id: str) -> Outgoing:
    """`event_id`: the input event the result answers, sent as the AMQP correlation_id the
    HIS matches its request on (the daily statement's is the synthetic `statement:YYYYMMDD`).
    The resultId is the message_id: a republished result is the same message again."""
    return Outgoing(
        RESULTS_EXCHANGE,
        result.routing_key,  # <event type>.<outcome>: the HIS binds to the ones it handles
        result_body(result),
        message_id=result.resultId,
        correlation_id=event_id,
    )
