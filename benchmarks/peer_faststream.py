"""A payment consumer on FastStream (RabbitBroker), a peer of benchmarks/peers.py.

    HUIMIN_BROKER_URL=... HUIMIN_PLATFORM_URL=... HUIMIN_CONCURRENCY=8 \
        .venv/bin/python benchmarks/peer_faststream.py

The subscriber's channel has prefetch = HUIMIN_CONCURRENCY; aio-pika (under FastStream) runs
each delivery as its own asyncio task, so that many events are in flight. Per event:
peer_work.PeerWork (validate, seal), a POST with httpx.AsyncClient, open the answer,
`broker.publish` of the result (awaits the publisher confirm; persistent like the worker's),
and FastStream acks when the handler returns. Its per-message log lines are at DEBUG and the
app logs at WARNING, as the worker does in the benchmarks. No ledger, no idempotency, no
reconciliation.
"""

from __future__ import annotations

import asyncio
import logging

import httpx
from faststream import FastStream
from faststream.message import StreamMessage
from faststream.rabbit import (
    Channel,
    ExchangeType,
    QueueType,
    RabbitBroker,
    RabbitExchange,
    RabbitQueue,
)
from peer_work import EVENT_KEY, JSON_HEADERS, PEER_QUEUE, PeerWork, ResultMessage

from worker.errors import InvalidEvent
from worker.settings import Settings

settings = Settings()
work = PeerWork(settings)
broker = RabbitBroker(settings.broker_url.get_secret_value(), log_level=logging.DEBUG)
app = FastStream(broker)
http = httpx.AsyncClient(
    limits=httpx.Limits(max_connections=settings.concurrency), timeout=settings.read_timeout_s
)
RESULTS = RabbitExchange("his.results", type=ExchangeType.TOPIC, durable=True)


async def raw_body(message: StreamMessage[object]) -> bytes:
    """The body as it came: parse_event validates the bytes, as the worker does."""
    return message.body


@broker.subscriber(
    RabbitQueue(PEER_QUEUE, queue_type=QueueType.QUORUM, routing_key=EVENT_KEY),
    RabbitExchange("his.events", type=ExchangeType.TOPIC, durable=True),
    channel=Channel(prefetch_count=settings.concurrency),
    decoder=raw_body,
)
async def handle(body: bytes) -> None:
    outgoing = await process(body)
    await broker.publish(
        outgoing.body,
        exchange=RESULTS,
        routing_key=outgoing.routing_key,
        correlation_id=outgoing.correlation_id,
        content_type="application/json",
        persist=True,
    )  # returns once RabbitMQ confirmed it


async def process(body: bytes) -> ResultMessage:
    try:
        call = work.request(body)
    except InvalidEvent as exc:
        return work.refused(body, exc)
    response = await http.post(call.url, content=call.body, headers=JSON_HEADERS)
    return work.answer(call, response.status_code, response.content)


if __name__ == "__main__":
    asyncio.run(app.run(log_level=logging.WARNING))  # stops on SIGTERM (peers.py)
