"""The dead-letter queue on the in-memory broker: the `dlq` tools in tests and the demo.

The same browse as ops/broker.py's DeadLetterQueue on RabbitMQ: the messages ready when it
starts are held unacked until acked or given back, and given back in their order; closing
gives back whatever is still held. Publishing refuses what would reach no queue, as RabbitMQ's
`mandatory` flag does there.
"""

from __future__ import annotations

from worker.broker.amqp_messages import encodable
from worker.broker.memory import MemoryBroker
from worker.broker.messages import Outgoing, QueuedMessage
from worker.broker.topology import DEAD_LETTER_QUEUE
from worker.errors import ConfigurationError


class MemoryDeadLetterQueue:
    def __init__(self, broker: MemoryBroker, *, queue: str = DEAD_LETTER_QUEUE) -> None:
        self.broker = broker
        self.queue = queue
        self._held: list[int] = []  # tags, in the order they were taken

    def __enter__(self) -> MemoryDeadLetterQueue:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def ready_count(self) -> int:
        if not self.broker.has_queue(self.queue):
            raise ConfigurationError(f"queue {self.queue} is not declared on this broker")
        return self.broker.depth(self.queue)

    def browse(self, limit: int | None = None) -> list[QueuedMessage]:
        self.ready_count()  # an undeclared queue is refused as on RabbitMQ
        taken = self.broker.hold(self.queue, limit)
        self._held += [message.tag for message in taken]
        return taken

    def ack(self, message: QueuedMessage) -> None:
        self._held.remove(message.tag)
        self.broker.settle(message.tag, requeue=False)

    def release(self, messages: list[QueuedMessage]) -> None:
        self._give_back([message.tag for message in messages])

    def queue_exists(self, name: str) -> bool:
        return self.broker.has_queue(name)

    def publish(self, message: Outgoing) -> None:
        encodable(message)  # what RabbitMQ's client cannot send is refused alike
        if not self.broker.routes(message.exchange, message.routing_key):
            raise ConfigurationError(
                f"the broker could not route the message: {message.routing_key!r}"
            )
        self.broker.publish(message)

    def close(self) -> None:
        self._give_back(list(self._held))

    def _give_back(self, tags: list[int]) -> None:
        # each goes back to the head of the queue: the last one first keeps their order
        for tag in reversed(tags):
            self._held.remove(tag)
            self.broker.settle(tag, requeue=True)
