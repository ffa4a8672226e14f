"""`dlq list` on the in-memory broker: the ops browse without RabbitMQ (tests, the demo).

The listing is a snapshot held unacked and given back untouched: after it, the dead-letter
queue holds the same messages in the same order, and the broker is idle again.
"""

from __future__ import annotations

import json

import pytest

from worker.broker.memory import MemoryBroker
from worker.broker.messages import Delivery, Outgoing
from worker.broker.topology import DEAD_LETTER_QUEUE, build_topology, work_queue_for
from worker.errors import ConfigurationError
from worker.ops.dead_letters import Group, Selection, read_dead_letter
from worker.ops.dlq import list_dead_letters
from worker.ops.memory_dlq import MemoryDeadLetterQueue
from worker.pipeline.dead_letter import dead_letter
from worker.settings import Settings

SETTINGS = Settings(platform_url="http://127.0.0.1:9/api", broker_url="memory://")


def letter(event_id: str, event_type: str, reason: str) -> Outgoing:
    """A dead letter as the processor or the engine writes one (pipeline/dead_letter.py)."""
    body = json.dumps({"eventId": event_id, "type": event_type, "data": {}}).encode()
    delivery = Delivery(body, event_type, queue=work_queue_for(event_type) or "")
    return dead_letter(
        delivery,
        reason=reason,
        error=f"{reason} for the test",
        routing_key=event_type,
        event_id=event_id,
        event_type=event_type,
    )


@pytest.fixture
def broker() -> MemoryBroker:
    broker = MemoryBroker()
    broker.declare(build_topology([1.0], 0.0))
    for message in (
        letter("evt-pay-00001", "payment.requested", "invalid_event"),
        letter("evt-sign-0001", "signing.status.requested", "handler_error"),
        letter("evt-pay-00002", "payment.requested", "invalid_event"),
    ):
        broker.publish(message)
    return broker


def queued_ids(broker: MemoryBroker) -> list[str | None]:
    with MemoryDeadLetterQueue(broker) as queue:  # a browse, given back on close
        return [read_dead_letter(m).event_id for m in queue.browse()]


def test_dlq_list_groups_the_dead_letters_and_leaves_the_queue_as_it_was(
    broker: MemoryBroker,
) -> None:
    before = queued_ids(broker)
    with MemoryDeadLetterQueue(broker) as queue:
        listing = list_dead_letters(SETTINGS, Selection(), queue=queue)
    assert listing.total == 3
    assert listing.groups == [
        Group("payment.requested", "invalid_event", 2),
        Group("signing.status.requested", "handler_error", 1),
    ]
    assert queued_ids(broker) == before == ["evt-pay-00001", "evt-sign-0001", "evt-pay-00002"]
    broker.join(timeout=0)  # nothing is left held


def test_dlq_list_selects_by_reason(broker: MemoryBroker) -> None:
    with MemoryDeadLetterQueue(broker) as queue:
        listing = list_dead_letters(SETTINGS, Selection(reasons=("handler_error",)), queue=queue)
    assert listing.total == 3
    assert [x.event_id for x in listing.selected] == ["evt-sign-0001"]


def test_an_acked_letter_is_gone_and_the_rest_go_back_in_order(broker: MemoryBroker) -> None:
    with MemoryDeadLetterQueue(broker) as queue:
        first, second, third = queue.browse()
        queue.ack(second)
        queue.release([first, third])  # as a Session gives back what it did not ack
    assert queued_ids(broker) == ["evt-pay-00001", "evt-pay-00002"]
    assert broker.depth(DEAD_LETTER_QUEUE) == 2


def test_publishing_where_no_queue_is_bound_is_refused(broker: MemoryBroker) -> None:
    with MemoryDeadLetterQueue(broker) as queue, pytest.raises(ConfigurationError):
        queue.publish(Outgoing("", "huimin.work.nowhere", b"{}"))


def test_a_queue_that_is_not_declared_is_a_configuration_error() -> None:
    with MemoryDeadLetterQueue(MemoryBroker()) as queue, pytest.raises(ConfigurationError):
        queue.browse()


def test_closing_gives_back_what_is_still_held(broker: MemoryBroker) -> None:
    with MemoryDeadLetterQueue(broker) as queue:
        queue.browse(limit=2)
        assert broker.depth(DEAD_LETTER_QUEUE) == 1
    assert queued_ids(broker) == ["evt-pay-00001", "evt-sign-0001", "evt-pay-00002"]
