"""A payment consumer on Dramatiq (RabbitmqBroker, worker threads), a peer of peers.py.

    HUIMIN_BROKER_URL=... HUIMIN_PLATFORM_URL=... \
        .venv/bin/dramatiq peer_dramatiq --path benchmarks --processes 1 --threads 8

Dramatiq consumes its own message format, so an encoder wraps each HIS event's bytes as a
call of the one actor (and unwraps it again, should Dramatiq re-enqueue one); its queue is
declared as quorum, like the worker's, and bound to his.events. Concurrency = `--threads`
(Dramatiq prefetches twice that). Per event, in a worker thread: peer_work.PeerWork (validate,
seal), a POST with a shared httpx.Client, open the answer, publish the result on the broker's
thread-local channel (confirm_delivery: basic_publish waits for the confirm); Dramatiq acks
when the actor returns. Default middleware, no retries (a peer cannot reconcile a payment).
No ledger, no idempotency, no reconciliation.
"""

from __future__ import annotations

import logging
from typing import Any

import dramatiq
import httpx
import pika
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.encoder import Encoder, MessageData
from peer_work import EVENT_KEY, JSON_HEADERS, PEER_QUEUE, PeerWork, ResultMessage

from worker.errors import InvalidEvent
from worker.settings import Settings

ACTOR = "handle_payment"


class HisEvents(Encoder):
    """HIS event bytes <-> a Dramatiq message calling ACTOR with those bytes."""

    def encode(self, data: MessageData) -> bytes:
        return data["args"][0]

    def decode(self, data: bytes) -> MessageData:
        return {
            "queue_name": PEER_QUEUE,
            "actor_name": ACTOR,
            "args": (data,),
            "kwargs": {},
            "options": {},
        }


class QuorumRabbitmqBroker(RabbitmqBroker):
    """Dramatiq's broker, its queues declared as quorum queues like the worker's."""

    def _build_queue_arguments(self, queue_name: str) -> dict[str, Any]:
        return {**super()._build_queue_arguments(queue_name), "x-queue-type": "quorum"}


settings = Settings()
work = PeerWork(settings)
broker = QuorumRabbitmqBroker(url=settings.broker_url.get_secret_value(), confirm_delivery=True)
dramatiq.set_encoder(HisEvents())
dramatiq.set_broker(broker)
logging.getLogger("dramatiq").setLevel(logging.WARNING)
http = httpx.Client(
    limits=httpx.Limits(max_connections=settings.concurrency), timeout=settings.read_timeout_s
)


@dramatiq.actor(actor_name=ACTOR, queue_name=PEER_QUEUE, max_retries=0)
def handle_payment(body: bytes) -> None:
    outgoing = process(body)
    broker.channel.basic_publish(
        exchange="his.results",
        routing_key=outgoing.routing_key,
        body=outgoing.body,
        properties=pika.BasicProperties(
            content_type="application/json",
            correlation_id=outgoing.correlation_id,
            delivery_mode=pika.DeliveryMode.Persistent,
        ),
    )  # returns once RabbitMQ confirmed it


def process(body: bytes) -> ResultMessage:
    try:
        call = work.request(body)
    except InvalidEvent as exc:
        return work.refused(body, exc)
    response = http.post(call.url, content=call.body, headers=JSON_HEADERS)
    return work.answer(call, response.status_code, response.content)


def bind() -> None:
    """Declare the exchanges and the queue (as Dramatiq will) and bind it to his.events."""
    broker.declare_queue(PEER_QUEUE, ensure=True)
    channel = broker.channel
    channel.exchange_declare("his.events", "topic", durable=True)
    channel.exchange_declare("his.results", "topic", durable=True)
    channel.queue_bind(PEER_QUEUE, "his.events", EVENT_KEY)


bind()
